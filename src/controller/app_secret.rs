//! The app Secret `<app>-vcap-services`: one `VCAP_SERVICES` listing every BucketBinding of an app (same
//! namespace, same `spec.app`), as Cloud Foundry gave an app bound to several services. Each entry is exactly
//! the entry of that binding's own Secret, in the order of the bindings' names.
//!
//! Any binding of the app recomputes the whole Secret from the truth (the app's bindings and their own
//! Secrets, each proven ours), so concurrent passes agree; every write carries the resourceVersion it was
//! computed from, so none is lost. It is written only when its content changes, owned by the bindings it
//! lists (garbage-collected with the last one), and a Secret of that name that is not ours is never touched.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::Value;

use super::credentials::{MANAGED_BY, is_ours};
use super::{Context, Error, MANAGER};
use crate::api::{BucketBinding, GROUP};
use crate::desired::secret::{VCAP_SERVICES, binding_entry, vcap_services};

/// The label naming the app of an app Secret.
pub const APP_LABEL: &str = "bucketbroker.io/app";

const SUFFIX: &str = "-vcap-services";

/// The app Secret's name.
pub fn name(app: &str) -> String {
    format!("{app}{SUFFIX}")
}

/// The app an app Secret name belongs to.
pub fn app_of(secret_name: &str) -> Option<&str> {
    secret_name.strip_suffix(SUFFIX).filter(|app| !app.is_empty())
}

/// An app Secret is ours when it carries our label, names this app, is owned by BucketBindings only, and
/// at least one of them is a binding of this app (by uid: a copy restored from elsewhere names others).
fn is_our_app_secret(secret: &Secret, app: &str, member_uids: &[&str]) -> bool {
    let labels = secret.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let owners = secret.metadata.owner_references.as_deref().unwrap_or_default();
    label(MANAGED_BY.0) == Some(MANAGED_BY.1)
        && label(APP_LABEL) == Some(app)
        && owners.iter().all(|r| r.kind == "BucketBinding" && r.api_version.starts_with(GROUP))
        && owners.iter().any(|r| member_uids.contains(&r.uid.as_str()))
}

