//! The credentials logic shared by BucketBinding and BucketServiceKey (they differ only in their Secret).
//!
//! `apply`: wait for a ready Bucket -> record the IAM user name (from the uid) in status -> refuse a Secret
//! name taken by a foreign Secret -> ensure the user, its inline policy, boundary and common policy -> keep
//! exactly one access key, the one in the Secret -> write the Secret -> check the key works -> Ready.
//!
//! A new key's secret exists only in the response to CreateAccessKey, so it is written to the Secret
//! before anything that could fail or requeue: a reconcile interrupted after that finds it there; one
//! interrupted before finds an unknown key, deletes it and makes a new one. Ready waits until STS accepts
//! the key.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::object_key;
use super::error::error_policy;
use super::status::{apply_status, conditions_after};
use super::{Context, Error, MANAGER, ReconcileError};
use crate::api::{AccessSpec, Bucket, CredentialStatus, SecretRef};
use crate::aws::iam::{UserOps, key_works};
use crate::desired::conditions::{Observation, is_true, reasons, types};
use crate::desired::names::{self, Owner, tag};
use crate::desired::policy;
use crate::desired::secret::Credentials;

/// The label on every generated Secret.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "bucket-broker");

/// How often a key that AWS does not accept yet is checked again.
const PROPAGATION_RECHECK: Duration = Duration::from_secs(2);

/// How long a foreign Secret in the way is waited on before checking again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// What a credential kind adds to the shared logic.
pub trait CredentialKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    const FINALIZER: &'static str;
    const SECRET_TYPE: &'static str;
    fn access(&self) -> &AccessSpec;
    fn credential_status(&self) -> Option<&CredentialStatus>;
    /// The Secret's data. `instance_name` is the Bucket's name.
    fn secret_data(instance_name: &str, credentials: &Credentials<'_>) -> BTreeMap<String, String>;
}

/// Runs the controller of one credential kind until shutdown.
pub async fn run<K: CredentialKind>(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (objects, secrets, buckets) = match &ctx.settings.namespace {
        Some(ns) => (ctx.api::<K>(ns), ctx.api::<Secret>(ns), ctx.api::<Bucket>(ns)),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let controller = Controller::new(objects, watcher::Config::default());
    let store = controller.store();
    ctx.watch_cache(K::KIND, store.clone(), |o: &K| {
        o.credential_status().is_some_and(|s| is_true(&s.conditions, types::READY))
    });
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    controller
        // A Secret deleted or edited by hand is restored.
        .owns(secrets, managed)
        // A binding waiting for its Bucket goes on as soon as the Bucket changes.
        .watches(buckets, watcher::Config::default(), move |bucket: Bucket| {
            let namespace = bucket.namespace();
            store
                .state()
                .into_iter()
                .filter(|o| o.namespace() == namespace && o.access().bucket_ref.name == bucket.name_any())
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, |obj, err, ctx| error_policy(K::KIND, obj.as_ref(), err, &ctx), ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile<K: CredentialKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api = ctx.api::<K>(&obj.namespace().unwrap_or_default());
    let key = object_key(obj.as_ref());
    let started = std::time::Instant::now();
    let result = finalizer(&api, K::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj.as_ref(), &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj.as_ref(), &ctx).await,
        }
    })
    .await;
    ctx.record(K::KIND, &key, started, &result);
    result
}

fn secret_name<K: CredentialKind>(obj: &K) -> String {
    obj.access().secret_name.clone().unwrap_or_else(|| obj.name_any())
}

fn user_name<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<String, Error> {
    let uid = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?.uid;
    Ok(obj
        .credential_status()
        .and_then(|s| s.user_name.clone())
        .unwrap_or_else(|| names::user_name(&ctx.settings.user_prefix, uid)))
}

/// The status after `observations`, with the other fields as given.
fn status_with<K: CredentialKind>(
    obj: &K,
    mut status: CredentialStatus,
    observations: &[Observation],
) -> CredentialStatus {
    let current = obj.credential_status().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = obj.meta().generation;
    status.observed_generation = generation;
    status.conditions = conditions_after(current, observations, generation);
    status
}

