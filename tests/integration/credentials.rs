//! BucketBinding and BucketServiceKey against moto enforcing IAM: what the generated credentials may and
//! may not do, the Secret formats, revocation, restoration and crash safety.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, CredentialStatus, find_condition};
use bucket_broker::aws::Aws;
use bucket_broker::local::moto::MotoOptions;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Patch, PatchParams, PostParams};
use kube_memory_apiserver::RequestMatcher;
use serde_json::{Value, json};

use crate::harness::{TestEnv, aws_for};

pub(crate) async fn env_with_bucket(buckets: &[&str]) -> TestEnv {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    env.start_controller().await;
    for name in buckets {
        env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": name}, "spec": {}}))
            .await;
    }
    for name in buckets {
        env.wait_for::<Bucket>(name, "ready", |b| {
            b.status
                .as_ref()
                .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
        })
        .await;
    }
    env
}

pub(crate) fn credential(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn ready(status: Option<&CredentialStatus>, generation: Option<i64>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation
            && find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
    })
}

pub(crate) async fn ready_binding(env: &TestEnv, name: &str) -> BucketBinding {
    env.wait_for::<BucketBinding>(name, "ready", |b| ready(b.status.as_ref(), b.metadata.generation)).await
}

pub(crate) fn value(secret: &Secret, key: &str) -> String {
    let bytes =
        &secret.data.as_ref().and_then(|d| d.get(key)).unwrap_or_else(|| panic!("Secret key {key}")).0;
    String::from_utf8(bytes.clone()).expect("utf-8")
}

pub(crate) async fn secret(env: &TestEnv, name: &str) -> Secret {
    env.api::<Secret>().get(name).await.expect("Secret")
}

pub(crate) async fn client_from(env: &TestEnv, secret: &Secret) -> Aws {
    let credentials = aws_sdk_iam::config::Credentials::new(
        value(secret, "AWS_ACCESS_KEY_ID"),
        value(secret, "AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "binding",
    );
    aws_for(&env.moto, credentials).await
}

pub(crate) fn bucket_of(secret: &Secret) -> String {
    value(secret, "BUCKET_NAME")
}

pub(crate) async fn can_put(aws: &Aws, bucket: &str, key: &str) -> bool {
    aws.s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"data")).send().await.is_ok()
}

pub(crate) async fn can_get(aws: &Aws, bucket: &str, key: &str) -> bool {
    aws.s3.get_object().bucket(bucket).key(key).send().await.is_ok()
}

