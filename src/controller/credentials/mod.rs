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
//! A new key's secret exists only in the response to CreateAccessKey, so it is written to the Secret (a
//! rotation's: to its pending store, until STS accepts it) before anything that could fail or requeue: a
//! reconcile interrupted after that finds it there; one interrupted before finds an unknown key, deletes it
//! and makes a new one. A key that cannot be stored (the Secret name was taken in between) is deleted at
//! once.
//!
//! A Bucket that is not ready or is being deleted gets nothing new (no user, no role policy, no first key),
//! but credentials already issued keep following their spec and rotating while AWS shows the bucket.
//!
//! The files follow the lifecycle: `pass` runs one pass in the order above, `target` finds and
//! verifies the bucket, `identity` ensures who the credentials are for, `keys` keeps the access keys
//! and rotates them (`pending` holds a rotation's new key until STS accepts it), `delivery` writes the
//! Secrets, and `revocation` takes everything back on deletion.

mod delivery;
mod identity;
mod keys;
mod pass;
mod pending;
mod revocation;
mod role;
mod target;

pub use delivery::MANAGED_BY;
pub(super) use delivery::is_ours;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::pass::apply;
use self::revocation::cleanup;
use super::context::SharedWatch;
use super::error::error_policy;
use super::finalizer::finalized;
use super::memo::{Touch, bucket_view, looks_converged, status_hash};
use super::{Context, ReconcileError};
use crate::api::{AccessSpec, Bucket, BucketClass, CredentialStatus};
use crate::desired::conditions::{is_true, types};
use crate::desired::secret::Credentials;

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
    /// Whether this kind can be keyless (BucketBinding): its objects may name a ServiceAccount.
    const KEYLESS: bool = false;
    /// The app's ServiceAccount whose role holds the access, for a keyless object.
    fn service_account(&self) -> Option<&str> {
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
    // Secrets are watched as metadata only (`PartialObjectMeta`): which one changed, never their data. All
    // of them, not only ours (labelled): the deletion of a foreign Secret that stood in a binding's way
    // (SecretConflict) is what ends that wait. Of the others' changes, nothing goes further than here.
    let secrets = ctx.api_for::<PartialObjectMeta<Secret>>(&ctx.settings.namespace);
    let memo_ctx = ctx.clone();
    // A list (at start, or a relist after the watch lost its place) is no change in itself: every object
    // has its first pass anyway. But what happened while nobody watched must not wait for the resync: a
    // Secret of ours edited meanwhile is a change like any other, and once the list is complete, every
    // object whose Secret is missing from it, or no longer ours, is urgent work (`wake_unlisted`).
    let (wake, wakes) = tokio::sync::mpsc::unbounded_channel::<ObjectRef<K>>();
    let (listed_store, mut listed) = (store.clone(), HashSet::<(String, String)>::new());
    let secret_events =
        watcher::watcher(secrets, watcher::Config::default()).default_backoff().filter_map(move |event| {
            std::future::ready(match event {
                Ok(watcher::Event::Apply(mut secret)) => {
                    let namespace = secret.namespace().unwrap_or_default();
                    if labelled(&secret) {
                        Some(Ok(secret))
                    } else if memo_ctx.memo.knows_secret(&namespace, &secret.name_any()) {
                        // One of ours that lost our label: taken over. Like a deletion, it always matters.
                        secret.metadata.resource_version = None;
                        Some(Ok(secret))
                    } else {
                        None
                    }
                }
                // A deletion always matters: it carries no version that could be an own write's.
                Ok(watcher::Event::Delete(mut secret)) => {
                    secret.metadata.resource_version = None;
                    Some(Ok(secret))
                }
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    None
                }
                Ok(watcher::Event::InitApply(secret)) => {
                    let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                    let memo = &memo_ctx.memo;
                    let ours = if labelled(&secret) { owners_of::<K>(&secret) } else { Vec::new() };
                    let edited = !ours.is_empty()
                        && memo.knows_secret(&namespace, &name)
                        && !memo.is_own_secret(
                            &namespace,
                            &name,
                            secret.metadata.resource_version.as_deref(),
                        );
                    listed.extend(ours.into_iter().map(|uid| (format!("{namespace}/{name}"), uid)));
                    edited.then_some(Ok(secret))
                }
                Ok(watcher::Event::InitDone) => {
                    let listed = std::mem::take(&mut listed);
                    tokio::spawn(wake_unlisted(listed_store.clone(), memo_ctx.clone(), listed, wake.clone()));
                    None
                }
                Err(err) => Some(Err(err)),
            })
        });
    // A Secret written by the pass of its owner is judged after that pass, which has recorded its version
    // by then (its event often comes before the write's response).
    let held_ctx = ctx.clone();
    let secret_events = secret_events
        .map(move |event| {
            let ctx = held_ctx.clone();
            async move {
                if let Ok(secret) = &event {
                    let owners: Vec<&str> = secret
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.kind == K::KIND)
                        .map(|r| r.uid.as_str())
                        .collect();
                    ctx.memo.after_pass(&owners).await;
                }
                event
            }
        })
        .buffer_unordered(super::context::HELD_CHANGES);
    let (on_secret, on_bucket, on_class, on_account) = (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    let (class_objects, class_buckets, account_objects, secret_objects) =
        (store.clone(), buckets.store.clone(), store.clone(), store.clone());
    // Keyless bindings wait for their ServiceAccount and follow its re-creation: ServiceAccounts are
    // watched as metadata only, and only where keyless bindings can be served.
    let accounts = (K::KEYLESS && ctx.settings.keyless.is_some()).then(|| {
        let api = ctx.api_for::<PartialObjectMeta<ServiceAccount>>(&ctx.settings.namespace);
        watcher::watcher(api, watcher::Config::default()).default_backoff().filter_map(|event| {
            std::future::ready(match event {
                Ok(watcher::Event::Apply(account) | watcher::Event::Delete(account)) => Some(Ok(account)),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone) => None,
                Err(err) => Some(Err(err)),
            })
        })
    });
    let controller = Controller::for_shared_stream(objects.changes_by_others(ctx.clone()), store.clone())
        .reconcile_on(futures::stream::unfold(wakes, |mut wakes| async move {
            wakes.recv().await.map(|object| (object, wakes))
        }));
    let controller = match accounts {
        Some(accounts) => {
            controller.watches_stream(accounts, move |account: PartialObjectMeta<ServiceAccount>| {
                let (namespace, name) = (account.namespace(), account.name_any());
                let version = account.metadata.resource_version.clone().unwrap_or_default();
                account_objects
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace() == namespace && o.service_account() == Some(name.as_str()))
                    .filter(|o| {
                        let uid = o.meta().uid.as_deref().unwrap_or_default();
                        on_account.memo.touch(uid, Touch::ServiceAccount(version.clone()))
                    })
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect::<Vec<_>>()
            })
        }
        None => controller,
    };
    controller
        // A Secret deleted or edited by someone else is restored: its own Secret wakes the object, an app
        // Secret every binding it lists. The controller's own writes wake nothing. A Secret deleted or taken
        // over (our owner reference and label removed) without an owner of this kind wakes the objects whose
        // Secret has its name: a conflict may be over, or the keys in a taken Secret are revoked at once.
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            let key = format!("{namespace}/{name}");
            let version = secret.metadata.resource_version.clone().unwrap_or_default();
            let owners: Vec<(String, String)> = secret
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.kind == K::KIND)
                .map(|r| (r.uid, r.name))
                .collect();
            let owners = if owners.is_empty() && secret.metadata.resource_version.is_none() {
                secret_objects
                    .state()
                    .iter()
                    .filter(|o| {
                        o.namespace().as_deref() == Some(namespace.as_str())
                            && secret_name(o.as_ref()) == name
                    })
                    .map(|o| (o.meta().uid.clone().unwrap_or_default(), o.name_any()))
                    .collect()
            } else {
                owners
            };
            owners
                .into_iter()
                .filter(|(uid, _)| {
                    let touch = Touch::Secret { key: key.clone(), resource_version: version.clone() };
                    on_secret.memo.touch(uid, touch)
                })
                .map(|(_, name)| ObjectRef::<K>::new(&name).within(&namespace))
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
        // Every due reconcile starts; the passes are bounded, in turns by namespace, by `Context::reconcile`.
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, |obj, err, ctx| error_policy(K::KIND, obj.as_ref(), err, &ctx), ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile<K: CredentialKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api = ctx.api::<K>(&obj.namespace().unwrap_or_default());
    // A rotation asked for while no controller ran is new work, not a restart's background verification.
    let requested = obj.annotations().get(crate::desired::rotation::ROTATE_ANNOTATION).map(String::as_str);
    let converged = obj.credential_status().is_some_and(|s| {
        looks_converged(obj.meta(), s.observed_generation, &s.conditions)
            && crate::desired::rotation::is_answered(
                requested,
                s.key_rotation.as_ref().and_then(|r| r.answered.as_deref()),
            )
    });
    let pass = finalized(&api, &ctx.memo, K::FINALIZER, obj.clone(), |event| async {
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
    let status = status_hash(obj.credential_status());
    let result = ctx.reconcile(K::KIND, obj.as_ref(), status, converged, pass).await;
    // A pass stopped for taking too long never reached its own report: it is made here, within the same limit.
    if let Some(limit) = super::error::timed_out(&result)
        && obj.meta().deletion_timestamp.is_none()
    {
        let _ =
            tokio::time::timeout(limit, pass::fail(obj.as_ref(), &ctx, super::Error::Timeout(limit))).await;
    }
    if result.is_ok() && obj.meta().deletion_timestamp.is_some() {
        // The finalizer is gone, so is the object: a Bucket being deleted may have waited for it.
        ctx.wake_bucket(&obj.namespace().unwrap_or_default(), &obj.access().bucket_ref.name);
    }
    result
}

/// Whether a Secret carries the label of the Secrets this controller writes (a hint: ownership is the label
/// and the owner's uid together, [`is_ours`]).
fn labelled(secret: &PartialObjectMeta<Secret>) -> bool {
    secret.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str)
        == Some(MANAGED_BY.1)
}

