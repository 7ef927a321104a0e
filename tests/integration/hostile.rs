//! Hostile input, case by case (issue 10's table). Every case ends in a schema rejection or in a condition
//! with a reason, with the controller still running, no write loop (writes counted on the in-memory
//! server), and nothing lost: no foreign object changed, no orphaned IAM user or key. The four attacks of
//! `trust.rs` (forged Bucket status, racing Secret names, a stale CRD, a key STS refuses) belong to the
//! same table, and so do the class cases (a class not offered to the Bucket's namespace, a class deleted
//! while in use, a tenant writing a class), which use `classes.rs`'s helpers.

use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, BucketClass, BucketServiceKey, find_condition};
use bucket_broker::controller::Context;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::classes::{
    aws_bucket_exists, create_class, delete_classes, make_class, start_controller_for_classes,
};
use crate::credentials::{
    bucket_of, can_get, can_put, client_from, credential, ready_binding, secret, value,
};
use crate::harness::{Namespaced, TestEnv, on_real_cluster, unique_name};

fn bucket(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": spec})
}

fn dynamic<K: Resource<DynamicType = ()>>(env: &TestEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), &env.namespace, &ApiResource::erase::<K>(&()))
}

/// Creates `object` and expects the API server to refuse it as invalid; returns the message.
async fn refused_create<K: Resource<DynamicType = ()>>(env: &TestEnv, object: Value) -> String {
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    match dynamic::<K>(env).create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
}

/// Merge-patches `name` and expects the API server to refuse it as invalid; returns the message.
async fn refused_patch<K: Resource<DynamicType = ()>>(env: &TestEnv, name: &str, patch: Value) -> String {
    match dynamic::<K>(env).patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
}

fn reason_of(conditions: &[Condition]) -> Option<(String, String)> {
    find_condition(conditions, "Ready").map(|c| (format!("{}/{}", c.status, c.reason), c.message.clone()))
}

/// Waits until the Ready condition of `name` is `expected` (`status/reason`); returns that and its message.
async fn settles<K: Namespaced>(
    env: &TestEnv,
    name: &str,
    expected: &str,
    conditions: impl Fn(&K) -> Option<&[Condition]>,
) -> (String, String) {
    let ready = |object: &K| conditions(object).and_then(reason_of);
    let settled = env.wait_for::<K>(name, expected, |o| ready(o).is_some_and(|(r, _)| r == expected)).await;
    ready(&settled).expect("Ready")
}

async fn binding_settles(env: &TestEnv, name: &str, expected: &str) -> (String, String) {
    settles::<BucketBinding>(env, name, expected, |b| b.status.as_ref().map(|s| s.conditions.as_slice()))
        .await
}

async fn bucket_settles(env: &TestEnv, name: &str, expected: &str) -> (String, String) {
    settles::<Bucket>(env, name, expected, |b| b.status.as_ref().map(|s| s.conditions.as_slice())).await
}

async fn ready_bucket(env: &TestEnv, name: &str) -> Bucket {
    env.wait_for::<Bucket>(name, "ready", |b| {
        b.status.as_ref().and_then(|s| reason_of(&s.conditions)).is_some_and(|(r, _)| r == "True/Provisioned")
    })
    .await
}

fn derived_user(env: &TestEnv, uid: &str) -> String {
    format!("{}{uid}", env.settings().user_prefix)
}

async fn user_exists(env: &TestEnv, user: &str) -> bool {
    env.admin.iam.get_user().user_name(user).send().await.is_ok()
}

async fn live_keys(env: &TestEnv, user: &str) -> Vec<String> {
    match env.admin.iam.list_access_keys().user_name(user).send().await {
        Ok(keys) => keys.access_key_metadata.into_iter().filter_map(|k| k.access_key_id).collect(),
        Err(_) => Vec::new(),
    }
}

/// After the cases: the controller still runs, and, left alone, makes only a few AWS calls and writes
/// (conflicts and failures are re-checked with backoff, never in a loop). Kubernetes requests are counted
/// on the in-memory server only.
async fn assert_quiet(env: &TestEnv, ctx: &Context) {
    assert!(env.controller_alive(), "the controller is still running");
    let server = env.in_memory("request counters");
    if let Some(server) = server {
        server.reset_stats();
    }
    let aws_before = ctx.aws.stats.total();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let aws = ctx.aws.stats.total() - aws_before;
    println!("left alone for 5 s: {aws} AWS calls");
    assert!(aws <= 60, "{aws} AWS calls in 5 s: a loop");
    if let Some(server) = server {
        let writes = server.stats().writes();
        println!("left alone for 5 s: {writes} Kubernetes writes");
        assert!(writes <= 20, "{writes} Kubernetes writes in 5 s: a loop");
    }
    assert!(env.controller_alive(), "the controller is still running");
}

