//! One pass over a credential object, in order: its Bucket, its class, the Secret name, the identity and
//! what it holds, the app Secret, and the conditions that say where it stands.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::delivery::{as_bytes, write_secret};
use super::delivery::{conflict, is_ours, sync_apps, taken_message};
use super::identity::{Identity, user_name};
use super::keys::{deliver, prune_keys, secret_written, unix_now};
use super::role;
use super::target::{Target, verify_bucket};
use super::{CredentialKind, secret_name};
use crate::api::{Bucket, CredentialStatus, SecretRef};
use crate::aws::iam::UserOps;
use crate::controller::class::class_of;
use crate::controller::memo::{RememberedUser, Settled, bucket_view};
use crate::controller::status::{conditions_after, ready_or_held};
use crate::controller::{Context, Error};
use crate::desired::class;
use crate::desired::conditions::{self, Observation, is_true, reasons, types};
use crate::desired::names::Owner;
use crate::desired::secret::{Credentials, Grant};

/// How often a key that AWS does not accept yet is checked again.
const PROPAGATION_RECHECK: Duration = Duration::from_secs(2);

// Waits that only someone else's change can end start at these and double with each pass that finds
// the same, to at most `memo::LONGEST_WAIT` (10 minutes): the change that ends them wakes the object at
// once (a Bucket's change, a ServiceAccount's, the foreign Secret deleted), so the recheck is only a
// safety net, and 300 stuck bindings cost next to nothing.

/// How long a binding waits for its Bucket before checking again, the first time.
const BUCKET_RECHECK: Duration = Duration::from_secs(60);

/// How long a foreign Secret in the way is waited on before checking again, the first time.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// How long a keyless binding waits for its ServiceAccount before checking again, the first time.
const SERVICE_ACCOUNT_RECHECK: Duration = Duration::from_secs(60);

/// Why access keys may not be issued here, if they may not: the platform bans them, or the Bucket's class
/// requires keyless credentials. The message says what to do instead.
fn keys_refused<K: CredentialKind>(ctx: &Context, class: Option<&class::Class>) -> Option<String> {
    let by = if !ctx.settings.keys_allowed {
        "this platform issues no access keys (the controller runs with --keyless=required)".to_owned()
    } else {
        let class = class.filter(|c| c.spec.require_keyless)?;
        format!("the BucketClass {} of the Bucket requires keyless credentials", class.name)
    };
    Some(if K::KEYLESS {
        format!(
            "{by}: name the app's ServiceAccount in a new BucketBinding (spec.serviceAccountName) to give it a \
             role instead; no access key is issued for this one"
        )
    } else {
        format!("{by}, and a {} has no keyless form; no access key is issued", K::KIND)
    })
}

/// The status after `observations`, with the other fields as given. `observedGeneration` moves only when
/// the spec of this generation was fully applied, or found to need a person ([`conditions::handled`]).
pub(super) fn status_with<K: CredentialKind>(
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

pub(super) async fn write_status<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    status: &CredentialStatus,
) -> Result<(), Error> {
    let api = ctx.api::<K>(&obj.namespace().unwrap_or_default());
    crate::controller::status::write_status(ctx, &api, obj, obj.credential_status(), status).await
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
            format!(
                "Bucket {name} is being deleted: no new credentials are issued for it; credentials already \
                 issued keep working until this binding is deleted"
            ),
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
    pub(super) after: Duration,
    pub(super) converged: bool,
    pub(super) user: Option<RememberedUser>,
}

impl Step {
    pub(super) fn waiting(after: Duration) -> Self {
        Step { after, converged: false, user: None }
    }
}

