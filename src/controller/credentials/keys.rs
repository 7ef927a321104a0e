//! Access keys and their rotation: exactly one key, the one in the Secret, plus a retiring one during a
//! rotation's overlap; a new key's secret is stored before anything else can fail.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::events::EventType;

use super::delivery::{as_bytes, secret_value, write_secret};
use super::identity::{Provisioned, provision};
use super::pending::{self, PendingKey};
use super::target::Target;
use super::{CredentialKind, secret_name};
use crate::api::{AccessKeyStatus, KeyRotationStatus, KeyState};
use crate::aws::iam::{AccessKey, KeyCheck, UserOps, check_key};
use crate::controller::events::{Change, reason};
use crate::controller::memo::RememberedUser;
use crate::controller::{Context, Error};
use crate::desired::conditions::{is_true, reasons, types};
use crate::desired::names::{self, Owner};
use crate::desired::rotation;
use crate::desired::secret::{Credentials, Grant};

/// What [`deliver`] did.
pub(super) struct Delivered {
    /// The IAM user, when this pass left it as it read it (then a background pass may skip reading it).
    pub(super) unchanged_user: Option<RememberedUser>,
    pub(super) user_arn: String,
    pub(super) key_id: String,
    /// AWS accepts the key.
    pub(super) works: bool,
    pub(super) changes: Vec<Change>,
    /// The user's keys and the rotation schedule, for status.
    pub(super) keys: Vec<AccessKeyStatus>,
    pub(super) rotation: KeyRotationStatus,
    /// When this object needs a pass before its resync: a retiring key's deadline, or the next rotation.
    pub(super) wake_at: Option<i64>,
    /// A rotation's new key waits for STS to accept it: the next pass checks it again soon.
    pub(super) propagating: bool,
    /// Why the last rotation failed, and when it is tried again, while it waits to be: for the Ready
    /// condition's message (the Secret's key still works).
    pub(super) rotation_failed: Option<String>,
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn time_at(seconds: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// Ensures the user and its policies, keeps the key in our Secret (while it is intact or still accepted by
/// AWS; a new one otherwise) plus, during a rotation's overlap, the retiring one, and while a rotation's new
/// key propagates, that one, and nothing else; rotates when due; and writes the Secret.
///
/// With `may_issue` false (the Bucket is not ready, or is being deleted) nothing new is issued: no user and
/// no key where there is none (`None`), while an existing user still gets its spec and its rotations.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deliver<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    owner: &Owner<'_>,
    user: &str,
    target: &Target,
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
    may_issue: bool,
) -> Result<Option<Delivered>, Error> {
    let spec = obj.access();
    let rotation_spec = spec.key_rotation.as_ref();
    let policy = rotation::policy(
        rotation_spec.and_then(|r| r.interval.as_deref()),
        rotation_spec.and_then(|r| r.overlap.as_deref()),
        ctx.settings.max_key_age,
    )
    .map_err(Error::InvalidSpec)?;
    let Some(Provisioned { user: iam_user, mut changes, created, mut user_changed }) =
        provision(obj, ctx, owner, user, target, may_issue).await?
    else {
        return Ok(None);
    };
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let data_for = |id: &str, secret: &str| {
        let credentials = Credentials {
            grant: Grant::Key { id, secret },
            region: &target.region,
            bucket_name: &target.bucket_name,
            deploy_env: &ctx.settings.deploy_env,
            endpoint_url: ctx.aws.endpoint_url.as_deref(),
        };
        as_bytes(K::secret_data(&spec.bucket_ref.name, &credentials))
    };
    let recorded = |key: &str| iam_user.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let now = unix_now();
    let window = ctx.settings.key_propagation_timeout;

    // A user this pass created has no keys yet.
    let keys = if created { Vec::new() } else { ops.access_keys().await? };
    let stored_pair = existing
        .and_then(|s| secret_value(s, "AWS_ACCESS_KEY_ID"))
        .zip(existing.and_then(|s| secret_value(s, "AWS_SECRET_ACCESS_KEY")));
    let intact =
        |id: &str, secret: &str| existing.and_then(|s| s.data.as_ref()) == Some(&data_for(id, secret));
    let reusable = match stored_pair {
        Some((id, secret)) => match keys.iter().find(|k| k.id == id) {
            Some(key) => {
                // A Secret edited by hand may carry a wrong secret key: reuse it only if AWS accepts it.
                let usable = intact(&key.id, &secret)
                    || check_key(&ctx.aws.sts, &ctx.aws.stats, &key.id, &secret).await? == KeyCheck::Accepted;
                usable.then(|| (key.clone(), secret))
            }
            None => {
                // IAM is eventually consistent: a key issued moments ago may not be listed yet. The Secret
                // we wrote holds it intact and status (a hint, which can only defer a new key, never past
                // the window, and grants nothing) says when it was created: it is trusted that long, not
                // replaced by a second key.
                let hinted = obj
                    .credential_status()
                    .and_then(|s| s.access_keys.iter().find(|k| k.id == id))
                    .map(|k| k.created.0.as_second());
                let young = hinted.is_some_and(|at| rotation::within_window(at, now, window));
                (young && intact(&id, &secret)).then_some((AccessKey { id, created: hinted }, secret))
            }
        },
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
    let mut retired = None;
    if let Some((id, deadline)) = &retiring
        && now >= *deadline
    {
        ops.delete_access_key(id).await?;
        retired = Some(id.clone());
        changes.push(Change::new(
            reason::KEY_RETIRED,
            format!("Deleted access key {id} of IAM user {user}: its overlap after the rotation has ended."),
        ));
        retiring = None;
    }
    if record.is_some() && retiring.is_none() {
        ops.set_tag(rotation::tag::RETIRING, None).await?;
        user_changed = true;
    }
    // A rotation's new key waiting for STS, held in the pending store: only while no key is retiring (a
    // rotation starts only then) and the Secret holds the key it replaces.
    let in_secret = reusable.as_ref().map(|(key, _)| key.id.as_str());
    let requested = obj.meta().annotations.as_ref().and_then(|a| a.get(rotation::ROTATE_ANNOTATION));
    let handled = answered.or(recorded(rotation::tag::ROTATED_FOR));
    let due = match (&reusable, &retiring) {
        (Some((key, _)), None) => {
            let created = key.created.unwrap_or(now);
            rotation::due(now, created, &policy, requested.map(String::as_str), handled)
        }
        _ => None,
    };
    // The store is read only when it can matter, not on every pass: a key IAM lists that neither the
    // Secret nor a retiring record accounts for (a rotation's, or a leftover), or a rotation due now.
    let unaccounted = keys
        .iter()
        .any(|k| in_secret != Some(k.id.as_str()) && retiring.as_ref().is_none_or(|(id, _)| *id != k.id));
    let mut stored = if unaccounted || due.is_some() {
        pending::load(secrets, owner.uid).await?
    } else {
        pending::Stored::Absent
    };
    let pending = stored
        .key()
        .filter(|p| {
            retiring.is_none() && {
                let listed = keys.iter().any(|k| k.id == p.id);
                rotation::pending_holds(&p.id, p.created, in_secret, listed, now, window)
            }
        })
        .cloned();
    let kept = |id: &str| {
        retired.as_deref() == Some(id)
            || reusable.as_ref().is_some_and(|(key, _)| key.id == id)
            || retiring.as_ref().is_some_and(|(r, _)| r == id)
            || pending.as_ref().is_some_and(|p| p.id == id)
    };
    // At most two keys, and never one that is neither in the Secret nor retiring: a leftover of an
    // interrupted pass, whose secret nobody has (the key just retired is gone already).
    for stale in keys.iter().filter(|k| !kept(&k.id)) {
        ops.delete_access_key(&stale.id).await?;
        changes.push(Change::new(
            reason::KEY_DELETED,
            format!("Deleted access key {} of IAM user {user}: no Secret holds it.", stale.id),
        ));
    }
    // A store of a rotation that is over (switched, or its key gone) is cleared, after its key.
    if pending.is_none() && matches!(stored, pending::Stored::Ours { .. }) {
        pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
        stored = pending::Stored::Absent;
    }
    let name = secret_name(obj);
    // A hint for the wording only: whether this object had its Secret before.
    let had_secret = obj.credential_status().is_some_and(|s| s.binding.is_some());
    let (mut key, mut key_secret, mut new_key) = match reusable {
        Some((key, secret)) => (key, secret, false),
        None if !may_issue => {
            // No key is issued for a Bucket that is not ready: what this pass changed is said here.
            if !changes.is_empty() {
                ctx.changes(&obj.object_ref(&()), "Provision", &changes).await;
            }
            return Ok(None);
        }
        None => {
            let created = ops.create_access_key().await?;
            let why = match existing {
                _ if keys.is_empty() => String::new(),
                None => format!(": Secret {name} was missing, and with it the previous key's secret"),
                Some(_) => format!(": Secret {name} held no key that AWS accepts"),
            };
            changes.push(Change::new(
                reason::KEY_ISSUED,
                format!("Issued access key {} for IAM user {user}{why}.", created.id),
            ));
            // AWS's creation time, as later listings report it (not ours: status would change then).
            let at = created.created.unwrap_or(now);
            (AccessKey { id: created.id, created: Some(at) }, created.secret, true)
        }
    };

    // Rotation: a second key, kept in the pending store (never in the Secret) until STS accepts it, which
    // may take longer than a pass should wait: each pass checks it once, within the propagation window
    // counted from its creation; then the old key is recorded as retiring, and the Secret switches. The
    // user never holds more than two keys.
    let mut rotated = None;
    let mut propagating = false;
    // A rotation's new key that AWS does not accept yet: listed in status as Pending (its id only).
    let mut waiting = None;
    // Rotations that gave up (their key never accepted) wait before the next attempt: the record is in
    // AWS, with the rest of the rotation state, and outlives a restart.
    let failures = recorded(rotation::tag::FAILED).and_then(rotation::parse_failed);
    let mut deferred = failures.map(|(count, at)| rotation::retry_at(count, at)).filter(|at| now < *at);
    let mut rotation_failed = None;
    if !new_key && retiring.is_none() {
        match (due, pending) {
            (None, Some(abandoned)) => {
                // The rotation is no longer asked for (its spec or annotation changed meanwhile).
                ops.delete_access_key(&abandoned.id).await?;
                pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
                changes.push(Change::new(
                    reason::KEY_DELETED,
                    format!(
                        "Deleted access key {} of IAM user {user}: the rotation it was issued for is no longer due.",
                        abandoned.id
                    ),
                ));
            }
            (None, None) => {}
            // Not before the retry time of the failures before it.
            (Some(_), None) if deferred.is_some() => {}
            (Some(due), pending) => {
                let mut issued = None;
                let fresh = match pending {
                    Some(fresh) => fresh,
                    None => {
                        let made = ops.create_access_key().await?;
                        let fresh = PendingKey {
                            id: made.id,
                            secret: made.secret,
                            created: made.created.unwrap_or(now),
                        };
                        // Stored before anything else can fail; a key that cannot be stored is deleted
                        // (after a timeout the store may hold it: the next pass finds it, or deletes it).
                        match pending::store(obj, ctx, secrets, &stored, &fresh).await {
                            Ok(written) => stored = written,
                            Err(err) => {
                                if err.is_refusal() {
                                    ops.delete_access_key(&fresh.id).await?;
                                }
                                return Err(err);
                            }
                        }
                        issued = Some(Change::new(
                            reason::KEY_ISSUED,
                            format!(
                                "Issued access key {} for IAM user {user} to replace {}: Secret {name} gets it \
                                 once AWS accepts it.",
                                fresh.id, key.id
                            ),
                        ));
                        fresh
                    }
                };
                let check = match check_key(&ctx.aws.sts, &ctx.aws.stats, &fresh.id, &fresh.secret).await? {
                    KeyCheck::Accepted => rotation::Check::Accepted,
                    KeyCheck::NotYetKnown => rotation::Check::NotYetKnown,
                    KeyCheck::WrongSecret => rotation::Check::WrongSecret,
                };
                let step = rotation::next_step(check, fresh.created, unix_now(), window);
                // A key accepted in the pass that issued it is told of once, as the rotation (KeyRotated);
                // one that waits for AWS is told of now.
                if step != rotation::Next::Switch {
                    changes.extend(issued.take());
                }
                match step {
                    rotation::Next::Switch => {
                        let deadline = now.saturating_add(policy.overlap.as_secs() as i64);
                        let request = requested
                            .filter(|_| due == rotation::Due::Requested)
                            .map(|v| rotation::digest(v));
                        let record = rotation::retiring(&key.id, deadline, request.as_deref());
                        ops.set_tag(rotation::tag::RETIRING, Some(&record)).await?;
                        user_changed = true;
                        retiring = Some((key.id.clone(), deadline));
                        rotated = Some(due);
                        if failures.is_some() {
                            ops.set_tag(rotation::tag::FAILED, None).await?;
                        }
                        let fresh_key = AccessKey { id: fresh.id, created: Some(fresh.created) };
                        (key, key_secret, new_key) = (fresh_key, fresh.secret, true);
                    }
                    rotation::Next::Wait => {
                        propagating = true;
                        waiting = Some((fresh.id, fresh.created));
                    }
                    rotation::Next::GiveUp => {
                        // The key goes; the Secret keeps the one that works, and Ready stays as it is.
                        ops.delete_access_key(&fresh.id).await?;
                        pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
                        ctx.metrics.rotated(K::KIND, "failed");
                        let count = failures.map_or(1, |(count, _)| count.saturating_add(1));
                        let at = unix_now();
                        ops.set_tag(rotation::tag::FAILED, Some(&rotation::failed(count, at))).await?;
                        user_changed = true;
                        let retry = rotation::retry_at(count, at);
                        deferred = Some(retry);
                        let why = match check {
                            rotation::Check::WrongSecret => {
                                "AWS refuses its secret (SignatureDoesNotMatch)".to_owned()
                            }
                            _ => format!(
                                "AWS STS did not accept it (InvalidClientTokenId) within {} s of its creation",
                                window.as_secs()
                            ),
                        };
                        let until = time_at(retry).map_or_else(|| retry.to_string(), |t| t.0.to_string());
                        let message = format!(
                            "The rotation of access key {} of IAM user {user} failed: {why}. The new key {} was \
                             deleted; Secret {name} keeps {}, which still works; the rotation is tried again at \
                             {until}.",
                            key.id, fresh.id, key.id
                        );
                        let reference = obj.object_ref(&());
                        let reason = reasons::CREDENTIALS_REJECTED;
                        ctx.event(&reference, EventType::Warning, reason, "Rotate", message).await;
                        rotation_failed = Some(format!(
                            "the last key rotation failed ({why}) and is tried again at {until}"
                        ));
                    }
                }
            }
        }
    }
    if rotation_failed.is_none()
        && let Some(retry) = deferred
    {
        let until = time_at(retry).map_or_else(|| retry.to_string(), |t| t.0.to_string());
        rotation_failed = Some(format!(
            "the last key rotation failed (AWS did not accept its new key) and is tried again at {until}"
        ));
    }

    // Written before anything else can fail, so that a new key's secret is never lost; a new key that
    // cannot be stored is deleted, so that no live key is held outside the Secret.
    let data = data_for(&key.id, &key_secret);
    match write_secret::<K>(obj, secrets, &name, existing, data, Some(&key.id)).await {
        Ok(Some(version)) => {
            ctx.memo.wrote_secret(owner.namespace, &name, Some(&version));
            // A rotation's event says that the Secret switched.
            if rotated.is_none() {
                changes.push(secret_written(
                    &name,
                    existing.is_some(),
                    had_secret,
                    new_key.then_some(key.id.as_str()),
                ));
            }
        }
        Ok(None) => {}
        Err(err) => {
            // Only a definite refusal proves the Secret does not hold the key: after a timeout the write
            // may have landed, and the next pass deletes the key if it did not.
            if new_key && err.is_refusal() {
                ops.delete_access_key(&key.id).await?;
                pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
            }
            return Err(err);
        }
    }
    // The Secret holds the rotation's new key: its store has done its work.
    if rotated.is_some() {
        pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
    }
    if let Some(due) = rotated {
        if due == rotation::Due::Requested
            && let Some(value) = requested
        {
            ops.set_tag(rotation::tag::ROTATED_FOR, Some(&rotation::digest(value))).await?;
            user_changed = true;
        }
        ctx.metrics.rotated(K::KIND, "success");
        if let Some((old, deadline)) = &retiring {
            let why = match due {
                rotation::Due::Requested => format!("as annotation {} asked", rotation::ROTATE_ANNOTATION),
                rotation::Due::Age => "as it reached the rotation interval".to_owned(),
            };
            let until = time_at(*deadline).map_or_else(|| deadline.to_string(), |t| t.0.to_string());
            changes.push(Change::new(
                reason::KEY_ROTATED,
                format!(
                    "Rotated access key {old} of IAM user {user} {why}: Secret {name} now holds the new key {}; \
                     {old} keeps working until {until}, then it is deleted.",
                    key.id
                ),
            ));
        }
    }

    // The request the user's tag now records as answered: this pass's rotation, or an earlier one.
    let handled = match rotated {
        Some(rotation::Due::Requested) => requested.map(|v| rotation::digest(v)),
        _ => answered.map(str::to_owned).or_else(|| recorded(rotation::tag::ROTATED_FOR).map(str::to_owned)),
    };
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
    if let Some((id, created)) = waiting {
        listed.push(AccessKeyStatus {
            id,
            created: time_at(created).unwrap_or_else(now_time),
            state: KeyState::Pending,
        });
    }
    let issued = created_of(&key.id).unwrap_or(now);
    let next = rotation::next_rotation(issued, &policy);
    let wake_at =
        [retiring.as_ref().map(|(_, deadline)| *deadline), next, deferred].into_iter().flatten().min();
    // The user as read (or as created, with the tags it was created with) is what AWS holds only if this
    // pass changed none of it since.
    let derived = names::tags(owner, &ctx.settings.deploy_env, &ctx.settings.cluster());
    let unchanged_user = if user_changed { None } else { RememberedUser::of(&iam_user, &derived) };
    Ok(Some(Delivered {
        unchanged_user,
        user_arn: iam_user.arn,
        key_id: key.id,
        works,
        changes,
        keys: listed,
        rotation: KeyRotationStatus {
            last: time_at(issued),
            next: next.and_then(time_at),
            answered: requested
                .filter(|v| Some(rotation::digest(v)) == handled)
                .map(|v| rotation::answered(v)),
        },
        wake_at,
        propagating,
        rotation_failed,
    }))
}

/// The change a Secret write made: a Secret new to this object (`had_secret`: status says it had one, a
/// hint for the wording only), one written back after it was deleted or edited, or one that now holds a new
/// key (`new_key`).
pub(super) fn secret_written(name: &str, existed: bool, had_secret: bool, new_key: Option<&str>) -> Change {
    let with = new_key.map(|id| format!(" with access key {id}")).unwrap_or_default();
    match (existed, new_key) {
        (false, _) if !had_secret => {
            Change::new(reason::SECRET_CREATED, format!("Created Secret {name}{with}."))
        }
        (false, _) => Change::new(
            reason::SECRET_RESTORED,
            format!("Re-created Secret {name}{with}: it had been deleted."),
        ),
        (true, Some(id)) => {
            Change::new(reason::SECRET_UPDATED, format!("Wrote the new access key {id} to Secret {name}."))
        }
        (true, None) => Change::new(
            reason::SECRET_RESTORED,
            format!("Restored the content of Secret {name}, which differed from what the controller writes."),
        ),
    }
}

fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Key hygiene that does not wait for a Bucket: deletes every key of the user that is neither the one our
/// Secret names nor a retiring key within its overlap (a rotation's pending key too: no rotation goes on
/// for a bucket AWS does not show, and its store is cleared after it), and drops a retiring record that no
/// longer applies (expired, or naming the key still in the Secret: an interrupted rotation).
pub(super) async fn prune_keys(
    ctx: &Context,
    owner: &Owner<'_>,
    user: &str,
    secrets: &Api<Secret>,
    secret: Option<&Secret>,
) -> Result<(), Error> {
    let ops = UserOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, user };
    let stored = pending::load(secrets, owner.uid).await?;
    let Some(iam_user) = ops.get().await? else {
        return pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await;
    };
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
    pending::clear(ctx, secrets, owner.namespace, owner.uid, &stored).await?;
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

#[cfg(test)]
mod tests {
    use super::secret_written;

    #[test]
    fn a_secret_write_says_whether_it_created_restored_or_switched_the_secret() {
        let said = |existed, had_secret, key| {
            let change = secret_written("app", existed, had_secret, key);
            (change.reason, change.note)
        };
        assert_eq!(
            said(false, false, Some("AKIA1")),
            ("SecretCreated", "Created Secret app with access key AKIA1.".to_owned())
        );
        assert_eq!(
            said(false, true, Some("AKIA2")),
            (
                "SecretRestored",
                "Re-created Secret app with access key AKIA2: it had been deleted.".to_owned()
            )
        );
        assert_eq!(
            said(true, true, Some("AKIA3")),
            ("SecretUpdated", "Wrote the new access key AKIA3 to Secret app.".to_owned())
        );
        assert_eq!(said(true, true, None).0, "SecretRestored");
        // A keyless binding's Secret names no key.
        assert_eq!(said(false, false, None), ("SecretCreated", "Created Secret app.".to_owned()));
    }
}
