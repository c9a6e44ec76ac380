//! Compiles `proto/heartbeat.proto` with the vendored `protoc`, so building this crate
//! needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    println!("cargo:rerun-if-changed=proto/heartbeat.proto");
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/heartbeat.proto"],
        &["proto"],
    )?;
    Ok(())
}
