//! The README's run command, `bucket-broker quickstart`, and the examples it applies.

use std::path::Path;

use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, Permissions};
use bucket_broker::local::quickstart::Options;
use k8s_openapi::api::apps::v1::Deployment;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let text = std::fs::read_to_string(examples().join(file)).expect("example file");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_example_is_a_valid_object_of_its_kind() {
    let private: Bucket = example("bucket-private.yaml");
    assert!(!private.spec.public);
    let public: Bucket = example("bucket-public.yaml");
    assert!(public.spec.public);
    let read_write: BucketBinding = example("binding-readwrite.yaml");
    assert_eq!(read_write.spec.permissions, Permissions::ReadWrite);
    let read_only: BucketBinding = example("binding-readonly.yaml");
    assert_eq!(read_only.spec.permissions, Permissions::ReadOnly);
    let key: BucketServiceKey = example("servicekey-external.yaml");
    assert!(key.spec.allow_external_access);
    for file in ["app-binding-shop-assets.yaml", "app-binding-shop-reports.yaml"] {
        let member: BucketBinding = example(file);
        assert_eq!(member.spec.app.as_deref(), Some("shop"), "{file}");
    }
    let shop: Deployment = example("app-deployment.yaml");
    let shop_env = shop.spec.template.spec.map(|p| p.containers[0].env.clone().unwrap_or_default());
    let vcap_from = shop_env
        .iter()
        .flatten()
        .find(|e| e.name == "VCAP_SERVICES")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| r.name.clone());
    assert_eq!(vcap_from.as_deref(), Some("shop-vcap-services"), "the app reads its app Secret");
    for binding in [&read_write, &read_only] {
        assert_eq!(binding.spec.bucket_ref.name, "assets", "bindings refer to the example bucket");
    }

    // The Deployment consumes the read-write binding's Secret three ways.
    let deployment: Deployment = example("deployment.yaml");
    let pod = deployment.spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let secret = read_write.metadata.name.clone().expect("name");
    let vcap = container.env.iter().flatten().find(|e| e.name == "VCAP_SERVICES").expect("VCAP_SERVICES env");
    let from = vcap.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("secretKeyRef");
    assert_eq!((from.name.as_str(), from.key.as_str()), (secret.as_str(), "VCAP_SERVICES"));
    let env_from =
        container.env_from.iter().flatten().filter_map(|e| e.secret_ref.as_ref()).next().expect("envFrom");
    assert_eq!(env_from.name, secret);
    let root = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SERVICE_BINDING_ROOT")
        .and_then(|e| e.value.clone());
    let mount = container.volume_mounts.iter().flatten().next().expect("volume mount");
    assert_eq!(mount.mount_path, format!("{}/{secret}", root.expect("SERVICE_BINDING_ROOT")));
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).expect("volume");
    assert_eq!(volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some(secret.as_str()));
}

