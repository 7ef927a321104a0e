//! Users drive bucket-broker with kubectl, so these tests do too: the commands of the README and the
//! examples, run by the real `kubectl` binary against the test's Kubernetes API (the in-memory server,
//! or the cluster named by `BUCKET_BROKER_TEST_KUBECONFIG`). Client-side validation stays on: kubectl
//! reads the server's OpenAPI documents before it sends anything.

use std::path::{Path, PathBuf};

use bucket_broker::api::{Bucket, BucketBinding};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::harness::{TestEnv, unique_name};

/// kubectl with a kubeconfig, a discovery cache of its own and the test namespace.
struct Kubectl {
    dir: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

/// What one kubectl run printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(env: &TestEnv) -> Kubectl {
        let dir = std::env::temp_dir().join(unique_name("bb-kubectl"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = env.kubeconfig(&dir);
        Kubectl { dir, kubeconfig, namespace: env.namespace.clone() }
    }

    /// Runs kubectl from the repository root (so `crds/` and `examples/` resolve) without blocking the
    /// runtime the controller runs on.
    async fn run(&self, args: &[&str]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = tokio::process::Command::new("kubectl")
            .current_dir(root)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .await
            .expect("kubectl runs (scripts/test installs Debian's kubernetes-client when it is missing)");
        let out = Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        println!("$ kubectl {}\n{}{}", args.join(" "), out.stdout, out.stderr);
        out
    }

    /// Runs kubectl and fails the test unless it succeeds; returns what it printed.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.success, "kubectl {} failed: {}", args.join(" "), out.stderr);
        out.stdout
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cells of the line of `table` (kubectl's columns) that starts with `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_the_crds_and_examples_waits_gets_and_deletes() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    let kubectl = Kubectl::new(&env);

    let crds = kubectl.ok(&["apply", "-k", "crds/"]).await;
    for kind in ["buckets", "bucketbindings", "bucketservicekeys"] {
        assert!(
            crds.contains(&format!("customresourcedefinition.apiextensions.k8s.io/{kind}.bucketbroker.io"))
        );
    }
    let applied = kubectl.ok(&["apply", "-f", "examples/"]).await;
    for object in
        ["bucket.bucketbroker.io/assets", "bucketbinding.bucketbroker.io/web-app", "deployment.apps/web-app"]
    {
        assert!(applied.contains(&format!("{object} created")), "{applied}");
    }

    let objects = [
        "bucket/assets",
        "bucket/public-assets",
        "bucketbinding/web-app",
        "bucketbinding/reporting",
        "bucketservicekey/migration",
        "bucket/reports",
        "bucketbinding/shop-assets",
        "bucketbinding/shop-reports",
    ];
    let waited =
        kubectl.ok(&[&["wait", "--for=condition=Ready", "--timeout=60s"][..], &objects].concat()).await;
    assert_eq!(waited.matches("condition met").count(), objects.len(), "{waited}");

    // The printer columns, for one kind and for the whole category. BINDINGS counts the bindings and
    // service keys naming the Bucket: four name assets, none public-assets.
    let counting = |n: i32| move |b: &Bucket| b.status.as_ref().and_then(|s| s.bindings) == Some(n);
    env.wait_for::<Bucket>("assets", "counting 4 bindings", counting(4)).await;
    env.wait_for::<Bucket>("public-assets", "counting no binding", counting(0)).await;
    let buckets = kubectl.ok(&["get", "bkt"]).await;
    let header: Vec<&str> = buckets.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "BUCKET", "CLASS", "PUBLIC", "BINDINGS", "READY", "AGE"]);
    let assets = env.api::<Bucket>().get("assets").await.expect("assets");
    let bucket_name = assets.status.and_then(|s| s.bucket_name).expect("bucket name");
    // No class is the default here: the examples get the built-in one.
    assert_eq!(
        row(&buckets, "assets")[..6],
        ["assets", bucket_name.as_str(), "(built-in)", "false", "4", "True"]
    );
    assert_eq!(row(&buckets, "public-assets")[3..6], ["true", "0", "True"]);
    let all = kubectl.ok(&["get", "bucketbroker"]).await;
    // The APP column of a binding without an app is an empty cell (the API server sends null).
    assert!(
        all.lines().any(|l| l.split_whitespace().eq([
            "NAME",
            "BUCKET",
            "PERMISSIONS",
            "SECRET",
            "APP",
            "READY",
            "AGE"
        ])),
        "{all}"
    );
    assert_eq!(
        row(&all, "bucketbinding.bucketbroker.io/reporting")[1..5],
        ["assets", "ReadOnly", "reporting-s3", "True"]
    );
    assert_eq!(
        row(&all, "bucketservicekey.bucketbroker.io/migration")[1..5],
        ["assets", "ReadWrite", "migration", "True"]
    );
    assert_eq!(row(&all, "bucket.bucketbroker.io/assets")[4..6], ["4", "True"]);
    let shop = kubectl.ok(&["get", "bkb", "shop-assets"]).await;
    assert_eq!(
        row(&shop, "shop-assets")[..6],
        ["shop-assets", "assets", "ReadWrite", "shop-assets", "shop", "True"]
    );
    let app_secret =
        kubectl.ok(&["get", "secret", "shop-vcap-services", "-o", "jsonpath={.data.VCAP_SERVICES}"]).await;
    assert!(!app_secret.trim().is_empty(), "the app Secret of the two-bucket example exists");

