//! The release image carries the controller only: the `Dockerfile` builds without the `local` feature, so
//! neither the in-memory API server nor the quickstart is compiled into what runs on a cluster. The
//! `Dockerfile` and `scripts/image` (buildah, no Docker engine) build the same image, and the image
//! `scripts/image` built is checked here: configuration, every file, and the controller running from it.

use std::collections::BTreeSet;
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

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("readable")
}

/// The image configuration the Dockerfile's last stage gives: (instruction, arguments) of every line after
/// the last `FROM`.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let dockerfile = repository_file("Dockerfile");
    let last_from = dockerfile.rfind("\nFROM ").expect("a FROM");
    dockerfile[last_from + 1..]
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(i, a)| (i.to_owned(), a.trim().to_owned())))
        .collect()
}

/// The options of the `buildah config` in `scripts/image`: (option, value), values unquoted.
fn buildah_config() -> Vec<(String, String)> {
    let script = repository_file("scripts/image").replace("\\\n", " ");
    let line =
        script.lines().find(|l| l.trim_start().starts_with("buildah config ")).expect("buildah config");
    let words: Vec<String> =
        line.split_whitespace().map(|w| w.trim_matches('\'').trim_matches('"').to_owned()).collect();
    words.windows(2).filter(|w| w[0].starts_with("--")).map(|w| (w[0].clone(), w[1].clone())).collect()
}

#[test]
fn the_dockerfile_and_scripts_image_build_the_same_image() {
    let stage = dockerfile_final_stage();
    let instruction = |name: &str| -> Vec<&str> {
        stage.iter().filter(|(i, _)| i == name).map(|(_, a)| a.as_str()).collect()
    };
    assert_eq!(instruction("FROM"), ["scratch"], "nothing but what scripts/image-rootfs puts in");
    assert_eq!(instruction("COPY"), ["--from=build /rootfs /"]);
    let dockerfile = repository_file("Dockerfile");
    assert!(dockerfile.contains("RUN image-rootfs /bucket-broker /rootfs"), "the shared rootfs script");
    assert!(repository_file("scripts/image").contains("scripts/image-rootfs \"$binary\" \"$rootfs\""));

    let config = buildah_config();
    let option = |name: &str| -> Vec<&str> {
        config.iter().filter(|(o, _)| o == name).map(|(_, v)| v.as_str()).collect()
    };
    assert_eq!(instruction("ENTRYPOINT"), option("--entrypoint"));
    assert_eq!(instruction("CMD"), [format!("[\"{}\"]", option("--cmd").join("\", \""))]);
    assert_eq!(instruction("USER"), option("--user"));
    assert_eq!(instruction("USER"), ["65532:65532"], "the Deployment's runAsUser and runAsGroup");
    assert_eq!(instruction("EXPOSE"), option("--port"));
    assert_eq!(instruction("LABEL"), option("--label"));
}

/// Runs a command; its stdout, or a failed test with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every file (not directory) under `root`, relative to it.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory").flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                out.insert(relative.display().to_string());
            }
        }
    }
    out
}

/// The image `scripts/image` built (it sets `BUCKET_BROKER_TEST_IMAGE`): its configuration, its files, and
/// the controller running from it as the nonroot user with nothing but what the image holds.
#[test]
fn the_built_image_holds_the_controller_its_libraries_and_nothing_else() {
    let Ok(image) = std::env::var("BUCKET_BROKER_TEST_IMAGE") else {
        eprintln!(
            "skipped: no image to check (scripts/image builds one and runs this with BUCKET_BROKER_TEST_IMAGE)"
        );
        return;
    };
    let inspected: serde_json::Value =
        serde_json::from_str(&run("buildah", &["inspect", "--type", "image", &image])).expect("inspect JSON");
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bucket-broker"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["User"], "65532:65532");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");

    let container = run("buildah", &["from", &image]).trim().to_owned();
    let mount = run("buildah", &["mount", &container]).trim().to_owned();
    let root = Path::new(&mount);
    let files = files_under(root);
    let libraries: BTreeSet<String> = run("ldd", &[&format!("{mount}/bucket-broker")])
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(|w| w.trim_start_matches('/').to_owned())
        .collect();
    assert!(libraries.iter().any(|l| l.contains("libc.so")), "{libraries:?}");
    let mut expected: BTreeSet<String> =
        ["bucket-broker", "etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    expected.extend(libraries.iter().map(|l| l.replace(&format!("{mount}/"), "")));
    assert_eq!(files, expected, "the binary, exactly the libraries it loads, CA certificates and the users");
    let certificates =
        std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).expect("CA bundle");
    assert!(certificates.matches("BEGIN CERTIFICATE").count() > 50, "a full CA bundle");

    // The controller runs from the image alone, as the nonroot user.
    let version = run("chroot", &["--userspec=65532:65532", &mount, "/bucket-broker", "--version"]);
    assert!(version.starts_with("bucket-broker "), "{version}");
    let crds = run("chroot", &["--userspec=65532:65532", &mount, "/bucket-broker", "crds"]);
    assert!(crds.contains("kind: CustomResourceDefinition"), "{crds}");
    run("buildah", &["rm", &container]);
    println!("checked {image}: {} files, {} libraries, runs as 65532", files.len(), libraries.len());
}
