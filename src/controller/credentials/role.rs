//! The keyless identity: an IAM role that belongs to the app's ServiceAccount (named from its uid, since
//! IRSA lets a ServiceAccount name one role), trusted for exactly that ServiceAccount, with one inline
//! policy per binding (named from the binding's uid), the same least-privilege policy a user would get.
//! No IAM user and no access key is ever made for it. The role goes with the last binding's policy.
//!
//! With IRSA the ServiceAccount is annotated `eks.amazonaws.com/role-arn`, only when the annotation is
//! absent or already names this role (the role's ARN derives from the ServiceAccount's uid, so a value
//! equal to it can only be ours); a foreign value is never replaced.
//!
//! With EKS Pod Identity the controller makes the ServiceAccount's association (EKS allows one per
//! ServiceAccount) with the role, only when the ServiceAccount has none, or has one that gives this role or
//! the role of a ServiceAccount of that name before it (tagged so, a re-created ServiceAccount); one that
//! gives any other role is never changed.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::target::{Target, verify_bucket};
use crate::aws::ErrorKind;
use crate::aws::eks::{Association, AssociationOps};
use crate::aws::iam::{Role, RoleOps};
use crate::controller::events::{Change, reason};
use crate::controller::{Context, Error, MANAGER};
use crate::desired::keyless::{self, ROLE_ARN_ANNOTATION, Setup};
use crate::desired::names::{self, Owner};
use crate::desired::policy;

/// The kind in a role's ownership tags.
const SERVICE_ACCOUNT: &str = "ServiceAccount";

/// What [`ensure`] did.
pub(super) struct RoleDelivered {
    pub(super) role: String,
    pub(super) arn: String,
    pub(super) changes: Vec<Change>,
}

/// The ServiceAccount `name` in `namespace`, as metadata; `None` when it does not exist.
pub(super) async fn service_account(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<PartialObjectMeta<ServiceAccount>>, Error> {
    Ok(ctx.api::<ServiceAccount>(namespace).get_metadata_opt(name).await?)
}

/// The ARN of the role of the ServiceAccount with `uid`, derived (IAM would return the same).
fn derived_arn(ctx: &Context, role: &str) -> String {
    let partition = names::partition(&ctx.settings.region);
    keyless::role_arn(partition, &ctx.settings.account_id, &ctx.settings.iam_path, role)
}

/// Whether a role's tags say it is the role of ServiceAccount `namespace/name` in this cluster: the test
/// for a role found by a name from status (a hint), when the ServiceAccount is gone and its uid unknown.
pub(super) fn is_role_of(role: &Role, namespace: &str, name: &str, ctx: &Context) -> bool {
    let tag = |key: &str| role.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let cluster = ctx.settings.cluster();
    tag(names::tag::KIND) == Some(SERVICE_ACCOUNT)
        && tag(names::tag::NAMESPACE) == Some(namespace)
        && tag(names::tag::NAME) == Some(name)
        && tag(names::tag::CREATED_BY) == Some(names::tag::CREATED_BY_VALUE)
        && tag(names::tag::CLUSTER).is_none_or(|c| c == cluster.name)
        && tag(names::tag::CLUSTER_UID).is_none_or(|c| c == cluster.uid)
}

/// The Pod Identity association operations on ServiceAccount `namespace/name` of `cluster`.
fn associations<'a>(
    ctx: &'a Context,
    cluster: &'a str,
    namespace: &'a str,
    name: &'a str,
) -> AssociationOps<'a> {
    AssociationOps {
        client: ctx.aws.eks.clone(),
        stats: &ctx.aws.stats,
        cluster,
        namespace,
        service_account: name,
    }
}

