//! Secret delivery: the object's own Secret (created, or updated only when provably ours), the app Secret
//! that lists it, and what happens when a Secret name is taken.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::EventType;

use super::CredentialKind;
use super::pass::{status_with, write_status};
use crate::api::CredentialStatus;
use crate::aws::iam::UserOps;
use crate::controller::app_secret;
use crate::controller::{Context, Error, MANAGER};
use crate::desired::conditions::{Observation, reasons, types};
use crate::desired::rotation;

/// The label on every generated Secret.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "bucket-broker");

/// Keeps app Secrets in step with this object: its app's lists it; the app it was in before (named in
/// status: a hint, harmless since every sync recomputes from the truth) no longer does. Returns the app
/// Secret's name.
pub(super) async fn sync_apps<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    namespace: &str,
    previous: &CredentialStatus,
) -> Result<Option<String>, Error> {
    let current = obj.app();
    let earlier =
        previous.app_secret_name.as_deref().and_then(app_secret::app_of).filter(|a| Some(*a) != current);
    if let Some(earlier) = earlier {
        // This object is leaving that app (its uid still proves the app Secret ours when it was the last).
        let leaving = obj.meta().uid.as_deref();
        match app_secret::sync(ctx, namespace, earlier, leaving).await {
            Ok(()) | Err(Error::SecretConflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    let Some(app) = current else { return Ok(None) };
    app_secret::sync(ctx, namespace, app, None).await?;
    Ok(Some(app_secret::name(app)))
}

pub(super) fn as_bytes(data: BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()
}

/// Reports a Secret name this object cannot have, after deleting any key its user holds: a key stored in
/// no Secret is a live credential nobody can see or revoke.
pub(super) async fn conflict<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    user: Option<&str>,
    previous: CredentialStatus,
    message: String,
) -> Result<(), Error> {
    if let Some(user) = user {
        let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
        ops.delete_access_keys().await?;
        // A rotation's pending key went with the others: its store goes too.
        if let (Some(namespace), Some(uid)) = (obj.meta().namespace.as_deref(), obj.meta().uid.as_deref()) {
            let secrets = ctx.api::<Secret>(namespace);
            let stored = super::pending::load(&secrets, uid).await?;
            super::pending::clear(ctx, &secrets, namespace, uid, &stored).await?;
        }
    }
    let already = obj
        .credential_status()
        .and_then(|s| crate::api::find_condition(&s.conditions, types::READY))
        .is_some_and(|c| c.reason == reasons::SECRET_CONFLICT);
    if !already {
        let reference = obj.object_ref(&());
        ctx.event(&reference, EventType::Warning, reasons::SECRET_CONFLICT, "WriteSecret", message.clone())
            .await;
    }
    let status = CredentialStatus { binding: None, access_key_id: None, ..previous };
    let status =
        status_with(obj, status, &[Observation::not_ready(reasons::SECRET_CONFLICT, message)], false);
    write_status(obj, ctx, &status).await
}

/// Why `secret_name` cannot be this object's Secret, naming who the Secret in the way belongs to when its
/// metadata says (never anything of its data).
pub(super) fn taken_message(secret_name: &str, secret: Option<&Secret>) -> String {
    let owner = secret.and_then(owner_of).map(|o| format!(" (it belongs to {o})")).unwrap_or_default();
    format!(
        "a Secret named {secret_name} already exists and was not created for this object{owner}; it is left \
         untouched and no access key is issued. Delete that Secret, or re-create this object with another \
         spec.secretName"
    )
}

/// Who a Secret belongs to, by its metadata: its controller (or first) ownerReference, else the Helm
/// release or the `app.kubernetes.io/managed-by` label.
fn owner_of(secret: &Secret) -> Option<String> {
    let meta = &secret.metadata;
    let refs = meta.owner_references.iter().flatten();
    let owner = refs.clone().find(|r| r.controller == Some(true)).or_else(|| refs.clone().next());
    if let Some(owner) = owner {
        return Some(format!("{} {}", owner.kind, owner.name));
    }
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    if let Some(release) = annotation("meta.helm.sh/release-name") {
        return Some(format!("Helm release {release}"));
    }
    let managed_by = meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0))?;
    Some(if managed_by == MANAGED_BY.1 {
        "bucket-broker, for another object".to_owned()
    } else {
        format!("{managed_by} (label {})", MANAGED_BY.0)
    })
}

