//! Nothing is orphaned: the sweeper, two leaders forced to overlap, and a storm of controller kills.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding};
use bucket_broker::aws::iam::{self, KeyCheck, UserOps};
use bucket_broker::aws::s3;
use bucket_broker::controller::{Context, Settings};
use bucket_broker::desired::names::{self, Owner};
use bucket_broker::local::moto::MotoOptions;
use bucket_broker::sweeper::{self, Report};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use crate::credentials::{credential, ready_binding, value};
use crate::harness::{TIMEOUT, TestEnv, aws_for, unique_name};
use crate::operations::{Replica, aws_through, holder, lease, replica_on, steal_lease};
use crate::proxy::{Hold, Proxy};

/// A uid no object has, or will ever have.
fn dead_uid() -> String {
    unique_name("dead")
}

/// The tags the controller gives an AWS object made for `kind/name` with `uid` in the test namespace.
fn owner_tags(env: &TestEnv, kind: &str, name: &str, uid: &str) -> Vec<(String, String)> {
    let owner = Owner { kind, namespace: &env.namespace, name, uid };
    let settings = env.settings();
    names::tags(&owner, &settings.deploy_env, &settings.cluster())
}

/// An IAM user under the controller's path with `tags`, an inline policy and an access key, as an
/// interrupted or overtaken create would leave it.
async fn plant_user(env: &TestEnv, name: &str, tags: &[(String, String)]) {
    let iam = &env.admin.iam;
    let tags =
        tags.iter().map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("tag"));
    iam.create_user()
        .user_name(name)
        .path(&env.settings().iam_path)
        .set_tags(Some(tags.collect()))
        .send()
        .await
        .expect("user planted");
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    iam.put_user_policy()
        .user_name(name)
        .policy_name(iam::POLICY_NAME)
        .policy_document(policy)
        .send()
        .await
        .expect("policy planted");
    iam.create_access_key().user_name(name).send().await.expect("key planted");
}

async fn plant_bucket(env: &TestEnv, name: &str, tags: &[(String, String)]) {
    let ops =
        s3::BucketOps { client: env.admin.s3.clone(), stats: &env.admin.stats, bucket: name, owner: None };
    ops.create(&env.admin.region).await.expect("bucket planted");
    ops.ensure_tags(&[], tags).await.expect("bucket tagged");
}

/// Every user under the controller's IAM path, with its tags.
async fn users(env: &TestEnv) -> BTreeMap<String, Vec<(String, String)>> {
    let (aws, path) = (&env.admin, env.settings().iam_path);
    let mut users = BTreeMap::new();
    for user in iam::list_users(&aws.iam, &aws.stats, &path).await.expect("users listed") {
        let ops = UserOps { client: aws.iam.clone(), stats: &aws.stats, user: &user.name };
        if let Some(found) = ops.get().await.expect("user read") {
            users.insert(user.name, found.tags);
        }
    }
    users
}

async fn keys(env: &TestEnv, user: &str) -> Vec<String> {
    let ops = UserOps { client: env.admin.iam.clone(), stats: &env.admin.stats, user };
    ops.access_keys().await.expect("keys listed").into_iter().map(|k| k.id).collect()
}

async fn buckets(env: &TestEnv) -> BTreeSet<String> {
    let prefix = env.settings().bucket_prefix;
    let listed = s3::list_buckets(&env.admin.s3, &env.admin.stats, &prefix).await.expect("buckets listed");
    listed.into_iter().map(|b| b.name).collect()
}

/// A context that sweeps with the given grace period (the default is ten minutes).
pub(crate) async fn sweeper_context(env: &TestEnv, grace: Duration) -> Arc<Context> {
    let aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    Context::new(env.controller_client.clone(), aws, Settings { orphan_grace: grace, ..env.settings() })
}

async fn create_bucket(env: &TestEnv, name: &str) {
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": name}, "spec": {}}))
        .await;
    env.wait_for::<Bucket>(name, "ready", |b| {
        b.status.as_ref().is_some_and(|s| {
            bucket_broker::api::find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
        })
    })
    .await;
}

