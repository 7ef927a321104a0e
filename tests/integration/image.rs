//! The release image carries the controller only: the `Dockerfile` builds without the `local` feature, so
//! neither the in-memory API server nor the quickstart is compiled into what runs on a cluster.

use std::path::Path;
use std::process::Command;

/// The crate that must never reach a cluster.
const IN_MEMORY_SERVER: &str = "kube-memory-apiserver";

/// The arguments of the `cargo build` in the `Dockerfile` (continuation lines joined, up to the next `&&`).
fn dockerfile_build_args() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&path).expect("the Dockerfile is readable");
    let joined = dockerfile.replace("\\\n", " ");
    let builds: Vec<&str> = joined.lines().filter(|l| l.contains("cargo build")).collect();
    assert_eq!(builds.len(), 1, "the Dockerfile should build once: {builds:?}");
    let after = builds[0].split("cargo build").nth(1).unwrap_or_default();
    let command = after.split("&&").next().unwrap_or_default();
    command.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_dockerfile_builds_the_release_without_the_local_feature() {
    let args = dockerfile_build_args();
    assert!(args.iter().any(|a| a == "--release"), "{args:?}");
    assert!(args.iter().any(|a| a == "--no-default-features"), "the `local` feature must be off: {args:?}");
    assert!(
        !args.iter().any(|a| a == "--all-features" || a.starts_with("--features") || a == "-F"),
        "no feature may be turned back on: {args:?}"
    );
}

/// The crates in the normal (non-dev, non-build) dependency tree of the controller, one per line.
fn normal_dependencies(extra_args: &[String]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "-e", "normal", "-p", "bucket-broker", "--prefix", "none"])
        .args(extra_args)
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_release_dependency_tree_has_no_in_memory_server() {
    // The same feature selection as the Dockerfile's build, through cargo's own resolver.
    let release_args: Vec<String> =
        dockerfile_build_args().into_iter().filter(|a| a == "--no-default-features").collect();
    let release = normal_dependencies(&release_args);
    assert!(release.lines().any(|l| l.starts_with("kube-runtime ")), "the tree was read: {release}");
    assert!(!release.contains(IN_MEMORY_SERVER), "the release build depends on {IN_MEMORY_SERVER}");

    // The check can fail: with the default (development) features, the server is there.
    assert!(normal_dependencies(&[]).contains(IN_MEMORY_SERVER));
}
