//! Compiles `proto/heartbeat.proto` with the vendored `protoc`, so building this crate
//! needs no system protobuf compiler; and records the git commit for `--version`.

/// The short commit of the checkout being built, or "unknown" (a source tarball).
fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rustc-env=GIT_COMMIT={}", git_commit());
    // A new commit moves HEAD (or the branch it names): rebuild the version then.
    for path in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
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