async fn write_status<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    status: &CredentialStatus,
) -> Result<(), Error> {
    let api = ctx.api::<K>(&obj.namespace().unwrap_or_default());
    apply_status(&api, obj, obj.credential_status(), status).await?;
    Ok(())
}

fn network_observation(spec: &AccessSpec, ctx: &Context) -> Observation {
    let (status, reason, message) = if spec.allow_external_access {
        (false, reasons::EXTERNAL_ACCESS_ALLOWED, "the credentials work from anywhere (allowExternalAccess)")
    } else if !ctx.settings.network.is_configured() {
        (false, reasons::PLATFORM_NETWORK_NOT_CONFIGURED, "the controller has no platform network configured")
    } else {
        (true, reasons::PLATFORM_NETWORK, "the credentials work only from the platform network")
    };
    Observation { type_: types::NETWORK_RESTRICTED, status, reason, message: message.to_owned() }
}

async fn apply<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let Owner { uid, namespace, name, .. } = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    let spec = obj.access();
    let reference = obj.object_ref(&());
    let previous = obj.credential_status().cloned().unwrap_or_default();
    let user = user_name(obj, ctx)?;

    // 1. The Bucket must exist and be ready.
    let bucket = ctx.api::<Bucket>(namespace).get_opt(&spec.bucket_ref.name).await?;
    let ready_bucket = bucket.as_ref().and_then(|b| {
        let status = b.status.as_ref()?;
        let ready = is_true(&status.conditions, types::READY) && b.meta().deletion_timestamp.is_none();
        Some((status.bucket_name.clone()?, status.region.clone()?, status.arn.clone()?)).filter(|_| ready)
    });
    let Some((bucket_name, region, bucket_arn)) = ready_bucket else {
        let message = format!("waiting for Bucket {} to exist and be ready", spec.bucket_ref.name);
        let status =
            status_with(obj, previous.clone(), &[Observation::not_ready(reasons::BUCKET_NOT_READY, message)]);
        write_status(obj, ctx, &status).await?;
        // The Bucket watch wakes this object up; the requeue is a safety net.
        return Ok(Action::requeue(Duration::from_secs(60)));
    };

    // 2. The user name goes to status before the user exists.
    if previous.user_name.is_none() {
        let status = CredentialStatus { user_name: Some(user.clone()), ..previous.clone() };
        let status = status_with(
            obj,
            status,
            &[Observation::not_ready(reasons::PROVISIONING, "creating the IAM user")],
        );
        write_status(obj, ctx, &status).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }

    // 3. Never take over a Secret that is not ours.
    let secret_name = secret_name(obj);
    let secrets = ctx.api::<Secret>(namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(secret) = &existing
        && !owned_by(secret, uid)
    {
        let message = format!(
            "a Secret named {secret_name} already exists and was not created for this object; it is left untouched"
        );
        let status = status_with(
            obj,
            previous.clone(),
            &[Observation::not_ready(reasons::SECRET_CONFLICT, message.clone())],
        );
        if obj
            .credential_status()
            .and_then(|s| crate::api::find_condition(&s.conditions, types::READY))
            .is_none_or(|c| c.reason != reasons::SECRET_CONFLICT)
        {
            ctx.event(&reference, EventType::Warning, reasons::SECRET_CONFLICT, "WriteSecret", message).await;
        }
        write_status(obj, ctx, &status).await?;
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }

    // 4. The IAM user, its policies, exactly one key, and the Secret.
    let target = Target { bucket_name: &bucket_name, region: &region, bucket_arn: &bucket_arn };
    let delivered = match deliver(obj, ctx, &user, &target, &secrets, existing.as_ref()).await {
        Ok(delivered) => delivered,
        Err(err) => return fail(obj, ctx, previous, err).await,
    };
    let mut status = CredentialStatus {
        binding: Some(SecretRef { name: secret_name.clone() }),
        user_name: Some(user.clone()),
        user_arn: Some(delivered.user_arn),
        access_key_id: Some(delivered.key_id.clone()),
        ..previous.clone()
    };
    if !delivered.changes.is_empty() {
        let note = format!("{} for IAM user {user}", delivered.changes.join(", "));
        tracing::info!(namespace, name, user = %user, key = %delivered.key_id, changes = ?delivered.changes, "Provisioned credentials");
        ctx.event(&reference, EventType::Normal, reasons::PROVISIONED, "Provision", note).await;
    }

    // 5. Ready once AWS accepts the key.
    if !delivered.works {
        let waiting = Observation::not_ready(
            reasons::CREDENTIALS_PROPAGATING,
            "waiting for AWS to accept the new access key",
        );
        status = status_with(obj, status, &[waiting, network_observation(spec, ctx)]);
        write_status(obj, ctx, &status).await?;
        return Ok(Action::requeue(PROPAGATION_RECHECK));
    }
    let ready =
        Observation::ready(reasons::PROVISIONED, format!("the credentials are in Secret {secret_name}"));
    status = status_with(obj, status, &[ready, network_observation(spec, ctx)]);
    write_status(obj, ctx, &status).await?;
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// The bucket a credential is for, from its Bucket's status.
struct Target<'a> {
    bucket_name: &'a str,
    region: &'a str,
    bucket_arn: &'a str,
}