pub(crate) async fn keys_of(env: &TestEnv, user: &str) -> Vec<String> {
    let keys = env.admin.iam.list_access_keys().user_name(user).send().await.expect("keys");
    keys.access_key_metadata.into_iter().filter_map(|k| k.access_key_id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_reads_and_lists_but_cannot_write_or_delete() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "reader",
        json!({"bucketRef": {"name": "data"}, "permissions": "ReadOnly"}),
    ))
    .await;
    let binding = ready_binding(&env, "reader").await;
    let secret = secret(&env, "reader").await;
    let bucket = bucket_of(&secret);
    env.admin
        .s3
        .put_object()
        .bucket(&bucket)
        .key("existing")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("seed");

    let reader = client_from(&env, &secret).await;
    assert!(can_get(&reader, &bucket, "existing").await, "GET works");
    assert!(reader.s3.list_objects_v2().bucket(&bucket).send().await.is_ok(), "LIST works");
    assert!(!can_put(&reader, &bucket, "new").await, "PUT is denied");
    assert!(
        reader.s3.delete_object().bucket(&bucket).key("existing").send().await.is_err(),
        "DELETE is denied"
    );

    let status = binding.status.as_ref().expect("status");
    assert_eq!(status.binding.as_ref().map(|b| b.name.as_str()), Some("reader"));
    let user = status.user_name.clone().expect("userName");
    assert_eq!(user, format!("bb-{}", binding.meta().uid.as_deref().expect("uid")));
    assert!(
        status.user_arn.as_deref().is_some_and(|a| a.ends_with(&format!(":user/bucket-broker/{user}"))),
        "{status:?}"
    );
    assert_eq!(status.access_key_id.as_deref(), Some(value(&secret, "AWS_ACCESS_KEY_ID").as_str()));
    let network = find_condition(&status.conditions, "NetworkRestricted").expect("NetworkRestricted");
    assert_eq!((network.status.as_str(), network.reason.as_str()), ("False", "PlatformNetworkNotConfigured"));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_write_works_fully_on_its_bucket_and_nowhere_else() {
    let env = env_with_bucket(&["mine", "theirs"]).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "writer",
        json!({"bucketRef": {"name": "mine"}}),
    ))
    .await;
    ready_binding(&env, "writer").await;
    let secret = secret(&env, "writer").await;
    let mine = bucket_of(&secret);
    let writer = client_from(&env, &secret).await;

    assert!(can_put(&writer, &mine, "a").await, "PUT works");
    assert!(can_get(&writer, &mine, "a").await, "GET works");
    assert!(writer.s3.delete_object().bucket(&mine).key("a").send().await.is_ok(), "DELETE works");

    let upload =
        writer.s3.create_multipart_upload().bucket(&mine).key("big").send().await.expect("multipart starts");
    let upload_id = upload.upload_id.expect("upload id");
    let part = writer
        .s3
        .upload_part()
        .bucket(&mine)
        .key("big")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from(vec![7u8; 1024]))
        .send()
        .await
        .expect("part uploaded");
    let completed = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).set_e_tag(part.e_tag).build())
        .build();
    writer
        .s3
        .complete_multipart_upload()
        .bucket(&mine)
        .key("big")
        .upload_id(&upload_id)
        .multipart_upload(completed)
        .send()
        .await
        .expect("multipart completes");
    assert!(can_get(&writer, &mine, "big").await);

    let theirs = env
        .api::<Bucket>()
        .get("theirs")
        .await
        .expect("bucket")
        .status
        .and_then(|s| s.bucket_name)
        .expect("name");
    env.admin
        .s3
        .put_object()
        .bucket(&theirs)
        .key("secret")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("seed");
    assert!(!can_get(&writer, &theirs, "secret").await, "another bucket cannot be read");
    assert!(!can_put(&writer, &theirs, "x").await, "another bucket cannot be written");
}

