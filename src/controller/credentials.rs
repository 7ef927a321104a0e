//! The credentials logic shared by BucketBinding and BucketServiceKey (they differ only in their Secret).
//!
//! `apply`: wait for a ready Bucket -> refuse a Secret name taken by a Secret not provably ours, holding no
//! key meanwhile -> ensure the IAM user, its inline policy (written only once AWS shows the bucket carries
//! the Bucket's uid tag), boundary and common policy -> keep exactly one access key, the one in the Secret
//! -> create the Secret, or update it with its resourceVersion as precondition -> check the key works
//! (bounded) -> Ready.
//!
//! Trust: the user's name derives from this object's uid, the bucket's from the Bucket's uid. A name found
//! in a status (tenant-writable) is used only when AWS shows the object carries the right uid tag (a
//! user or bucket made under an earlier prefix); status is otherwise a display.
//!
//! A new key's secret exists only in the response to CreateAccessKey, so it is written to the Secret
//! before anything that could fail or requeue: a reconcile interrupted after that finds it there; one
//! interrupted before finds an unknown key, deletes it and makes a new one. A key that cannot be stored
//! (the Secret name was taken in between) is deleted at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::app_secret;
use super::class::class_of;
use super::context::SharedWatch;
use super::error::error_policy;
use super::finalizer::finalized;
use super::memo::{RememberedUser, Settled, Touch, bucket_view, looks_converged};
use super::status::{apply_status, conditions_after, ready_or_held};
use super::{Context, Error, MANAGER, ReconcileError};
use crate::api::{
    AccessKeyStatus, AccessSpec, Bucket, BucketClass, CredentialStatus, KeyRotationStatus, KeyState,
    SecretRef,
};
use crate::aws::iam::{AccessKey, KeyCheck, User, UserOps, check_key};
use crate::aws::{ErrorKind, Priority};
use crate::desired::attachments;
use crate::desired::class;
use crate::desired::conditions::{self, Observation, is_true, reasons, types};
use crate::desired::names::{self, Owner, Ownership};
use crate::desired::secret::Credentials;
use crate::desired::{policy, rotation};

/// The label on every generated Secret.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "bucket-broker");

/// How often a key that AWS does not accept yet is checked again.
const PROPAGATION_RECHECK: Duration = Duration::from_secs(2);

/// How long a binding waits for its Bucket before checking again (the Bucket watch usually wakes it first).
const BUCKET_RECHECK: Duration = Duration::from_secs(60);

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
    /// The app whose shared Secret also lists these credentials (BucketBinding's `spec.app`).
    fn app(&self) -> Option<&str> {
        None
    }
}

/// Runs the controller of one credential kind until shutdown.
pub async fn run<K: CredentialKind>(
    ctx: Arc<Context>,
    objects: &SharedWatch<K>,
    buckets: &SharedWatch<Bucket>,
    classes: &SharedWatch<BucketClass>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let store = objects.store.clone();
    ctx.watch_cache(K::KIND, store.clone(), |o: &K| {
        o.credential_status().is_some_and(|s| is_true(&s.conditions, types::READY))
    });
    let aged = store.clone();
    ctx.metrics.track_key_ages(K::KIND, move || {
        aged.state()
            .iter()
            .filter_map(|o| o.credential_status())
            .flat_map(|s| s.access_keys.iter().map(|k| k.created.0.as_second()))
            .min()
    });
    // Secrets are watched as metadata only (`PartialObjectMeta`): which one changed, never their data.
    let secrets = ctx.api_for::<PartialObjectMeta<Secret>>(&ctx.settings.namespace);
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // The initial list (and a relist) is no change: every object has its first pass anyway, and a relist
    // after a long disconnection leaves what changed meanwhile to the resync.
    let secret_events = watcher::watcher(secrets, managed).default_backoff().filter_map(|event| {
        std::future::ready(match event {
            Ok(watcher::Event::Apply(secret)) => Some(Ok(secret)),
            // A deletion always matters: it carries no version that could be an own write's.
            Ok(watcher::Event::Delete(mut secret)) => {
                secret.metadata.resource_version = None;
                Some(Ok(secret))
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone) => None,
            Err(err) => Some(Err(err)),
        })
    });
    let (on_secret, on_bucket, on_class) = (ctx.clone(), ctx.clone(), ctx.clone());
    let (class_objects, class_buckets) = (store.clone(), buckets.store.clone());
    Controller::for_shared_stream(objects.changes_by_others(ctx.clone()), store.clone())
        // A Secret deleted or edited by someone else is restored: its own Secret wakes the object, an app
        // Secret every binding it lists. The controller's own writes wake nothing.
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace().unwrap_or_default();
            let key = format!("{namespace}/{}", secret.name_any());
            let version = secret.metadata.resource_version.clone().unwrap_or_default();
            secret
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.kind == K::KIND)
                .filter(|r| {
                    let touch = Touch::Secret { key: key.clone(), resource_version: version.clone() };
                    on_secret.memo.touch(&r.uid, touch)
                })
                .map(|r| ObjectRef::<K>::new(&r.name).within(&namespace))
                .collect::<Vec<_>>()
        })
        // A binding waiting for its Bucket goes on as soon as the Bucket changes in a way it depends on.
        .watches_shared_stream(buckets.changes(), move |bucket: Arc<Bucket>| {
            let namespace = bucket.namespace();
            let view = bucket_view(Some(&bucket));
            store
                .state()
                .into_iter()
                .filter(|o| o.namespace() == namespace && o.access().bucket_ref.name == bucket.name_any())
                .filter(|o| {
                    on_bucket.memo.touch(o.meta().uid.as_deref().unwrap_or_default(), Touch::Bucket(view))
                })
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect::<Vec<_>>()
        })
        // A changed class may allow or forbid external access: the credentials of its Buckets (those naming
        // it, and those naming none, whose default it may be) look again.
        .watches_shared_stream(classes.changes(), move |class: Arc<BucketClass>| {
            let name = class.name_any();
            let version = class.metadata.resource_version.clone().unwrap_or_default();
            let of_class: Vec<(Option<String>, String)> = class_buckets
                .state()
                .iter()
                .filter(|b| b.spec.class_name.as_ref().is_none_or(|n| *n == name))
                .map(|b| (b.namespace(), b.name_any()))
                .collect();
            class_objects
                .state()
                .into_iter()
                .filter(|o| {
                    of_class.iter().any(|(ns, b)| *ns == o.namespace() && *b == o.access().bucket_ref.name)
                })
                .filter(|o| {
                    let uid = o.meta().uid.as_deref().unwrap_or_default();
                    on_class.memo.touch(uid, Touch::Class(version.clone()))
                })
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
    let converged = obj
        .credential_status()
        .is_some_and(|s| looks_converged(obj.meta(), s.observed_generation, &s.conditions));
    let pass = finalized(&api, K::FINALIZER, obj.clone(), |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj.as_ref(), &ctx).await,
            Finalizer::Cleanup(obj) => {
                let revoked = cleanup(obj.as_ref(), &ctx).await;
                if revoked.is_ok() {
                    ctx.memo.forget(obj.meta().uid.as_deref().unwrap_or_default());
                }
                revoked
            }
        }
    });
    let result = ctx.reconcile(K::KIND, obj.as_ref(), converged, pass).await;
    if result.is_ok() && obj.meta().deletion_timestamp.is_some() {
        // The finalizer is gone, so is the object: a Bucket being deleted may have waited for it.
        ctx.wake_bucket(&obj.namespace().unwrap_or_default(), &obj.access().bucket_ref.name);
    }
    result
}