/// The message of a create that found the name taken meanwhile: who took it, if it can be read.
async fn taken_meanwhile(secrets: &Api<Secret>, name: &str) -> Error {
    let found = secrets.get_metadata_opt(name).await.ok().flatten();
    let secret = found.map(|m| Secret { metadata: m.metadata, ..Default::default() });
    Error::SecretConflict(taken_message(name, secret.as_ref()))
}

/// A Secret is provably ours when it carries our label and a controller ownerReference with our uid.
pub(in crate::controller) fn is_ours(secret: &Secret, uid: &str) -> bool {
    let labelled = secret.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str)
        == Some(MANAGED_BY.1);
    let owned =
        secret.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true));
    labelled && owned
}

pub(super) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Creates the Secret when absent (a name taken meanwhile is a conflict), or updates one proven ours with
/// its resourceVersion as precondition, unless it already holds exactly this data, type, label and
/// owner. Returns the resourceVersion it wrote, if it wrote.
pub(super) async fn write_secret<K: CredentialKind>(
    obj: &K,
    secrets: &Api<Secret>,
    name: &str,
    existing: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
    key_id: Option<&str>,
) -> Result<Option<String>, Error> {
    let owner = obj.controller_owner_ref(&()).ok_or(Error::Incomplete("name or uid"))?;
    let params = PostParams { dry_run: false, field_manager: Some(MANAGER.to_owned()) };
    let Some(current) = existing else {
        return match secrets.create(&params, &desired_secret(name, owner, K::SECRET_TYPE, data, key_id)).await
        {
            Ok(created) => Ok(Some(created.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(taken_meanwhile(secrets, name).await),
            Err(err) => Err(err.into()),
        };
    };
    let key_annotation = current.metadata.annotations.as_ref().and_then(|a| a.get(rotation::KEY_ANNOTATION));
    let up_to_date = current.data.as_ref() == Some(&data)
        && key_annotation.map(String::as_str) == key_id
        && current.type_.as_deref() == Some(K::SECRET_TYPE)
        && current.metadata.owner_references.as_ref().is_some_and(|refs| refs.contains(&owner));
    if up_to_date {
        return Ok(None);
    }
    if current.type_.as_deref() != Some(K::SECRET_TYPE) {
        // The type is immutable: replace the Secret, deleting exactly the version proven ours.
        let preconditions = Preconditions {
            uid: current.metadata.uid.clone(),
            resource_version: current.metadata.resource_version.clone(),
        };
        secrets
            .delete(name, &DeleteParams { preconditions: Some(preconditions), ..Default::default() })
            .await?;
        return match secrets.create(&params, &desired_secret(name, owner, K::SECRET_TYPE, data, key_id)).await
        {
            Ok(created) => Ok(Some(created.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(taken_meanwhile(secrets, name).await),
            Err(err) => Err(err.into()),
        };
    }
    // The resourceVersion read with the ownership proof stays set: the update fails if the Secret
    // changed since. Annotations and other labels people added are kept.
    let mut secret = current.clone();
    secret.metadata.managed_fields = None;
    secret.metadata.labels.get_or_insert_default().insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    let annotations = secret.metadata.annotations.get_or_insert_default();
    match key_id {
        Some(id) => annotations.insert(rotation::KEY_ANNOTATION.to_owned(), id.to_owned()),
        None => annotations.remove(rotation::KEY_ANNOTATION),
    };
    let refs = secret.metadata.owner_references.get_or_insert_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    secret.data = Some(data);
    secret.string_data = None;
    let replaced = secrets.replace(name, &params, &secret).await?;
    Ok(Some(replaced.metadata.resource_version.unwrap_or_default()))
}

fn desired_secret(
    name: &str,
    owner: OwnerReference,
    type_: &str,
    data: BTreeMap<String, ByteString>,
    key_id: Option<&str>,
) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            // Changes with every new key: tools that restart pods on a change (stakater Reloader) see it.
            annotations: key_id
                .map(|id| BTreeMap::from([(rotation::KEY_ANNOTATION.to_owned(), id.to_owned())])),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    }
}