#[tokio::test(flavor = "multi_thread")]
async fn vcap_services_and_service_key_json_match_the_seed_and_work() {
    let env = env_with_bucket(&["my-bucket"]).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "my-bucket"}}),
    ))
    .await;
    env.create::<BucketServiceKey>(credential(
        "BucketServiceKey",
        "laptop",
        json!({"bucketRef": {"name": "my-bucket"}, "allowExternalAccess": true}),
    ))
    .await;
    ready_binding(&env, "app").await;
    let key = env
        .wait_for::<BucketServiceKey>("laptop", "ready", |k| ready(k.status.as_ref(), k.metadata.generation))
        .await;

    let binding_secret = secret(&env, "app").await;
    assert_eq!(binding_secret.type_.as_deref(), Some("servicebinding.io/s3"));
    assert_eq!(
        binding_secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("bucket-broker")
    );
    let owner = &binding_secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("BucketBinding", "app", Some(true))
    );

    // As a Cloud Foundry app reads it.
    let vcap: Value = serde_json::from_str(&value(&binding_secret, "VCAP_SERVICES")).expect("json");
    let entry = &vcap["aws-s3-bucket"][0];
    let credentials = &entry["credentials"];
    let fields: Vec<&String> = entry.as_object().expect("entry").keys().collect();
    assert_eq!(
        fields,
        [
            "binding_name",
            "credentials",
            "instance_name",
            "label",
            "name",
            "plan",
            "provider",
            "syslog_drain_url",
            "tags",
            "volume_mounts"
        ]
    );
    assert_eq!(
        (entry["instance_name"].as_str(), entry["name"].as_str()),
        (Some("my-bucket"), Some("my-bucket"))
    );
    assert_eq!((entry["label"].as_str(), entry["plan"].as_str()), (Some("aws-s3-bucket"), Some("default")));
    assert_eq!(entry["tags"], json!(["s3"]));
    assert_eq!(credentials["aws_region"], "eu-west-2");
    assert_eq!(credentials["deploy_env"], "test");
    let app = aws_for(
        &env.moto,
        aws_sdk_iam::config::Credentials::new(
            credentials["aws_access_key_id"].as_str().expect("id"),
            credentials["aws_secret_access_key"].as_str().expect("secret"),
            None,
            None,
            "vcap",
        ),
    )
    .await;
    let bucket = credentials["bucket_name"].as_str().expect("bucket");
    assert!(can_put(&app, bucket, "from-vcap").await, "VCAP_SERVICES credentials upload");
    let body = app
        .s3
        .get_object()
        .bucket(bucket)
        .key("from-vcap")
        .send()
        .await
        .expect("download")
        .body
        .collect()
        .await
        .expect("body");
    assert_eq!(body.into_bytes().as_ref(), b"data");
    for (flat, env_key) in [
        ("AWS_REGION", "aws_region"),
        ("BUCKET_NAME", "bucket_name"),
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ] {
        assert_eq!(value(&binding_secret, flat), credentials[env_key].as_str().expect("value"));
    }
    assert_eq!(value(&binding_secret, "AWS_DEFAULT_REGION"), "eu-west-2");
    assert_eq!(value(&binding_secret, "AWS_ENDPOINT_URL_S3"), env.moto.endpoint_url());
    assert_eq!(
        (value(&binding_secret, "type").as_str(), value(&binding_secret, "provider").as_str()),
        ("s3", "aws")
    );

    let key_secret = secret(&env, "laptop").await;
    assert_eq!(key_secret.type_.as_deref(), Some("Opaque"));
    let service_key: Value = serde_json::from_str(&value(&key_secret, "credentials.json")).expect("json");
    let fields: Vec<&String> = service_key.as_object().expect("object").keys().collect();
    assert_eq!(
        fields,
        ["aws_access_key_id", "aws_region", "aws_secret_access_key", "bucket_name", "deploy_env"]
    );
    assert_ne!(service_key["aws_access_key_id"], credentials["aws_access_key_id"], "a key of its own");
    let outside = client_from(&env, &key_secret).await;
    assert!(can_get(&outside, bucket, "from-vcap").await, "the service key works");
    let network = find_condition(&key.status.as_ref().expect("status").conditions, "NetworkRestricted")
        .expect("condition");
    assert_eq!(network.reason, "ExternalAccessAllowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn unbinding_revokes_the_key_and_keeps_the_data() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.and_then(|s| s.user_name).expect("user");
    let secret = secret(&env, "app").await;
    let bucket = bucket_of(&secret);
    let app = client_from(&env, &secret).await;
    assert!(can_put(&app, &bucket, "kept").await);

    env.delete::<BucketBinding>("app").await;
    env.wait_gone::<BucketBinding>("app").await;
    assert!(!can_get(&app, &bucket, "kept").await, "the key no longer works");
    assert!(env.admin.iam.get_user().user_name(&user).send().await.is_err(), "the IAM user is gone");
    assert!(env.api::<Secret>().get_opt("app").await.expect("get").is_none(), "the Secret is gone");
    assert!(can_get(&env.admin, &bucket, "kept").await, "the bucket and its objects stay");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_secret_is_restored_with_a_new_key_and_the_old_key_is_gone() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user");
    let old = secret(&env, "app").await;
    let old_key = value(&old, "AWS_ACCESS_KEY_ID");

    env.api::<Secret>().delete("app", &Default::default()).await.expect("deleted by hand");
    let restored = env
        .wait_for::<Secret>("app", "restored", |s| {
            s.data
                .as_ref()
                .and_then(|d| d.get("AWS_ACCESS_KEY_ID"))
                .is_some_and(|k| k.0 != old_key.as_bytes())
        })
        .await;
    let new_key = value(&restored, "AWS_ACCESS_KEY_ID");
    let binding = env
        .wait_for::<BucketBinding>("app", "ready with the new key", |b| {
            ready(b.status.as_ref(), b.metadata.generation)
                && b.status.as_ref().and_then(|s| s.access_key_id.as_deref()) == Some(new_key.as_str())
        })
        .await;
    assert!(binding.status.is_some());
    assert_eq!(keys_of(&env, &user).await, [new_key], "exactly one live key, the new one");
    assert!(
        can_put(&client_from(&env, &restored).await, &bucket_of(&restored), "x").await,
        "the new key works"
    );
    assert!(!can_put(&client_from(&env, &old).await, &bucket_of(&old), "x").await, "the old key is revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_is_never_overwritten() {
    let env = env_with_bucket(&["data"]).await;
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "taken"}, "stringData": {"mine": "yes"}}))
            .expect("secret");
    let foreign = env.api::<Secret>().create(&PostParams::default(), &foreign).await.expect("foreign Secret");
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "secretName": "taken"}),
    ))
    .await;
    env.wait_for::<BucketBinding>("app", "in conflict", |b| {
        b.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "SecretConflict" && c.status == "False")
    })
    .await;
    let after = secret(&env, "taken").await;
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "the foreign Secret is untouched"
    );
    assert_eq!(after.data, foreign.data);

    // Its owner deletes it: that deletion wakes the binding, which does not wait for its recheck (30 s,
    // doubling with each pass that finds the Secret still there).
    env.api::<Secret>().delete("taken", &Default::default()).await.expect("the owner deletes it");
    let deleted = std::time::Instant::now();
    ready_binding(&env, "app").await;
    assert!(
        deleted.elapsed() < std::time::Duration::from_secs(20),
        "woken by the deletion: {:?}",
        deleted.elapsed()
    );
    let ours = secret(&env, "taken").await;
    assert!(ours.data.is_some_and(|d| d.contains_key("VCAP_SERVICES")), "the Secret is the binding's now");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_created_before_its_bucket_becomes_ready_with_it() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    env.start_controller().await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "early",
        json!({"bucketRef": {"name": "later"}}),
    ))
    .await;
    env.wait_for::<BucketBinding>("early", "waiting", |b| {
        b.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "BucketNotReady")
    })
    .await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "later"}, "spec": {}})).await;
    ready_binding(&env, "early").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_permissions_updates_the_policy_in_place() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    ready_binding(&env, "app").await;
    let before = secret(&env, "app").await;
    let app = client_from(&env, &before).await;
    let bucket = bucket_of(&before);
    assert!(can_put(&app, &bucket, "one").await);

    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})))
        .await
        .expect("patched");
    env.wait_for::<BucketBinding>("app", "ready at generation 2", |b| {
        b.metadata.generation == Some(2) && ready(b.status.as_ref(), Some(2))
    })
    .await;
    let after = secret(&env, "app").await;
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "same key, same Secret");
    assert!(!can_put(&app, &bucket, "two").await, "the same key can no longer write");
    assert!(can_get(&app, &bucket, "one").await, "but still reads");
}