fn secret_name<K: CredentialKind>(obj: &K) -> String {
    obj.access().secret_name.clone().unwrap_or_else(|| obj.name_any())
}

/// The IAM user: named from the uid; a different name in status is used only when AWS shows that user
/// carries this object's uid tag (made under an earlier `--user-prefix`).
async fn user_name<K: CredentialKind>(obj: &K, ctx: &Context, uid: &str) -> Result<String, Error> {
    let derived = names::user_name(&ctx.settings.user_prefix, uid);
    let hint = obj.credential_status().and_then(|s| s.user_name.clone()).filter(|h| *h != derived);
    let Some(hint) = hint else { return Ok(derived) };
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user: &hint };
    match ops.get().await? {
        Some(user) if names::ownership(&user.tags, uid, &ctx.settings.cluster()) == Ownership::Ours => {
            Ok(hint)
        }
        _ => Ok(derived),
    }
}

/// The status after `observations`, with the other fields as given. `observedGeneration` moves only when
/// the spec of this generation was fully applied, or found to need a person ([`conditions::handled`]).
fn status_with<K: CredentialKind>(
    obj: &K,
    mut status: CredentialStatus,
    observations: &[Observation],
    applied: bool,
) -> CredentialStatus {
    let current = obj.credential_status().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = obj.meta().generation;
    if conditions::handled(applied, observations) {
        status.observed_generation = generation;
    }
    status.conditions = conditions_after(current, observations, generation);
    status
}

async fn write_status<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    status: &CredentialStatus,
) -> Result<(), Error> {
    let api = ctx.api::<K>(&obj.namespace().unwrap_or_default());
    let written = apply_status(&api, obj, obj.credential_status(), status).await?;
    ctx.memo.wrote(obj.meta().uid.as_deref().unwrap_or_default(), written.as_deref());
    Ok(())
}

fn network_observation(external_access: bool, ctx: &Context) -> Observation {
    let network = &ctx.settings.network;
    let (status, reason, message) = if external_access {
        (
            false,
            reasons::EXTERNAL_ACCESS_ALLOWED,
            "the credentials work from anywhere (allowExternalAccess)".to_owned(),
        )
    } else if !network.is_configured() {
        (
            false,
            reasons::PLATFORM_NETWORK_NOT_CONFIGURED,
            "the controller has no platform network configured".to_owned(),
        )
    } else {
        let message = format!("the credentials work only from the platform network: {}", network.describe());
        (true, reasons::PLATFORM_NETWORK, message)
    };
    Observation { type_: types::NETWORK_RESTRICTED, status, reason, message }
}

/// Why a binding cannot be provisioned for its Bucket yet, if it cannot.
fn bucket_wait(bucket: Option<&Bucket>, name: &str) -> Option<(&'static str, String)> {
    match bucket {
        None => Some((reasons::BUCKET_NOT_READY, format!("waiting for Bucket {name} to exist"))),
        Some(b) if b.meta().deletion_timestamp.is_some() => Some((
            reasons::BUCKET_DELETING,
            format!("Bucket {name} is being deleted; no credentials are issued for it"),
        )),
        Some(b) if !b.status.as_ref().is_some_and(|s| is_true(&s.conditions, types::READY)) => {
            Some((reasons::BUCKET_NOT_READY, format!("waiting for Bucket {name} to be ready")))
        }
        Some(_) => None,
    }
}

/// How a pass that did not fail ended: when the object is next due, whether it converged, what the pass
/// saw of the Bucket, and the IAM user when this pass left it as it read it.
struct Step {
    after: Duration,
    converged: bool,
    user: Option<RememberedUser>,
}

impl Step {
    fn waiting(after: Duration) -> Self {
        Step { after, converged: false, user: None }
    }
}

/// One pass; any failure, including a status write the CRD drops, ends in the Ready condition.
async fn apply<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    match pass(obj, ctx).await {
        Ok(step) => {
            let settled = Settled { converged: step.converged, after: step.after, user: step.user };
            ctx.memo.settle(obj, settled);
            Ok(Action::requeue(step.after))
        }
        Err(err) => fail(obj, ctx, err).await,
    }
}