/// One refused object of the table: what it tries, the kind, the object, and the field the refusal names.
struct Refusal {
    case: &'static str,
    kind: &'static str,
    object: Value,
    field: &'static str,
}

fn refusal(case: &'static str, kind: &'static str, object: Value, field: &'static str) -> Refusal {
    Refusal { case, kind, object, field }
}

fn binding(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("bucketRef").is_none() {
        spec["bucketRef"] = json!({"name": "x"});
    }
    credential("BucketBinding", name, spec)
}

fn cors(rule: Value) -> Value {
    json!({"cors": [rule]})
}

/// Every constraint of the CRDs' schemas, broken once: types, enums, required fields, `pattern`,
/// `minLength`/`maxLength`, `minimum`/`maximum`, `minItems`/`maxItems`, in nested objects and arrays too.
/// The same table runs on the in-memory server and on the real control plane, and each answer must be a 422
/// naming the field (the real server's wording, `spec.region: Invalid value: "EU_WEST_2": ...`).
fn hostile_table() -> Vec<Refusal> {
    let origins = json!(["https://example.com"]);
    vec![
        refusal("public is not a boolean", "Bucket", bucket("b1", json!({"public": "yes"})), "spec.public"),
        refusal(
            "an unknown deletionPolicy",
            "Bucket",
            bucket("b2", json!({"deletionPolicy": "Destroy"})),
            "spec.deletionPolicy",
        ),
        refusal(
            "a region longer than any",
            "Bucket",
            bucket("b3", json!({"region": "r".repeat(40)})),
            "spec.region",
        ),
        refusal(
            "a region in capitals",
            "Bucket",
            bucket("b4", json!({"region": "EU_WEST_2"})),
            "spec.region",
        ),
        refusal("an empty region", "Bucket", bucket("b5", json!({"region": ""})), "spec.region"),
        refusal(
            "a className in capitals",
            "Bucket",
            bucket("b6", json!({"className": "Gold_Class"})),
            "spec.className",
        ),
        refusal(
            "objects expiring after 0 days",
            "Bucket",
            bucket("b7", json!({"expireObjectsAfterDays": 0})),
            "spec.expireObjectsAfterDays",
        ),
        refusal(
            "objects expiring after a century and more",
            "Bucket",
            bucket("b8", json!({"expireObjectsAfterDays": 36501})),
            "spec.expireObjectsAfterDays",
        ),
        refusal(
            "a CORS rule without methods",
            "Bucket",
            bucket("b9", cors(json!({"allowedOrigins": origins}))),
            "spec.cors[0].allowedMethods",
        ),
        refusal(
            "a CORS method that is not one",
            "Bucket",
            bucket("b10", cors(json!({"allowedOrigins": origins, "allowedMethods": ["FETCH"]}))),
            "spec.cors[0].allowedMethods[0]",
        ),
        refusal(
            "a CORS rule with no origin",
            "Bucket",
            bucket("b11", cors(json!({"allowedOrigins": [], "allowedMethods": ["GET"]}))),
            "spec.cors[0].allowedOrigins",
        ),
        refusal(
            "a CORS cache of more than a day",
            "Bucket",
            bucket(
                "b12",
                cors(json!({"allowedOrigins": origins, "allowedMethods": ["GET"], "maxAgeSeconds": 86401})),
            ),
            "spec.cors[0].maxAgeSeconds",
        ),
        refusal(
            "101 CORS rules",
            "Bucket",
            bucket(
                "b13",
                json!({"cors": vec![json!({"allowedOrigins": origins, "allowedMethods": ["GET"]}); 101]}),
            ),
            "spec.cors",
        ),
        refusal("a name over 253 characters", "Bucket", bucket(&"n".repeat(254), json!({})), "metadata.name"),
        refusal("a name with unicode", "Bucket", bucket("données", json!({})), "metadata.name"),
        refusal(
            "a binding without bucketRef",
            "BucketBinding",
            credential("BucketBinding", "k1", json!({})),
            "spec.bucketRef",
        ),
        refusal(
            "an empty bucketRef name",
            "BucketBinding",
            binding("k2", json!({"bucketRef": {"name": ""}})),
            "spec.bucketRef.name",
        ),
        refusal(
            "permissions Admin",
            "BucketBinding",
            binding("k3", json!({"permissions": "Admin"})),
            "spec.permissions",
        ),
        refusal(
            "the seed's spelling read-only",
            "BucketServiceKey",
            credential(
                "BucketServiceKey",
                "k4",
                json!({"bucketRef": {"name": "x"}, "permissions": "read-only"}),
            ),
            "spec.permissions",
        ),
        refusal(
            "allowExternalAccess as a string",
            "BucketBinding",
            binding("k5", json!({"allowExternalAccess": "true"})),
            "spec.allowExternalAccess",
        ),
        refusal(
            "a secretName over 253 characters",
            "BucketBinding",
            binding("k6", json!({"secretName": "s".repeat(254)})),
            "spec.secretName",
        ),
        refusal(
            "a secretName that is no Secret name",
            "BucketBinding",
            binding("k7", json!({"secretName": "Bad_Name"})),
            "spec.secretName",
        ),
        refusal(
            "a service key's secretName that is no Secret name",
            "BucketServiceKey",
            credential(
                "BucketServiceKey",
                "k8",
                json!({"bucketRef": {"name": "x"}, "secretName": "Bad_Name"}),
            ),
            "spec.secretName",
        ),
        refusal(
            "an app name that is no label",
            "BucketBinding",
            binding("k9", json!({"app": "Shop Front"})),
            "spec.app",
        ),
        refusal(
            "a serviceAccountName that is no name",
            "BucketBinding",
            binding("k10", json!({"serviceAccountName": "Bad_SA"})),
            "spec.serviceAccountName",
        ),
        refusal(
            "a rotation interval in words",
            "BucketBinding",
            binding("k11", json!({"keyRotation": {"interval": "90 days"}})),
            "spec.keyRotation.interval",
        ),
        refusal(
            "a rotation overlap in weeks",
            "BucketServiceKey",
            credential(
                "BucketServiceKey",
                "k12",
                json!({"bucketRef": {"name": "x"}, "keyRotation": {"overlap": "1w"}}),
            ),
            "spec.keyRotation.overlap",
        ),
    ]
}