/// In-memory server only: it fails the Secret write on purpose (fault injection), which no real API
/// server can be made to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_between_key_creation_and_the_secret_write_leaves_one_key() {
    let env = env_with_bucket(&["data"]).await;
    let Some(server) = env.in_memory("fault injection") else {
        return;
    };
    // The first Secret writes fail: the new key's secret is lost with them.
    server.faults().fail_next(2, RequestMatcher::verb("create").resource("secrets"), 500);
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user");
    let secret = secret(&env, "app").await;
    assert!(server.stats().count("create", "secrets") >= 3, "the injected failures happened");
    assert_eq!(
        keys_of(&env, &user).await,
        [value(&secret, "AWS_ACCESS_KEY_ID")],
        "one key, the one in the Secret"
    );
    assert!(can_put(&client_from(&env, &secret).await, &bucket_of(&secret), "x").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_deny_is_written_exactly_when_the_binding_is_restricted() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let network = bucket_broker::desired::policy::PlatformNetwork {
        cidrs: vec!["10.0.0.0/16".parse().expect("cidr")],
        vpc_endpoints: vec!["vpce-0a1b2c3d".to_owned()],
        vpcs: vec!["vpc-0a1b2c3d".to_owned()],
    };
    let settings = bucket_broker::controller::Settings { network, ..env.settings() };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "data"}, "spec": {}})).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "inside",
        json!({"bucketRef": {"name": "data"}}),
    ))
    .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "outside",
        json!({"bucketRef": {"name": "data"}, "allowExternalAccess": true}),
    ))
    .await;

    for (name, restricted) in [("inside", true), ("outside", false)] {
        let binding = ready_binding(&env, name).await;
        let status = binding.status.as_ref().expect("status");
        let user = status.user_name.as_deref().expect("user");
        let stored = env
            .admin
            .iam
            .get_user_policy()
            .user_name(user)
            .policy_name("bucket-access")
            .send()
            .await
            .expect("policy");
        let policy = bucket_broker::aws::iam::parse_document(&stored.policy_document).expect("policy json");
        let deny = policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Effect"] == "Deny")
            .cloned();
        assert_eq!(deny.is_some(), restricted, "{name}: {policy:#}");
        if let Some(deny) = deny {
            assert_eq!(deny["Condition"]["NotIpAddress"]["aws:SourceIp"], json!(["10.0.0.0/16"]));
            assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpce"], json!(["vpce-0a1b2c3d"]));
            assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpc"], json!(["vpc-0a1b2c3d"]));
            assert_eq!(deny["Condition"]["Bool"]["aws:ViaAWSService"], "false");
        }
        let condition = find_condition(&status.conditions, "NetworkRestricted").expect("NetworkRestricted");
        assert_eq!(condition.status == "True", restricted, "{name}: {condition:?}");
        if restricted {
            assert!(
                condition.message.contains("vpce-0a1b2c3d") && condition.message.contains("vpc-0a1b2c3d")
            );
        }
    }
}

