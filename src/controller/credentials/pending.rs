//! Where a rotation's new key waits until STS accepts it: a Secret of its own, owned by the credential.
//!
//! A new key's secret exists only in the response to CreateAccessKey. Real IAM may take longer than a pass
//! should wait (tens of seconds) before STS accepts a new key, so the rotation waits across passes, and the
//! secret must be kept somewhere durable and ours meanwhile. Not in status (tenants read it, and it is no
//! place for a secret), not in memory (a restart would lose it and leave a live key held nowhere), and not
//! in the delivered Secret: apps read that one whole (`envFrom`, a volume, servicebinding.io projects every
//! key as a file), so an extra data key would reach every pod as a variable or file, restart pods on tools
//! that watch the Secret's content, and churn what GitOps tools compare. So it is a separate `Opaque`
//! Secret, named from the credential's uid (no tenant's name collides by accident), labelled like every
//! Secret of ours and with a controller ownerReference to the credential: garbage-collected with it, and
//! trusted only when that proof holds ([`is_ours`]). Nothing mounts it; it lives only for the seconds of
//! one rotation. A pending key whose secret this Secret does not hold is deleted like any key held
//! nowhere.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::CredentialKind;
use super::delivery::{MANAGED_BY, is_ours, secret_value};
use crate::controller::{Context, Error, MANAGER};

const ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET: &str = "AWS_SECRET_ACCESS_KEY";
/// When AWS created the key (unix seconds), as CreateAccessKey said: the propagation window counts from it.
const CREATED: &str = "created";

/// The pending store's name: from the credential's uid, never from a name a tenant chose.
pub(super) fn store_name(uid: &str) -> String {
    format!("bucket-broker-rotation-{uid}")
}

/// A rotation's new key, not yet accepted by STS.
#[derive(Clone)]
pub(super) struct PendingKey {
    pub(super) id: String,
    pub(super) secret: String,
    pub(super) created: i64,
}

/// What the pending store holds.
pub(super) enum Stored {
    Absent,
    /// Ours, with the version read (for a precondition) and the key if it is complete.
    Ours {
        uid: Option<String>,
        version: Option<String>,
        key: Option<PendingKey>,
    },
    /// A Secret of that name not provably ours: never read, never written.
    Foreign,
}

impl Stored {
    pub(super) fn key(&self) -> Option<&PendingKey> {
        match self {
            Stored::Ours { key, .. } => key.as_ref(),
            _ => None,
        }
    }
}

/// Reads the pending store of the credential with `uid`.
pub(super) async fn load(secrets: &Api<Secret>, uid: &str) -> Result<Stored, Error> {
    let Some(found) = secrets.get_opt(&store_name(uid)).await? else { return Ok(Stored::Absent) };
    if !is_ours(&found, uid) {
        return Ok(Stored::Foreign);
    }
    let value = |k| secret_value(&found, k);
    let key = match (value(ID), value(SECRET), value(CREATED).and_then(|c| c.parse().ok())) {
        (Some(id), Some(secret), Some(created)) => Some(PendingKey { id, secret, created }),
        _ => None,
    };
    Ok(Stored::Ours {
        uid: found.metadata.uid.clone(),
        version: found.metadata.resource_version.clone(),
        key,
    })
}

/// Stores `key` as the pending key: creates the store, or replaces one proven ours, exactly as read.
/// Returns the store as written.
pub(super) async fn store<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    secrets: &Api<Secret>,
    current: &Stored,
    key: &PendingKey,
) -> Result<Stored, Error> {
    let uid = obj.meta().uid.as_deref().ok_or(Error::Incomplete("uid"))?;
    let owner = obj.controller_owner_ref(&()).ok_or(Error::Incomplete("name or uid"))?;
    let name = store_name(uid);
    let data = BTreeMap::from([
        (ID.to_owned(), ByteString(key.id.clone().into_bytes())),
        (SECRET.to_owned(), ByteString(key.secret.clone().into_bytes())),
        (CREATED.to_owned(), ByteString(key.created.to_string().into_bytes())),
    ]);
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    let params = PostParams { dry_run: false, field_manager: Some(MANAGER.to_owned()) };
    let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
    let written = match current {
        Stored::Absent => secrets.create(&params, &secret).await?,
        Stored::Ours { version, .. } => {
            secret.metadata.resource_version = version.clone();
            secrets.replace(&name, &params, &secret).await?
        }
        Stored::Foreign => {
            return Err(Error::SecretConflict(format!(
                "a Secret named {name}, where the controller keeps a rotation's new access key until AWS \
                 accepts it, exists and was not created for this object; it is left untouched and the key is \
                 not rotated. Delete that Secret"
            )));
        }
    };
    ctx.memo.wrote_secret(namespace, &name, written.metadata.resource_version.as_deref());
    Ok(Stored::Ours {
        uid: written.metadata.uid,
        version: written.metadata.resource_version,
        key: Some(key.clone()),
    })
}

/// Deletes the pending store, if it is ours, exactly as read. Already gone counts as deleted.
pub(super) async fn clear(
    ctx: &Context,
    secrets: &Api<Secret>,
    namespace: &str,
    uid: &str,
    current: &Stored,
) -> Result<(), Error> {
    let Stored::Ours { uid: secret_uid, version, .. } = current else { return Ok(()) };
    let preconditions = Preconditions { uid: secret_uid.clone(), resource_version: version.clone() };
    let name = store_name(uid);
    match secrets
        .delete(&name, &DeleteParams { preconditions: Some(preconditions), ..Default::default() })
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    ctx.memo.forget_secret(namespace, &name);
    Ok(())
}