/// Creates `object` of `kind` and expects a 422 Invalid; returns the message.
async fn refused_by_kind(env: &TestEnv, kind: &str, object: Value) -> String {
    match kind {
        "Bucket" => refused_create::<Bucket>(env, object).await,
        "BucketBinding" => refused_create::<BucketBinding>(env, object).await,
        "BucketServiceKey" => refused_create::<BucketServiceKey>(env, object).await,
        other => panic!("no such kind in the table: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_specs_are_refused_by_the_schema() {
    let env = TestEnv::new().await;
    let cases = hostile_table();
    let mut wrong = Vec::new();
    for Refusal { case, kind, object, field } in &cases {
        let message = refused_by_kind(&env, kind, object.clone()).await;
        println!("{case}: {message}");
        // The real server's form: `<Kind> "<name>" is invalid: <field>: <what>` (several in brackets).
        if !message.contains(&format!("{field}: ")) {
            wrong.push(format!("{case}: the refusal does not name {field}: {message}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The issue's two cases, in the real server's words (the pattern itself is the CRD's to choose).
    let region = refused_create::<Bucket>(&env, bucket("b14", json!({"region": "EU_WEST_2"}))).await;
    assert!(
        region.contains(r#"spec.region: Invalid value: "EU_WEST_2": spec.region in body should match '"#),
        "{region}"
    );
    let secret_name =
        refused_create::<BucketBinding>(&env, binding("k13", json!({"secretName": "Bad_Name"}))).await;
    assert!(
        secret_name.contains(
            r#"spec.secretName: Invalid value: "Bad_Name": spec.secretName in body should match '"#
        ),
        "{secret_name}"
    );
    // Region names by the schema's pattern of every AWS partition's names, on both servers.
    for (name, region) in
        [("b3a", "EU_WEST_2"), ("b3b", "eu-west"), ("b3c", "eu-west-2a"), ("b3d", "europe-west2")]
    {
        let message = refused_create::<Bucket>(&env, bucket(name, json!({"region": region}))).await;
        assert!(message.contains("spec.region"), "{region}: {message}");
    }
    env.create::<Bucket>(bucket("b3e", json!({"region": "eusc-de-east-1"}))).await;
    env.create::<Bucket>(bucket("b3f", json!({"region": "us-gov-west-1"}))).await;

    // Immutable fields, by the CRDs' CEL rules: the change is refused, whoever asks.
    env.create::<Bucket>(bucket("fixed", json!({"region": "eu-west-2"}))).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "pinned",
        json!({"bucketRef": {"name": "fixed"}}),
    ))
    .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "named",
        json!({"bucketRef": {"name": "fixed"}, "secretName": "named-secret"}),
    ))
    .await;
    // Each refusal names the field (the error's path) and says what to do.
    let immutable = [
        (
            "moving a binding to another Bucket",
            refused_patch::<BucketBinding>(&env, "pinned", json!({"spec": {"bucketRef": {"name": "other"}}}))
                .await,
            "spec.bucketRef: Invalid value",
        ),
        (
            "setting a secretName later",
            refused_patch::<BucketBinding>(&env, "pinned", json!({"spec": {"secretName": "elsewhere"}}))
                .await,
            "spec.secretName: Invalid value",
        ),
        (
            "unsetting a secretName",
            refused_patch::<BucketBinding>(&env, "named", json!({"spec": {"secretName": null}})).await,
            "spec.secretName: Invalid value",
        ),
        (
            "moving a Bucket to another region",
            refused_patch::<Bucket>(&env, "fixed", json!({"spec": {"region": "us-east-1"}})).await,
            "spec.region: Invalid value",
        ),
    ];
    for (case, message, expected) in &immutable {
        assert!(message.contains(expected), "{case}: {message}");
        assert!(message.contains("delete and re-create the object to change it"), "{case}: {message}");
    }
    println!("schema cases refused, each naming its field: {}", cases.len() + immutable.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_status_annotations_and_secrets_grant_nothing() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let ctx = env.start_controller().await;
    env.create::<Bucket>(bucket("data", json!({}))).await;
    ready_bucket(&env, "data").await;

    // An IAM user and a bucket that are not the controller's, and a binding whose status points at them.
    let iam = env.admin.iam.clone();
    let victim_user = unique_name("victim-admin");
    iam.create_user().user_name(&victim_user).send().await.expect("victim user");
    iam.create_access_key().user_name(&victim_user).send().await.expect("victim key");
    let foreign_bucket = unique_name("foreign");
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
            bucket_broker::local::moto::REGION,
        ))
        .build();
    env.admin
        .s3
        .create_bucket()
        .bucket(&foreign_bucket)
        .create_bucket_configuration(location)
        .send()
        .await
        .expect("foreign bucket");

    // 1. A forged status.userName is ignored: the victim user keeps its key, even through deletion.
    let forged = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "forged-user",
            json!({"bucketRef": {"name": "data"}}),
        ))
        .await;
    let own_user = derived_user(&env, forged.meta().uid.as_deref().expect("uid"));
    ready_binding(&env, "forged-user").await;
    let mut tampered = env.api::<BucketBinding>().get_status("forged-user").await.expect("get");
    if let Some(status) = tampered.status.as_mut() {
        status.user_name = Some(victim_user.clone());
        status.access_key_id = Some("AKIAFORGEDFORGEDFORG".to_owned());
    }
    env.api::<BucketBinding>()
        .replace_status("forged-user", &PostParams::default(), &tampered)
        .await
        .expect("the tenant forges the status");
    env.wait_for::<BucketBinding>("forged-user", "repaired", |b| {
        b.status.as_ref().is_some_and(|s| {
            s.user_name.as_deref() == Some(own_user.as_str())
                && s.access_key_id.as_deref() != Some("AKIAFORGEDFORGEDFORG")
        })
    })
    .await;
    env.delete::<BucketBinding>("forged-user").await;
    env.wait_gone::<BucketBinding>("forged-user").await;
    assert_eq!(live_keys(&env, &victim_user).await.len(), 1, "the victim user keeps its key");
    assert!(!user_exists(&env, &own_user).await, "the binding's own user is deleted");

    // 2. An annotation claiming another object's uid changes nothing.
    let claimer = env
        .create::<BucketBinding>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
            "metadata": {"name": "claimer", "annotations": {"bucketbroker.io/uid": "00000000-0000-0000-0000-000000000000"}},
            "spec": {"bucketRef": {"name": "data"}}}))
        .await;
    let claimed = ready_binding(&env, "claimer").await;
    let claimer_user = derived_user(&env, claimer.meta().uid.as_deref().expect("uid"));
    assert_eq!(claimed.status.and_then(|s| s.user_name).as_deref(), Some(claimer_user.as_str()));

    // 3. A Secret that only carries our label is not ours.
    let labelled: Secret = serde_json::from_value(json!({"metadata": {"name": "labelled",
        "labels": {"app.kubernetes.io/managed-by": "bucket-broker"}}, "stringData": {"owner": "a person"}}))
    .expect("secret");
    env.api::<Secret>().create(&PostParams::default(), &labelled).await.expect("labelled secret");
    // 4. Another binding's Secret.
    env.create::<BucketBinding>(credential("BucketBinding", "first", json!({"bucketRef": {"name": "data"}})))
        .await;
    ready_binding(&env, "first").await;
    // 5. A ServiceAccount token Secret (for a ServiceAccount of its own: on a real cluster the token
    //    controller deletes tokens of missing accounts, and fills in the data itself).
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "token-owner"}})).expect("service account");
    env.api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .expect("service account");
    let token: Secret = serde_json::from_value(json!({"metadata": {"name": "sa-token",
        "annotations": {"kubernetes.io/service-account.name": "token-owner"}},
        "type": "kubernetes.io/service-account-token"}))
    .expect("secret");
    env.api::<Secret>().create(&PostParams::default(), &token).await.expect("token secret");
    let mut before = Vec::new();
    for name in ["labelled", "first", "sa-token"] {
        before.push(secret(&env, name).await);
    }
    for (binding, secret_name) in
        [("wants-labelled", "labelled"), ("wants-first", "first"), ("wants-token", "sa-token")]
    {
        env.create::<BucketBinding>(credential(
            "BucketBinding",
            binding,
            json!({"bucketRef": {"name": "data"}, "secretName": secret_name}),
        ))
        .await;
    }
    // The condition names who the Secret in the way belongs to, by its metadata, and nothing of its data.
    for (binding, owner) in [
        ("wants-labelled", Some("(it belongs to bucket-broker, for another object)")),
        ("wants-first", Some("(it belongs to BucketBinding first)")),
        ("wants-token", None),
    ] {
        let (_, message) = binding_settles(&env, binding, "False/SecretConflict").await;
        assert!(message.contains("left untouched"), "{binding}: {message}");
        match owner {
            Some(owner) => assert!(message.contains(owner), "{binding}: {message}"),
            None => assert!(!message.contains("belongs to"), "{binding}: {message}"),
        }
        assert!(message.contains("Delete that Secret, or re-create this object"), "{binding}: {message}");
        assert!(!message.contains("a person") && !message.contains("AKIA"), "{binding}: no data: {message}");
        let current = env.api::<BucketBinding>().get(binding).await.expect("binding");
        let user = derived_user(&env, current.meta().uid.as_deref().expect("uid"));
        assert!(live_keys(&env, &user).await.is_empty(), "{binding} holds no live key");
    }
    for old in before {
        let name = old.metadata.name.clone().expect("name");
        let now = secret(&env, &name).await;
        if name != "sa-token" {
            // The token controller of a real cluster writes the token's data itself.
            assert_eq!(now.data, old.data, "{name}: data untouched");
        }
        let label = |s: &Secret| {
            s.metadata.labels.clone().unwrap_or_default().get("app.kubernetes.io/managed-by").cloned()
        };
        assert_eq!(label(&now), label(&old), "{name}: labels untouched");
        assert_eq!(now.type_, old.type_, "{name}: type untouched");
        assert_eq!(now.metadata.owner_references, old.metadata.owner_references, "{name}: owners untouched");
    }
    ready_binding(&env, "first").await;

    // 6. A Secret of ours that a person takes over (drops our owner and label): no key stays live in it.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "disowned",
        json!({"bucketRef": {"name": "data"}}),
    ))
    .await;
    let disowned = ready_binding(&env, "disowned").await;
    let disowned_user = derived_user(&env, disowned.meta().uid.as_deref().expect("uid"));
    let taken_key = value(&secret(&env, "disowned").await, "AWS_ACCESS_KEY_ID");
    env.api::<Secret>()
        .patch(
            "disowned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null, "labels": null}})),
        )
        .await
        .expect("taken over");
    // The Secret left the controller's watch (our label is gone), which wakes the binding of that Secret.
    binding_settles(&env, "disowned", "False/SecretConflict").await;
    assert!(live_keys(&env, &disowned_user).await.is_empty(), "the key in the taken Secret is revoked");
    assert_eq!(
        value(&secret(&env, "disowned").await, "AWS_ACCESS_KEY_ID"),
        taken_key,
        "the Secret is left as is"
    );

    // 7. A Bucket status naming an untagged bucket of someone else: ignored, that bucket untouched.
    let mut forged_bucket = env.api::<Bucket>().get_status("data").await.expect("bucket");
    let own_bucket = forged_bucket.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("name");
    if let Some(status) = forged_bucket.status.as_mut() {
        status.bucket_name = Some(foreign_bucket.clone());
    }
    env.api::<Bucket>()
        .replace_status("data", &PostParams::default(), &forged_bucket)
        .await
        .expect("the tenant forges the status");
    env.wait_for::<Bucket>("data", "repaired", |b| {
        b.status.as_ref().and_then(|s| s.bucket_name.as_deref()) == Some(own_bucket.as_str())
    })
    .await;
    let tags = env.admin.s3.get_bucket_tagging().bucket(&foreign_bucket).send().await;
    assert!(tags.map(|t| t.tag_set.is_empty()).unwrap_or(true), "the foreign bucket was not tagged");
    let policy = env.admin.s3.get_bucket_policy().bucket(&foreign_bucket).send().await;
    assert!(policy.is_err(), "the foreign bucket got no policy");

    assert_quiet(&env, &ctx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_lifecycles_converge_without_orphans() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let ctx = env.start_controller().await;
    env.create::<Bucket>(bucket("data", json!({}))).await;
    ready_bucket(&env, "data").await;

    // 1. Rapid create, delete, recreate: only the last object has a user, with one key.
    let mut uids = Vec::new();
    for _ in 0..4 {
        let made = env
            .create::<BucketBinding>(credential(
                "BucketBinding",
                "flicker",
                json!({"bucketRef": {"name": "data"}}),
            ))
            .await;
        uids.push(made.meta().uid.clone().expect("uid"));
        env.delete::<BucketBinding>("flicker").await;
        env.wait_gone::<BucketBinding>("flicker").await;
    }
    let last = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "flicker",
            json!({"bucketRef": {"name": "data"}}),
        ))
        .await;
    let last_user = derived_user(&env, last.meta().uid.as_deref().expect("uid"));
    // Ready with its own user: a pass for a deleted predecessor may have written its status by name.
    env.wait_for::<BucketBinding>("flicker", "ready with its own user", |b| {
        b.status.as_ref().is_some_and(|s| {
            s.user_name.as_deref() == Some(last_user.as_str())
                && s.observed_generation == b.metadata.generation
                && find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
        })
    })
    .await;
    // A real API server can delete an object in spite of a finalizer added while its DELETE was under
    // way (it decides on the object it read first), and a pass may then have made a user for it: the
    // orphan sweeper removes what has no live object, which is what it is for. Nothing else may be left.
    let sweeping = crate::orphans::sweeper_context(&env, Duration::ZERO).await;
    let report = bucket_broker::sweeper::sweep(&sweeping).await.expect("sweep");
    println!("swept after the rapid lifecycles: {:?}", report.users);
    for uid in &uids {
        assert!(!user_exists(&env, &derived_user(&env, uid)).await, "no user left for the deleted {uid}");
    }
    assert!(user_exists(&env, &last_user).await, "the live binding's user is kept");
    assert_eq!(
        live_keys(&env, &last_user).await,
        [value(&secret(&env, "flicker").await, "AWS_ACCESS_KEY_ID")]
    );

    // 2. Permissions flipped twenty times as fast as the API takes it: the last one wins.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "flipper",
        json!({"bucketRef": {"name": "data"}}),
    ))
    .await;
    ready_binding(&env, "flipper").await;
    for i in 0..20 {
        let permissions = if i % 2 == 0 { "ReadOnly" } else { "ReadWrite" };
        env.api::<BucketBinding>()
            .patch(
                "flipper",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"permissions": permissions}})),
            )
            .await
            .expect("flip");
    }
    env.api::<BucketBinding>()
        .patch(
            "flipper",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})),
        )
        .await
        .expect("final flip");
    ready_binding(&env, "flipper").await;
    let flipped = secret(&env, "flipper").await;
    let reader = client_from(&env, &flipped).await;
    assert!(can_put(&env.admin, &bucket_of(&flipped), "seen.txt").await);
    assert!(can_get(&reader, &bucket_of(&flipped), "seen.txt").await, "ReadOnly reads");
    assert!(!can_put(&reader, &bucket_of(&flipped), "not-written.txt").await, "ReadOnly cannot write");

    // 3. A Bucket deleted while its binding is being provisioned.
    env.create::<Bucket>(bucket("doomed", json!({}))).await;
    let doomed_app = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "doomed-app",
            json!({"bucketRef": {"name": "doomed"}}),
        ))
        .await;
    env.delete::<Bucket>("doomed").await;
    env.wait_for::<BucketBinding>("doomed-app", "not ready", |b| {
        b.status
            .as_ref()
            .and_then(|s| reason_of(&s.conditions))
            .is_some_and(|(r, _)| r == "False/BucketDeleting" || r == "False/BucketNotReady")
    })
    .await;
    env.delete::<BucketBinding>("doomed-app").await;
    env.wait_gone::<BucketBinding>("doomed-app").await;
    env.wait_gone::<Bucket>("doomed").await;
    assert!(!user_exists(&env, &derived_user(&env, doomed_app.meta().uid.as_deref().expect("uid"))).await);

    // 4. A Bucket deleted (its data retained) and recreated under the same name: the new one never
    //    reaches the old bucket.
    env.create::<Bucket>(bucket("phoenix", json!({"deletionPolicy": "Retain"}))).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "phoenix-app",
        json!({"bucketRef": {"name": "phoenix"}}),
    ))
    .await;
    ready_binding(&env, "phoenix-app").await;
    let old_secret = secret(&env, "phoenix-app").await;
    let old_bucket = bucket_of(&old_secret);
    assert!(can_put(&client_from(&env, &old_secret).await, &old_bucket, "old.txt").await);
    env.delete::<BucketBinding>("phoenix-app").await;
    env.wait_gone::<BucketBinding>("phoenix-app").await;
    env.delete::<Bucket>("phoenix").await;
    env.wait_gone::<Bucket>("phoenix").await;
    env.create::<Bucket>(bucket("phoenix", json!({}))).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "phoenix-app",
        json!({"bucketRef": {"name": "phoenix"}}),
    ))
    .await;
    ready_binding(&env, "phoenix-app").await;
    let new_secret = secret(&env, "phoenix-app").await;
    assert_ne!(bucket_of(&new_secret), old_bucket, "a new uid, a new bucket");
    let reborn = client_from(&env, &new_secret).await;
    assert!(!can_get(&reborn, &old_bucket, "old.txt").await, "the old bucket is out of reach");
    assert!(can_get(&env.admin, &old_bucket, "old.txt").await, "and its data is kept");

    // 5. A new binding for a Bucket being deleted gets no credentials.
    env.create::<Bucket>(bucket("closing", json!({}))).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "holder",
        json!({"bucketRef": {"name": "closing"}}),
    ))
    .await;
    ready_binding(&env, "holder").await;
    env.delete::<Bucket>("closing").await;
    let late = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "late",
            json!({"bucketRef": {"name": "closing"}}),
        ))
        .await;
    binding_settles(&env, "late", "False/BucketDeleting").await;
    let late_status = env.api::<BucketBinding>().get("late").await.expect("late").status.expect("status");
    assert_eq!(
        late_status.observed_generation,
        Some(1),
        "observedGeneration moves when a spec is applied, or found to need a person (Stalled)"
    );
    assert!(
        late_status.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"),
        "only deleting the binding can help: {:?}",
        late_status.conditions
    );
    assert!(live_keys(&env, &derived_user(&env, late.meta().uid.as_deref().expect("uid"))).await.is_empty());
    assert!(env.api::<Secret>().get_opt("late").await.expect("get").is_none());

    // 6. A Bucket that exists only in another namespace cannot be referenced.
    let elsewhere = format!("{}-elsewhere", env.namespace);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": elsewhere}})).expect("namespace");
    Api::<Namespace>::all(env.client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let far: Bucket = serde_json::from_value(bucket("far", json!({}))).expect("bucket");
    Api::<Bucket>::namespaced(env.client.clone(), &elsewhere)
        .create(&PostParams::default(), &far)
        .await
        .expect("bucket elsewhere");
    env.create::<BucketBinding>(credential("BucketBinding", "near", json!({"bucketRef": {"name": "far"}})))
        .await;
    let (_, message) = binding_settles(&env, "near", "False/BucketNotReady").await;
    assert!(message.contains("far"), "{message}");
    Api::<Namespace>::all(env.client.clone())
        .delete(&elsewhere, &Default::default())
        .await
        .expect("the other namespace is deleted");

    assert_quiet(&env, &ctx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_inputs_at_the_limits_work() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let ctx = env.start_controller().await;
    let long_bucket = "b".repeat(253);
    let long_binding = "k".repeat(253);
    let huge = "x".repeat(100 * 1024);
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": long_bucket, "annotations": {"note": "données 🚀 データ", "huge": huge}}, "spec": {}}))
        .await;
    let ready = ready_bucket(&env, &long_bucket).await;
    let aws_bucket = ready.status.and_then(|s| s.bucket_name).expect("bucket name");
    let tags = env.admin.s3.get_bucket_tagging().bucket(&aws_bucket).send().await.expect("tags");
    assert!(
        tags.tag_set.iter().any(|t| t.key == "bucketbroker.io/name" && t.value == long_bucket),
        "a 253-character name fits in a tag"
    );
    env.create::<BucketBinding>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
        "metadata": {"name": long_binding, "annotations": {"note": "données 🚀", "huge": "y".repeat(100 * 1024)}},
        "spec": {"bucketRef": {"name": long_bucket}}}))
        .await;
    ready_binding(&env, &long_binding).await;
    let long_secret = secret(&env, &long_binding).await;
    assert!(can_put(&client_from(&env, &long_secret).await, &aws_bucket, "long.txt").await);
    let vcap: Value = serde_json::from_str(&value(&long_secret, "VCAP_SERVICES")).expect("json");
    assert_eq!(vcap["aws-s3-bucket"][0]["instance_name"], long_bucket.as_str());

    assert_quiet(&env, &ctx).await;
}

