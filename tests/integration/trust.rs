//! Trust boundaries (DESIGN.md, "Trust"), tried as a tenant would: a forged status, several objects racing
//! for one Secret name, a CRD that drops status fields, and a key that STS never accepts. Access is always
//! asserted with moto enforcing IAM.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bucket_broker::api::{Bucket, BucketBinding, CredentialStatus, find_condition};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use kube_memory_apiserver::RequestMatcher;
use serde_json::json;

use crate::credentials::{
    bucket_of, can_get, can_put, client_from, credential, env_with_bucket, ready_binding, secret,
};
use crate::harness::{TIMEOUT, TestEnv};

fn ready_reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<String> {
    find_condition(conditions, "Ready").map(|c| format!("{}/{}", c.status, c.reason))
}

fn credential_reason(status: Option<&CredentialStatus>) -> Option<String> {
    status.and_then(|s| ready_reason(&s.conditions))
}

/// The IAM user names of a credential, whatever its status says: derived from its uid.
fn derived_user(env: &TestEnv, object: &impl Resource) -> String {
    format!("{}{}", env.settings().user_prefix, object.meta().uid.as_deref().expect("uid"))
}

/// The live access keys of an IAM user; none when the user does not exist.
async fn live_keys(env: &TestEnv, user: &str) -> Vec<String> {
    match env.admin.iam.list_access_keys().user_name(user).send().await {
        Ok(keys) => keys.access_key_metadata.into_iter().filter_map(|k| k.access_key_id).collect(),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => Vec::new(),
        Err(err) => panic!("list access keys of {user}: {err:?}"),
    }
}

