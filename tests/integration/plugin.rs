//! The kubectl plugin `kubectl-bucketbroker`, run as the built binary against the test's Kubernetes API with
//! a kubeconfig, as a user runs it, and once through the real kubectl's plugin lookup on the PATH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, KeyState, find_condition};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::PostParams;
use kube::config::Kubeconfig;
use serde_json::{Value, json};

use crate::credentials::{credential, env_with_bucket, keys_of, ready_binding, secret, value};
use crate::harness::{TIMEOUT, TestEnv, on_real_cluster, unique_name};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-bucketbroker");

/// What one run printed, and how it ended.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// The plugin with a kubeconfig for the test's API server and the test namespace.
struct Plugin {
    dir: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Plugin {
    fn new(env: &TestEnv) -> Plugin {
        let dir = std::env::temp_dir().join(unique_name("bb-plugin"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = env.kubeconfig(&dir);
        Plugin { dir, kubeconfig, namespace: env.namespace.clone() }
    }

    /// Runs `program` (the plugin, or kubectl) with `args`, then the kubectl flags the plugin honours.
    async fn exec(&self, program: &str, path: Option<&str>, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new(program);
        command.args(args).arg("--kubeconfig").arg(&self.kubeconfig).args(["-n", &self.namespace]);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        let output = command.output().await.expect("the command runs");
        let run = Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        println!("$ {program} {}\n{}{}", args.join(" "), run.stdout, run.stderr);
        run
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.exec(PLUGIN, None, args).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.success, "kubectl-bucketbroker {} failed: {}", args.join(" "), run.stderr);
        run.stdout
    }

    /// `kubectl bucketbroker ARGS`: kubectl finds the plugin on the PATH, as after `cargo install`.
    async fn through_kubectl(&self, args: &[&str]) -> Run {
        let plugin_dir = Path::new(PLUGIN).parent().expect("the plugin's directory");
        let path = format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut kubectl_args = vec!["bucketbroker"];
        kubectl_args.extend_from_slice(args);
        self.exec("kubectl", Some(&path), &kubectl_args).await
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cells of the table line whose second cell (NAME, after KIND) is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

async fn ready_service_key(env: &TestEnv, name: &str) -> BucketServiceKey {
    env.wait_for::<BucketServiceKey>(name, "ready", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_every_format_and_who_uses_a_bucket() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    env.create::<BucketServiceKey>(credential(
        "BucketServiceKey",
        "laptop",
        json!({"bucketRef": {"name": "data"}, "permissions": "ReadOnly"}),
    ))
    .await;
    ready_binding(&env, "app").await;
    ready_service_key(&env, "laptop").await;
    let plugin = Plugin::new(&env);
    let stored = secret(&env, "app").await;
    let stored_vcap: Value = serde_json::from_str(&value(&stored, "VCAP_SERVICES")).expect("VCAP_SERVICES");

    let vcap: Value = serde_json::from_str(&plugin.ok(&["credentials", "app"]).await).expect("JSON");
    assert_eq!(vcap, stored_vcap, "the default is the Secret's VCAP_SERVICES");
    let explicit: Value =
        serde_json::from_str(&plugin.ok(&["credentials", "app", "--format", "vcap"]).await).expect("JSON");
    assert_eq!(explicit, stored_vcap);
    let json: Value =
        serde_json::from_str(&plugin.ok(&["credentials", "app", "--format", "json"]).await).expect("JSON");
    assert_eq!(json, stored_vcap["aws-s3-bucket"][0]["credentials"]);
    let env_lines = plugin.ok(&["credentials", "app", "--format", "env"]).await;
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "BUCKET_NAME"] {
        let expected = format!("{key}={}", bucket_broker::plugin::render::shell_quote(&value(&stored, key)));
        assert!(env_lines.lines().any(|l| l == expected), "{key} missing from:\n{env_lines}");
    }
    assert!(!env_lines.contains("VCAP_SERVICES"), "only the flat keys");

    let key_secret = secret(&env, "laptop").await;
    let key_json: Value =
        serde_json::from_str(&plugin.ok(&["credentials", "laptop", "--service-key"]).await).expect("JSON");
    let stored_key: Value = serde_json::from_str(&value(&key_secret, "credentials.json")).expect("JSON");
    assert_eq!(key_json, stored_key, "a service key prints its cf service-key output");

    let missing = plugin.run(&["credentials", "nope"]).await;
    assert!(!missing.success);
    assert!(missing.stderr.contains("There is no BucketBinding nope in namespace"), "{}", missing.stderr);
    let wrong_kind = plugin.run(&["credentials", "laptop"]).await;
    assert!(wrong_kind.stderr.contains("add --service-key"), "{}", wrong_kind.stderr);

    let table = plugin.ok(&["who-uses", "data"]).await;
    assert!(table.starts_with("KIND "), "{table}");
    let app = row(&table, "app");
    assert_eq!(&app[..5], ["BucketBinding", "app", "ReadWrite", "key", &value(&stored, "AWS_ACCESS_KEY_ID")]);
    assert_eq!(app[app.len() - 2..], ["True", "Provisioned"]);
    let laptop = row(&table, "laptop");
    assert_eq!(&laptop[..4], ["BucketServiceKey", "laptop", "ReadOnly", "key"]);
    assert!(!table.contains(&value(&stored, "AWS_SECRET_ACCESS_KEY")), "who-uses prints no secret");

    // kubectl finds the plugin on the PATH and passes the flags through.
    let through = plugin.through_kubectl(&["who-uses", "data"]).await;
    assert!(through.success, "kubectl bucketbroker failed: {}", through.stderr);
    assert_eq!(through.stdout.lines().count(), 3, "{}", through.stdout);

    // The Bucket counts them in its BINDINGS column, and a departure is counted too.
    env.wait_for::<Bucket>("data", "counting 2", |b| b.status.as_ref().and_then(|s| s.bindings) == Some(2))
        .await;
    let listed = plugin.exec("kubectl", None, &["get", "bucket", "data"]).await;
    let header: Vec<&str> = listed.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    let column = header.iter().position(|h| *h == "BINDINGS").expect("a BINDINGS column");
    assert_eq!(listed.stdout.lines().nth(1).and_then(|l| l.split_whitespace().nth(column)), Some("2"));
    env.delete::<BucketServiceKey>("laptop").await;
    env.wait_for::<Bucket>("data", "counting 1", |b| b.status.as_ref().and_then(|s| s.bindings) == Some(1))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_waits_for_the_new_key_and_the_old_one_is_retired() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "3s"}}),
    ))
    .await;
    let before = ready_binding(&env, "app").await;
    let status = before.status.clone().expect("status");
    let old = status.access_key_id.clone().expect("a key");
    let user = status.user_name.clone().expect("a user");
    let plugin = Plugin::new(&env);

    let out = plugin.ok(&["rotate", "app", "--timeout", "2m"]).await;
    let after = ready_binding(&env, "app").await;
    let new = after.status.as_ref().and_then(|s| s.access_key_id.clone()).expect("a key");
    assert_ne!(new, old);
    assert!(out.contains(&format!("now holds access key {new}")), "{out}");
    assert_eq!(value(&secret(&env, "app").await, "AWS_ACCESS_KEY_ID"), new, "the Secret holds the new key");
    let keys = after.status.as_ref().map(|s| s.access_keys.clone()).unwrap_or_default();
    assert!(keys.iter().any(|k| k.id == old && k.state == KeyState::Retiring), "{keys:?}");

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while keys_of(&env, &user).await != [new.clone()] {
        assert!(tokio::time::Instant::now() < deadline, "the old key was never retired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "keyless",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "web"}),
    ))
    .await;
    let refused = plugin.run(&["rotate", "keyless"]).await;
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("is keyless") && refused.stderr.contains("no access key to rotate"),
        "{}",
        refused.stderr
    );
    let annotations = env.api::<BucketBinding>().get("keyless").await.expect("binding").metadata.annotations;
    assert!(
        !annotations.unwrap_or_default().contains_key("bucketbroker.io/rotate"),
        "a refused rotation writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_what_is_not_ready_and_exits_by_it() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    ready_binding(&env, "app").await;
    let plugin = Plugin::new(&env);
    let all_ready = plugin.run(&["status"]).await;
    assert!(all_ready.success, "exit 0 when everything is Ready: {}", all_ready.stderr);
    assert_eq!(
        all_ready.stdout,
        format!("Everything in namespace {} is Ready (2 objects).\n", env.namespace)
    );

    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "taken"}, "stringData": {"mine": "yes"}}))
            .expect("secret");
    env.api::<Secret>().create(&PostParams::default(), &foreign).await.expect("foreign Secret");
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "clash",
        json!({"bucketRef": {"name": "data"}, "secretName": "taken"}),
    ))
    .await;
    env.wait_for::<BucketBinding>("clash", "in conflict", |b| {
        b.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "SecretConflict")
    })
    .await;
    let not_ready = plugin.run(&["status"]).await;
    assert!(!not_ready.success, "exit 1 when something is not Ready");
    assert_eq!(not_ready.stdout.lines().count(), 2, "the header and the one binding:\n{}", not_ready.stdout);
    assert!(not_ready.stdout.starts_with("KIND "), "{}", not_ready.stdout);
    assert_eq!(row(&not_ready.stdout, "clash")[..3], ["BucketBinding", "clash", "SecretConflict"]);

    let through = plugin.through_kubectl(&["status"]).await;
    assert!(!through.success, "kubectl passes the exit status on");
    assert_eq!(through.stdout, not_ready.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_who_may_not_read_secrets_is_told_so() {
    if !on_real_cluster("RBAC (a user who may read bindings but not Secrets)") {
        return;
    }
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    ready_binding(&env, "app").await;
    // Applies the tenant roles, aggregated into `edit` and `view`; the viewer gets `view` alone, which
    // reads bindings but no Secret.
    env.tenant_client("plugin-editor").await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "plugin-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "plugin-viewer"}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding created");
    let mut viewer = Plugin::new(&env);
    let mut kubeconfig = Kubeconfig::read_from(&viewer.kubeconfig).expect("the admin kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some("plugin-viewer".to_owned());
        }
    }
    let path = viewer.dir.join("viewer.kubeconfig");
    // It holds the admin's credentials: readable by us alone.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(serde_json::to_string(&kubeconfig).expect("kubeconfig").as_bytes()))
        .expect("kubeconfig written");
    viewer.kubeconfig = path;

    // The aggregation controller adds the tenant view role's rules to `view` asynchronously.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !viewer.run(&["who-uses", "data"]).await.success {
        assert!(tokio::time::Instant::now() < deadline, "the viewer never got to read bindings");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = viewer.run(&["credentials", "app"]).await;
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("You are not allowed to read the Secret app in namespace")
            && refused.stderr.contains("Ask a cluster admin"),
        "{}",
        refused.stderr
    );
}
