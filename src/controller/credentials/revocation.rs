//! Revocation on deletion: the identity and everything it holds, the app Secret's entry, then the Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::delivery::is_ours;
use super::identity::user_name;
use super::pass::{status_with, write_status};
use super::role;
use super::{CredentialKind, secret_name};
use crate::aws::iam::UserOps;
use crate::controller::app_secret;
use crate::controller::{Context, Error};
use crate::desired::conditions::{Observation, reasons};
use crate::desired::names::{self, Owner};

/// Revokes the credentials: deletes the IAM user (only one AWS shows is ours) with everything it holds,
/// then the Secret (only one provably ours, exactly as read). A failure is shown in the Ready condition,
/// so that a deletion never hangs on a finalizer silently.
pub(super) async fn cleanup<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
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
    let Some(status) = obj.credential_status().filter(|s| s.user_name.is_some() || s.role_name.is_some())
    else {
        return false;
    };
    let keys = status.access_keys.iter().map(|k| k.created.0);
    let rotated = status.key_rotation.as_ref().and_then(|r| r.last.as_ref()).map(|t| t.0);
    let created = obj.meta().creation_timestamp.as_ref().map(|t| t.0);
    created.into_iter().chain(keys).chain(rotated).any(|at| recent(&at))
}

pub(super) async fn revoke<K: CredentialKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let Owner { uid, namespace, name, .. } = Owner::of(K::KIND, obj.meta()).map_err(Error::Incomplete)?;
    if let Some(account) = obj.service_account() {
        let hint = obj.credential_status().and_then(|s| s.role_name.as_deref());
        let revoked = role::revoke(ctx, namespace, account, uid, hint).await?;
        if revoked.is_empty() && recently_issued(obj, ctx.settings.key_propagation_timeout) {
            return Err(Error::ConcurrentChange(format!(
                "IAM does not show the role of ServiceAccount {account}, which may have been created moments \
                 ago and not be visible yet; checked again before the access counts as revoked"
            )));
        }
        for role in revoked {
            tracing::info!(namespace, name, role = %role, "Removed the binding's policy from its ServiceAccount's role");
            let note = format!("revoked the access: removed this binding's policy from IAM role {role}");
            ctx.event(&obj.object_ref(&()), EventType::Normal, "Revoked", "Delete", note).await;
        }
    } else {
        revoke_user(obj, ctx, uid, namespace, name).await?;
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
    // Whatever was remembered of the Secret goes with it (a Secret left because it is not ours was never
    // remembered as written).
    ctx.memo.forget_secret(namespace, &secret_name);
    Ok(Action::await_change())
}

/// Deletes the IAM user of `obj` (only one AWS shows is ours) with everything it holds.
async fn revoke_user<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    uid: &str,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
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
    Ok(())
}