async fn create_binding(env: &TestEnv, name: &str, bucket: &str) -> BucketBinding {
    env.create::<BucketBinding>(credential("BucketBinding", name, json!({"bucketRef": {"name": bucket}})))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_deletes_an_orphaned_user_and_its_key_and_keeps_an_orphaned_bucket() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    create_bucket(&env, "data").await;
    create_binding(&env, "app", "data").await;
    let app = ready_binding(&env, "app").await;
    let app_user = app.status.as_ref().and_then(|s| s.user_name.clone()).expect("userName");

    let prefix = env.settings().user_prefix;
    let orphan_uid = dead_uid();
    let orphan = names::user_name(&prefix, &orphan_uid);
    plant_user(&env, &orphan, &owner_tags(&env, "BucketBinding", "gone", &orphan_uid)).await;
    // Not ours to judge: no tags; another deploy environment's; a name not derived from its uid tag.
    let untagged = format!("{prefix}hand-made");
    plant_user(&env, &untagged, &[]).await;
    let other_env_uid = dead_uid();
    let other_env = names::user_name(&prefix, &other_env_uid);
    let mut tags = owner_tags(&env, "BucketBinding", "gone", &other_env_uid);
    tags.retain(|(k, _)| k != names::tag::DEPLOY_ENV);
    tags.push((names::tag::DEPLOY_ENV.to_owned(), "another-env".to_owned()));
    plant_user(&env, &other_env, &tags).await;
    let renamed = format!("{prefix}renamed");
    plant_user(&env, &renamed, &owner_tags(&env, "BucketServiceKey", "gone", &dead_uid())).await;
    let bucket_uid = dead_uid();
    let orphan_bucket = names::bucket_name(&env.settings().bucket_prefix, &bucket_uid);
    plant_bucket(&env, &orphan_bucket, &owner_tags(&env, "Bucket", "gone", &bucket_uid)).await;

    let ctx = sweeper_context(&env, Duration::ZERO).await;
    let report = sweeper::sweep(&ctx).await.expect("sweep");
    let expected = Report {
        users: vec![orphan.clone()],
        access_keys: 1,
        orphaned_buckets: vec![orphan_bucket.clone()],
        undecided: 0,
        other_cluster: vec![],
        role_policies: 0,
        roles: vec![],
    };
    assert_eq!(report, expected);

    let left = users(&env).await;
    assert!(!left.contains_key(&orphan), "the orphaned user, its key and its policy are gone");
    for kept in [&app_user, &untagged, &other_env, &renamed] {
        assert!(left.contains_key(kept), "{kept} is kept");
    }
    let secret: Secret = env.api::<Secret>().get("app").await.expect("Secret");
    assert_eq!(
        keys(&env, &app_user).await,
        [value(&secret, "AWS_ACCESS_KEY_ID")],
        "the live user keeps its key"
    );
    assert!(buckets(&env).await.contains(&orphan_bucket), "an orphaned bucket is never deleted");

    let again = sweeper::sweep(&ctx).await.expect("second sweep");
    assert!(again.users.is_empty(), "nothing left to sweep: {again:?}");
    assert_eq!(again.orphaned_buckets, [orphan_bucket], "the bucket is reported at every sweep");
    let metrics = ctx.metrics.render();
    for line in [
        "bucket_broker_orphans_swept_total{kind=\"User\"} 1\n",
        "bucket_broker_orphans_swept_total{kind=\"AccessKey\"} 1\n",
        "bucket_broker_orphaned_buckets 1\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn young_users_and_users_whose_object_no_cache_has_seen_are_left_alone() {
    // No controller runs: nothing has a cache, the sweeper must ask the API server.
    let env = TestEnv::new().await;
    create_bucket_object(&env).await;
    let fresh = create_binding(&env, "fresh", "data").await;
    let fresh_uid = fresh.meta().uid.clone().expect("uid");
    let prefix = env.settings().user_prefix;
    let fresh_user = names::user_name(&prefix, &fresh_uid);
    plant_user(&env, &fresh_user, &owner_tags(&env, "BucketBinding", "fresh", &fresh_uid)).await;
    let young_uid = dead_uid();
    let young = names::user_name(&prefix, &young_uid);
    plant_user(&env, &young, &owner_tags(&env, "BucketBinding", "gone", &young_uid)).await;
    // A user of the same name and kind in the namespace, but for another (older, deleted) object.
    let recreated_uid = dead_uid();
    let recreated = names::user_name(&prefix, &recreated_uid);
    plant_user(&env, &recreated, &owner_tags(&env, "BucketBinding", "fresh", &recreated_uid)).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let patient = sweeper_context(&env, Duration::from_secs(60)).await;
    let report = sweeper::sweep(&patient).await.expect("sweep");
    assert!(report.users.is_empty(), "users a second old are not judged: {report:?}");
    assert!(users(&env).await.contains_key(&young));

    let eager = sweeper_context(&env, Duration::ZERO).await;
    let report = sweeper::sweep(&eager).await.expect("sweep");
    let swept: BTreeSet<&String> = report.users.iter().collect();
    assert_eq!(swept, BTreeSet::from([&recreated, &young]), "dead uids, however young the name");
    let left = users(&env).await;
    assert!(left.contains_key(&fresh_user), "its object exists on the API server");
    assert!(!left.contains_key(&young) && !left.contains_key(&recreated));
}

/// A Bucket object without a controller: only something for bindings to name.
async fn create_bucket_object(env: &TestEnv) {
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The users under the IAM path whose uid tag names no live binding.
async fn orphaned_users(env: &TestEnv) -> Vec<String> {
    let live: BTreeSet<String> = env
        .api::<BucketBinding>()
        .list(&ListParams::default())
        .await
        .expect("bindings")
        .items
        .into_iter()
        .filter_map(|b| b.metadata.uid)
        .collect();
    users(env)
        .await
        .into_iter()
        .filter(|(_, tags)| !tags.iter().any(|(k, v)| k == names::tag::UID && live.contains(v)))
        .map(|(name, _)| name)
        .collect()
}

/// Each live binding's user holds exactly one key, the one in its Secret, and the key works.
async fn assert_one_working_key_per_user(env: &TestEnv, bindings: &[String]) {
    let sts = &env.admin.sts;
    for name in bindings {
        let binding = env.api::<BucketBinding>().get(name).await.expect("binding");
        let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("userName");
        let secret: Secret = env.api::<Secret>().get(name).await.expect("Secret");
        let id = value(&secret, "AWS_ACCESS_KEY_ID");
        assert_eq!(keys(env, &user).await, std::slice::from_ref(&id), "{name}: exactly the Secret's key");
        let check =
            iam::check_key(sts, &env.admin.stats, &id, &value(&secret, "AWS_SECRET_ACCESS_KEY")).await;
        assert_eq!(check.expect("STS answers"), KeyCheck::Accepted, "{name}: the key works");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_leaders_forced_to_overlap_leave_no_orphan_and_one_key_per_user() {
    let env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    // replica-a reaches AWS through a proxy that holds its CreateUser requests: it is inside CreateUser
    // for every binding when the Lease is taken from it.
    let proxy = Proxy::start(env.moto.endpoint_url()).await;
    let a_settings = Settings { concurrency: 8, orphan_sweep_interval: Duration::ZERO, ..env.settings() };
    let a = replica_on(
        env.controller_client.clone(),
        aws_through(&env, &proxy).await,
        a_settings,
        lease(&env, "replica-a"),
    );
    wait_until("replica-a to lead", TIMEOUT, async || holder(&env).await.as_deref() == Some("replica-a"))
        .await;
    let b_settings = Settings {
        orphan_sweep_interval: Duration::from_secs(1),
        orphan_grace: Duration::ZERO,
        resync_interval: Duration::from_secs(2),
        ..env.settings()
    };
    let b_aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    let b = replica_on(env.controller_client.clone(), b_aws, b_settings, lease(&env, "replica-b"));
    create_bucket(&env, "data").await;

    proxy.hold(Hold::Containing("Action=CreateUser".to_owned()));
    let names: Vec<String> = (0..6).map(|i| format!("app-{i}")).collect();
    for name in &names {
        create_binding(&env, name, "data").await;
    }
    wait_until("replica-a inside CreateUser for every binding", TIMEOUT, async || {
        proxy.held() >= names.len()
    })
    .await;
    let (deleted, kept) = names.split_at(3);
    for name in deleted {
        env.delete::<BucketBinding>(name).await;
    }

    steal_lease(&env, "intruder").await;
    let ended =
        tokio::time::timeout(Duration::from_secs(5), a.handle).await.expect("a stops").expect("a ends");
    assert!(ended.is_err(), "replica-a lost the Lease: {ended:?}");
    wait_until("replica-b to lead", TIMEOUT, async || holder(&env).await.as_deref() == Some("replica-b"))
        .await;
    for name in deleted {
        env.wait_gone::<BucketBinding>(name).await;
    }
    for name in kept {
        ready_binding(&env, name).await;
    }

    // The old leader's CreateUser requests were on the wire: they land now, after replica-b cleaned up.
    proxy.hold(Hold::Nothing);
    let swept =
        async || b.ctx.metrics.render().contains("bucket_broker_orphans_swept_total{kind=\"User\"} 3\n");
    wait_until("the three late users to be swept", TIMEOUT, swept).await;
    wait_until("no orphaned user", TIMEOUT, async || orphaned_users(&env).await.is_empty()).await;
    wait_until("one key per user", TIMEOUT, async || {
        let mut one_each = true;
        for name in kept {
            let user = names::user_name(&env.settings().user_prefix, &uid_of(&env, name).await);
            one_each &= keys(&env, &user).await.len() == 1;
        }
        one_each
    })
    .await;
    assert_one_working_key_per_user(&env, kept).await;
    assert_eq!(users(&env).await.len(), kept.len(), "no user but the live bindings'");
    stop(b).await;
}

fn is_ready(binding: &BucketBinding) -> bool {
    binding.status.as_ref().is_some_and(|s| {
        s.observed_generation == binding.metadata.generation
            && bucket_broker::api::find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
    })
}

async fn uid_of(env: &TestEnv, name: &str) -> String {
    env.api::<BucketBinding>().get(name).await.expect("binding").metadata.uid.expect("uid")
}

async fn stop(replica: Replica) {
    replica.stop.send(true).expect("replica listening");
    let ended = tokio::time::timeout(TIMEOUT, replica.handle).await.expect("replica stops").expect("ends");
    ended.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_storm_converges_with_working_keys_and_no_orphans() {
    const CREATED: usize = 100;
    const DELETED: usize = 50;
    const KILLS: usize = 20;
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let started = tokio::time::Instant::now();
    env.start_controller().await;
    create_bucket(&env, "data").await;
    env.stop_controller().await;

    let settings = Settings { concurrency: 16, orphan_sweep_interval: Duration::ZERO, ..env.settings() };
    let aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    let client = env.controller_client.clone();
    let calm = Arc::new(AtomicBool::new(false));
    let storm_calm = calm.clone();
    let storm = tokio::spawn(async move {
        let start = || {
            let ctx = Context::new(client.clone(), aws.clone(), settings.clone());
            let (stop, stopped) = watch::channel(false);
            (stop, tokio::spawn(bucket_broker::run::lead(ctx, stopped)))
        };
        let mut kills = 0usize;
        let mut current = start();
        while kills < KILLS || !storm_calm.load(Ordering::SeqCst) {
            // Between 0.4 and 1.2 s: long enough for reconciles to get somewhere, and never in step with them.
            tokio::time::sleep(Duration::from_millis(400 + (kills as u64 * 137) % 800)).await;
            current.1.abort();
            let _ = current.1.await;
            kills += 1;
            current = start();
        }
        current.1.abort();
        let _ = current.1.await;
        kills
    });

    let names: Vec<String> = (0..CREATED).map(|i| format!("app-{i:03}")).collect();
    for batch in names.chunks(20) {
        futures::future::join_all(batch.iter().map(|name| create_binding(&env, name, "data"))).await;
    }
    // Deletions start once a quarter of the bindings are provisioned, so that they meet users, keys and Secrets
    // at every stage, under the same storm.
    wait_until(
        "a quarter of the bindings provisioned under the storm",
        Duration::from_secs(60),
        async || {
            let items = env.api::<BucketBinding>().list(&ListParams::default()).await.expect("list").items;
            items.iter().filter(|b| is_ready(b)).count() >= CREATED / 4
        },
    )
    .await;
    let (deleted, kept) = names.split_at(DELETED);
    for batch in deleted.chunks(25) {
        futures::future::join_all(batch.iter().map(|name| env.delete::<BucketBinding>(name))).await;
    }
    calm.store(true, Ordering::SeqCst);
    let kills = storm.await.expect("the storm ends");
    assert!(kills >= KILLS, "{kills} kills");

    env.start_controller_with(Settings { concurrency: 16, ..env.settings() }).await;
    let converged = async || {
        let items = env.api::<BucketBinding>().list(&ListParams::default()).await.expect("list").items;
        items.len() == kept.len() && items.iter().all(is_ready)
    };
    wait_until("convergence after the storm", Duration::from_secs(90), converged).await;
    let sweeping = sweeper_context(&env, Duration::ZERO).await;
    let report = sweeper::sweep(&sweeping).await.expect("sweep");
    eprintln!("{kills} kills; converged after {:?}; the sweep after it: {report:?}", started.elapsed());

    assert_one_working_key_per_user(&env, kept).await;
    assert!(orphaned_users(&env).await.is_empty(), "no orphaned user");
    assert_eq!(users(&env).await.len(), kept.len(), "one user per live binding");
    let bucket = env.api::<Bucket>().get("data").await.expect("Bucket");
    let bucket_name = names::bucket_name(&env.settings().bucket_prefix, &bucket.metadata.uid.expect("uid"));
    assert_eq!(buckets(&env).await, BTreeSet::from([bucket_name]), "no orphaned bucket");
    assert!(report.orphaned_buckets.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_clusters_objects_and_a_retained_bucket_are_reported_or_left_never_swept() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "kept"}, "spec": {"deletionPolicy": "Retain"}}))
        .await;
    let kept = env
        .wait_for::<Bucket>("kept", "ready", |b| {
            b.status.as_ref().is_some_and(|s| {
                bucket_broker::api::find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
            })
        })
        .await;
    let kept_name = kept.status.and_then(|s| s.bucket_name).expect("bucket name");
    env.delete::<Bucket>("kept").await;
    env.wait_gone::<Bucket>("kept").await;
    let tags = s3::BucketOps {
        client: env.admin.s3.clone(),
        stats: &env.admin.stats,
        bucket: &kept_name,
        owner: None,
    }
    .tags()
    .await
    .expect("tags read")
    .expect("the retained bucket is still there");
    assert!(tags.iter().any(|(k, _)| k == names::tag::RELEASED), "tagged as released: {tags:?}");

    // The same namespace, names and environment, made by this controller in another cluster (an etcd
    // restored elsewhere keeps namespaces and names, not the kube-system uid of the cluster it runs in).
    let settings = env.settings();
    let elsewhere =
        names::Cluster { name: &settings.cluster_name, uid: "0d5c0000-0000-4000-8000-0000e15e1e1e" };
    let user_uid = dead_uid();
    let user = names::user_name(&settings.user_prefix, &user_uid);
    let owner = Owner { kind: "BucketBinding", namespace: &env.namespace, name: "gone", uid: &user_uid };
    plant_user(&env, &user, &names::tags(&owner, &settings.deploy_env, &elsewhere)).await;
    let bucket_uid = dead_uid();
    let bucket = names::bucket_name(&settings.bucket_prefix, &bucket_uid);
    let owner = Owner { kind: "Bucket", namespace: &env.namespace, name: "gone", uid: &bucket_uid };
    plant_bucket(&env, &bucket, &names::tags(&owner, &settings.deploy_env, &elsewhere)).await;

    let ctx = sweeper_context(&env, Duration::ZERO).await;
    let report = sweeper::sweep(&ctx).await.expect("sweep");
    assert_eq!(report.users, Vec::<String>::new(), "no user swept");
    assert_eq!(report.orphaned_buckets, Vec::<String>::new(), "the retained bucket is no orphan");
    let mut other = report.other_cluster.clone();
    other.sort();
    let mut expected = vec![user.clone(), bucket.clone()];
    expected.sort();
    assert_eq!(other, expected, "another cluster's objects are reported");
    assert!(users(&env).await.contains_key(&user), "and left alone");
    assert_eq!(keys(&env, &user).await.len(), 1, "with their keys");
    let page = ctx.metrics.render();
    assert!(page.contains("bucket_broker_other_cluster_objects 2"), "{page}");
    assert!(
        page.contains("bucket_broker_orphan_sweep_last_success_timestamp_seconds{kind=\"User\"}"),
        "{page}"
    );
    assert!(
        page.contains("bucket_broker_orphan_sweep_last_success_timestamp_seconds{kind=\"Bucket\"}"),
        "{page}"
    );
}

/// A role under the controller's path for ServiceAccount `account` (uid `uid`), holding a policy for each
/// binding uid in `bindings`, as keyless bindings leave it.
async fn plant_role(env: &TestEnv, account: &str, uid: &str, bindings: &[&str]) -> (String, String) {
    let iam = &env.admin.iam;
    let settings = env.settings();
    let name = names::role_name(&settings.user_prefix, uid);
    let tags = owner_tags(env, "ServiceAccount", account, uid)
        .into_iter()
        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("tag"));
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let created = iam
        .create_role()
        .role_name(&name)
        .path(&settings.iam_path)
        .assume_role_policy_document(trust)
        .set_tags(Some(tags.collect()))
        .send()
        .await
        .expect("role planted");
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    for binding in bindings {
        iam.put_role_policy()
            .role_name(&name)
            .policy_name(bucket_broker::desired::keyless::role_policy_name(binding))
            .policy_document(policy)
            .send()
            .await
            .expect("policy planted");
    }
    (name, created.role.expect("role").arn)
}

async fn role_policies(env: &TestEnv, role: &str) -> Option<Vec<String>> {
    env.admin.iam.list_role_policies().role_name(role).send().await.ok().map(|o| o.policy_names)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_takes_deleted_bindings_off_their_role_and_deletes_a_role_left_without_any() {
    use bucket_broker::desired::keyless::{ROLE_ARN_ANNOTATION, role_policy_name};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let env = TestEnv::new().await;
    // A live keyless binding (no controller runs: only its uid matters here) of the ServiceAccount "app".
    let live = env
        .create::<BucketBinding>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
            "metadata": {"name": "live"}, "spec": {"bucketRef": {"name": "data"}, "serviceAccountName": "app"}}))
        .await;
    let live_uid = live.metadata.uid.expect("uid");
    let accounts = env.api::<ServiceAccount>();
    let account = |name: &str, annotations: serde_json::Value| {
        serde_json::from_value::<ServiceAccount>(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "annotations": annotations}}))
        .expect("ServiceAccount")
    };
    let app = accounts.create(&Default::default(), &account("app", json!({}))).await.expect("app");
    let app_uid = app.metadata.uid.expect("uid");
    let (dead, gone, last) = (dead_uid(), dead_uid(), dead_uid());
    // The live binding's role keeps its policy and loses the deleted binding's.
    let (kept, _) = plant_role(&env, "app", &app_uid, &[&live_uid, &dead]).await;
    // A role whose ServiceAccount is gone, and one whose last binding is gone (its annotation still ours).
    let (orphan, _) = plant_role(&env, "gone", &dead_uid(), &[&gone]).await;
    let annotated_uid = {
        let created =
            accounts.create(&Default::default(), &account("annotated", json!({}))).await.expect("sa");
        created.metadata.uid.expect("uid")
    };
    let (emptied, arn) = plant_role(&env, "annotated", &annotated_uid, &[&last]).await;
    let patch = json!({"metadata": {"annotations": {ROLE_ARN_ANNOTATION: arn}}});
    accounts.patch("annotated", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");

    let ctx = sweeper_context(&env, Duration::ZERO).await;
    let report = sweeper::sweep(&ctx).await.expect("sweep");
    assert_eq!(report.role_policies, 3, "{report:?}");
    let mut roles = report.roles.clone();
    roles.sort();
    let mut expected = vec![orphan.clone(), emptied.clone()];
    expected.sort();
    assert_eq!(roles, expected);
    assert_eq!(role_policies(&env, &kept).await, Some(vec![role_policy_name(&live_uid)]));
    assert_eq!(role_policies(&env, &orphan).await, None, "the orphaned role is gone");
    assert_eq!(role_policies(&env, &emptied).await, None, "the emptied role is gone");
    let annotated = accounts.get("annotated").await.expect("sa");
    assert!(!annotated.metadata.annotations.unwrap_or_default().contains_key(ROLE_ARN_ANNOTATION));
    let again = sweeper::sweep(&ctx).await.expect("second sweep");
    assert_eq!((again.role_policies, again.roles.len()), (0, 0), "nothing left: {again:?}");
    let metrics = ctx.metrics.render();
    for line in [
        "bucket_broker_orphans_swept_total{kind=\"Role\"} 2\n",
        "bucket_broker_orphans_swept_total{kind=\"RolePolicy\"} 3\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}

/// With EKS Pod Identity (the tests' fake EKS endpoint), a role the sweeper deletes takes its
/// ServiceAccount's association with it; an association of the same ServiceAccount name that gives another
/// role, and those of other ServiceAccounts, stay.
#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_deletes_the_pod_identity_association_of_a_role_it_deletes_and_no_other() {
    use bucket_broker::desired::keyless::Setup;
    let env = TestEnv::new().await;
    let cluster = "bucket-broker-test";
    let fake = crate::eks::FakeEks::start(cluster).await;
    let (orphan, orphan_arn) = plant_role(&env, "gone", &dead_uid(), &[&dead_uid()]).await;
    plant_role(&env, "elsewhere", &dead_uid(), &[&dead_uid()]).await;
    fake.associate(cluster, &env.namespace, "gone", &orphan_arn);
    // Another ServiceAccount's association with a role that is not ours.
    fake.associate(cluster, &env.namespace, "theirs", "arn:aws:iam::123456789012:role/theirs");
    let mut aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    aws.eks = fake.client(&aws.eks);
    let settings = Settings {
        orphan_grace: Duration::ZERO,
        keyless: Some(Setup::PodIdentity { cluster: cluster.to_owned() }),
        ..env.settings()
    };
    let ctx = Context::new(env.controller_client.clone(), aws, settings);
    // "elsewhere" has an association too, but with a role someone else made for it: it stays.
    fake.associate(cluster, &env.namespace, "elsewhere", "arn:aws:iam::123456789012:role/not-the-swept-one");
    let report = sweeper::sweep(&ctx).await.expect("sweep");
    assert_eq!(report.roles.len(), 2, "{report:?}");
    assert!(report.roles.contains(&orphan));
    let left: Vec<String> = fake.associations().into_iter().map(|a| a.service_account).collect();
    assert_eq!(left, ["theirs", "elsewhere"], "only the swept role's association went");
}