async fn pass<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Step, Error> {
    let owner = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    let spec = obj.access();
    let reference = obj.object_ref(&());
    let previous = obj.credential_status().cloned().unwrap_or_default();

    // 1. The Bucket must exist and be ready. Its status is a hint; AWS is checked before any grant.
    let bucket = ctx.api::<Bucket>(owner.namespace).get_opt(&spec.bucket_ref.name).await?;
    ctx.memo.saw_bucket(owner.uid, bucket_view(bucket.as_ref()));
    let user = user_name(obj, ctx, owner.uid).await?;
    if let Some((reason, message)) = bucket_wait(bucket.as_ref(), &spec.bucket_ref.name) {
        // Waiting for the Bucket must not keep keys alive past their time. An object that never had
        // credentials (its status says so: a hint, deciding only whether to look now or once the Bucket is
        // ready) has none to prune: no IAM call while it waits.
        if previous.user_name.is_some() || !previous.access_keys.is_empty() {
            let existing = ctx.api::<Secret>(owner.namespace).get_opt(&secret_name(obj)).await?;
            prune_keys(ctx, &user, existing.as_ref().filter(|s| is_ours(s, owner.uid))).await?;
        }
        let status = status_with(obj, previous, &[Observation::not_ready(reason, message)], false);
        write_status(obj, ctx, &status).await?;
        return Ok(Step::waiting(BUCKET_RECHECK));
    }
    let Some(bucket) = bucket else { return Ok(Step::waiting(BUCKET_RECHECK)) };
    let mut target = Target::of(&bucket, ctx)?;
    // The Bucket's class decides whether credentials may work from outside the platform network. A class
    // that cannot be decided allows nothing more than the platform network.
    let class = class_of(ctx, &bucket.spec, owner.namespace).await?.ok();
    let forbidden = class
        .as_ref()
        .map_or(Some("the Bucket's class cannot be decided".to_owned()), |c| {
            class::check_external_access(spec.allow_external_access, c).err().map(|r| match r {
                class::Refusal::Forbids(m) | class::Refusal::NotFound(m) => m,
            })
        })
        .filter(|_| spec.allow_external_access);
    target.external_access = spec.allow_external_access && forbidden.is_none();
    target.kms_key = class.as_ref().and_then(class::kms_key).map(str::to_owned);
    target.class_tags = class.as_ref().map(class::Class::tags).unwrap_or_default();
    // No credentials are issued for what the class forbids; existing ones are confined to the platform
    // network (below), and the condition says why.
    if let Some(message) = &forbidden
        && previous.user_name.is_none()
    {
        return Err(Error::ClassForbids(message.clone()));
    }

    // 2. Never take over a Secret that is not provably ours, and hold no key while it is in the way.
    let secret_name = secret_name(obj);
    let secrets = ctx.api::<Secret>(owner.namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(secret) = &existing
        && !is_ours(secret, owner.uid)
    {
        conflict(obj, ctx, &user, previous, taken_message(&secret_name)).await?;
        return Ok(Step::waiting(CONFLICT_RECHECK));
    }

    // 3. The IAM user, its policies, exactly one key, and the Secret.
    let delivered = match deliver(obj, ctx, &owner, &user, &target, &secrets, existing.as_ref()).await {
        Ok(delivered) => delivered,
        Err(Error::SecretConflict(message)) => {
            conflict(obj, ctx, &user, previous, message).await?;
            return Ok(Step::waiting(CONFLICT_RECHECK));
        }
        Err(err) => return Err(err),
    };
    // A retiring key's deadline or the next rotation may come before the resync.
    let next_pass = delivered
        .wake_at
        .map(|at| Duration::from_secs(at.saturating_sub(unix_now()).max(1) as u64))
        .map_or(ctx.resync_after(owner.uid), |wake| wake.min(ctx.resync_after(owner.uid)));
    let mut status = CredentialStatus {
        binding: Some(SecretRef { name: secret_name.clone() }),
        user_name: Some(user.clone()),
        user_arn: Some(delivered.user_arn),
        access_key_id: Some(delivered.key_id.clone()),
        access_keys: delivered.keys,
        key_rotation: Some(delivered.rotation),
        ..previous.clone()
    };
    if !delivered.changes.is_empty() {
        let note = format!("{} for IAM user {user}", delivered.changes.join(", "));
        tracing::info!(namespace = owner.namespace, name = owner.name, user = %user, key = %delivered.key_id, changes = ?delivered.changes, "Provisioned credentials");
        ctx.event(&reference, EventType::Normal, reasons::PROVISIONED, "Provision", note).await;
    }

    // 4. The app Secret lists this binding, and a previous app's no longer does.
    match sync_apps(obj, ctx, owner.namespace, &previous).await {
        Ok(app_secret_name) => status.app_secret_name = app_secret_name,
        // The binding's own credentials stay: they are in its own Secret.
        Err(Error::SecretConflict(message)) => {
            let already = previous.conditions.iter().any(|c| c.reason == reasons::SECRET_CONFLICT);
            if !already {
                ctx.event(
                    &reference,
                    EventType::Warning,
                    reasons::SECRET_CONFLICT,
                    "WriteSecret",
                    message.clone(),
                )
                .await;
            }
            let conflict = Observation::not_ready(reasons::SECRET_CONFLICT, message);
            status = status_with(
                obj,
                status,
                &[conflict, network_observation(target.external_access, ctx)],
                false,
            );
            write_status(obj, ctx, &status).await?;
            return Ok(Step::waiting(CONFLICT_RECHECK));
        }
        Err(err) => return Err(err),
    }

    // 5. Ready once AWS accepts the key.
    if !delivered.works {
        let waiting = Observation::not_ready(
            reasons::CREDENTIALS_PROPAGATING,
            "waiting for AWS to accept the new access key",
        );
        status =
            status_with(obj, status, &[waiting, network_observation(target.external_access, ctx)], false);
        write_status(obj, ctx, &status).await?;
        return Ok(Step::waiting(PROPAGATION_RECHECK));
    }
    if let Some(message) = forbidden {
        return Err(Error::ClassForbids(format!(
            "{message}; the credentials in Secret {secret_name} work only from the platform network"
        )));
    }
    let ready =
        Observation::ready(reasons::PROVISIONED, format!("the credentials are in Secret {secret_name}"));
    let network = network_observation(target.external_access, ctx);
    let (observation, held) = ready_or_held(&previous.conditions, ready.clone());
    write_status(obj, ctx, &status_with(obj, status.clone(), &[observation, network.clone()], !held)).await?;
    if held {
        // That write kept every field: the CRD was fixed, so success can be reported now.
        write_status(obj, ctx, &status_with(obj, status, &[ready, network], true)).await?;
    }
    Ok(Step { after: next_pass, converged: true, user: delivered.unchanged_user })
}

/// Keeps app Secrets in step with this object: its app's lists it; the app it was in before (named in
/// status: a hint, harmless since every sync recomputes from the truth) no longer does. Returns the app
/// Secret's name.
async fn sync_apps<K: CredentialKind>(
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

/// The AWS bucket a credential is for. Its name comes from the Bucket's uid, or from the Bucket's status
/// (a bucket made under an earlier prefix); either way, no access is granted until AWS shows the bucket
/// carries the Bucket's uid tag ([`verify_bucket`]). ARNs are built from the name, never read.
struct Target {
    bucket_uid: String,
    bucket_name: String,
    region: String,
    bucket_arn: String,
    /// The credential works from outside the platform network: it asks to, and the Bucket's class allows it.
    external_access: bool,
    /// The platform's KMS key the bucket is encrypted with (its class's SSE-KMS), which the credential uses.
    kms_key: Option<String>,
    /// The cost-allocation tags of the Bucket's class, for the IAM user too.
    class_tags: Vec<(String, String)>,
}

impl Target {
    fn of(bucket: &Bucket, ctx: &Context) -> Result<Self, Error> {
        let uid = Owner::of("Bucket", &bucket.metadata).map_err(Error::Incomplete)?.uid;
        let status = bucket.status.as_ref();
        let bucket_name = status
            .and_then(|s| s.bucket_name.clone())
            .unwrap_or_else(|| names::bucket_name(&ctx.settings.bucket_prefix, uid));
        // The region decides no access: a wrong one only makes this credential's own calls fail.
        let region = status
            .and_then(|s| s.region.clone())
            .or_else(|| bucket.spec.region.clone())
            .unwrap_or_else(|| ctx.settings.region.clone());
        let bucket_arn = names::bucket_arn(names::partition(&region), &bucket_name);
        Ok(Target {
            bucket_uid: uid.to_owned(),
            bucket_name,
            region,
            bucket_arn,
            external_access: false,
            kms_key: None,
            class_tags: Vec::new(),
        })
    }
}

/// Checks with AWS that the target bucket is the Bucket's, before any policy grants access to it.
async fn verify_bucket(ctx: &Context, target: &Target, bucket_ref: &str) -> Result<(), Error> {
    let ops = ctx.bucket_ops(&target.region, &target.bucket_name);
    let derived = names::bucket_name(&ctx.settings.bucket_prefix, &target.bucket_uid);
    let tags = ops.tags().await?;
    let untagged = tags.as_deref().is_some_and(|tags| {
        names::ownership(tags, &target.bucket_uid, &ctx.settings.cluster()) == names::Ownership::Untagged
    });
    if untagged && !ops.in_account().await? {
        return Err(Error::BucketUnverified(format!(
            "the AWS bucket {} of Bucket {bucket_ref} is not this account's; no access is granted",
            target.bucket_name
        )));
    }
    match tags {
        None => Err(Error::BucketUnverified(format!(
            "the AWS bucket {} of Bucket {bucket_ref} does not exist yet; no access is granted",
            target.bucket_name
        ))),
        Some(tags)
            if names::may_manage(
                &tags,
                &target.bucket_uid,
                &ctx.settings.cluster(),
                &target.bucket_name,
                &derived,
            ) =>
        {
            Ok(())
        }
        Some(_) => Err(Error::BucketUnverified(format!(
            "the AWS bucket {} named in Bucket {bucket_ref}'s status does not belong to that Bucket; no access is granted",
            target.bucket_name
        ))),
    }
}

/// What [`deliver`] did.
struct Delivered {
    /// The IAM user, when this pass left it as it read it (then a background pass may skip reading it).
    unchanged_user: Option<RememberedUser>,
    user_arn: String,
    key_id: String,
    /// AWS accepts the key.
    works: bool,
    changes: Vec<&'static str>,
    /// The user's keys and the rotation schedule, for status.
    keys: Vec<AccessKeyStatus>,
    rotation: KeyRotationStatus,
    /// When this object needs a pass before its resync: a retiring key's deadline, or the next rotation.
    wake_at: Option<i64>,
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn time_at(seconds: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// Ensures the user and its policies, keeps the key in our Secret (while it is intact or still accepted by
/// AWS; a new one otherwise) plus, during a rotation's overlap, the retiring one, and nothing else; rotates
/// when due; and writes the Secret.
async fn deliver<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    owner: &Owner<'_>,
    user: &str,
    target: &Target,
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
) -> Result<Delivered, Error> {
    let spec = obj.access();
    let rotation_spec = spec.key_rotation.as_ref();
    let policy = rotation::policy(
        rotation_spec.and_then(|r| r.interval.as_deref()),
        rotation_spec.and_then(|r| r.overlap.as_deref()),
        ctx.settings.max_key_age,
    )
    .map_err(Error::InvalidSpec)?;
    let Provisioned { user: iam_user, mut changes, created, mut user_changed } =
        provision(obj, ctx, owner, user, target).await?;
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let data_for = |id: &str, secret: &str| {
        let credentials = Credentials {
            access_key_id: id,
            secret_access_key: secret,
            region: &target.region,
            bucket_name: &target.bucket_name,
            deploy_env: &ctx.settings.deploy_env,
            endpoint_url: ctx.aws.endpoint_url.as_deref(),
        };
        as_bytes(K::secret_data(&spec.bucket_ref.name, &credentials))
    };
    let recorded = |key: &str| iam_user.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let now = unix_now();

    // A user this pass created has no keys yet.
    let keys = if created { Vec::new() } else { ops.access_keys().await? };
    let in_secret = existing
        .and_then(|s| secret_value(s, "AWS_ACCESS_KEY_ID"))
        .zip(existing.and_then(|s| secret_value(s, "AWS_SECRET_ACCESS_KEY")))
        .and_then(|(id, secret)| keys.iter().find(|k| k.id == id).map(|k| (k.clone(), secret)));
    let reusable = match in_secret {
        Some((key, secret)) => {
            let intact = existing.and_then(|s| s.data.as_ref()) == Some(&data_for(&key.id, &secret));
            // A Secret edited by hand may carry a wrong secret key: reuse it only if AWS accepts it.
            let usable = intact
                || check_key(&ctx.aws.sts, &ctx.aws.stats, &key.id, &secret).await? == KeyCheck::Accepted;
            usable.then_some((key, secret))
        }
        None => None,
    };

    // The retiring key of a rotation, as recorded in AWS. A record naming the key still in the Secret is
    // a rotation interrupted before the Secret switched: its new key's secret was never stored.
    let record = recorded(rotation::tag::RETIRING);
    let valid = record
        .and_then(rotation::parse_retiring)
        .filter(|r| keys.iter().any(|k| k.id == r.id))
        .filter(|r| reusable.as_ref().is_none_or(|(key, _)| key.id != r.id));
    // A switched rotation that answered a request: the request is done, even if the pass that switched
    // stopped before saying so.
    let answered = valid.and_then(|r| r.request);
    if let Some(request) = answered
        && recorded(rotation::tag::ROTATED_FOR) != Some(request)
    {
        ops.set_tag(rotation::tag::ROTATED_FOR, Some(request)).await?;
        user_changed = true;
    }
    let mut retiring = valid.map(|r| (r.id.to_owned(), r.deadline));
    if let Some((id, deadline)) = &retiring
        && now >= *deadline
    {
        ops.delete_access_key(id).await?;
        changes.push("deleted the retired access key");
        retiring = None;
    }
    if record.is_some() && retiring.is_none() {
        ops.set_tag(rotation::tag::RETIRING, None).await?;
        user_changed = true;
    }
    let kept = |id: &str| {
        reusable.as_ref().is_some_and(|(key, _)| key.id == id)
            || retiring.as_ref().is_some_and(|(r, _)| r == id)
    };
    // At most two keys, and never one that is neither in the Secret nor retiring: a leftover of an
    // interrupted pass, whose secret nobody has.
    for stale in keys.iter().filter(|k| !kept(&k.id)) {
        ops.delete_access_key(&stale.id).await?;
    }
    let (mut key, mut key_secret, mut new_key) = match reusable {
        Some((key, secret)) => (key, secret, false),
        None => {
            let created = ops.create_access_key().await?;
            changes.push("issued a new access key");
            // AWS's creation time, as later listings report it (not ours: status would change then).
            let at = created.created.unwrap_or(now);
            (AccessKey { id: created.id, created: Some(at) }, created.secret, true)
        }
    };

    // Rotation: a second key, checked with STS before it goes anywhere; the old key recorded as retiring;
    // then the Secret switches. The user never holds more than two keys.
    let requested = obj.meta().annotations.as_ref().and_then(|a| a.get(rotation::ROTATE_ANNOTATION));
    let mut rotated = None;
    if !new_key && retiring.is_none() {
        let handled = answered.or(recorded(rotation::tag::ROTATED_FOR));
        let created = key.created.unwrap_or(now);
        if let Some(due) = rotation::due(now, created, &policy, requested.map(String::as_str), handled) {
            let fresh = ops.create_access_key().await?;
            let fresh_key = AccessKey { id: fresh.id, created: Some(fresh.created.unwrap_or(now)) };
            if !propagated(ctx, &fresh_key, &fresh.secret).await? {
                // Its secret is nowhere else: a key that cannot be verified now is not kept.
                ops.delete_access_key(&fresh_key.id).await?;
                ctx.metrics.rotated(K::KIND, "failed");
                return Err(Error::CredentialsRejected(format!(
                    "AWS STS did not accept the new access key {} in time; the rotation is retried",
                    fresh_key.id
                )));
            }
            let deadline = now.saturating_add(policy.overlap.as_secs() as i64);
            let request = requested.filter(|_| due == rotation::Due::Requested).map(|v| rotation::digest(v));
            let record = rotation::retiring(&key.id, deadline, request.as_deref());
            ops.set_tag(rotation::tag::RETIRING, Some(&record)).await?;
            user_changed = true;
            retiring = Some((key.id.clone(), deadline));
            rotated = Some(due);
            (key, key_secret, new_key) = (fresh_key, fresh.secret, true);
        }
    }

    // Written before anything else can fail, so that a new key's secret is never lost; a new key that
    // cannot be stored is deleted, so that no live key is held outside the Secret.
    let data = data_for(&key.id, &key_secret);
    let name = secret_name(obj);
    match write_secret::<K>(obj, secrets, &name, existing, data, &key.id).await {
        Ok(Some(version)) => {
            ctx.memo.wrote_secret(owner.namespace, &name, Some(&version));
            changes.push("wrote the Secret");
        }
        Ok(None) => {}
        Err(err) => {
            // Only a definite refusal proves the Secret does not hold the key: after a timeout the write
            // may have landed, and the next pass deletes the key if it did not.
            if new_key && err.is_refusal() {
                ops.delete_access_key(&key.id).await?;
            }
            return Err(err);
        }
    }
    if let Some(due) = rotated {
        if due == rotation::Due::Requested
            && let Some(value) = requested
        {
            ops.set_tag(rotation::tag::ROTATED_FOR, Some(&rotation::digest(value))).await?;
            user_changed = true;
        }
        ctx.metrics.rotated(K::KIND, "success");
        changes.push("rotated the access key");
    }

    let status = obj.credential_status();
    let verified = !new_key
        && status.and_then(|s| s.access_key_id.as_deref()) == Some(key.id.as_str())
        && status.is_some_and(|s| is_true(&s.conditions, types::READY));
    let works = verified || rotated.is_some() || accepted(ctx, &key, &key_secret).await?;

    let created_of = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .and_then(|k| k.created)
            .or((id == key.id).then_some(key.created).flatten())
    };
    let mut listed = vec![AccessKeyStatus {
        id: key.id.clone(),
        created: time_at(created_of(&key.id).unwrap_or(now)).unwrap_or_else(now_time),
        state: KeyState::Active,
    }];
    if let Some((id, _)) = &retiring {
        listed.push(AccessKeyStatus {
            id: id.clone(),
            created: created_of(id).and_then(time_at).unwrap_or_else(now_time),
            state: KeyState::Retiring,
        });
    }
    let issued = created_of(&key.id).unwrap_or(now);
    let next = rotation::next_rotation(issued, &policy);
    let wake_at = [retiring.as_ref().map(|(_, deadline)| *deadline), next].into_iter().flatten().min();
    // The user as read (or as created, with the tags it was created with) is what AWS holds only if this
    // pass changed none of it since.
    let derived = names::tags(owner, &ctx.settings.deploy_env, &ctx.settings.cluster());
    let unchanged_user = if user_changed { None } else { RememberedUser::of(&iam_user, &derived) };
    Ok(Delivered {
        unchanged_user,
        user_arn: iam_user.arn,
        key_id: key.id,
        works,
        changes,
        keys: listed,
        rotation: KeyRotationStatus { last: time_at(issued), next: next.and_then(time_at) },
        wake_at,
    })
}

fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Waits, briefly and boundedly, for STS to accept a key created for a rotation. The one wait inside a
/// pass: a rotation's new key must be proven before the Secret switches to it, and its secret exists only
/// in this pass (storing an unproven key would break the promise that the Secret always works).
async fn propagated(ctx: &Context, key: &AccessKey, secret: &str) -> Result<bool, Error> {
    for pause in [0, 500, 1000, 2000, 4000] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match check_key(&ctx.aws.sts, &ctx.aws.stats, &key.id, secret).await? {
            KeyCheck::Accepted => return Ok(true),
            KeyCheck::NotYetKnown => {}
            KeyCheck::WrongSecret => return Ok(false),
        }
    }
    Ok(false)
}

/// Key hygiene that does not wait for a Bucket: deletes every key of the user that is neither the one our
/// Secret names nor a retiring key within its overlap, and drops a retiring record that no longer applies
/// (expired, or naming the key still in the Secret: an interrupted rotation).
async fn prune_keys(ctx: &Context, user: &str, secret: Option<&Secret>) -> Result<(), Error> {
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let Some(iam_user) = ops.get().await? else { return Ok(()) };
    let in_secret = secret.and_then(|s| secret_value(s, "AWS_ACCESS_KEY_ID"));
    let now = unix_now();
    let record = iam_user.tags.iter().find(|(k, _)| k == rotation::tag::RETIRING).map(|(_, v)| v.as_str());
    let retiring = record
        .and_then(rotation::parse_retiring)
        .filter(|r| Some(r.id) != in_secret.as_deref() && now < r.deadline);
    for key in ops.access_keys().await? {
        let kept = Some(&key.id) == in_secret.as_ref() || retiring.is_some_and(|r| r.id == key.id);
        if !kept {
            ops.delete_access_key(&key.id).await?;
        }
    }
    if record.is_some() && retiring.is_none() {
        ops.set_tag(rotation::tag::RETIRING, None).await?;
    }
    Ok(())
}

/// Whether AWS accepts `key` now: `Ok(false)` while STS does not know it yet, within the propagation
/// window counted from the key's creation as AWS reports it; an error after that, or for any other refusal.
async fn accepted(ctx: &Context, key: &AccessKey, secret: &str) -> Result<bool, Error> {
    match check_key(&ctx.aws.sts, &ctx.aws.stats, &key.id, secret).await? {
        KeyCheck::Accepted => Ok(true),
        KeyCheck::NotYetKnown => {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            let age = key.created.map(|created| now.saturating_sub(created)).unwrap_or(i64::MAX);
            let window = ctx.settings.key_propagation_timeout.as_secs();
            if age <= window as i64 {
                return Ok(false);
            }
            Err(Error::CredentialsRejected(format!(
                "AWS STS still does not recognise access key {} (InvalidClientTokenId) more than {} s after it was created",
                key.id, window
            )))
        }
        KeyCheck::WrongSecret => Err(Error::CredentialsRejected(format!(
            "AWS refuses the secret of access key {} (SignatureDoesNotMatch)",
            key.id
        ))),
    }
}

fn as_bytes(data: BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()
}

/// What [`provision`] did.
struct Provisioned {
    user: User,
    changes: Vec<&'static str>,
    /// This pass created the user: it has no keys and no policy but what this pass gave it.
    created: bool,
    /// This pass changed the user's tags or boundary after reading or creating it: `user` is stale.
    user_changed: bool,
}

/// Ensures the IAM user and its policies.
///
/// A background pass (a periodic verification) takes the user from the last pass that left it unchanged
/// rather than reading it: its tags only this controller writes (and its boundary, unless one is
/// configured). The policy, the attached policies and the keys, whose drift matters, are read on every pass.
async fn provision<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    owner: &Owner<'_>,
    user: &str,
    target: &Target,
) -> Result<Provisioned, Error> {
    let spec = obj.access();
    let settings = &ctx.settings;
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let mut changes = Vec::new();
    let derived = names::user_name(&settings.user_prefix, owner.uid);
    // With a permissions boundary to keep, its drift matters: the user is read on every pass then.
    let remembered = ctx.memo.user(owner.uid).filter(|_| {
        Priority::current() == Priority::Background && settings.permissions_boundary_arn.is_none()
    });
    let mut created = false;
    let found = match remembered {
        Some(user) => Some(user.user(&names::tags(owner, &settings.deploy_env, &settings.cluster()))),
        None => ops.get().await?,
    };
    let existing = match found {
        Some(existing) => Some(existing),
        None => {
            // The class's cost tags first: ours, after, are what ownership is judged by.
            let mut tags = target.class_tags.clone();
            tags.extend(names::tags(owner, &settings.deploy_env, &settings.cluster()));
            // Recorded at creation: the boundary is set by CreateUser itself, and a common policy recorded
            // before it is attached is attached by the next step or pass (a record of something absent
            // removes nothing).
            if let Some(boundary) = &settings.permissions_boundary_arn {
                tags.push((attachments::tag::PERMISSIONS_BOUNDARY.to_owned(), boundary.clone()));
            }
            if let Some(common) = &settings.common_user_policy_arn {
                tags.push((attachments::tag::COMMON_POLICY.to_owned(), common.clone()));
            }
            match ops.create(&settings.iam_path, &tags, settings.permissions_boundary_arn.as_deref()).await {
                Ok(arn) => {
                    created = true;
                    changes.push("created the IAM user");
                    Some(User { arn, tags, permissions_boundary: settings.permissions_boundary_arn.clone() })
                }
                // Created meanwhile (another reconcile, or a replica that just lost its Lease): read it.
                Err(err) if err.is(ErrorKind::AlreadyExists) => ops.get().await?,
                Err(err) => return Err(err.into()),
            }
        }
    };
    let Some(existing) = existing else {
        return Err(Error::ConcurrentChange(format!(
            "the IAM user {user} vanished while being created; retrying"
        )));
    };
    if !names::may_manage(&existing.tags, owner.uid, &settings.cluster(), user, &derived) {
        return Err(Error::Conflict(format!(
            "the IAM user {user} is not tagged as belonging to this object; it is left untouched"
        )));
    }
    let recorded = |key: &str| existing.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut user_changed = false;
    // A user made before --cluster-name was set gets the cluster's tag (buckets get theirs with the
    // other tags).
    if !settings.cluster_name.is_empty() && recorded(names::tag::CLUSTER).is_none() {
        ops.set_tag(names::tag::CLUSTER, Some(&settings.cluster_name)).await?;
        user_changed = true;
        changes.push("tagged the IAM user with the cluster name");
    }
    // A user made before clusters were told apart by their kube-system uid gets that tag too.
    if !settings.cluster_uid.is_empty() && recorded(names::tag::CLUSTER_UID).is_none() {
        ops.set_tag(names::tag::CLUSTER_UID, Some(&settings.cluster_uid)).await?;
        user_changed = true;
        changes.push("tagged the IAM user with the cluster's uid");
    }
    // The class's cost tags, as they are now (a tag the class no longer has stays: nothing records which
    // tags a class put there).
    let mut class_tagged = false;
    for (key, value) in &target.class_tags {
        if recorded(key) != Some(value.as_str()) {
            ops.set_tag(key, Some(value)).await?;
            class_tagged = true;
        }
    }
    if class_tagged {
        user_changed = true;
        changes.push("tagged the IAM user with its class's tags");
    }
    let current_boundary = existing.permissions_boundary.as_deref();
    let boundary = attachments::change(
        recorded(attachments::tag::PERMISSIONS_BOUNDARY),
        settings.permissions_boundary_arn.as_deref(),
        |arn| current_boundary == Some(arn),
    );
    if let Some(arn) = &boundary.apply {
        ops.set_boundary(arn).await?;
        user_changed = true;
        changes.push("set the permissions boundary");
    } else if boundary.remove.is_some() {
        ops.clear_boundary().await?;
        user_changed = true;
        changes.push("removed the permissions boundary it had set");
    }
    if let Some(record) = &boundary.record {
        ops.set_tag(attachments::tag::PERMISSIONS_BOUNDARY, record.as_deref()).await?;
        user_changed = true;
    }
    let desired = policy::user_policy(
        &target.bucket_arn,
        &settings.account_id,
        spec.permissions,
        target.external_access,
        &settings.network,
        target.kms_key.as_deref(),
    );
    // A user this pass created has no policy yet.
    if created || !ops.has_policy(&desired).await? {
        verify_bucket(ctx, target, &spec.bucket_ref.name).await?;
        ops.put_policy(&desired).await?;
        changes.push("wrote the access policy");
    }
    let recorded_common = recorded(attachments::tag::COMMON_POLICY);
    let desired_common = settings.common_user_policy_arn.as_deref();
    if recorded_common.is_some() || desired_common.is_some() {
        let attached = if created { Vec::new() } else { ops.attached_policies().await? };
        let common =
            attachments::change(recorded_common, desired_common, |arn| attached.iter().any(|a| a == arn));
        if let Some(arn) = &common.apply {
            ops.attach_policy(arn).await?;
            changes.push("attached the common policy");
        }
        if let Some(arn) = &common.remove {
            ops.detach_policy(arn).await?;
            changes.push("detached the common policy it had attached");
        }
        if let Some(record) = &common.record {
            ops.set_tag(attachments::tag::COMMON_POLICY, record.as_deref()).await?;
            user_changed = true;
        }
    }
    Ok(Provisioned { user: existing, changes, created, user_changed })
}