/// On the in-memory server the forged status is kept in place by failing the Bucket controller's repair
/// (fault injection); on a real cluster the binding meets the forgery for as long as the repair takes.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_bucket_status_grants_nothing_on_another_bucket() {
    let env = env_with_bucket(&["victim", "mine"]).await;
    let victim = env.api::<Bucket>().get("victim").await.expect("victim");
    let victim_bucket = victim.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("bucket name");
    env.admin
        .s3
        .put_object()
        .bucket(&victim_bucket)
        .key("payroll.csv")
        .body(ByteStream::from_static(b"secret"))
        .send()
        .await
        .expect("victim's data");

    // The tenant owning "mine" may write its status: it points it at the victim's bucket, and at every
    // bucket in the account. On the in-memory server, the Bucket controller is kept from repairing it,
    // so that the binding meets the forgery for as long as the test needs.
    let server = env.in_memory("fault injection (keeping a forged status in place)");
    if let Some(server) = server {
        let repair = RequestMatcher::verb("patch").resource("buckets").subresource("status").name("mine");
        server.faults().fail_next(100_000, repair, 500);
    }
    let mut mine = env.api::<Bucket>().get_status("mine").await.expect("mine");
    let status = mine.status.as_mut().expect("status");
    status.bucket_name = Some(victim_bucket.clone());
    status.arn = Some("arn:aws:s3:::*".to_owned());
    env.api::<Bucket>()
        .replace_status("mine", &PostParams::default(), &mine)
        .await
        .expect("the tenant forges the status");

    env.create::<BucketBinding>(credential("BucketBinding", "thief", json!({"bucketRef": {"name": "mine"}})))
        .await;
    if let Some(server) = server {
        let refused = env
            .wait_for::<BucketBinding>("thief", "refused", |b| {
                credential_reason(b.status.as_ref()).as_deref() == Some("False/BucketNotReady")
            })
            .await;
        let condition = find_condition(&refused.status.as_ref().expect("status").conditions, "Ready")
            .expect("Ready")
            .clone();
        assert!(condition.message.contains("does not belong"), "{}", condition.message);
        assert!(env.api::<Secret>().get_opt("thief").await.expect("get").is_none(), "no Secret, no key");
        let user = derived_user(&env, &refused);
        let policy =
            env.admin.iam.get_user_policy().user_name(&user).policy_name("bucket-access").send().await;
        assert!(policy.is_err(), "no policy was written for the forged bucket: {policy:?}");
        server.faults().clear();
    }

    // Once the status is repaired, the binding gets its own bucket, and only that.
    let repaired = env
        .wait_for::<Bucket>("mine", "repaired", |b| {
            b.status.as_ref().and_then(|s| s.bucket_name.as_deref()) != Some(victim_bucket.as_str())
        })
        .await;
    let own_bucket = repaired.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("bucket");
    assert_eq!(
        own_bucket,
        format!("{}{}", env.settings().bucket_prefix, repaired.meta().uid.clone().expect("uid"))
    );
    ready_binding(&env, "thief").await;
    let secret = secret(&env, "thief").await;
    assert_eq!(bucket_of(&secret), own_bucket);
    let thief = client_from(&env, &secret).await;
    assert!(can_put(&thief, &own_bucket, "mine.txt").await, "the binding works on its own bucket");
    assert!(!can_get(&thief, &victim_bucket, "payroll.csv").await, "the victim's data cannot be read");
    let deleted = thief.s3.delete_object().bucket(&victim_bucket).key("payroll.csv").send().await;
    assert!(deleted.is_err(), "the victim's data cannot be deleted");
    assert!(can_get(&env.admin, &victim_bucket, "payroll.csv").await, "the victim's data is intact");
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_racing_for_one_secret_name_leave_one_owner_and_no_stray_key() {
    let env = env_with_bucket(&["data"]).await;
    let names = ["racer-0", "racer-1", "racer-2", "racer-3"];
    let creates = names.iter().map(|name| {
        env.create::<BucketBinding>(credential(
            "BucketBinding",
            name,
            json!({"bucketRef": {"name": "data"}, "secretName": "shared"}),
        ))
    });
    futures::future::join_all(creates).await;

    let mut outcomes = Vec::new();
    for name in names {
        let settled = env
            .wait_for::<BucketBinding>(name, "settled", |b| {
                matches!(
                    credential_reason(b.status.as_ref()).as_deref(),
                    Some("True/Provisioned" | "False/SecretConflict")
                )
            })
            .await;
        outcomes.push(settled);
    }
    // Let any in-flight pass finish, then look again: the outcome must be stable, not a snapshot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shared = secret(&env, "shared").await;
    let owner =
        shared.metadata.owner_references.as_ref().and_then(|r| r.iter().find(|r| r.controller == Some(true)));
    let owner_uid = owner.map(|r| r.uid.clone()).expect("the Secret has one controller");
    let mut winners = 0;
    for binding in &outcomes {
        let current = env
            .api::<BucketBinding>()
            .get(binding.meta().name.as_deref().expect("name"))
            .await
            .expect("binding");
        let user = derived_user(&env, &current);
        let keys = live_keys(&env, &user).await;
        if current.meta().uid.as_deref() == Some(owner_uid.as_str()) {
            winners += 1;
            assert_eq!(credential_reason(current.status.as_ref()).as_deref(), Some("True/Provisioned"));
            assert_eq!(keys.len(), 1, "the owner holds exactly the key in the Secret");
            assert_eq!(
                keys[0],
                String::from_utf8(shared.data.as_ref().expect("data")["AWS_ACCESS_KEY_ID"].0.clone())
                    .expect("id")
            );
        } else {
            assert_eq!(
                credential_reason(current.status.as_ref()).as_deref(),
                Some("False/SecretConflict"),
                "{:?}",
                current.status
            );
            assert!(keys.is_empty(), "a binding without the Secret holds no live key: {keys:?}");
        }
    }
    assert_eq!(winners, 1, "exactly one binding owns the Secret");
    let works = client_from(&env, &shared).await;
    assert!(can_put(&works, &bucket_of(&shared), "race.txt").await);
}

/// The Bucket CRD as an older release might have it: its status schema has no `bucketName`.
fn bucket_crd_without_bucket_name() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(
        bucket_broker::api::crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "Bucket")
            .expect("the Bucket CRD"),
    )
    .expect("crd json");
    let status =
        &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    status.as_object_mut().expect("status properties").remove("bucketName");
    serde_json::from_value(crd).expect("crd")
}

