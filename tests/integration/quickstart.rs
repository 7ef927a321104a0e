//! The README's run command, `bucket-broker quickstart`, and the examples it applies.

use std::path::Path;

use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, Permissions};
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

#[tokio::test]
async fn the_quickstart_shows_every_step() {
    let mut out = Vec::new();
    bucket_broker::local::quickstart::run(&examples(), &mut out, false).await.expect("quickstart succeeds");
    let out = String::from_utf8(out).expect("utf-8");
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
        "\"aws_secret_access_key\": \"****\"",
        "GET s3://",
        "\"hello from bucket-broker\"",
        "not-allowed.txt: refused (AccessDenied)",
        "==> Done",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
