//! The identity a credential grants to ([`Identity`]): an IAM user of the object, named from its uid,
//! with its inline policy, tags, permissions boundary and common policy, and access keys (`keys.rs`); or
//! the role of the app's ServiceAccount, keyless (`role.rs`).

use super::CredentialKind;
use super::target::{Target, verify_bucket};
use crate::aws::iam::{User, UserOps};
use crate::aws::{ErrorKind, Priority};
use crate::controller::events::{Change, reason};
use crate::controller::{Context, Error};
use crate::desired::attachments;
use crate::desired::keyless::Setup;
use crate::desired::names::{self, Owner, Ownership};
use crate::desired::policy;

/// Who a credential's access is granted to: the seam between keyed and keyless credentials.
pub(super) enum Identity<'a> {
    /// An IAM user of this object, holding one access key, which is in the Secret: a BucketServiceKey, or a
    /// BucketBinding without serviceAccountName.
    User { name: String },
    /// The IAM role of the app's ServiceAccount, which its pods assume: a BucketBinding with
    /// serviceAccountName. No user, no key.
    Role { service_account: &'a str, setup: &'a Setup },
}

impl<'a> Identity<'a> {
    /// The identity of `obj`; `user` is its IAM user's name, should it have one.
    pub(super) fn of<K: CredentialKind>(obj: &'a K, ctx: &'a Context, user: String) -> Result<Self, Error> {
        let Some(service_account) = obj.service_account() else { return Ok(Identity::User { name: user }) };
        match &ctx.settings.keyless {
            Some(setup) => Ok(Identity::Role { service_account, setup }),
            None => Err(Error::KeylessNotConfigured(
                "spec.serviceAccountName: this platform gives no roles to ServiceAccounts (the controller runs \
                 with neither --oidc-provider-arn nor --pod-identity-cluster-name); ask the platform team, or create a \
                 BucketBinding without serviceAccountName"
                    .to_owned(),
            )),
        }
    }

    /// The IAM user, for an identity that is one.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Identity::User { name } => Some(name),
            Identity::Role { .. } => None,
        }
    }
}

/// The IAM user: named from the uid; a different name in status is used only when AWS shows that user
/// carries this object's uid tag (made under an earlier `--user-prefix`).
pub(super) async fn user_name<K: CredentialKind>(obj: &K, ctx: &Context, uid: &str) -> Result<String, Error> {
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

/// Whether the object's status names no IAM user: never provisioned, as far as the status tells.
fn no_user_in_status<K: CredentialKind>(obj: &K) -> bool {
    obj.credential_status().is_none_or(|s| s.user_name.is_none() && s.user_arn.is_none())
}

/// What [`provision`] did.
pub(super) struct Provisioned {
    pub(super) user: User,
    pub(super) changes: Vec<Change>,
    /// This pass created the user: it has no keys and no policy but what this pass gave it.
    pub(super) created: bool,
    /// This pass changed the user's tags or boundary after reading or creating it: `user` is stale.
    pub(super) user_changed: bool,
}

/// Ensures the IAM user and its policies. With `may_create` false (its Bucket is not ready, or is being
/// deleted) no user is created: `None` when there is none; an existing one is still brought to the spec.
///
/// A background pass (a periodic verification) takes the user from the last pass that left it unchanged
/// rather than reading it: its tags only this controller writes (and its boundary, unless one is
/// configured). The policy, the attached policies and the keys, whose drift matters, are read on every pass.
pub(super) async fn provision<K: CredentialKind>(
    obj: &K,
    ctx: &Context,
    owner: &Owner<'_>,
    user: &str,
    target: &Target,
    may_create: bool,
) -> Result<Option<Provisioned>, Error> {
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
        // An object whose status names no user most likely has none yet (its first provisioning): the user
        // is created without reading first, one IAM call fewer of the budget. The status is only a hint
        // here: should the user exist after all (a pass interrupted before its status write, a status
        // wiped), CreateUser answers EntityAlreadyExists and the user is read and judged as below.
        None if may_create && no_user_in_status(obj) => None,
        None => ops.get().await?,
    };
    let existing = match found {
        Some(existing) => Some(existing),
        None if !may_create => return Ok(None),
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
                    changes.push(Change::new(reason::USER_CREATED, format!("Created IAM user {user}.")));
                    Some(User { arn, tags, permissions_boundary: settings.permissions_boundary_arn.clone() })
                }
                // There already (created without reading first, see above), or created meanwhile (another
                // reconcile, or a replica that just lost its Lease): read it.
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
        changes.push(Change::new(
            reason::USER_TAGGED,
            format!("Tagged IAM user {user} with the cluster's name {}.", settings.cluster_name),
        ));
    }
    // A user made before clusters were told apart by their kube-system uid gets that tag too.
    if !settings.cluster_uid.is_empty() && recorded(names::tag::CLUSTER_UID).is_none() {
        ops.set_tag(names::tag::CLUSTER_UID, Some(&settings.cluster_uid)).await?;
        user_changed = true;
        changes.push(Change::new(
            reason::USER_TAGGED,
            format!("Tagged IAM user {user} with the cluster's uid."),
        ));
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
        changes.push(Change::new(
            reason::USER_TAGGED,
            format!("Set the cost tags of its class on IAM user {user}."),
        ));
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
        changes.push(Change::new(
            reason::BOUNDARY_SET,
            format!("Set the permissions boundary {arn} on IAM user {user}."),
        ));
    } else if boundary.remove.is_some() {
        ops.clear_boundary().await?;
        user_changed = true;
        changes.push(Change::new(
            reason::BOUNDARY_REMOVED,
            format!("Removed the permissions boundary the controller had set on IAM user {user}."),
        ));
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
        let grant = target.grant(spec.permissions, ctx);
        changes.push(if created {
            Change::new(reason::ACCESS_GRANTED, format!("Gave IAM user {user} {grant}."))
        } else {
            Change::new(
                reason::POLICY_UPDATED,
                format!("Updated the access policy of IAM user {user}: it now grants {grant}."),
            )
        });
    }
    let recorded_common = recorded(attachments::tag::COMMON_POLICY);
    let desired_common = settings.common_user_policy_arn.as_deref();
    if recorded_common.is_some() || desired_common.is_some() {
        let attached = if created { Vec::new() } else { ops.attached_policies().await? };
        let common =
            attachments::change(recorded_common, desired_common, |arn| attached.iter().any(|a| a == arn));
        if let Some(arn) = &common.apply {
            ops.attach_policy(arn).await?;
            changes.push(Change::new(
                reason::COMMON_POLICY_ATTACHED,
                format!("Attached the common policy {arn} to IAM user {user}."),
            ));
        }
        if let Some(arn) = &common.remove {
            ops.detach_policy(arn).await?;
            changes.push(Change::new(
                reason::COMMON_POLICY_DETACHED,
                format!("Detached the common policy {arn} the controller had attached from IAM user {user}."),
            ));
        }
        if let Some(record) = &common.record {
            ops.set_tag(attachments::tag::COMMON_POLICY, record.as_deref()).await?;
            user_changed = true;
        }
    }
    Ok(Some(Provisioned { user: existing, changes, created, user_changed }))
}