/// One pass; any failure, including a status write the CRD drops, ends in the Ready condition.
pub(super) async fn apply<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    // Boxed: the pass's future is large, and a worker's stack is not.
    match Box::pin(pass(obj, ctx)).await {
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

    // 1. The Bucket must exist and be ready for anything new to be issued. Its status is a hint; AWS is
    // checked before any grant. A Bucket that is not ready or is being deleted (`held`) gets no new user,
    // role policy or first key; credentials already issued still follow the spec (a downgrade, the network,
    // the boundary) and rotate, as long as AWS shows the bucket is still the Bucket's.
    let bucket = ctx.api::<Bucket>(owner.namespace).get_opt(&spec.bucket_ref.name).await?;
    ctx.memo.saw_bucket(owner.uid, bucket_view(bucket.as_ref()));
    let user = user_name(obj, ctx, owner.uid).await?;
    let held = bucket_wait(bucket.as_ref(), &spec.bucket_ref.name);
    let bucket = match (bucket, &held) {
        (Some(bucket), None) => bucket,
        (Some(bucket), Some(_)) if in_aws(ctx, &bucket, &spec.bucket_ref.name).await? => bucket,
        (_, held) => {
            let (reason, message) = held.clone().unwrap_or((
                reasons::BUCKET_NOT_READY,
                format!("waiting for Bucket {} to exist", spec.bucket_ref.name),
            ));
            // Waiting for the Bucket must not keep keys alive past their time. An object that never had
            // credentials (its status says so: a hint, deciding only whether to look now or once the
            // Bucket is ready) has none to prune: no IAM call while it waits.
            if previous.user_name.is_some() || !previous.access_keys.is_empty() {
                let secrets = ctx.api::<Secret>(owner.namespace);
                let existing = secrets.get_opt(&secret_name(obj)).await?;
                let ours = existing.as_ref().filter(|s| is_ours(s, owner.uid));
                prune_keys(ctx, &owner, &user, &secrets, ours).await?;
            }
            let status = status_with(obj, previous, &[Observation::not_ready(reason, message)], false);
            write_status(obj, ctx, &status).await?;
            return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, BUCKET_RECHECK)));
        }
    };
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
        && previous.role_name.is_none()
    {
        return Err(Error::ClassForbids(message.clone()));
    }
    let identity = Identity::of(obj, ctx, user)?;
    if let Identity::User { name } = &identity
        && let Some(refusal) = keys_refused::<K>(ctx, class.as_ref())
    {
        // Keys issued before keys were banned are revoked: never looser than the platform allows.
        if previous.user_name.is_some() {
            let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user: name };
            ops.delete_access_keys().await?;
        }
        return Err(Error::KeysNotAllowed(refusal));
    }

    // 2. Never take over a Secret that is not provably ours, and hold no key while it is in the way.
    let secret_name = secret_name(obj);
    let secrets = ctx.api::<Secret>(owner.namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(secret) = &existing
        && !is_ours(secret, owner.uid)
    {
        conflict(obj, ctx, identity.user(), previous, taken_message(&secret_name, Some(secret))).await?;
        return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, CONFLICT_RECHECK)));
    }

    // 3. The identity, its policies, what it holds, and the Secret.
    let may_issue = held.is_none();
    let mut rotation_note = None;
    let (mut status, works, next_pass, unchanged_user, settled) = match &identity {
        Identity::User { name: user } => {
            // Boxed: a rotation's steps make this future large, and a worker's stack is not.
            let delivered =
                Box::pin(deliver(obj, ctx, &owner, user, &target, &secrets, existing.as_ref(), may_issue));
            let delivered = match delivered.await {
                Ok(Some(delivered)) => delivered,
                Ok(None) => return withheld(obj, ctx, &owner, previous, held).await,
                Err(Error::SecretConflict(message)) => {
                    conflict(obj, ctx, Some(user), previous, message).await?;
                    return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, CONFLICT_RECHECK)));
                }
                Err(err) => return Err(err),
            };
            // A retiring key's deadline or the next rotation may come before the resync; a rotation's new
            // key that STS does not accept yet is checked again soon.
            let next_pass = delivered
                .wake_at
                .map(|at| Duration::from_secs(at.saturating_sub(unix_now()).max(1) as u64))
                .map_or(ctx.resync_after(owner.uid), |wake| wake.min(ctx.resync_after(owner.uid)));
            let next_pass = if delivered.propagating { PROPAGATION_RECHECK } else { next_pass };
            rotation_note = delivered.rotation_failed.clone();
            let status = CredentialStatus {
                binding: Some(SecretRef { name: secret_name.clone() }),
                user_name: Some(user.clone()),
                user_arn: Some(delivered.user_arn),
                access_key_id: Some(delivered.key_id.clone()),
                access_keys: delivered.keys,
                key_rotation: Some(delivered.rotation),
                ..previous.clone()
            };
            if !delivered.changes.is_empty() {
                let steps: Vec<&str> = delivered.changes.iter().map(|c| c.reason).collect();
                tracing::info!(namespace = owner.namespace, name = owner.name, user = %user, key = %delivered.key_id, changes = ?steps, "Provisioned credentials");
                ctx.changes(&reference, "Provision", &delivered.changes).await;
            }
            (status, delivered.works, next_pass, delivered.unchanged_user, !delivered.propagating)
        }
        Identity::Role { service_account, setup } => {
            let ensured = Box::pin(role::ensure(
                ctx,
                setup,
                &owner,
                service_account,
                &target,
                spec.permissions,
                &spec.bucket_ref.name,
                may_issue,
            ))
            .await;
            let mut delivered = match ensured {
                Ok(Some(delivered)) => delivered,
                Ok(None) => return withheld(obj, ctx, &owner, previous, held).await,
                Err(Error::ServiceAccountNotFound(message)) => {
                    let waiting = Observation::not_ready(reasons::SERVICE_ACCOUNT_NOT_FOUND, message);
                    let status = status_with(obj, previous, &[waiting], false);
                    write_status(obj, ctx, &status).await?;
                    return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, SERVICE_ACCOUNT_RECHECK)));
                }
                Err(err) => return Err(err),
            };
            let credentials = Credentials {
                grant: Grant::Role { arn: &delivered.arn },
                region: &target.region,
                bucket_name: &target.bucket_name,
                deploy_env: &ctx.settings.deploy_env,
                endpoint_url: ctx.aws.endpoint_url.as_deref(),
            };
            let data = as_bytes(K::secret_data(&spec.bucket_ref.name, &credentials));
            match write_secret::<K>(obj, &secrets, &secret_name, existing.as_ref(), data, None).await {
                Ok(Some(version)) => {
                    ctx.memo.wrote_secret(owner.namespace, &secret_name, Some(&version));
                    let had_secret = previous.binding.is_some();
                    delivered.changes.push(secret_written(
                        &secret_name,
                        existing.is_some(),
                        had_secret,
                        None,
                    ));
                }
                Ok(None) => {}
                Err(Error::SecretConflict(message)) => {
                    conflict(obj, ctx, None, previous, message).await?;
                    return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, CONFLICT_RECHECK)));
                }
                Err(err) => return Err(err),
            }
            let status = CredentialStatus {
                binding: Some(SecretRef { name: secret_name.clone() }),
                role_name: Some(delivered.role.clone()),
                role_arn: Some(delivered.arn.clone()),
                user_name: None,
                user_arn: None,
                access_key_id: None,
                access_keys: Vec::new(),
                key_rotation: None,
                ..previous.clone()
            };
            if !delivered.changes.is_empty() {
                let steps: Vec<&str> = delivered.changes.iter().map(|c| c.reason).collect();
                tracing::info!(namespace = owner.namespace, name = owner.name, role = %delivered.role, service_account, changes = ?steps, "Provisioned keyless access");
                ctx.changes(&reference, "Provision", &delivered.changes).await;
            }
            (status, true, ctx.resync_after(owner.uid), None, true)
        }
    };

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
            return Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, CONFLICT_RECHECK)));
        }
        Err(err) => return Err(err),
    }

    // 5. Ready once AWS accepts the key, and the Bucket is ready: until then, what was issued keeps working.
    if let Some((reason, message)) = held {
        let message = match reason {
            reasons::BUCKET_NOT_READY => format!(
                "{message}: no new credentials are issued for it meanwhile; the credentials in Secret \
                 {secret_name} keep working and follow this object's spec"
            ),
            _ => message,
        };
        let observations =
            [Observation::not_ready(reason, message), network_observation(target.external_access, ctx)];
        write_status(obj, ctx, &status_with(obj, status, &observations, false)).await?;
        let wait = ctx.memo.wait_longer(owner.uid, BUCKET_RECHECK).min(next_pass);
        return Ok(Step::waiting(if works { wait } else { wait.min(PROPAGATION_RECHECK) }));
    }
    if !works {
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
    let note = rotation_note.map(|n| format!("; {n}")).unwrap_or_default();
    let ready = Observation::ready(
        reasons::PROVISIONED,
        format!("the credentials are in Secret {secret_name}{note}"),
    );
    let network = network_observation(target.external_access, ctx);
    let (observation, held) = ready_or_held(&previous.conditions, ready.clone());
    write_status(obj, ctx, &status_with(obj, status.clone(), &[observation, network.clone()], !held)).await?;
    if held {
        // That write kept every field: the CRD was fixed, so success can be reported now.
        write_status(obj, ctx, &status_with(obj, status, &[ready, network], true)).await?;
    }
    // A rotation whose new key propagates has not settled: the next pass goes on with it.
    Ok(Step { after: next_pass, converged: settled, user: unchanged_user.filter(|_| settled) })
}