/// Reports a Secret name this object cannot have, after deleting any key its user holds: a key stored in
/// no Secret is a live credential nobody can see or revoke.
async fn conflict<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    user: &str,
    previous: CredentialStatus,
    message: String,
) -> Result<(), Error> {
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    ops.delete_access_keys().await?;
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

fn taken_message(secret_name: &str) -> String {
    format!(
        "a Secret named {secret_name} already exists and was not created for this object; it is left untouched and no access key is issued"
    )
}

/// Reports a failed pass in the Ready condition and an event, and returns the failure for the backoff.
async fn fail<K: CredentialKind>(obj: &K, ctx: &Context, err: Error) -> Result<Action, Error> {
    let message = err.to_string();
    ctx.event(&obj.object_ref(&()), EventType::Warning, err.reason(), "Provision", message.clone()).await;
    let previous = obj.credential_status().cloned().unwrap_or_default();
    let status = status_with(obj, previous, &[Observation::not_ready(err.reason(), message)], false);
    // The failure that led here is what the backoff and the log report, whatever this write does.
    if let Err(write) = write_status(obj, ctx, &status).await {
        tracing::debug!(error = %write, "Failed to report a failure in status");
    }
    Err(err)
}

/// A Secret is provably ours when it carries our label and a controller ownerReference with our uid.
pub(super) fn is_ours(secret: &Secret, uid: &str) -> bool {
    let labelled = secret.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str)
        == Some(MANAGED_BY.1);
    let owned =
        secret.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true));
    labelled && owned
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Creates the Secret when absent (a name taken meanwhile is a conflict), or updates one proven ours with
/// its resourceVersion as precondition, unless it already holds exactly this data, type, label and
/// owner. Returns the resourceVersion it wrote, if it wrote.
async fn write_secret<K: CredentialKind>(
    obj: &K,
    secrets: &Api<Secret>,
    name: &str,
    existing: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
    key_id: &str,
) -> Result<Option<String>, Error> {
    let owner = obj.controller_owner_ref(&()).ok_or(Error::Incomplete("name or uid"))?;
    let params = PostParams { dry_run: false, field_manager: Some(MANAGER.to_owned()) };
    let Some(current) = existing else {
        return match secrets.create(&params, &desired_secret(name, owner, K::SECRET_TYPE, data, key_id)).await
        {
            Ok(created) => Ok(Some(created.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(Error::SecretConflict(taken_message(name)))
            }
            Err(err) => Err(err.into()),
        };
    };
    let key_annotation = current.metadata.annotations.as_ref().and_then(|a| a.get(rotation::KEY_ANNOTATION));
    let up_to_date = current.data.as_ref() == Some(&data)
        && key_annotation.map(String::as_str) == Some(key_id)
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
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(Error::SecretConflict(taken_message(name)))
            }
            Err(err) => Err(err.into()),
        };
    }
    // The resourceVersion read with the ownership proof stays set: the update fails if the Secret
    // changed since. Annotations and other labels people added are kept.
    let mut secret = current.clone();
    secret.metadata.managed_fields = None;
    secret.metadata.labels.get_or_insert_default().insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(rotation::KEY_ANNOTATION.to_owned(), key_id.to_owned());
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
    key_id: &str,
) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            // Changes with every new key: tools that restart pods on a change (stakater Reloader) see it.
            annotations: Some(BTreeMap::from([(rotation::KEY_ANNOTATION.to_owned(), key_id.to_owned())])),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// Revokes the credentials: deletes the IAM user (only one AWS shows is ours) with everything it holds,
