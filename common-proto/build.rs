//! Compiles `proto/heartbeat.proto` with the vendored `protoc`, so building this crate
//! needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    println!("cargo:rerun-if-changed=proto/heartbeat.proto");
    // The descriptor set feeds gRPC reflection (`grpcurl list`).
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("heartbeat_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_with_config(config, &["proto/heartbeat.proto"], &["proto"])?;
    Ok(())
}
