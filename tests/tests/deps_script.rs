//! `scripts/deps` must judge a `protoc` by what etcd-client's build needs from it, not by
//! its presence: a protoc that cannot find `google/protobuf/*.proto` (Debian's
//! protobuf-compiler without libprotobuf-dev) built nothing on a fresh machine while the
//! old script accepted it.
//!
//! The bad protoc here is the real one copied into a directory with no `include/` beside
//! it, so it finds no well-known imports: exactly the fresh-machine failure, without
//! uninstalling anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deps_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("deps")
}

/// The protoc `scripts/deps` would use: `$PROTOC`, else the one on PATH. The test suite
/// runs after `scripts/deps`, so one must exist; its absence fails the test.
fn working_protoc() -> PathBuf {
    if let Some(p) = std::env::var_os("PROTOC") {
        return PathBuf::from(p);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v protoc"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "no protoc on PATH: scripts/test runs scripts/deps first, which installs one"
    );
    PathBuf::from(path)
}

fn check(protoc: &Path, include: Option<&str>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(deps_script()).arg("--check").env("PROTOC", protoc);
    match include {
        Some(dir) => cmd.env("PROTOC_INCLUDE", dir),
        None => cmd.env_remove("PROTOC_INCLUDE"),
    };
    cmd.output().expect("run scripts/deps --check")
}

#[test]
fn deps_refuses_a_protoc_that_cannot_compile_the_well_known_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let bad = bin.join("protoc");
    std::fs::copy(working_protoc(), &bad).expect("copy protoc");

    let out = check(&bad, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "scripts/deps accepted a protoc without google/protobuf includes:\n{stderr}"
    );
    assert!(
        stderr.contains("descriptor.proto") && stderr.contains("PROTOC_INCLUDE"),
        "the refusal names what is missing and how to provide it:\n{stderr}"
    );
}

#[test]
fn deps_accepts_the_protoc_it_installed() {
    let out = check(
        &working_protoc(),
        std::env::var("PROTOC_INCLUDE").ok().as_deref(),
    );
    assert!(
        out.status.success(),
        "scripts/deps --check failed on this machine's protoc:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
