//! BucketClasses: what platform teams allow a bucket to be, and what happens to what a class forbids.
//!
//! Classes are cluster-scoped, and a real cluster is shared by the tests running at once: every class here
//! has a name of its own test's, and none is the default (that would change every other test's Buckets).
//! The hostile class cases (a class outside the Bucket's namespaces, a class deleted while in use, a
//! tenant writing a class) are rows of `hostile.rs`'s table, built with the helpers here.

use std::sync::Arc;
use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, BucketClass, find_condition};
use bucket_broker::aws::iam;
use bucket_broker::aws::s3::BucketOps;
use bucket_broker::controller::{Context, Settings};
use bucket_broker::desired::{class::BUILT_IN, names};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::credentials::{credential, ready_binding};
use crate::harness::{TestEnv, unique_name};

fn bucket(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": spec})
}

fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String)> {
    find_condition(conditions, "Ready").map(|c| (c.reason.clone(), c.message.clone()))
}

fn bucket_ready(b: &Bucket) -> Option<(String, String)> {
    ready(&b.status.as_ref()?.conditions)
}

/// A class of this test's own, named `<prefix>-<random>`: see [`create_class`].
pub(crate) async fn make_class(env: &TestEnv, prefix: &str, spec: Value) -> String {
    let name = unique_name(prefix);
    create_class(env, &name, spec).await;
    name
}

/// Creates the class `name`: labelled as a test's, so that a run's leftovers can be found, and never the
/// default. The test deletes it at its end with [`delete_classes`].
pub(crate) async fn create_class(env: &TestEnv, name: &str, spec: Value) {
    let class: BucketClass = serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketClass",
        "metadata": {"name": name, "labels": {"bucketbroker.io/test": "true"}},
        "spec": spec,
    }))
    .expect("a BucketClass");
    Api::<BucketClass>::all(env.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class created");
}

async fn patch_class(env: &TestEnv, name: &str, spec: Value) {
    let patch = Patch::Merge(json!({"spec": spec}));
    Api::<BucketClass>::all(env.client.clone())
        .patch(name, &PatchParams::default(), &patch)
        .await
        .expect("class patched");
}