/// The uids of the objects of kind `K` that a Secret names as its controller.
fn owners_of<K: CredentialKind>(secret: &PartialObjectMeta<Secret>) -> Vec<String> {
    let references = secret.metadata.owner_references.iter().flatten();
    references.filter(|r| r.kind == K::KIND && r.controller == Some(true)).map(|r| r.uid.clone()).collect()
}

/// Once the objects are listed too, wakes as urgent work every object whose status says it has its Secret
/// (a hint: one that has none is new work anyway) when the Secrets just listed (`listed`: namespace/name
/// and owner uid of each labelled one) do not hold it: deleted, or taken over, while nobody watched.
async fn wake_unlisted<K: CredentialKind>(
    store: kube::runtime::reflector::Store<K>,
    ctx: Arc<Context>,
    listed: HashSet<(String, String)>,
    wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<K>>,
) {
    // A bare `wait_until_ready().await` was seen never to wake up (see `Context::watch_cache`).
    while tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await.is_err() {}
    for obj in store.state() {
        let meta = obj.meta();
        if meta.deletion_timestamp.is_some()
            || obj.credential_status().and_then(|s| s.binding.as_ref()).is_none()
        {
            continue;
        }
        let (Some(namespace), Some(uid)) = (meta.namespace.as_deref(), meta.uid.as_deref()) else { continue };
        if !listed.contains(&(format!("{namespace}/{}", secret_name(obj.as_ref())), uid.to_owned())) {
            ctx.memo.mark_urgent(uid);
            let _ = wake.send(ObjectRef::from_obj(obj.as_ref()));
        }
    }
}

pub(super) fn secret_name<K: CredentialKind>(obj: &K) -> String {
    obj.access().secret_name.clone().unwrap_or_else(|| obj.name_any())
}