/// The shell commands of the README's quick start section (its `sh` block), comments removed.
fn readme_quickstart_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let section = readme.split("\n## Quick start\n").nth(1).expect("a Quick start section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    block
        .lines()
        .map(|line| line.split("  #").next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Runs one README line with bash in `dir` after the `export KUBECONFIG=...` line the quickstart printed;
/// returns its standard output and standard error.
async fn shell(dir: &Path, export: &str, line: &str) -> (String, String) {
    let script = format!("set -euo pipefail\n{export}\n{line}\n");
    let output = tokio::process::Command::new("bash")
        .current_dir(dir)
        .args(["-c", &script])
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("$ {line}\n{stdout}{stderr}");
    assert!(output.status.success(), "the README's `{line}` failed: {stderr}");
    (stdout, stderr)
}

/// What the quickstart prints, readable while it still runs (to find the metrics address it printed).
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("output")).into_owned()
    }
}

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("output").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_shows_every_step_and_the_readme_commands_work() {
    let logged_by_the_harness = crate::harness::init_log();
    // The README's commands run from a directory like the repository's: examples/ and .tools/quickstart/.
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-quickstart"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::os::unix::fs::symlink(examples(), dir.join("examples")).expect("examples linked");
    let options =
        Options { examples: examples(), state_dir: dir.join(".tools/quickstart"), controller: true };
    let commands = readme_quickstart_commands();
    assert!(commands.len() >= 8, "{commands:?}");
    assert!(commands[0].starts_with("export KUBECONFIG="), "the section starts with the printed line");

    let shared = Shared::default();
    let mut out = shared.clone();
    let mut outputs = Vec::new();
    let mut metrics = String::new();
    let hold = async {
        let export = &commands[0];
        for line in &commands[1..] {
            outputs.push((line.clone(), shell(&dir, export, line).await));
        }
        // The metrics address the quickstart printed serves the controller's metrics.
        let printed = shared.text();
        let curl = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("The controller's metrics: "))
            .expect("the metrics address is printed")
            .to_owned();
        metrics = shell(&dir, "", &curl).await.0;
    };
    bucket_broker::local::quickstart::run(&options, &mut out, hold).await.expect("quickstart succeeds");
    let out = shared.text();
    let state_dir = std::path::absolute(&options.state_dir).expect("state dir");
    for expected in [
        "created Bucket/assets",
        "created Bucket/public-assets",
        "created BucketBinding/web-app",
        "created BucketBinding/reporting",
        "created BucketServiceKey/migration",
        "skipped Deployment/web-app",
        "created Bucket/reports",
        "created BucketBinding/shop-assets",
        "created BucketBinding/shop-reports",
        "skipped Deployment/shop",
        "ready=True publicUrl=",
        "\"aws-s3-bucket\": [",
        "\"instance_name\": \"assets\"",
        "Starting the controller, watching every namespace",
        "The controller watches every namespace",
        "VCAP_SERVICES of BucketBinding web-app",
        "Writing with the read-only BucketBinding reporting",
        "Its metrics: curl -s http://127.0.0.1:",
        "--without-controller",
        "\"aws_secret_access_key\": \"****\"",
        "GET s3://",
        "\"hello from bucket-broker\"",
        "not-allowed.txt: refused (AccessDenied)",
        "==> Done",
        &format!("export KUBECONFIG={}", state_dir.join("kubeconfig").display()),
        &format!("tail -f {}", state_dir.join("controller.log").display()),
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(
        commands[0], "export KUBECONFIG=$PWD/.tools/quickstart/kubeconfig",
        "the README's line is the printed one, run from the repository"
    );

    assert!(metrics.contains("# TYPE"), "Prometheus text from the printed address: {metrics}");
    // The README's description names what the quickstart shows.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    for shown in ["`VCAP_SERVICES` of the `web-app` binding", "read-only `reporting` binding"] {
        assert!(readme.contains(shown), "the README says {shown:?}");
    }

    let output_of = |prefix: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, (o, _))| o.as_str())
            .unwrap_or_default()
    };
    let stderr_of = |prefix: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, (_, e))| e.as_str())
            .unwrap_or_default()
    };
    let dry_run = stderr_of("kubectl apply -f examples/bucket-private.yaml --dry-run=server");
    assert!(!dry_run.contains("last-applied-configuration"), "created as kubectl apply does: {dry_run}");
    let unchanged = output_of("kubectl apply -f examples/bucket-private.yaml --dry-run=server");
    assert!(
        unchanged.contains("unchanged (server dry run)"),
        "kubectl finds its own annotation: {unchanged}"
    );
    let elsewhere = output_of("kubectl wait -n mine bucket/assets");
    assert!(
        elsewhere.contains("condition met"),
        "a Bucket in a namespace of one's own is provisioned: {elsewhere}"
    );
    let all = output_of("kubectl get bucketbroker");
    assert!(all.contains("bucket.bucketbroker.io/assets") && all.contains("True"), "{all}");
    assert!(output_of("kubectl get buckets -o wide").contains("Provisioned"));
    let described = output_of("kubectl describe bucket assets");
    assert!(!described.contains("Events:  <none>") && described.contains("BucketCreated"), "{described}");
    assert!(output_of("kubectl get secret web-app").starts_with("bucket-broker-"));
    assert!(!output_of("kubectl get bucketbindings").contains("reporting"), "deleted");
    // With `BUCKET_BROKER_TEST_LOG` the harness's subscriber, installed first, takes the log instead.
    if !logged_by_the_harness {
        let log = output_of("tail -n 20");
        assert!(log.contains("INFO") && !log.contains('\u{1b}'), "a plain log: {log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example classes are what `kubectl apply` accepts (the API server's own schema and rules, dry run:
/// nothing is stored, so no other test sees a default class appear).
#[tokio::test(flavor = "multi_thread")]
async fn the_example_classes_are_accepted_by_the_api_server() {
    use bucket_broker::api::BucketClass;
    use kube::api::PostParams;
    let env = crate::harness::TestEnv::new().await;
    let api = kube::Api::<BucketClass>::all(env.client.clone());
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    for file in ["classes/standard.yaml", "classes/public-assets.yaml", "classes/versioned-kms.yaml"] {
        let class: BucketClass = example(file);
        let accepted = api.create(&dry_run, &class).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(accepted.spec, class.spec, "{file}");
    }
    let standard: BucketClass = example("classes/standard.yaml");
    let annotations = standard.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(bucket_broker::api::DEFAULT_CLASS_ANNOTATION).map(String::as_str),
        Some("true")
    );
    let public: BucketClass = example("classes/public-assets.yaml");
    assert!(public.spec.allow_public && public.spec.allow_cors && public.spec.namespace_selector.is_some());
    let kms: BucketClass = example("classes/versioned-kms.yaml");
    assert!(kms.spec.encryption.is_some_and(|e| e.kms_key_arn.is_some()));
    // A class whose default deletion policy it does not allow is refused at apply.
    let mut wrong = public.clone();
    wrong.metadata.name = Some(crate::harness::unique_name("wrong"));
    wrong.spec.deletion_policy = Some(bucket_broker::api::DeletionPolicy::Delete);
    let refused =
        api.create(&dry_run, &wrong).await.expect_err("deletionPolicy outside allowedDeletionPolicies");
    assert!(
        refused.to_string().contains("deletionPolicy must be one of allowedDeletionPolicies"),
        "{refused}"
    );
}

/// `--without-controller`: the environment alone, and the lines it prints are enough to run the controller
/// binary against it (moto's credentials, its endpoint, the kubeconfig): the examples become Ready.
#[tokio::test(flavor = "multi_thread")]
async fn without_its_controller_the_quickstart_prints_what_ones_own_needs() {
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-own-controller"));
    let options =
        Options { examples: examples(), state_dir: dir.join(".tools/quickstart"), controller: false };
    let shared = Shared::default();
    let mut out = shared.clone();
    let mut ready = String::new();
    let hold = async {
        let printed = shared.text();
        let exports: Vec<(String, String)> = printed
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .map(|l| l.split(" #").next().unwrap_or_default().trim())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let names: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
        for needed in [
            "KUBECONFIG",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "BUCKET_BROKER_AWS_ENDPOINT_URL",
        ] {
            assert!(names.contains(&needed), "{needed} is printed: {printed}");
        }
        assert!(printed.contains("cargo run -- run"), "{printed}");
        let kubeconfig =
            exports.iter().find(|(k, _)| k == "KUBECONFIG").map(|(_, v)| v.clone()).expect("kubeconfig");
        let mut controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucket-broker"))
            .arg("run")
            .envs(exports.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Any free port: the printed 8080 may be taken on a shared machine.
            .env("BUCKET_BROKER_METRICS_ADDR", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("the controller starts");
        let export = format!("export KUBECONFIG={kubeconfig}");
        ready = shell(
            &dir,
            &export,
            "kubectl wait bucket/assets bucketbinding/web-app --for=condition=Ready --timeout=90s",
        )
        .await
        .0;
        let _ = controller.kill().await;
    };
    std::fs::create_dir_all(&dir).expect("temp dir");
    bucket_broker::local::quickstart::run(&options, &mut out, hold).await.expect("quickstart succeeds");
    let out = shared.text();
    assert!(out.contains("created Bucket/assets") && !out.contains("Starting the controller"), "{out}");
    assert_eq!(ready.matches("condition met").count(), 2, "{ready}");
    let _ = std::fs::remove_dir_all(&dir);
}