    // `-o wide` adds the priority-1 columns.
    let wide = kubectl.ok(&["get", "bkt", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "BUCKET",
            "CLASS",
            "PUBLIC",
            "BINDINGS",
            "READY",
            "AGE",
            "REASON",
            "REGION",
            "DELETION",
            "VERSIONING"
        ]
    );
    assert_eq!(row(&wide, "assets")[7..], ["Provisioned", "eu-west-2", "Delete"]);
    let wide = kubectl.ok(&["get", "bkb", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "BUCKET",
            "PERMISSIONS",
            "SECRET",
            "APP",
            "READY",
            "AGE",
            "REASON",
            "EXTERNAL",
            "USER",
            "SERVICEACCOUNT"
        ]
    );
    // reporting has no app: its APP cell is empty, so its row is one word shorter.
    assert_eq!(row(&wide, "reporting")[6..8], ["Provisioned", "false"]);
    assert_eq!(row(&wide, "shop-assets")[4..6], ["shop", "True"]);

    // `describe` shows the controller's events (written through events.k8s.io, read through core v1).
    let described = kubectl.ok(&["describe", "bucket", "assets"]).await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(!events.trim_start().starts_with("<none>"), "{described}");
    assert!(events.contains("BucketCreated") && events.contains(&bucket_name), "{described}");