/// Every Kubernetes request is counted on the in-memory server only; on a real cluster the binding's and
/// the Secret's resourceVersions show that nothing was written.
#[tokio::test(flavor = "multi_thread")]
async fn a_ready_binding_costs_no_writes_on_resync() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let settings = bucket_broker::controller::Settings {
        resync_interval: std::time::Duration::from_secs(1),
        ..env.settings()
    };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "data"}, "spec": {}})).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let before = ready_binding(&env, "app").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let aws = env.controller_aws().stats.clone();
    let (writes, calls) = (aws.writes(), aws.total());
    let kube_writes = env.in_memory("the request counters").map(|s| s.stats().writes());
    let secret_before = secret(&env, "app").await;
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;

    let resync_calls = aws.total() - calls;
    assert!(resync_calls >= 8, "several resyncs ran ({resync_calls} AWS reads)");
    assert_eq!(aws.writes() - writes, 0, "no AWS write in steady state: {:?}", aws.snapshot());
    if let (Some(server), Some(before)) = (&env.server, kube_writes) {
        assert_eq!(server.stats().writes() - before, 0, "no Kubernetes write in steady state");
    }
    let after = env.api::<BucketBinding>().get("app").await.expect("get");
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert_eq!(secret(&env, "app").await.metadata.resource_version, secret_before.metadata.resource_version);
    println!("steady state: {resync_calls} AWS reads over ~4 resyncs of a Bucket and a BucketBinding");
}