/// Bucket passes that ended (in success or in an error) so far, from the controller's metrics.
fn bucket_passes(ctx: &bucket_broker::controller::Context) -> u64 {
    ctx.metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("bucket_broker_reconciles_total{") && l.contains("kind=\"Bucket\""))
        .filter(|l| l.contains("outcome=\"success\"") || l.contains("outcome=\"error\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Runs alone on a real cluster: the CRD is the cluster's, and every other test depends on it. There a
/// server-side apply of a field the CRD does not declare is refused (500, "field not declared in
/// schema"); the in-memory server answers the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_crd_is_reported_and_costs_few_writes() {
    let mut env = TestEnv::alone(Default::default()).await;
    let crds = Api::<CustomResourceDefinition>::all(env.client.clone());
    let stale = bucket_crd_without_bucket_name();
    crds.patch("buckets.bucketbroker.io", &PatchParams::apply("test").force(), &Patch::Apply(&stale))
        .await
        .expect("the old CRD is installed");
    let ctx = env.start_controller().await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "stale"}, "spec": {}}))
        .await;
    let reported = env
        .wait_for::<Bucket>("stale", "reported", |b| {
            b.status.as_ref().and_then(|s| ready_reason(&s.conditions)).as_deref()
                == Some("False/CRDOutdated")
        })
        .await;
    let message = &find_condition(&reported.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .message;
    assert!(message.contains("status.bucketName") && message.contains("kubectl apply -k crds/"), "{message}");

    // Each pass writes status at most twice (its outcome, and the failure's condition), each write two
    // requests: the apply the server refuses, and the apply of what the CRD declares.
    if let Some(server) = &env.server {
        server.reset_stats();
    }
    let passes_before = bucket_passes(&ctx);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let passes = bucket_passes(&ctx) - passes_before;
    println!("Bucket passes in 10 s with a stale CRD: {passes}");
    assert!(passes <= 3, "a stale CRD must cost a few passes, not a loop: {passes} in 10 s");
    if let Some(server) = &env.server {
        let writes = server.stats().count_sub("patch", "buckets", "status");
        println!("status writes in 10 s with a stale CRD: {writes}");
        assert!(writes <= 4 * passes, "at most four status requests a pass: {writes} in {passes} passes");
    }

    // With the current CRD back, the Bucket recovers by itself.
    let current = bucket_broker::api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "Bucket")
        .expect("the Bucket CRD");
    crds.patch("buckets.bucketbroker.io", &PatchParams::apply("test").force(), &Patch::Apply(&current))
        .await
        .expect("the current CRD is installed");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let bucket = env.api::<Bucket>().get("stale").await.expect("bucket");
        let status = bucket.status.as_ref();
        if status.and_then(|s| ready_reason(&s.conditions)).as_deref() == Some("True/Provisioned")
            && status.and_then(|s| s.bucket_name.as_ref()).is_some()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the Bucket did not recover: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An STS stand-in that refuses every request with a bare 403, as a disabled regional endpoint does.
async fn refusing_sts() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                let response = "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_sts_never_accepts_ends_in_an_error_not_an_endless_wait() {
    let mut env = TestEnv::new().await;
    let mut aws = crate::harness::aws_for(&env.moto, env.moto.admin_credentials()).await;
    let sts = aws.sts.config().to_builder().endpoint_url(refusing_sts().await).build();
    aws.sts = aws_sdk_sts::Client::from_conf(sts);
    let settings = bucket_broker::controller::Settings {
        key_propagation_timeout: Duration::from_secs(2),
        ..env.settings()
    };
    let ctx = env.start_controller_on(settings, aws);
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let rejected = env
        .wait_for::<BucketBinding>("app", "rejected", |b| {
            credential_reason(b.status.as_ref()).as_deref() == Some("False/CredentialsRejected")
        })
        .await;
    let status = rejected.status.as_ref().expect("status");
    let message = &find_condition(&status.conditions, "Ready").expect("Ready").message;
    let key = status.access_key_id.as_deref().expect("the key is shown");
    assert!(message.contains(key) && message.contains("STS"), "the message says what failed: {message}");

    // From here on it backs off: a few checks in 5 s, not one every 2 s forever.
    let checks = || {
        ctx.aws
            .stats
            .snapshot()
            .iter()
            .filter(|((_, op, _), _)| *op == "GetCallerIdentity")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let before = checks();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = checks() - before;
    assert!(during <= 4, "{during} STS checks in 5 s after the error");
}

/// The managed policies attached to a user, sorted.
async fn attached(env: &TestEnv, user: &str) -> Vec<String> {
    let listed = env.admin.iam.list_attached_user_policies().user_name(user).send().await.expect("attached");
    let mut arns: Vec<String> =
        listed.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn).collect();
    arns.sort();
    arns
}