/// What [`deliver`] did.
struct Delivered {
    user_arn: String,
    key_id: String,
    /// AWS accepts the key.
    works: bool,
    changes: Vec<&'static str>,
}

/// Ensures the user and its policies, keeps exactly one live key (the one in our Secret while it is
/// intact or still accepted by AWS, a new one otherwise), and writes the Secret.
async fn deliver<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    user: &str,
    target: &Target<'_>,
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
) -> Result<Delivered, Error> {
    let (user_arn, mut changes) = provision(obj, ctx, user, target.bucket_arn).await?;
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let data_for = |id: &str, secret: &str| {
        let credentials = Credentials {
            access_key_id: id,
            secret_access_key: secret,
            region: target.region,
            bucket_name: target.bucket_name,
            deploy_env: &ctx.settings.deploy_env,
            endpoint_url: ctx.aws.endpoint_url.as_deref(),
        };
        as_bytes(K::secret_data(&obj.access().bucket_ref.name, &credentials))
    };

    let keys = ops.access_keys().await?;
    let in_secret = existing
        .and_then(|s| secret_value(s, "AWS_ACCESS_KEY_ID"))
        .zip(existing.and_then(|s| secret_value(s, "AWS_SECRET_ACCESS_KEY")))
        .filter(|(id, _)| keys.contains(id));
    let reusable = match in_secret {
        Some((id, secret)) => {
            let intact = existing.and_then(|s| s.data.as_ref()) == Some(&data_for(&id, &secret));
            // A Secret edited by hand may carry a wrong secret key: reuse it only if AWS accepts it.
            let usable = intact || key_works(&ctx.aws.sts, &ctx.aws.stats, &id, &secret).await?;
            usable.then_some((id, secret))
        }
        None => None,
    };
    let (key_id, key_secret, new_key) = match reusable {
        Some((id, secret)) => {
            // Exactly one live key: any other is a leftover of an interrupted reconcile.
            for stale in keys.iter().filter(|k| **k != id) {
                ops.delete_access_key(stale).await?;
            }
            (id, secret, false)
        }
        None => {
            // No usable key in the Secret: every key of the user is unusable.
            for key in &keys {
                ops.delete_access_key(key).await?;
            }
            let key = ops.create_access_key().await?;
            changes.push("issued a new access key");
            (key.id, key.secret, true)
        }
    };

    // Written before anything else can fail, so that a new key's secret is never lost.
    let data = data_for(&key_id, &key_secret);
    if ensure_secret::<K>(obj, secrets, &secret_name(obj), existing, data).await? {
        changes.push("wrote the Secret");
    }

    let status = obj.credential_status();
    let verified = !new_key
        && status.and_then(|s| s.access_key_id.as_deref()) == Some(key_id.as_str())
        && status.is_some_and(|s| is_true(&s.conditions, types::READY));
    let works = verified || key_works(&ctx.aws.sts, &ctx.aws.stats, &key_id, &key_secret).await?;
    Ok(Delivered { user_arn, key_id, works, changes })
}