/// Whether AWS shows the Bucket's bucket, carrying its uid tag ([`verify_bucket`]): the proof needed to
/// keep bringing existing credentials to their spec while the Bucket is not ready or is being deleted.
async fn in_aws(ctx: &Context, bucket: &Bucket, bucket_ref: &str) -> Result<bool, Error> {
    let target = Target::of(bucket, ctx)?;
    match verify_bucket(ctx, &target, bucket_ref).await {
        Ok(()) => Ok(true),
        Err(Error::BucketUnverified(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Ends a pass that found nothing issued for this object while its Bucket is not ready or is being deleted
/// (`held`): nothing new is issued, and the condition says why.
async fn withheld<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    owner: &Owner<'_>,
    previous: CredentialStatus,
    held: Option<(&'static str, String)>,
) -> Result<Step, Error> {
    let (reason, message) = held.ok_or(Error::Incomplete("the reason nothing is issued"))?;
    let status = status_with(obj, previous, &[Observation::not_ready(reason, message)], false);
    write_status(obj, ctx, &status).await?;
    Ok(Step::waiting(ctx.memo.wait_longer(owner.uid, BUCKET_RECHECK)))
}

/// Reports a failed pass in the Ready condition and an event, and returns the failure for the backoff.
pub(super) async fn fail<K: CredentialKind>(obj: &K, ctx: &Context, err: Error) -> Result<Action, Error> {
    if err.is_race() || ctx.quiet_failure(obj, &err) {
        // Nothing for a person (yet): the object changed or went away meanwhile, or AWS or the API server
        // had a blip; the next pass settles it.
        return Err(err);
    }
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