#[tokio::test(flavor = "multi_thread")]
async fn users_follow_a_changed_or_removed_common_policy_and_keep_foreign_ones() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*"}]}"#;
    let mut arns = Vec::new();
    for name in ["common-a", "common-b", "someone-elses"] {
        let created = env
            .admin
            .iam
            .create_policy()
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
            .expect("policy");
        arns.push(created.policy.and_then(|p| p.arn).expect("arn"));
    }
    let (a, b, foreign) = (arns[0].clone(), arns[1].clone(), arns[2].clone());
    let base = env.settings();
    let with_common = |arn: Option<&String>| bucket_broker::controller::Settings {
        common_user_policy_arn: arn.cloned(),
        ..base.clone()
    };

    let settings = with_common(Some(&a));
    env.start_controller_with(settings).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = derived_user(&env, &binding);
    assert_eq!(attached(&env, &user).await, std::slice::from_ref(&a));
    env.admin.iam.attach_user_policy().user_name(&user).policy_arn(&foreign).send().await.expect("attach");

    for (setting, expected) in [(Some(&b), vec![b.clone(), foreign.clone()]), (None, vec![foreign.clone()])] {
        env.stop_controller().await;
        let settings = with_common(setting);
        env.start_controller_with(settings).await;
        let mut expected = expected;
        expected.sort();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while attached(&env, &user).await != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?} never became {expected:?}",
                attached(&env, &user).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let tags = env.admin.iam.get_user().user_name(&user).send().await.expect("user").user.expect("user");
    assert!(
        !tags.tags().iter().any(|t| t.key() == "bucketbroker.io/common-policy"),
        "nothing is recorded once nothing is attached"
    );
    ready_binding(&env, "app").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_aws_refuses_is_shown_in_the_condition_not_hidden_in_a_finalizer() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    // The controller's identity may do everything except delete users.
    let iam = env.admin.iam.clone();
    iam.create_user().user_name("controller").send().await.expect("user");
    let everything_but = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"iam:DeleteUser","Resource":"*"}]}"#;
    iam.put_user_policy()
        .user_name("controller")
        .policy_name("almost-all")
        .policy_document(everything_but)
        .send()
        .await
        .expect("policy");
    let key =
        iam.create_access_key().user_name("controller").send().await.expect("key").access_key.expect("key");
    let credentials = aws_sdk_iam::config::Credentials::new(
        key.access_key_id,
        key.secret_access_key,
        None,
        None,
        "controller",
    );
    let settings = env.settings();
    env.start_controller_as(settings, credentials).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = derived_user(&env, &binding);

    env.delete::<BucketBinding>("app").await;
    let blocked = env
        .wait_for::<BucketBinding>("app", "blocked", |b| {
            credential_reason(b.status.as_ref()).as_deref() == Some("False/DeletionBlocked")
        })
        .await;
    let message = &find_condition(&blocked.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .message;
    // moto's IAM denials carry no error code, real IAM's say AccessDenied: either way the call is named.
    assert!(
        message.contains("iam DeleteUser") && (message.contains("AccessDenied") || message.contains("403")),
        "names what failed: {message}"
    );
    assert!(live_keys(&env, &user).await.is_empty(), "the keys are revoked already");

    iam.delete_user_policy().user_name("controller").policy_name("almost-all").send().await.expect("revoke");
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam.put_user_policy()
        .user_name("controller")
        .policy_name("all")
        .policy_document(everything)
        .send()
        .await
        .expect("granted");
    env.wait_gone::<BucketBinding>("app").await;
    assert!(iam.get_user().user_name(&user).send().await.is_err(), "the user is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_aws_object_carries_the_cluster_name() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let settings =
        bucket_broker::controller::Settings { cluster_name: "east-1".to_owned(), ..env.settings() };
    env.start_controller_with(settings).await;
    let binding = {
        env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "data"}, "spec": {}}))
            .await;
        env.create::<BucketBinding>(credential(
            "BucketBinding",
            "app",
            json!({"bucketRef": {"name": "data"}}),
        ))
        .await;
        ready_binding(&env, "app").await
    };
    let bucket = env.api::<Bucket>().get("data").await.expect("bucket");
    let bucket_name = bucket.status.and_then(|s| s.bucket_name).expect("bucket name");
    let bucket_tags = env.admin.s3.get_bucket_tagging().bucket(&bucket_name).send().await.expect("tags");
    assert!(bucket_tags.tag_set.iter().any(|t| t.key == "bucketbroker.io/cluster" && t.value == "east-1"));
    let user = env.admin.iam.get_user().user_name(derived_user(&env, &binding)).send().await.expect("user");
    let user = user.user.expect("user");
    assert!(user.tags().iter().any(|t| t.key() == "bucketbroker.io/cluster" && t.value() == "east-1"));
}