/// The class cases. Classes are cluster-scoped and a real cluster is shared: each class here has a name of
/// this test's own, is labelled as a test's, is never the default, and is deleted at the end.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_class_cases_end_in_a_condition_and_lose_nothing() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let tier = unique_name("tier");
    let selective = make_class(
        &env,
        "selective",
        json!({"namespaceSelector": {"matchLabels": {"bucketbroker.io/test-tier": tier}}}),
    )
    .await;
    let shared = make_class(&env, "shared", json!({})).await;
    let (ctx, _) = start_controller_for_classes(&mut env).await;

    // 1. A Bucket naming a class whose namespaceSelector leaves its namespace out: refused, nothing made in
    //    AWS; once the namespace carries the label, the class is offered (the refusal is retried with backoff).
    env.create::<Bucket>(bucket("outsider", json!({"className": selective}))).await;
    let (_, message) = bucket_settles(&env, "outsider", "False/ClassForbids").await;
    assert!(message.contains(&format!("not offered to namespace {}", env.namespace)), "{message}");
    assert!(!aws_bucket_exists(&env, "outsider").await, "no AWS bucket for a refused Bucket");
    let labelled = Patch::Merge(json!({"metadata": {"labels": {"bucketbroker.io/test-tier": tier}}}));
    Api::<Namespace>::all(env.client.clone())
        .patch(&env.namespace, &PatchParams::default(), &labelled)
        .await
        .expect("namespace labelled");
    ready_bucket(&env, "outsider").await;

    // 2. A class deleted while two Buckets and a binding use it: the Buckets report ClassNotFound, and their
    //    AWS buckets, the binding's IAM user, its key and its Secret stay as they were; the class made again,
    //    everything is Ready again with the same key.
    for name in ["held", "also-held"] {
        env.create::<Bucket>(bucket(name, json!({"className": shared}))).await;
        ready_bucket(&env, name).await;
    }
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "holder",
        json!({"bucketRef": {"name": "held"}}),
    ))
    .await;
    let holder = ready_binding(&env, "holder").await;
    let user = holder.status.and_then(|s| s.user_name).expect("user");
    let before = secret(&env, "holder").await;
    let key = value(&before, "AWS_ACCESS_KEY_ID");
    delete_classes(&env, &[&shared]).await;
    for name in ["held", "also-held"] {
        let (_, message) = bucket_settles(&env, name, "False/ClassNotFound").await;
        assert!(message.contains(&shared), "{name}: {message}");
        assert!(aws_bucket_exists(&env, name).await, "{name}: its AWS bucket stays");
    }
    binding_settles(&env, "holder", "False/BucketNotReady").await;
    assert_eq!(live_keys(&env, &user).await, std::slice::from_ref(&key), "the binding's user keeps its key");
    assert_eq!(secret(&env, "holder").await.data, before.data, "the Secret is untouched");
    assert!(
        can_put(&client_from(&env, &before).await, &bucket_of(&before), "kept.txt").await,
        "and it works"
    );
    create_class(&env, &shared, json!({})).await;
    for name in ["held", "also-held"] {
        ready_bucket(&env, name).await;
    }
    ready_binding(&env, "holder").await;
    assert_eq!(live_keys(&env, &user).await, std::slice::from_ref(&key), "the same key, not a new one");
    assert_eq!(value(&secret(&env, "holder").await, "AWS_ACCESS_KEY_ID"), key);

    // 3. A tenant creating, changing or deleting a BucketClass: forbidden by RBAC, which only a real control
    //    plane has. Reading them is allowed (so the refusals are RBAC's, not a tenant who cannot act at all).
    if on_real_cluster("RBAC and the tenant roles") {
        tenant_cannot_write_classes(&env, &shared).await;
    }

    assert_quiet(&env, &ctx).await;
    delete_classes(&env, &[&selective, &shared]).await;
}