fn as_bytes(data: BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()
}

/// Ensures the IAM user and its policies; returns the user's ARN and what changed.
async fn provision<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    user: &str,
    bucket_arn: &str,
) -> Result<(String, Vec<&'static str>), Error> {
    let owner = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    let spec = obj.access();
    let settings = &ctx.settings;
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let mut changes = Vec::new();
    let arn = match ops.get().await? {
        Some(existing) => {
            if let Some((_, other)) = existing.tags.iter().find(|(k, v)| k == tag::UID && v != owner.uid) {
                return Err(Error::Conflict(format!(
                    "the IAM user {user} is tagged as belonging to another object (uid {other}); it is left untouched"
                )));
            }
            if ops
                .ensure_boundary(
                    existing.permissions_boundary.as_deref(),
                    settings.permissions_boundary_arn.as_deref(),
                )
                .await?
            {
                changes.push("set the permissions boundary");
            }
            existing.arn
        }
        None => {
            let tags = names::tags(&owner, &settings.deploy_env);
            let arn =
                ops.create(&settings.iam_path, &tags, settings.permissions_boundary_arn.as_deref()).await?;
            changes.push("created the IAM user");
            arn
        }
    };
    let desired =
        policy::user_policy(bucket_arn, spec.permissions, spec.allow_external_access, &settings.network);
    if ops.ensure_policy(&desired).await? {
        changes.push("wrote the access policy");
    }
    if let Some(common) = &settings.common_user_policy_arn
        && !ops.attached_policies().await?.contains(common)
    {
        ops.attach_policy(common).await?;
        changes.push("attached the common policy");
    }
    Ok((arn, changes))
}

async fn fail<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    previous: CredentialStatus,
    err: Error,
) -> Result<Action, Error> {
    let message = err.to_string();
    ctx.event(&obj.object_ref(&()), EventType::Warning, err.reason(), "Provision", message.clone()).await;
    let status = status_with(obj, previous, &[Observation::not_ready(err.reason(), message)]);
    write_status(obj, ctx, &status).await?;
    Err(err)
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Writes the Secret unless it already holds exactly this data, type, label and owner. Returns whether
/// it wrote.
async fn ensure_secret<K: CredentialKind>(
    obj: &K,
    secrets: &Api<Secret>,
    name: &str,
    existing: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
) -> Result<bool, Error> {
    let owner = obj.controller_owner_ref(&()).ok_or(Error::Incomplete("name or uid"))?;
    let up_to_date = existing.is_some_and(|s| {
        s.data.as_ref() == Some(&data)
            && s.type_.as_deref() == Some(K::SECRET_TYPE)
            && s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str)
                == Some(MANAGED_BY.1)
            && s.metadata.owner_references.as_ref().is_some_and(|refs| refs.contains(&owner))
    });
    if up_to_date {
        return Ok(false);
    }
    let secret = desired_secret(name, owner, K::SECRET_TYPE, data);
    secrets.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret)).await?;
    Ok(true)
}

fn desired_secret(
    name: &str,
    owner: OwnerReference,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

async fn cleanup<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let Owner { uid, namespace, name, .. } = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    if let Some(user) = obj.credential_status().and_then(|s| s.user_name.clone()) {
        let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user: &user };
        match ops.get().await? {
            Some(existing) if existing.tags.iter().any(|(k, v)| k == tag::UID && v != uid) => {
                tracing::warn!(namespace, name, user = %user, "Left an IAM user tagged for another object");
            }
            Some(_) => {
                ops.delete_all().await?;
                tracing::info!(namespace, name, user = %user, "Deleted IAM user and its keys");
                let note = format!("revoked the credentials: deleted IAM user {user} and its keys");
                ctx.event(&obj.object_ref(&()), EventType::Normal, "Revoked", "Delete", note).await;
            }
            None => {}
        }
    }
    let secrets = ctx.api::<Secret>(namespace);
    let secret_name = secret_name(obj);
    if let Some(secret) = secrets.get_opt(&secret_name).await?
        && owned_by(&secret, uid)
    {
        match secrets.delete(&secret_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Action::await_change())
}