    // Unbinding: kubectl returns once the controller has revoked the credentials and the Secret is gone.
    kubectl.ok(&["delete", "--wait", "--timeout=60s", "bucketbinding/reporting"]).await;
    assert!(env.api::<BucketBinding>().get_opt("reporting").await.expect("get").is_none());
    env.wait_gone::<Secret>("reporting-s3").await;
    let left = kubectl.ok(&["get", "bkb", "-o", "name"]).await;
    assert_eq!(
        left.trim().lines().collect::<Vec<_>>(),
        [
            "bucketbinding.bucketbroker.io/shop-assets",
            "bucketbinding.bucketbroker.io/shop-reports",
            "bucketbinding.bucketbroker.io/web-app"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explains_every_kind_from_the_served_schema() {
    let env = TestEnv::new().await;
    let kubectl = Kubectl::new(&env);
    for (resource, kind, field) in [
        ("bucket.spec", "Bucket", "deletionPolicy"),
        ("bucketbinding.spec.bucketRef", "BucketBinding", "name"),
        ("bucketservicekey.spec", "BucketServiceKey", "allowExternalAccess"),
        ("bkt.status", "Bucket", "publicUrl"),
        ("bucket.spec", "Bucket", "className"),
        ("bkc.spec.lifecycle", "BucketClass", "maxObjectExpirationDays"),
    ] {
        let explained = kubectl.ok(&["explain", resource]).await;
        assert!(explained.contains(&format!("KIND:       {kind}")), "{explained}");
        assert!(explained.contains("GROUP:      bucketbroker.io"), "{explained}");
        assert!(explained.contains(field), "{resource} documents {field}: {explained}");
    }
    let top = kubectl.ok(&["explain", "bucketbindings"]).await;
    assert!(top.contains("VCAP_SERVICES"), "the kind's own description: {top}");
    // Every field of a class is documented in sentences, for the platform team writing one.
    let class = kubectl.ok(&["explain", "bucketclass.spec"]).await;
    for field in [
        "region",
        "encryption",
        "versioning",
        "lifecycle",
        "allowPublic",
        "allowCORS",
        "allowExternalAccess",
        "deletionPolicy",
        "allowedDeletionPolicies",
        "tags",
        "namespaceSelector",
    ] {
        let at =
            class.find(&format!("\n  {field}\t")).unwrap_or_else(|| panic!("{field} is listed: {class}"));
        let description = class[at..]
            .lines()
            .skip(2)
            .map(str::trim)
            .find(|line| !line.starts_with("enum:"))
            .unwrap_or_default();
        assert!(
            description.len() > 20 && description.chars().next().is_some_and(char::is_uppercase),
            "{field}: {description:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_immutable_field_is_refused_with_the_crd_rule_message() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    let kubectl = Kubectl::new(&env);
    kubectl
        .ok(&["apply", "-f", "examples/bucket-private.yaml", "-f", "examples/binding-readonly.yaml"])
        .await;

    // Through kubectl, as a user would try it: the refusal names the field and says what to do.
    let out = kubectl
        .run(&[
            "patch",
            "bkb",
            "reporting",
            "--type=merge",
            "-p",
            r#"{"spec":{"bucketRef":{"name":"other"}}}"#,
        ])
        .await;
    assert!(!out.success);
    assert!(out.stderr.contains("spec.bucketRef: Invalid value"), "{}", out.stderr);
    assert!(out.stderr.contains("delete and re-create the object to change it"), "{}", out.stderr);
    let out = kubectl
        .run(&["patch", "bkb", "reporting", "--type=merge", "-p", r#"{"spec":{"secretName":"elsewhere"}}"#])
        .await;
    assert!(out.stderr.contains("spec.secretName: Invalid value"), "{}", out.stderr);
    assert!(out.stderr.contains("spec.secretName is immutable"), "{}", out.stderr);

    // Through the kube client: a 422 with the CEL message on the field.
    let change = Patch::Merge(json!({"spec": {"bucketRef": {"name": "other"}}}));
    let err = env.api::<BucketBinding>().patch("reporting", &PatchParams::default(), &change).await;
    let Err(kube::Error::Api(status)) = err else { panic!("the change is refused: {err:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains(
            "spec.bucketRef: Invalid value: \"object\": spec.bucketRef is immutable: delete and re-create \
             the object to change it"
        ),
        "{}",
        status.message
    );

    // A mutable field still changes, and the rule left bucketRef as it was.
    kubectl
        .ok(&["patch", "bkb", "reporting", "--type=merge", "-p", r#"{"spec":{"permissions":"ReadWrite"}}"#])
        .await;
    let binding = env.api::<BucketBinding>().get("reporting").await.expect("binding");
    assert_eq!(binding.spec.bucket_ref.name, "assets");

    // A GitOps tool pinning the defaults in effect: the Bucket's region as the controller resolved it, a
    // binding's Secret name as its own name. `kubectl apply` of the pinned manifests is accepted.
    let bucket = env
        .wait_for::<Bucket>("assets", "a region in effect", |b| {
            b.status.as_ref().is_some_and(|s| s.region.is_some())
        })
        .await;
    let region = bucket.status.and_then(|s| s.region).unwrap_or_default();
    let manifest = |name: &str, text: String| {
        let path = kubectl.dir.join(name);
        std::fs::write(&path, text).expect("manifest");
        path.to_string_lossy().into_owned()
    };
    let bucket_with = |region: &str| {
        format!(
            "apiVersion: bucketbroker.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: assets\nspec:\n  public: \
             false\n  deletionPolicy: Delete\n  region: {region}\n"
        )
    };
    let binding_with = |secret: Option<&str>| {
        let secret = secret.map(|s| format!("  secretName: {s}\n")).unwrap_or_default();
        format!(
            "apiVersion: bucketbroker.io/v1alpha1\nkind: BucketBinding\nmetadata:\n  name: app\nspec:\n  \
             bucketRef:\n    name: assets\n{secret}"
        )
    };
    let pinned = manifest("bucket-pinned.yaml", bucket_with(&region));
    kubectl.ok(&["apply", "-f", &pinned]).await;
    let elsewhere = if region == "eu-west-1" { "eu-west-2" } else { "eu-west-1" };
    let moved = manifest("bucket-moved.yaml", bucket_with(elsewhere));
    let out = kubectl.run(&["apply", "-f", &moved]).await;
    assert!(!out.success && out.stderr.contains("spec.region: Invalid value"), "{}", out.stderr);
    assert!(out.stderr.contains("delete and re-create the object to change it"), "{}", out.stderr);
    let unpinned =
        manifest("bucket-unpinned.yaml", bucket_with(&region).replace(&format!("  region: {region}\n"), ""));
    kubectl.ok(&["apply", "-f", &unpinned]).await;

    kubectl.ok(&["apply", "-f", &manifest("app.yaml", binding_with(None))]).await;
    kubectl.ok(&["apply", "-f", &manifest("app-pinned.yaml", binding_with(Some("app")))]).await;
    let out = kubectl.run(&["apply", "-f", &manifest("app-moved.yaml", binding_with(Some("app-s3")))]).await;
    assert!(!out.success && out.stderr.contains("spec.secretName: Invalid value"), "{}", out.stderr);
    let app = env.api::<BucketBinding>().get("app").await.expect("binding");
    assert_eq!(app.spec.access.secret_name.as_deref(), Some("app"), "the pin was kept, the move refused");
}

/// The events `kubectl describe` prints for `object`, oldest first: (reason, message) per line. kubectl
/// separates the columns by two spaces or more, and a message has single spaces only.
async fn described_events(kubectl: &Kubectl, object: &str) -> (String, Vec<(String, String)>) {
    let described = kubectl.ok(&["describe", object]).await;
    let section = described.split("\nEvents:").nth(1).unwrap_or_default();
    let events = section
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>())
        .filter(|cells| cells.len() == 5 && ["Normal", "Warning"].contains(&cells[0]))
        .map(|cells| (cells[1].to_owned(), cells[4].to_owned()))
        .collect();
    (described, events)
}

/// The messages of the events with `reason`.
fn messages<'a>(events: &'a [(String, String)], reason: &str) -> Vec<&'a str> {
    events.iter().filter(|(r, _)| r == reason).map(|(_, m)| m.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_tells_what_each_lifecycle_step_did() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    let kubectl = Kubectl::new(&env);
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.create::<BucketBinding>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
        "metadata": {"name": "app"},
        "spec": {"bucketRef": {"name": "data"}, "permissions": "ReadOnly", "keyRotation": {"overlap": "3s"}}}))
    .await;
    let ready = |key: Option<String>| {
        move |b: &BucketBinding| {
            let status = b.status.as_ref();
            status.is_some_and(|s| {
                s.observed_generation == b.metadata.generation
                    && s.access_key_id.is_some()
                    && s.access_key_id != key
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }
    };
    let created = env.wait_for::<BucketBinding>("app", "ready", ready(None)).await;
    let status = created.status.clone().unwrap_or_default();
    let (first_key, user) = (status.access_key_id.unwrap_or_default(), status.user_name.unwrap_or_default());

    // Created: one event per step, each saying what it did to which object.
    let (described, events) = described_events(&kubectl, "bkb/app").await;
    println!("--- after create:\n{described}");
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["UserCreated", "AccessGranted", "KeyIssued", "SecretCreated"], "{described}");
    assert_eq!(messages(&events, "UserCreated"), [format!("Created IAM user {user}.")]);
    assert!(messages(&events, "AccessGranted")[0].contains("ReadOnly access to bucket"), "{described}");
    assert_eq!(
        messages(&events, "KeyIssued"),
        [format!("Issued access key {first_key} for IAM user {user}.")]
    );
    assert_eq!(
        messages(&events, "SecretCreated"),
        [format!("Created Secret app with access key {first_key}.")]
    );

    // Rotated: the rotation, and nothing else; after the overlap, the old key's retirement.
    let rotate = Patch::Merge(json!({"metadata": {"annotations": {"bucketbroker.io/rotate": "1"}}}));
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate).await.expect("rotate");
    let rotated = env.wait_for::<BucketBinding>("app", "rotated", ready(Some(first_key.clone()))).await;
    let second_key = rotated.status.and_then(|s| s.access_key_id).unwrap_or_default();
    env.wait_for::<BucketBinding>("app", "old key retired", |b| {
        b.status.as_ref().is_some_and(|s| s.access_keys.len() == 1)
    })
    .await;
    let (described, events) = described_events(&kubectl, "bkb/app").await;
    println!("--- after rotate:\n{described}");
    let rotation = messages(&events, "KeyRotated");
    assert_eq!(rotation.len(), 1, "{described}");
    assert!(
        rotation[0].starts_with(&format!(
            "Rotated access key {first_key} of IAM user {user} as annotation bucketbroker.io/rotate asked: \
             Secret app now holds the new key {second_key}; {first_key} keeps working until "
        )),
        "{described}"
    );
    assert_eq!(
        messages(&events, "KeyRetired"),
        [format!(
            "Deleted access key {first_key} of IAM user {user}: its overlap after the rotation has ended."
        )]
    );
    assert_eq!(
        messages(&events, "KeyIssued").len(),
        1,
        "a rotation is not reported as a new key: {described}"
    );
    assert!(!described.contains("(x2"), "no step is merged with another: {described}");

    // Permissions changed: the policy, and no key.
    let change = Patch::Merge(json!({"spec": {"permissions": "ReadWrite"}}));
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &change).await.expect("patch");
    env.wait_for::<BucketBinding>("app", "ReadWrite", |b| {
        b.status.as_ref().is_some_and(|s| s.observed_generation == b.metadata.generation)
    })
    .await;
    let (described, events) = described_events(&kubectl, "bkb/app").await;
    println!("--- after the permission change:\n{described}");
    let updated = messages(&events, "PolicyUpdated");
    assert_eq!(updated.len(), 1, "{described}");
    assert!(
        updated[0].starts_with(&format!(
            "Updated the access policy of IAM user {user}: it now grants ReadWrite access to bucket "
        )),
        "{described}"
    );
    assert_eq!(events.len(), 7, "nothing else happened: {described}");

    // The Secret deleted: a new key (the old one's secret is gone with it) and the Secret restored.
    env.delete::<Secret>("app").await;
    let restored = env.wait_for::<BucketBinding>("app", "restored", ready(Some(second_key.clone()))).await;
    let third_key = restored.status.and_then(|s| s.access_key_id).unwrap_or_default();
    let (described, events) = described_events(&kubectl, "bkb/app").await;
    println!("--- after the Secret was deleted:\n{described}");
    assert_eq!(
        messages(&events, "KeyIssued")[1..],
        [format!(
            "Issued access key {third_key} for IAM user {user}: Secret app was missing, and with it the \
             previous key's secret."
        )],
        "{described}"
    );
    assert_eq!(
        messages(&events, "KeyDeleted"),
        [format!("Deleted access key {second_key} of IAM user {user}: no Secret holds it.")],
        "{described}"
    );
    assert_eq!(
        messages(&events, "SecretRestored"),
        [format!("Re-created Secret app with access key {third_key}: it had been deleted.")],
        "{described}"
    );
    assert!(events.iter().all(|(r, _)| r != "Provisioned"), "no catch-all event: {described}");
}