/// A tenant (the tenant roles of `deploy/tenant-roles/`) reads the BucketClasses and gets 403 for every
/// write: making one, loosening `existing`, deleting it.
async fn tenant_cannot_write_classes(env: &TestEnv, existing: &str) {
    let api = Api::<BucketClass>::all(env.tenant_client("class-writer").await);
    let listed = api.list(&Default::default()).await.expect("a tenant lists the classes");
    assert!(listed.items.iter().any(|c| c.metadata.name.as_deref() == Some(existing)));
    let forbidden = |what: &str, result: Result<BucketClass, kube::Error>| match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("a tenant could {what}: {other:?}"),
    };
    // Labelled as a test's: were it made, the run's check of leftovers would find it.
    let own: BucketClass = serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketClass",
        "metadata": {"name": unique_name("mine"), "labels": {"bucketbroker.io/test": "true"}},
        "spec": {"allowPublic": true, "allowExternalAccess": true}
    }))
    .expect("class");
    forbidden("make a class", api.create(&PostParams::default(), &own).await);
    let loosen = Patch::Merge(json!({"spec": {"allowPublic": true}}));
    forbidden("loosen a class", api.patch(existing, &PatchParams::default(), &loosen).await);
    match api.delete(existing, &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "delete a class: {status:?}"),
        other => panic!("a tenant could delete a class: {other:?}"),
    }
    let kept =
        Api::<BucketClass>::all(env.client.clone()).get(existing).await.expect("the class is still there");
    assert!(!kept.spec.allow_public, "and unchanged");
}