/// Brings the app Secret of `app` in `namespace` in line with the app's bindings, leaving out the binding
/// with uid `leaving` (one being deleted). A Secret of that name that is not ours is a
/// [`Error::SecretConflict`], and is left untouched.
pub async fn sync(ctx: &Context, namespace: &str, app: &str, leaving: Option<&str>) -> Result<(), Error> {
    let secrets = ctx.api::<Secret>(namespace);
    let secret_name = name(app);
    let existing = secrets.get_opt(&secret_name).await?;
    let all: Vec<BucketBinding> = ctx
        .api::<BucketBinding>(namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.app.as_deref() == Some(app))
        .collect();
    let uids: Vec<&str> = all.iter().filter_map(|b| b.metadata.uid.as_deref()).chain(leaving).collect();
    if let Some(secret) = &existing
        && !is_our_app_secret(secret, app, &uids)
    {
        return Err(Error::SecretConflict(format!(
            "a Secret named {secret_name} (the app Secret of app {app}) already exists and was not created for this app; it is left untouched"
        )));
    }
    let mut members: Vec<&BucketBinding> = all
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none() && b.metadata.uid.as_deref() != leaving)
        .collect();
    members.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut entries = Vec::new();
    let mut owners = Vec::new();
    for member in members {
        let (Some(uid), Some(member_name)) =
            (member.metadata.uid.as_deref(), member.metadata.name.as_deref())
        else {
            continue;
        };
        let own_name = member.spec.secret_name.clone().unwrap_or_else(|| member_name.to_owned());
        // A binding without its own Secret yet joins when it gets one (its pass syncs again).
        let Some(own) = secrets.get_opt(&own_name).await?.filter(|s| is_ours(s, uid)) else { continue };
        let Some(entry) = own_entry(&own) else { continue };
        entries.push(entry);
        owners.extend(member.controller_owner_ref(&()).map(|r| OwnerReference { controller: None, ..r }));
    }

    match existing {
        None if entries.is_empty() => Ok(()),
        None => {
            let params = PostParams { dry_run: false, field_manager: Some(MANAGER.to_owned()) };
            let created = secrets.create(&params, &desired(&secret_name, app, owners, &entries)).await?;
            ctx.memo.wrote_secret(namespace, &secret_name, created.metadata.resource_version.as_deref());
            Ok(())
        }
        Some(current) if entries.is_empty() => {
            let preconditions = Preconditions {
                uid: current.metadata.uid.clone(),
                resource_version: current.metadata.resource_version.clone(),
            };
            let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
            ctx.memo.forget_secret(namespace, &secret_name);
            match secrets.delete(&secret_name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        Some(current) => {
            let wanted = desired(&secret_name, app, owners, &entries);
            let same_owners = {
                let uids = |refs: Option<&Vec<OwnerReference>>| {
                    let mut uids: Vec<String> = refs.into_iter().flatten().map(|r| r.uid.clone()).collect();
                    uids.sort();
                    uids
                };
                uids(current.metadata.owner_references.as_ref())
                    == uids(wanted.metadata.owner_references.as_ref())
            };
            if current.data == wanted.data && same_owners {
                return Ok(());
            }
            // The resourceVersion read with the ownership proof stays set: a concurrent change fails
            // this write (409), and the retry recomputes from the new truth.
            let mut secret = current;
            secret.metadata.managed_fields = None;
            secret.metadata.owner_references = wanted.metadata.owner_references;
            secret.data = wanted.data;
            secret.string_data = None;
            let params = PostParams { dry_run: false, field_manager: Some(MANAGER.to_owned()) };
            let replaced = secrets.replace(&secret_name, &params, &secret).await?;
            ctx.memo.wrote_secret(namespace, &secret_name, replaced.metadata.resource_version.as_deref());
            Ok(())
        }
    }
}

/// The one entry of a binding Secret's `VCAP_SERVICES`.
fn own_entry(secret: &Secret) -> Option<Value> {
    binding_entry(&secret.data.as_ref()?.get(VCAP_SERVICES)?.0)
}

fn desired(name: &str, app: &str, owners: Vec<OwnerReference>, entries: &[Value]) -> Secret {
    let vcap = vcap_services(entries);
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (APP_LABEL.to_owned(), app.to_owned()),
            ])),
            owner_references: Some(owners),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(VCAP_SERVICES.to_owned(), ByteString(vcap.into_bytes()))])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        assert_eq!(name("shop"), "shop-vcap-services");
        assert_eq!(app_of("shop-vcap-services"), Some("shop"));
        assert_eq!(app_of("-vcap-services"), None);
        assert_eq!(app_of("shop"), None);
    }

    #[test]
    fn only_a_labelled_secret_owned_by_bindings_is_ours() {
        let owner = OwnerReference {
            api_version: "bucketbroker.io/v1alpha1".into(),
            kind: "BucketBinding".into(),
            name: "a".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let ours = desired("shop-vcap-services", "shop", vec![owner.clone()], &[json!({"name": "a"})]);
        assert!(is_our_app_secret(&ours, "shop", &["u"]));
        assert!(!is_our_app_secret(&ours, "blog", &["u"]), "another app's");
        assert!(!is_our_app_secret(&ours, "shop", &["v"]), "owned by no binding of this app: a copy");
        let mut unowned = ours.clone();
        unowned.metadata.owner_references = None;
        assert!(!is_our_app_secret(&unowned, "shop", &["u"]));
        let mut foreign_owner = ours.clone();
        foreign_owner.metadata.owner_references =
            Some(vec![OwnerReference { kind: "Deployment".into(), api_version: "apps/v1".into(), ..owner }]);
        assert!(!is_our_app_secret(&foreign_owner, "shop", &["u"]));
        let mut unlabelled = ours;
        unlabelled.metadata.labels = None;
        assert!(!is_our_app_secret(&unlabelled, "shop", &["u"]));
    }

    #[test]
    fn the_entry_is_read_from_a_binding_secret() {
        let vcap =
            json!({"aws-s3-bucket": [{"name": "assets", "credentials": {"bucket_name": "b"}}]}).to_string();
        let secret = Secret {
            data: Some(BTreeMap::from([(VCAP_SERVICES.to_owned(), ByteString(vcap.into_bytes()))])),
            ..Default::default()
        };
        assert_eq!(own_entry(&secret), Some(json!({"name": "assets", "credentials": {"bucket_name": "b"}})));
        assert_eq!(own_entry(&Secret::default()), None);
    }
}