/// then the Secret (only one provably ours, exactly as read). A failure is shown in the Ready condition,
/// so that a deletion never hangs on a finalizer silently.
async fn cleanup<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    match revoke(obj, ctx).await {
        Ok(action) => Ok(action),
        Err(err) => {
            let message = format!("cannot revoke the credentials: {err}");
            let previous = obj.credential_status().cloned().unwrap_or_default();
            let status = status_with(
                obj,
                previous,
                &[Observation::not_ready(reasons::DELETION_BLOCKED, message)],
                false,
            );
            write_status(obj, ctx, &status).await?;
            Err(err)
        }
    }
}

/// Whether a user or key of `obj` may be too new for IAM to show it everywhere: the object got a user, and
/// it, or a key its status lists, is younger than `window`. IAM is eventually consistent: a user created seconds ago can be
/// reported missing while it exists, and taking that as "gone" would leave a live key without an owner.
/// Status is only a hint here, and can only make the controller look again: never past `window` after the
/// deletion began, so a deletion waits at most that long for a user that really is gone.
fn recently_issued<K: CredentialKind>(obj: &K, window: std::time::Duration) -> bool {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let now = Timestamp::now();
    let window = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
    let recent = |at: &Timestamp| now.duration_since(*at) < window;
    let deleting_since = obj.meta().deletion_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    if !recent(&deleting_since) {
        return false;
    }
    // Only an object that got a user is waited for: one that never did (its Bucket never became ready, say)
    // goes at once.
    let Some(status) = obj.credential_status().filter(|s| s.user_name.is_some()) else { return false };
    let keys = status.access_keys.iter().map(|k| k.created.0);
    let rotated = status.key_rotation.as_ref().and_then(|r| r.last.as_ref()).map(|t| t.0);
    let created = obj.meta().creation_timestamp.as_ref().map(|t| t.0);
    created.into_iter().chain(keys).chain(rotated).any(|at| recent(&at))
}