pub(crate) async fn delete_classes(env: &TestEnv, names: &[&str]) {
    let api = Api::<BucketClass>::all(env.client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
}

/// Whether the AWS bucket of the Bucket `name` exists (its name derives from the Bucket's uid).
pub(crate) async fn aws_bucket_exists(env: &TestEnv, name: &str) -> bool {
    let uid = env.api::<Bucket>().get(name).await.expect("Bucket").metadata.uid.expect("uid");
    let bucket = names::bucket_name(&env.settings().bucket_prefix, &uid);
    let ops =
        BucketOps { client: env.admin.s3.clone(), stats: &env.admin.stats, bucket: &bucket, owner: None };
    ops.exists().await.expect("HeadBucket")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_gets_its_class_and_what_the_class_forbids_or_lacks_is_refused_without_aws_changes() {
    let mut env = TestEnv::new().await;
    let strict = make_class(
        &env,
        "strict",
        json!({"region": "eu-west-2", "tags": {"cost-centre": "42"},
               "deletionPolicy": "Retain", "allowedDeletionPolicies": ["Retain"]}),
    )
    .await;
    start_controller_for_classes(&mut env).await;
    env.create::<Bucket>(bucket("kept", json!({"className": strict}))).await;
    env.create::<Bucket>(bucket("public", json!({"className": strict, "public": true}))).await;
    env.create::<Bucket>(bucket("elsewhere", json!({"className": strict, "region": "us-east-1"}))).await;
    let missing = unique_name("gold");
    env.create::<Bucket>(bucket("missing", json!({"className": missing}))).await;
    env.create::<Bucket>(bucket("plain", json!({}))).await;

    let kept = env
        .wait_for::<Bucket>("kept", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    let status = kept.status.as_ref().expect("status");
    assert_eq!(status.class.as_deref(), Some(strict.as_str()));
    let (_, message) = bucket_ready(&kept).expect("Ready");
    assert!(message.contains(&format!("class {strict}")), "{message}");
    let tags = BucketOps {
        client: env.admin.s3.clone(),
        stats: &env.admin.stats,
        bucket: status.bucket_name.as_deref().expect("name"),
        owner: None,
    }
    .tags()
    .await
    .expect("tags")
    .expect("the bucket");
    assert!(tags.contains(&("cost-centre".to_owned(), "42".to_owned())), "the class's tags: {tags:?}");
    // ... and on the IAM user of a binding to it.
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "kept"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user");
    let found = bucket_broker::aws::iam::UserOps {
        client: env.admin.iam.clone(),
        stats: &env.admin.stats,
        user: &user,
    }
    .get()
    .await
    .expect("user read")
    .expect("the user");
    assert!(
        found.tags.contains(&("cost-centre".to_owned(), "42".to_owned())),
        "the class's tags: {:?}",
        found.tags
    );
    env.delete::<BucketBinding>("app").await;
    let plain = env
        .wait_for::<Bucket>("plain", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    assert_eq!(
        plain.status.and_then(|s| s.class).as_deref(),
        Some(BUILT_IN),
        "no default class: the built-in one"
    );

    for (name, field) in [("public", "spec.public"), ("elsewhere", "spec.region")] {
        let refused = env
            .wait_for::<Bucket>(name, "ClassForbids", |b| {
                bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
            })
            .await;
        let (_, message) = bucket_ready(&refused).expect("Ready");
        assert!(message.starts_with(&format!("{field}: the BucketClass {strict}")), "{message}");
        let stalled = refused.status.as_ref().and_then(|s| find_condition(&s.conditions, "Stalled"));
        assert!(stalled.is_some_and(|c| c.status == "True"), "a person must act");
        assert!(!aws_bucket_exists(&env, name).await, "{name}: nothing was created in AWS");
    }
    let refused = env
        .wait_for::<Bucket>("missing", "ClassNotFound", |b| {
            bucket_ready(b).is_some_and(|(r, _)| r == "ClassNotFound")
        })
        .await;
    assert!(bucket_ready(&refused).is_some_and(|(_, m)| m.contains(&missing)), "{refused:?}");
    assert!(!aws_bucket_exists(&env, "missing").await);

    // The missing class appears: its Bucket goes on by itself.
    create_class(&env, &missing, json!({})).await;
    env.wait_for::<Bucket>("missing", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;

    // The class's deletion policy applies to a Bucket that sets none: its bucket is kept, released.
    let name = status.bucket_name.clone().expect("name");
    env.delete::<Bucket>("kept").await;
    env.wait_gone::<Bucket>("kept").await;
    let ops = BucketOps { client: env.admin.s3.clone(), stats: &env.admin.stats, bucket: &name, owner: None };
    let tags = ops.tags().await.expect("tags").expect("the class retains its buckets");
    assert!(tags.iter().any(|(k, _)| k == names::tag::RELEASED), "{tags:?}");
    delete_classes(&env, &[&strict, &missing]).await;
}

/// A binding of a Bucket that is not Ready (its class now forbids what it asks) while its bucket exists in
/// AWS keeps what protects it: a downgrade reaches the existing user's policy, and the message says the
/// credentials keep working; a new binding of that Bucket gets no user and no Secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_binding_of_a_bucket_that_is_not_ready_is_still_downgraded_and_no_new_one_is_issued() {
    use crate::credentials::{bucket_of, can_get, can_put, client_from, secret};
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let class = make_class(&env, "open", json!({"allowPublic": true})).await;
    start_controller_for_classes(&mut env).await;
    env.create::<Bucket>(bucket("site", json!({"className": class, "public": true}))).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "web",
        json!({"bucketRef": {"name": "site"}, "permissions": "ReadWrite"}),
    ))
    .await;
    ready_binding(&env, "web").await;
    let issued = secret(&env, "web").await;
    let (name, client) = (bucket_of(&issued), client_from(&env, &issued).await);
    assert!(can_put(&client, &name, "before.txt").await);

    // The class no longer allows public buckets: the Bucket is not Ready, its bucket stays in AWS.
    patch_class(&env, &class, json!({"allowPublic": false})).await;
    env.wait_for::<Bucket>("site", "ClassForbids", |b| {
        bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
    })
    .await;
    let waiting = env
        .wait_for::<BucketBinding>("web", "BucketNotReady", |b| {
            b.status.as_ref().and_then(|s| ready(&s.conditions)).is_some_and(|(r, _)| r == "BucketNotReady")
        })
        .await;
    let (_, message) = waiting.status.as_ref().and_then(|s| ready(&s.conditions)).expect("Ready");
    assert!(message.contains("keep working"), "{message}");

    env.api::<BucketBinding>()
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})))
        .await
        .expect("downgrade");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while can_put(&client, &name, "downgraded.txt").await {
        assert!(tokio::time::Instant::now() < deadline, "the downgrade never reached IAM");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(can_get(&client, &name, "before.txt").await, "ReadOnly still reads, with the same key");
    assert_eq!(secret(&env, "web").await.data, issued.data, "the Secret is unchanged");

    let late = env
        .create::<BucketBinding>(credential("BucketBinding", "late", json!({"bucketRef": {"name": "site"}})))
        .await;
    env.wait_for::<BucketBinding>("late", "BucketNotReady", |b| {
        b.status.as_ref().and_then(|s| ready(&s.conditions)).is_some_and(|(r, _)| r == "BucketNotReady")
    })
    .await;
    let late_user = format!("{}{}", env.settings().user_prefix, late.metadata.uid.as_deref().expect("uid"));
    assert!(env.admin.iam.get_user().user_name(&late_user).send().await.is_err(), "no user for it");
    assert!(env.api::<k8s_openapi::api::core::v1::Secret>().get_opt("late").await.expect("get").is_none());
    delete_classes(&env, &[&class]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_class_that_stops_allowing_public_makes_its_public_buckets_private_and_says_so() {
    let mut env = TestEnv::new().await;
    let class = make_class(&env, "assets", json!({"allowPublic": true})).await;
    start_controller_for_classes(&mut env).await;
    env.create::<Bucket>(bucket("site", json!({"className": class, "public": true}))).await;
    let site = env
        .wait_for::<Bucket>("site", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    let name = site.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("name");
    assert!(site.status.as_ref().is_some_and(|s| s.public_url.is_some()));
    let s3 = &env.admin.s3;
    assert!(s3.get_bucket_policy().bucket(&name).send().await.is_ok(), "a public policy");

    patch_class(&env, &class, json!({"allowPublic": false})).await;
    let tightened = env
        .wait_for::<Bucket>("site", "ClassForbids", |b| {
            bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
        })
        .await;
    let (_, message) = bucket_ready(&tightened).expect("Ready");
    assert!(message.contains("kept private"), "{message}");
    assert_eq!(tightened.status.as_ref().and_then(|s| s.public_url.clone()), None);
    assert!(s3.get_bucket_policy().bucket(&name).send().await.is_err(), "the public policy is gone");
    let block = s3.get_public_access_block().bucket(&name).send().await.expect("a block");
    let block = block.public_access_block_configuration.expect("configuration");
    assert_eq!((block.block_public_policy, block.restrict_public_buckets), (Some(true), Some(true)));

    // Made private by its owner too, it is Ready again.
    env.api::<Bucket>()
        .patch("site", &PatchParams::default(), &Patch::Merge(json!({"spec": {"public": false}})))
        .await
        .expect("patched");
    env.wait_for::<Bucket>("site", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    delete_classes(&env, &[&class]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn external_access_is_what_the_class_allows_and_no_key_is_issued_for_more() {
    let mut env = TestEnv::new().await;
    let class = make_class(&env, "internal", json!({})).await;
    start_controller_for_classes(&mut env).await;
    env.create::<Bucket>(bucket("data", json!({"className": class}))).await;
    env.wait_for::<Bucket>("data", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "laptop",
        json!({"bucketRef": {"name": "data"}, "allowExternalAccess": true}),
    ))
    .await;
    let refused = env
        .wait_for::<BucketBinding>("laptop", "ClassForbids", |b| {
            b.status.as_ref().and_then(|s| ready(&s.conditions)).is_some_and(|(r, _)| r == "ClassForbids")
        })
        .await;
    let message =
        refused.status.as_ref().and_then(|s| ready(&s.conditions)).map(|(_, m)| m).unwrap_or_default();
    assert!(message.starts_with(&format!("spec.allowExternalAccess: the BucketClass {class}")), "{message}");
    let users =
        iam::list_users(&env.admin.iam, &env.admin.stats, &env.settings().iam_path).await.expect("users");
    assert!(users.is_empty(), "no IAM user, no key: {users:?}");

    patch_class(&env, &class, json!({"allowExternalAccess": true})).await;
    let binding = ready_binding(&env, "laptop").await;
    let network = binding.status.as_ref().and_then(|s| find_condition(&s.conditions, "NetworkRestricted"));
    assert_eq!(network.map(|c| c.reason.as_str()), Some("ExternalAccessAllowed"));
    delete_classes(&env, &[&class]).await;
}

/// Starts the controller with its S3 calls through `features::versioning_readable`, and returns its context
/// and an administrator's S3 client through the same front. Every pass over a bucket of a class made by
/// hand reads its versioning (a class that keeps its buckets unversioned suspends one found versioned), and
/// moto 5.2.5 answers that read with an XML root the SDK refuses: the front fixes the root.
pub(crate) async fn start_controller_for_classes(env: &mut TestEnv) -> (Arc<Context>, aws_sdk_s3::Client) {
    let settings = env.settings();
    start_controller_for_classes_with(env, settings).await
}

/// [`start_controller_for_classes`] with `settings`.
async fn start_controller_for_classes_with(
    env: &mut TestEnv,
    settings: Settings,
) -> (Arc<Context>, aws_sdk_s3::Client) {
    let front = crate::features::versioning_readable(env.moto.endpoint_url()).await;
    let mut aws = env.moto.aws(env.moto.admin_credentials()).await;
    aws.s3 = aws_sdk_s3::Client::from_conf(aws.s3.config().to_builder().endpoint_url(&front).build());
    let ctx = env.start_controller_on(settings, aws);
    let admin =
        aws_sdk_s3::Client::from_conf(env.admin.s3.config().to_builder().endpoint_url(&front).build());
    (ctx, admin)
}

/// Settings with a resync every second, for the tests that watch a few resyncs write nothing.
fn resync_every_second(env: &TestEnv) -> Settings {
    Settings { resync_interval: Duration::from_secs(1), ..env.settings() }
}

/// Waits for a resync to be due, then checks that the next few (one a second) write nothing to AWS.
pub(crate) async fn assert_steady(ctx: &Context) {
    tokio::time::sleep(Duration::from_millis(800)).await;
    let writes = ctx.aws.stats.writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        ctx.aws.stats.writes(),
        writes,
        "no AWS write in steady state: {:?}",
        ctx.aws.stats.snapshot()
    );
}

/// A class with the platform's KMS key, versioning and lifecycle rules: its buckets get all three, its
/// credentials exactly that key, and a resync writes nothing. (moto's versioning answers go through the
/// tests' fixing front, `features::versioning_readable`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_versioned_kms_class_gives_its_buckets_the_platform_key_versioning_and_lifecycle() {
    let mut env = TestEnv::new().await;
    let key = crate::features::create_kms_key(env.moto.endpoint_url()).await;
    let class = make_class(
        &env,
        "versioned-kms",
        json!({"encryption": {"type": "SSE-KMS", "kmsKeyArn": key},
               "versioning": "Enabled",
               "lifecycle": {"noncurrentVersionExpirationDays": 30, "maxObjectExpirationDays": 90}}),
    )
    .await;
    let settings = resync_every_second(&env);
    let (ctx, admin) = start_controller_for_classes_with(&mut env, settings).await;
    env.create::<Bucket>(bucket("data", json!({"className": class, "expireObjectsAfterDays": 60}))).await;
    env.create::<Bucket>(bucket("forever", json!({"className": class, "expireObjectsAfterDays": 120}))).await;
    env.create::<Bucket>(bucket("unversioned", json!({"className": class, "versioning": "Suspended"}))).await;

    let data = env
        .wait_for::<Bucket>("data", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    let status = data.status.clone().expect("status");
    assert_eq!(status.versioning.as_deref(), Some("Enabled"));
    assert!(bucket_ready(&data).is_some_and(|(_, m)| m.contains("SSE-KMS with the class's key")), "{data:?}");
    let name = status.bucket_name.expect("name");
    let versioning = admin.get_bucket_versioning().bucket(&name).send().await.expect("versioning");
    assert_eq!(versioning.status.map(|s| s.as_str().to_owned()).as_deref(), Some("Enabled"));
    let encryption = admin.get_bucket_encryption().bucket(&name).send().await.expect("encryption");
    let rule = encryption.server_side_encryption_configuration.expect("configuration").rules.remove(0);
    let by_default = rule.apply_server_side_encryption_by_default.expect("default encryption");
    assert_eq!(by_default.sse_algorithm.as_str(), "aws:kms");
    assert_eq!(by_default.kms_master_key_id.as_deref(), Some(key.as_str()));
    let rules =
        admin.get_bucket_lifecycle_configuration().bucket(&name).send().await.expect("lifecycle").rules;
    let ids: Vec<&str> = rules.iter().flatten().filter_map(|r| r.id.as_deref()).collect();
    for id in [
        "bucket-broker-noncurrent-version-expiration",
        "bucket-broker-abort-incomplete-multipart-upload",
        "bucket-broker-expire-objects",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    for (name, field) in [("forever", "spec.expireObjectsAfterDays"), ("unversioned", "spec.versioning")] {
        let refused = env
            .wait_for::<Bucket>(name, "ClassForbids", |b| {
                bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
            })
            .await;
        assert!(bucket_ready(&refused).is_some_and(|(_, m)| m.starts_with(field)), "{refused:?}");
    }

    // The binding's key may use exactly the class's key, and works.
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user");
    let policy = env
        .admin
        .iam
        .get_user_policy()
        .user_name(&user)
        .policy_name(iam::POLICY_NAME)
        .send()
        .await
        .expect("policy");
    let document = urlencoding_decode(&policy.policy_document);
    let document: Value = serde_json::from_str(&document).expect("JSON");
    let kms: Vec<&Value> = document["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .filter(|s| s["Sid"] == "BucketKey")
        .collect();
    assert_eq!(kms.len(), 1, "{document}");
    assert_eq!(kms[0]["Resource"], json!(key));
    let secret = crate::credentials::secret(&env, "app").await;
    let credentials = crate::credentials::client_from(&env, &secret).await;
    let bucket = crate::credentials::bucket_of(&secret);
    assert!(crate::credentials::can_put(&credentials, &bucket, "a.txt").await);
    assert!(crate::credentials::can_get(&credentials, &bucket, "a.txt").await);

    // Steady: resyncs every second read, and write nothing.
    assert_steady(&ctx).await;
    delete_classes(&env, &[&class]).await;
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_rules_are_the_buckets_own_where_the_class_allows_them() {
    let mut env = TestEnv::new().await;
    let web = make_class(&env, "web", json!({"allowCORS": true})).await;
    let plain = make_class(&env, "plain", json!({})).await;
    start_controller_for_classes(&mut env).await;
    let rule = json!([{"allowedOrigins": ["https://shop.example.com"], "allowedMethods": ["GET", "PUT"], "maxAgeSeconds": 600}]);
    env.create::<Bucket>(bucket("site", json!({"className": web, "cors": rule}))).await;
    env.create::<Bucket>(bucket("refused", json!({"className": plain, "cors": rule}))).await;
    let site = env
        .wait_for::<Bucket>("site", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    let name = site.status.and_then(|s| s.bucket_name).expect("name");
    let cors = env.admin.s3.get_bucket_cors().bucket(&name).send().await.expect("CORS");
    let rules = cors.cors_rules.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].allowed_origins, ["https://shop.example.com"]);
    let refused = env
        .wait_for::<Bucket>("refused", "ClassForbids", |b| {
            bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
        })
        .await;
    assert!(bucket_ready(&refused).is_some_and(|(_, m)| m.starts_with("spec.cors")), "{refused:?}");

    // Rules removed from the spec are removed from the bucket.
    env.api::<Bucket>()
        .patch("site", &PatchParams::default(), &Patch::Merge(json!({"spec": {"cors": null}})))
        .await
        .expect("patched");
    let mut gone = false;
    for _ in 0..100 {
        if env.admin.s3.get_bucket_cors().bucket(&name).send().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the CORS configuration is deleted with the spec's last rule");
    delete_classes(&env, &[&web, &plain]).await;
}

/// Tightening never leaves a bucket looser than its class, for CORS and versioning too: a class that stops
/// allowing CORS takes its buckets' rules away, and one that turns `TenantChoice` into `Disabled` suspends
/// the versioning a tenant had enabled (S3 cannot turn it off); events say so. A bucket that has neither is
/// not written, and rules an app puts on a bucket of such a class are removed at its next pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_class_that_stops_allowing_cors_and_versioning_removes_the_rules_and_suspends_versioning() {
    use aws_sdk_s3::types::BucketVersioningStatus;
    let mut env = TestEnv::new().await;
    let class = make_class(&env, "tightened", json!({"allowCORS": true, "versioning": "TenantChoice"})).await;
    let settings = resync_every_second(&env);
    let (ctx, admin) = start_controller_for_classes_with(&mut env, settings).await;
    let rule = json!([{"allowedOrigins": ["https://shop.example.com"], "allowedMethods": ["GET"]}]);
    env.create::<Bucket>(bucket("site", json!({"className": class, "cors": rule, "versioning": "Enabled"})))
        .await;
    env.create::<Bucket>(bucket("quiet", json!({"className": class}))).await;
    let mut names = Vec::new();
    for name in ["site", "quiet"] {
        let ready = env
            .wait_for::<Bucket>(name, "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
            .await;
        names.push(ready.status.and_then(|s| s.bucket_name).expect("name"));
    }
    let (site, quiet) = (&names[0], &names[1]);
    assert_eq!(versioning_of(&admin, site).await, Some(BucketVersioningStatus::Enabled));
    assert_eq!(cors_rules_of(&admin, site).await, 1);

    patch_class(&env, &class, json!({"allowCORS": false, "versioning": "Disabled"})).await;
    // The pass that refuses what the spec still asks has already taken it away.
    let refused = env
        .wait_for::<Bucket>("site", "ClassForbids", |b| {
            bucket_ready(b).is_some_and(|(r, _)| r == "ClassForbids")
        })
        .await;
    assert!(bucket_ready(&refused).is_some_and(|(_, m)| m.starts_with("spec.versioning")), "{refused:?}");
    assert_eq!(refused.status.as_ref().and_then(|s| s.versioning.clone()), None, "VERSIONING shows none");
    assert_eq!(cors_rules_of(&admin, site).await, 0, "the CORS rules are removed");
    assert_eq!(versioning_of(&admin, site).await, Some(BucketVersioningStatus::Suspended));
    let removed =
        format!("Removed the CORS rules of bucket {site}: the BucketClass {class} does not allow CORS");
    event_saying(&env, "CORSRemoved", &removed).await;
    let suspended = format!(
        "Suspended versioning on bucket {site}: the BucketClass {class} keeps its buckets unversioned"
    );
    event_saying(&env, "VersioningSuspended", &suspended).await;

    // The tenant drops what the class no longer allows: the condition names the next field, then none.
    let drop_field = |field: &str| Patch::Merge(json!({"spec": {field: null}}));
    env.api::<Bucket>()
        .patch("site", &PatchParams::default(), &drop_field("versioning"))
        .await
        .expect("patched");
    let refused = env
        .wait_for::<Bucket>("site", "refused for CORS", |b| {
            bucket_ready(b).is_some_and(|(r, m)| r == "ClassForbids" && m.starts_with("spec.cors"))
        })
        .await;
    let (_, message) = bucket_ready(&refused).expect("Ready");
    assert!(message.ends_with("the bucket has none"), "{message}");
    env.api::<Bucket>().patch("site", &PatchParams::default(), &drop_field("cors")).await.expect("patched");
    env.wait_for::<Bucket>("site", "ready", |b| bucket_ready(b).is_some_and(|(r, _)| r == "Provisioned"))
        .await;
    assert_steady(&ctx).await;
    // The bucket that never had either was not written: never versioned, no CORS configuration deleted.
    assert_eq!(versioning_of(&admin, quiet).await, None, "still never versioned");
    assert_eq!(calls(&ctx, "DeleteBucketCors"), 1, "only the site's rules were deleted");
    assert_eq!(calls(&ctx, "PutBucketVersioning"), 2, "enabled and suspended on the site only");

    // Rules an app puts on a bucket of the class (its read-write credentials may) go at the next pass.
    let configuration = aws_sdk_s3::types::CorsConfiguration::builder()
        .cors_rules(
            aws_sdk_s3::types::CorsRule::builder()
                .allowed_origins("*")
                .allowed_methods("GET")
                .build()
                .expect("rule"),
        )
        .build()
        .expect("configuration");
    admin.put_bucket_cors().bucket(quiet).cors_configuration(configuration).send().await.expect("app's CORS");
    crate::operations::until("the app's rules removed", async || cors_rules_of(&admin, quiet).await == 0)
        .await;
    let removed =
        format!("Removed the CORS rules of bucket {quiet}: the BucketClass {class} does not allow CORS");
    event_saying(&env, "CORSRemoved", &removed).await;
    delete_classes(&env, &[&class]).await;
}

async fn versioning_of(
    admin: &aws_sdk_s3::Client,
    bucket: &str,
) -> Option<aws_sdk_s3::types::BucketVersioningStatus> {
    admin.get_bucket_versioning().bucket(bucket).send().await.expect("versioning").status
}

/// How many CORS rules the bucket has (none: S3 answers `NoSuchCORSConfiguration`).
async fn cors_rules_of(admin: &aws_sdk_s3::Client, bucket: &str) -> usize {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match admin.get_bucket_cors().bucket(bucket).send().await {
        Ok(cors) => cors.cors_rules.unwrap_or_default().len(),
        Err(err) if err.code() == Some("NoSuchCORSConfiguration") => 0,
        Err(err) => panic!("GetBucketCors: {err:?}"),
    }
}

/// How many calls of `operation` the controller made, whatever their outcome.
fn calls(ctx: &Context, operation: &str) -> u64 {
    ctx.aws.stats.snapshot().iter().filter(|((_, op, _), _)| *op == operation).map(|(_, n)| n).sum()
}

/// Waits for an event with `reason` in the test namespace whose note holds `text`.
async fn event_saying(env: &TestEnv, reason: &str, text: &str) {
    crate::operations::until(&format!("a {reason} event saying {text:?}"), async || {
        env.event_notes(reason).await.iter().any(|n| n.contains(text))
    })
    .await;
}