/// A new binding's IAM user is created without reading it first (one IAM call fewer per binding). The
/// status that says "new" is a tenant's to write: one wiped after provisioning makes the next pass try
/// CreateUser, which AWS refuses; the user is then read and kept, with no second user and no new key.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_is_created_without_a_read_and_a_wiped_status_adds_nothing() {
    let env = env_with_bucket(&["data"]).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let provisioned = ready_binding(&env, "app").await;
    let stats = env.controller_aws().stats.clone();
    let count = |operation: &str, outcome: Option<&str>| -> u64 {
        stats
            .snapshot()
            .iter()
            .filter(|((_, op, result), _)| *op == operation && outcome.is_none_or(|o| o == *result))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(count("GetUser", None), 0, "no read before the create: {:?}", stats.snapshot());
    assert_eq!(count("CreateUser", Some("success")), 1);
    let status = provisioned.status.expect("status");
    let (user, key) = (status.user_name.expect("userName"), status.access_key_id.expect("accessKeyId"));

    // The tenant wipes the status: the next pass sees an object that looks new.
    env.api::<BucketBinding>()
        .patch_status("app", &PatchParams::default(), &Patch::Merge(json!({"status": null})))
        .await
        .expect("status wiped");
    env.wait_for::<BucketBinding>("app", "provisioned again", |b| {
        ready(b.status.as_ref(), b.metadata.generation)
            && b.status.as_ref().is_some_and(|s| s.user_name.as_deref() == Some(user.as_str()))
    })
    .await;
    assert_eq!(count("CreateUser", None), 2, "the wiped status made one more try: {:?}", stats.snapshot());
    assert_eq!(count("CreateUser", Some("success")), 1, "and AWS refused it");
    assert!(count("GetUser", None) >= 1, "then the user was read");
    let keys = env.admin.iam.list_access_keys().user_name(&user).send().await.expect("keys");
    let ids: Vec<&str> = keys.access_key_metadata().iter().filter_map(|k| k.access_key_id()).collect();
    assert_eq!(ids, [key.as_str()], "the same single key");
    assert_eq!(value(&secret(&env, "app").await, "AWS_ACCESS_KEY_ID"), key, "the Secret is unchanged");
    let users = env.admin.iam.list_users().send().await.expect("users");
    let ours = users.users().iter().filter(|u| u.user_name().starts_with(&user)).count();
    assert_eq!(ours, 1, "one user");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_common_policy_is_attached_and_an_edited_secret_is_restored() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let document =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    // moto does not model permissions boundaries of users: the boundary is not tested here.
    let created = env
        .admin
        .iam
        .create_policy()
        .policy_name("common")
        .policy_document(document)
        .send()
        .await
        .expect("policy");
    let common = created.policy.and_then(|p| p.arn).expect("arn");
    let settings = bucket_broker::controller::Settings {
        common_user_policy_arn: Some(common.clone()),
        ..env.settings()
    };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "data"}, "spec": {}})).await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user");

    let attached =
        env.admin.iam.list_attached_user_policies().user_name(&user).send().await.expect("attached");
    let attached: Vec<String> =
        attached.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn).collect();
    assert_eq!(attached, [common]);
    let iam_user = env.admin.iam.get_user().user_name(&user).send().await.expect("user").user.expect("user");
    let tags: Vec<(String, String)> =
        iam_user.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    assert!(
        tags.contains(&("bucketbroker.io/uid".to_owned(), binding.meta().uid.clone().expect("uid"))),
        "{tags:?}"
    );
    assert!(tags.contains(&("bucketbroker.io/kind".to_owned(), "BucketBinding".to_owned())), "{tags:?}");

    let original = secret(&env, "app").await;
    let edit = json!({"data": {"BUCKET_NAME": "ZWRpdGVk"}});
    env.api::<Secret>()
        .patch("app", &PatchParams::default(), &Patch::Merge(edit))
        .await
        .expect("edited by hand");
    let restored =
        env.wait_for::<Secret>("app", "restored", |s| value(s, "BUCKET_NAME") == bucket_of(&original)).await;
    assert_eq!(value(&restored, "AWS_ACCESS_KEY_ID"), value(&original, "AWS_ACCESS_KEY_ID"), "the same key");
    assert_eq!(keys_of(&env, &user).await.len(), 1);

    // A secret key edited by hand cannot be trusted: AWS refuses it, so the key is replaced.
    let tampered = json!({"data": {"AWS_SECRET_ACCESS_KEY": "d3Jvbmc="}});
    env.api::<Secret>()
        .patch("app", &PatchParams::default(), &Patch::Merge(tampered))
        .await
        .expect("edited by hand");
    let old_key = value(&original, "AWS_ACCESS_KEY_ID");
    let replaced =
        env.wait_for::<Secret>("app", "given a new key", |s| value(s, "AWS_ACCESS_KEY_ID") != old_key).await;
    assert_eq!(
        keys_of(&env, &user).await,
        [value(&replaced, "AWS_ACCESS_KEY_ID")],
        "only the new key is live"
    );
    ready_binding(&env, "app").await;
    assert!(can_put(&client_from(&env, &replaced).await, &bucket_of(&replaced), "after-rotation").await);
}