/// Whether the ServiceAccount's Pod Identity association `found` is ours to point at `arn`: it gives that
/// role already, or a role of ours (our path and prefix) tagged as the role of a ServiceAccount of this
/// name in this cluster (one deleted and re-created since). Only reads.
async fn association_is_ours(
    ctx: &Context,
    found: &Association,
    arn: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, Error> {
    if found.role_arn == arn {
        return Ok(true);
    }
    let ours = derived_arn(ctx, &ctx.settings.user_prefix);
    let Some(role) =
        found.role_arn.strip_prefix(&ours).map(|rest| format!("{}{rest}", ctx.settings.user_prefix))
    else {
        return Ok(false);
    };
    let ops = RoleOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, role: &role };
    Ok(ops.get().await?.is_some_and(|r| is_role_of(&r, namespace, name, ctx)))
}

/// Ensures the role of `service_account` and this binding's policy on it, and the ServiceAccount's
/// annotation (IRSA) or Pod Identity association. Nothing is written while the ServiceAccount is missing
/// or names another role. With `may_create` false (the Bucket is not ready, or is being deleted) nothing
/// new is granted: `None` unless the role exists and already holds this binding's policy, which is then
/// brought to the spec (with the role's trust and boundary), and no annotation or association is made.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ensure(
    ctx: &Context,
    setup: &Setup,
    binding: &Owner<'_>,
    service_account_name: &str,
    target: &Target,
    permissions: crate::api::Permissions,
    bucket_ref: &str,
    may_create: bool,
) -> Result<Option<RoleDelivered>, Error> {
    let settings = &ctx.settings;
    let namespace = binding.namespace;
    let Some(account) = service_account(ctx, namespace, service_account_name).await? else {
        return Err(Error::ServiceAccountNotFound(format!(
            "waiting for ServiceAccount {service_account_name} to exist in namespace {namespace}; its role is made \
             as soon as it does"
        )));
    };
    let Some(account_uid) = account.metadata.uid.clone() else {
        return Err(Error::Incomplete("ServiceAccount uid"));
    };
    let role = names::role_name(&settings.user_prefix, &account_uid);
    let arn = derived_arn(ctx, &role);
    let annotated = account.annotations().get(ROLE_ARN_ANNOTATION).cloned();
    if matches!(setup, Setup::Irsa { .. })
        && let Some(other) = annotated.as_deref().filter(|a| *a != arn)
    {
        return Err(Error::ServiceAccountConflict(format!(
            "ServiceAccount {service_account_name} is annotated {ROLE_ARN_ANNOTATION}: {other}, a role this \
             controller did not make for it; it is left untouched. Remove that annotation, or name another \
             ServiceAccount in a new BucketBinding"
        )));
    }
    let association = match setup {
        Setup::PodIdentity { cluster } => {
            let found = associations(ctx, cluster, namespace, service_account_name).get().await?;
            if let Some(found) = &found
                && !association_is_ours(ctx, found, &arn, namespace, service_account_name).await?
            {
                return Err(Error::ServiceAccountConflict(format!(
                    "ServiceAccount {service_account_name} has an EKS Pod Identity association ({}) with a role \
                     this controller did not make for it; it is left untouched. Delete that association, or \
                     name another ServiceAccount in a new BucketBinding",
                    found.id
                )));
            }
            found
        }
        Setup::Irsa { .. } => None,
    };
    let owner = Owner { kind: SERVICE_ACCOUNT, namespace, name: service_account_name, uid: &account_uid };
    let ops = RoleOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, role: &role };
    let trust = keyless::trust_policy(setup, &settings.account_id, namespace, service_account_name);
    let mut changes = Vec::new();
    let mut created = false;
    let policy_name = keyless::role_policy_name(binding.uid);
    let existing = match ops.get().await? {
        Some(_) if !may_create && !ops.policies().await?.contains(&policy_name) => return Ok(None),
        Some(existing) => Some(existing),
        None if !may_create => return Ok(None),
        None => {
            let tags = names::tags(&owner, &settings.deploy_env, &settings.cluster());
            let boundary = settings.permissions_boundary_arn.as_deref();
            match ops.create(&settings.iam_path, &trust, &tags, boundary).await {
                Ok(arn) => {
                    created = true;
                    changes.push(Change::new(
                        reason::ROLE_CREATED,
                        format!("Created IAM role {role} for ServiceAccount {service_account_name}."),
                    ));
                    Some(Role {
                        arn,
                        tags,
                        permissions_boundary: boundary.map(str::to_owned),
                        trust: Some(trust.clone()),
                    })
                }
                // Made meanwhile by another binding of the same ServiceAccount: read it.
                Err(err) if err.is(ErrorKind::AlreadyExists) => ops.get().await?,
                Err(err) => return Err(err.into()),
            }
        }
    };
    let Some(existing) = existing else {
        return Err(Error::ConcurrentChange(format!(
            "the IAM role {role} vanished while being created; retrying"
        )));
    };
    if !names::may_manage(&existing.tags, &account_uid, &settings.cluster(), &role, &role) {
        return Err(Error::Conflict(format!(
            "the IAM role {role} is not tagged as belonging to ServiceAccount {service_account_name}; it is left untouched"
        )));
    }
    if !created {
        if existing.trust.as_ref().is_none_or(|t| !policy::equivalent(t, &trust)) {
            ops.set_trust(&trust).await?;
            changes.push(Change::new(
                reason::ROLE_TRUST_RESTORED,
                format!("Restored the trust policy of IAM role {role}: only ServiceAccount {service_account_name} may assume it."),
            ));
        }
        if let Some(boundary) = &settings.permissions_boundary_arn
            && existing.permissions_boundary.as_ref() != Some(boundary)
        {
            ops.set_boundary(boundary).await?;
            changes.push(Change::new(
                reason::BOUNDARY_SET,
                format!("Set the permissions boundary {boundary} on IAM role {role}."),
            ));
        }
        if !settings.cluster_uid.is_empty()
            && !existing.tags.iter().any(|(k, v)| k == names::tag::CLUSTER_UID && *v == settings.cluster_uid)
        {
            ops.set_tag(names::tag::CLUSTER_UID, &settings.cluster_uid).await?;
        }
    }
    let desired = policy::user_policy(
        &target.bucket_arn,
        &settings.account_id,
        permissions,
        target.external_access,
        &settings.network,
        target.kms_key.as_deref(),
    );
    if created || !ops.has_policy(&policy_name, &desired).await? {
        verify_bucket(ctx, target, bucket_ref).await?;
        ops.put_policy(&policy_name, &desired).await?;
        let grant = target.grant(permissions, ctx);
        changes.push(if created {
            Change::new(reason::ACCESS_GRANTED, format!("Gave IAM role {role} {grant}."))
        } else {
            Change::new(
                reason::POLICY_UPDATED,
                format!("Wrote this binding's access policy on IAM role {role}: it grants {grant}."),
            )
        });
    }
    if !may_create {
        return Ok(Some(RoleDelivered { role, arn: existing.arn, changes }));
    }
    if matches!(setup, Setup::Irsa { .. }) && annotated.is_none() {
        annotate(ctx, &account, Some(&existing.arn)).await?;
        changes.push(Change::new(
            reason::SERVICE_ACCOUNT_ANNOTATED,
            format!("Annotated ServiceAccount {service_account_name} with {ROLE_ARN_ANNOTATION}: its pods assume IAM role {role}."),
        ));
    }
    if let Setup::PodIdentity { cluster } = setup {
        let ops = associations(ctx, cluster, namespace, service_account_name);
        match association {
            None => {
                let tags = names::tags(&owner, &settings.deploy_env, &settings.cluster());
                match ops.create(&existing.arn, &tags).await {
                    Ok(_) => changes.push(Change::new(
                        reason::POD_IDENTITY_ASSOCIATED,
                        format!(
                            "Associated ServiceAccount {service_account_name} with IAM role {role} (EKS Pod Identity)."
                        ),
                    )),
                    // Made meanwhile (another binding of the ServiceAccount, or someone else): the next pass
                    // reads it and judges whose it is.
                    Err(err) if err.is(ErrorKind::AlreadyExists) => {
                        return Err(Error::ConcurrentChange(format!(
                            "ServiceAccount {service_account_name} got an EKS Pod Identity association meanwhile; \
                             checking it again"
                        )));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Some(found) if found.role_arn != existing.arn => {
                ops.set_role(&found.id, &existing.arn).await?;
                changes.push(Change::new(
                    reason::POD_IDENTITY_ASSOCIATED,
                    format!(
                        "Pointed the EKS Pod Identity association of ServiceAccount {service_account_name} at its \
                         IAM role {role}."
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Some(RoleDelivered { role, arn: existing.arn, changes }))
}

/// Sets (`Some`) or removes (`None`) the role annotation, on exactly the version of the ServiceAccount
/// read: a change meanwhile fails the patch, and the next pass looks again.
pub(super) async fn annotate(
    ctx: &Context,
    account: &PartialObjectMeta<ServiceAccount>,
    arn: Option<&str>,
) -> Result<(), Error> {
    let namespace = account.namespace().unwrap_or_default();
    let api: Api<ServiceAccount> = ctx.api(&namespace);
    let patch = json!({"metadata": {
        "resourceVersion": account.metadata.resource_version,
        "annotations": {ROLE_ARN_ANNOTATION: arn},
    }});
    let params = PatchParams { field_manager: Some(MANAGER.to_owned()), ..Default::default() };
    match api.patch_metadata(&account.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 && arn.is_none() => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Takes binding `binding_uid`'s policy off its ServiceAccount's role, and with the last policy the role
/// itself and the ServiceAccount's annotation or Pod Identity association (if it still names that role). The role is the one named
/// from the ServiceAccount's uid, and any role named in status (a hint: a ServiceAccount deleted or
/// re-created since) whose tags say it is that ServiceAccount's role in this cluster. Returns the roles
/// revoked from.
pub(super) async fn revoke(
    ctx: &Context,
    namespace: &str,
    service_account_name: &str,
    binding_uid: &str,
    hint: Option<&str>,
) -> Result<Vec<String>, Error> {
    let account = service_account(ctx, namespace, service_account_name).await?;
    let mut candidates = Vec::new();
    if let Some(uid) = account.as_ref().and_then(|a| a.metadata.uid.as_deref()) {
        candidates.push(names::role_name(&ctx.settings.user_prefix, uid));
    }
    if let Some(hint) = hint
        && !candidates.iter().any(|c| c == hint)
    {
        candidates.push(hint.to_owned());
    }
    let policy_name = keyless::role_policy_name(binding_uid);
    let mut revoked = Vec::new();
    for role in candidates {
        let ops = RoleOps { client: ctx.aws.iam.clone(), stats: &ctx.aws.stats, role: &role };
        let Some(found) = ops.get().await? else { continue };
        if !is_role_of(&found, namespace, service_account_name, ctx) {
            tracing::warn!(namespace, role = %role, "Left an IAM role not tagged for this binding's ServiceAccount");
            continue;
        }
        ops.delete_policy(&policy_name).await?;
        revoked.push(role.clone());
        if !ops.policies().await?.is_empty() {
            continue;
        }
        if let Some(account) = &account
            && account.annotations().get(ROLE_ARN_ANNOTATION) == Some(&found.arn)
        {
            annotate(ctx, account, None).await?;
        }
        if let Some(Setup::PodIdentity { cluster }) = &ctx.settings.keyless {
            associations(ctx, cluster, namespace, service_account_name).delete_if_for(&found.arn).await?;
        }
        match ops.delete().await {
            Ok(()) => {}
            // Another binding of the ServiceAccount put its policy meanwhile: the role stays for it.
            Err(err) if err.is(ErrorKind::Conflict) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(revoked)
}