async fn revoke<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let Owner { uid, namespace, name, .. } = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    let user = user_name(obj, ctx, uid).await?;
    let derived = names::user_name(&ctx.settings.user_prefix, uid);
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user: &user };
    match ops.get().await? {
        Some(existing)
            if !names::may_manage(&existing.tags, uid, &ctx.settings.cluster(), &user, &derived) =>
        {
            tracing::warn!(namespace, name, user = %user, "Left an IAM user not tagged for this object");
        }
        Some(_) => {
            ops.delete_all().await?;
            tracing::info!(namespace, name, user = %user, "Deleted IAM user and its keys");
            let note = format!("revoked the credentials: deleted IAM user {user} and its keys");
            ctx.event(&obj.object_ref(&()), EventType::Normal, "Revoked", "Delete", note).await;
        }
        None if recently_issued(obj, ctx.settings.key_propagation_timeout) => {
            return Err(Error::ConcurrentChange(format!(
                "IAM does not show the user {user}, which may have been created moments ago and not be \
                 visible yet; checked again before the credentials count as revoked"
            )));
        }
        None => {}
    }
    // The app Secret stops listing this object (and goes with the app's last binding).
    let previous_app =
        obj.credential_status().and_then(|s| s.app_secret_name.as_deref()).and_then(app_secret::app_of);
    for app in obj.app().into_iter().chain(previous_app.filter(|a| Some(*a) != obj.app())) {
        match app_secret::sync(ctx, namespace, app, Some(uid)).await {
            Ok(()) | Err(Error::SecretConflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    let secrets = ctx.api::<Secret>(namespace);
    let secret_name = secret_name(obj);
    if let Some(secret) = secrets.get_opt(&secret_name).await?
        && is_ours(&secret, uid)
    {
        let preconditions = Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
        };
        match secrets
            .delete(&secret_name, &DeleteParams { preconditions: Some(preconditions), ..Default::default() })
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Action::await_change())
}
