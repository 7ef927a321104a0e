//! The orphan sweeper: finds AWS users and buckets whose Kubernetes object no longer exists.
//!
//! Leader election keeps two replicas from acting at once, but a request already sent when leadership
//! ends (a `CreateUser` landing after the new leader cleaned up), or a crash between AWS and Kubernetes
//! writes, can still leave an AWS object behind that no reconcile will ever look at again. The leader
//! sweeps once at start and then every `--orphan-sweep-interval`:
//!
//! - users under `--iam-path` named `<user-prefix><uid>`, and buckets named `<bucket-prefix><uid>`, whose
//!   tags say we made them in this cluster (`created_by`, our `deploy_env`, our cluster's kube-system uid and
//!   `--cluster-name`, the owner's kind, namespace, name and uid; with `--namespace`, only that namespace).
//!   Anything else is never touched; objects another cluster made are counted and reported, nothing more.
//! - Users and buckets are swept apart: one listing failing does not stop the other.
//! - Nothing younger than the grace period is judged: a create may be under way.
//! - The owner is looked up on the API server, not in a cache: an orphan is an owner that the API server
//!   does not have, or has with another uid. uids are never reused, so a dead uid stays dead.
//! - An orphaned user loses its access keys, policies and the user itself (a live key nobody owns is a
//!   security hole). An orphaned bucket is reported in the log and `bucket_broker_orphaned_buckets`, and
//!   kept: it may hold someone's data. A bucket released by `deletionPolicy: Retain` is tagged released
//!   and is no orphan.
//! - The role of a keyless binding's ServiceAccount (named `<user-prefix><ServiceAccount uid>`, tagged for
//!   it) loses each policy whose binding (named by uid in the policy's name) the API server no longer has,
//!   and goes, with the ServiceAccount's annotation if it still names the role, once no policy is left.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::api::{Bucket, BucketBinding, BucketServiceKey};
use crate::aws::iam::{self, RoleOps, UserOps};
use crate::aws::s3::{self, BucketOps};
use crate::aws::{AwsError, Priority};
use crate::controller::{Context, Settings};
use crate::desired::keyless;
use crate::desired::names::{self, tag};

/// The `kind` label of `bucket_broker_orphans_swept_total` for users.
pub const USER: &str = "User";
/// The `kind` label of `bucket_broker_orphans_swept_total` for access keys.
pub const ACCESS_KEY: &str = "AccessKey";
/// The `kind` label of the sweep's metrics for the roles of keyless bindings' ServiceAccounts.
pub const ROLE: &str = "Role";
/// The `kind` label of `bucket_broker_orphans_swept_total` for a deleted binding's policy on a role.
pub const ROLE_POLICY: &str = "RolePolicy";
/// The `kind` label of the sweep's own metrics for buckets.
pub const BUCKET: &str = "Bucket";

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Orphaned users deleted, with their keys and policies.
    pub users: Vec<String>,
    /// Access keys deleted with those users.
    pub access_keys: u64,
    /// Policies of deleted keyless bindings taken off their ServiceAccount's role.
    pub role_policies: u64,
    /// Roles deleted: none of their bindings is left.
    pub roles: Vec<String>,
    /// Orphaned buckets found, and kept.
    pub orphaned_buckets: Vec<String>,
    /// Objects that could not be judged this time (an AWS or Kubernetes error); tried again next sweep.
    pub undecided: u64,
    /// Objects made by this controller for another cluster sharing the account: left alone.
    pub other_cluster: Vec<String>,
}

/// A sweep could not list what it judges.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot list the IAM users")]
    ListUsers(#[source] AwsError),
    #[error("cannot list the IAM roles")]
    ListRoles(#[source] AwsError),
    #[error("cannot list the buckets")]
    ListBuckets(#[source] AwsError),
    #[error(
        "the cluster's identity (kube-system uid) is unknown: another cluster's objects could not be told apart from orphans"
    )]
    NoClusterIdentity,
    #[error("{users}; {buckets}")]
    Both { users: Box<SweepError>, buckets: Box<SweepError> },
}

/// The Kubernetes object an AWS object's tags name as its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Sweeps once now, then every `orphan_sweep_interval`, until `stop` resolves. Does nothing when the
/// interval is zero.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let interval = ctx.settings.orphan_sweep_interval;
    if interval.is_zero() {
        return;
    }
    tokio::pin!(stop);
    loop {
        // Cancelling a sweep halfway is safe: every step is idempotent, the next sweep finishes the job.
        tokio::select! {
            _ = &mut stop => return,
            // Background: the sweep uses only the AWS capacity that reconciles leave.
            result = Priority::Background.scope(sweep(&ctx)) => match result {
                Ok(report) => tracing::info!(
                    users = report.users.len(),
                    access_keys = report.access_keys,
                    orphaned_buckets = report.orphaned_buckets.len(),
                    other_cluster = report.other_cluster.len(),
                    undecided = report.undecided,
                    "Swept orphans"
                ),
                Err(err) => tracing::warn!(error = %err, "Orphan sweep failed"),
            },
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One sweep of users and buckets; see the module documentation. Each part runs whatever the other's
/// outcome; the error names every part that could not list what it judges.
pub async fn sweep(ctx: &Context) -> Result<Report, SweepError> {
    if ctx.settings.cluster_uid.is_empty() {
        return Err(SweepError::NoClusterIdentity);
    }
    let mut report = Report::default();
    let users = sweep_users(ctx, &mut report).await;
    ctx.metrics.sweep_finished(USER, users.is_ok());
    let roles = sweep_roles(ctx, &mut report).await;
    ctx.metrics.sweep_finished(ROLE, roles.is_ok());
    // Users and roles are one IAM part of the sweep: its error names the first that failed.
    let users = users.and(roles);
    let buckets = find_orphaned_buckets(ctx, &mut report).await;
    ctx.metrics.sweep_finished(BUCKET, buckets.is_ok());
    if buckets.is_ok() {
        ctx.metrics.set_orphaned_buckets(report.orphaned_buckets.len());
    }
    if users.is_ok() && buckets.is_ok() {
        ctx.metrics.set_other_cluster_objects(report.other_cluster.len() as u64);
    }
    match (users, buckets) {
        (Ok(()), Ok(())) => Ok(report),
        (Err(users), Err(buckets)) => {
            Err(SweepError::Both { users: Box::new(users), buckets: Box::new(buckets) })
        }
        (Err(err), _) | (_, Err(err)) => {
            tracing::info!(
                users = report.users.len(),
                orphaned_buckets = report.orphaned_buckets.len(),
                "Swept what could be listed"
            );
            Err(err)
        }
    }
}

async fn sweep_users(ctx: &Context, report: &mut Report) -> Result<(), SweepError> {
    let settings = &ctx.settings;
    let (aws, stats) = (&ctx.aws, &ctx.aws.stats);
    let listed = iam::list_users(&aws.iam, stats, &settings.iam_path).await.map_err(SweepError::ListUsers)?;
    for user in listed {
        if !user.name.starts_with(&settings.user_prefix) || !old_enough(Some(user.created), settings) {
            continue;
        }
        let ops = UserOps { client: aws.iam.clone(), stats, user: &user.name };
        let tags = match ops.get().await {
            Ok(Some(found)) => found.tags,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(user = %user.name, error = %err, "Cannot read the tags of a user to sweep");
                report.undecided += 1;
                continue;
            }
        };
        let claim = match judge(&tags, settings, &["BucketBinding", "BucketServiceKey"]) {
            Judgement::Claim(claim) => claim,
            Judgement::OtherCluster(uid) => {
                tracing::info!(user = %user.name, cluster_uid = %uid, "Left a user of another cluster alone");
                report.other_cluster.push(user.name);
                continue;
            }
            Judgement::NotOurs => continue,
        };
        if user.name != names::user_name(&settings.user_prefix, &claim.uid) {
            continue;
        }
        match is_live(&ctx.client, &claim).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(user = %user.name, error = %err, "Cannot look up the owner of a user");
                report.undecided += 1;
                continue;
            }
        }
        let keys = match ops.access_keys().await {
            Ok(keys) => keys.len() as u64,
            Err(err) => {
                tracing::warn!(user = %user.name, error = %err, "Cannot list the keys of an orphaned user");
                report.undecided += 1;
                continue;
            }
        };
        if let Err(err) = ops.delete_all().await {
            tracing::warn!(user = %user.name, error = %err, "Cannot delete an orphaned user");
            report.undecided += 1;
            continue;
        }
        tracing::warn!(
            user = %user.name, keys, kind = %claim.kind, namespace = %claim.namespace, name = %claim.name,
            uid = %claim.uid, "Deleted an orphaned IAM user: its object is gone"
        );
        ctx.metrics.swept(ACCESS_KEY, keys);
        ctx.metrics.swept(USER, 1);
        report.access_keys += keys;
        report.users.push(user.name);
    }
    Ok(())
}

/// The roles of keyless bindings' ServiceAccounts: a policy whose binding is gone (by its uid, asked of
/// the API server) is taken off the role, and a role left without a policy is deleted, with the
/// ServiceAccount's annotation or EKS Pod Identity association when it still names the role. Each binding's deletion does this itself;
/// the sweep finishes what a controller gone in between left.
async fn sweep_roles(ctx: &Context, report: &mut Report) -> Result<(), SweepError> {
    let settings = &ctx.settings;
    let (aws, stats) = (&ctx.aws, &ctx.aws.stats);
    let listed = iam::list_roles(&aws.iam, stats, &settings.iam_path).await.map_err(SweepError::ListRoles)?;
    for role in listed {
        if !role.name.starts_with(&settings.user_prefix) || !old_enough(Some(role.created), settings) {
            continue;
        }
        let ops = RoleOps { client: aws.iam.clone(), stats, role: &role.name };
        let found = match ops.get().await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(role = %role.name, error = %err, "Cannot read the tags of a role to sweep");
                report.undecided += 1;
                continue;
            }
        };
        let claim = match judge(&found.tags, settings, &["ServiceAccount"]) {
            Judgement::Claim(claim) => claim,
            Judgement::OtherCluster(uid) => {
                tracing::info!(role = %role.name, cluster_uid = %uid, "Left a role of another cluster alone");
                report.other_cluster.push(role.name);
                continue;
            }
            Judgement::NotOurs => continue,
        };
        if role.name != names::role_name(&settings.user_prefix, &claim.uid) {
            continue;
        }
        match sweep_role(ctx, &ops, &found.arn, &claim, report).await {
            Ok(true) => {
                tracing::warn!(role = %role.name, namespace = %claim.namespace, service_account = %claim.name,
                    "Deleted an orphaned IAM role: no binding of its ServiceAccount is left");
                ctx.metrics.swept(ROLE, 1);
                report.roles.push(role.name);
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(role = %role.name, error = %err, "Cannot sweep a role");
                report.undecided += 1;
            }
        }
    }
    Ok(())
}

/// Sweeps one role; says whether it deleted it.
async fn sweep_role(
    ctx: &Context,
    ops: &RoleOps<'_>,
    arn: &str,
    claim: &Claim,
    report: &mut Report,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let bindings = Api::<BucketBinding>::namespaced(ctx.client.clone(), &claim.namespace)
        .list(&Default::default())
        .await?;
    let live: Vec<&str> = bindings.items.iter().filter_map(|b| b.metadata.uid.as_deref()).collect();
    let policies = ops.policies().await?;
    let mut left = policies.len();
    for policy in &policies {
        let Some(uid) = keyless::binding_of_policy(policy) else { continue };
        if live.contains(&uid) {
            continue;
        }
        ops.delete_policy(policy).await?;
        ctx.metrics.swept(ROLE_POLICY, 1);
        report.role_policies += 1;
        left -= 1;
    }
    if left > 0 {
        return Ok(false);
    }
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &claim.namespace);
    if let Some(account) = accounts.get_opt(&claim.name).await?
        && account.metadata.uid.as_deref() == Some(claim.uid.as_str())
        && account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keyless::ROLE_ARN_ANNOTATION))
            .map(String::as_str)
            == Some(arn)
    {
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": account.metadata.resource_version,
            "annotations": {keyless::ROLE_ARN_ANNOTATION: null},
        }});
        accounts.patch_metadata(&claim.name, &Default::default(), &kube::api::Patch::Merge(&patch)).await?;
    }
    if let Some(keyless::Setup::PodIdentity { cluster }) = &ctx.settings.keyless {
        let associations = crate::aws::eks::AssociationOps {
            client: ctx.aws.eks.clone(),
            stats: &ctx.aws.stats,
            cluster,
            namespace: &claim.namespace,
            service_account: &claim.name,
        };
        associations.delete_if_for(arn).await?;
    }
    ops.delete().await?;
    Ok(true)
}

async fn find_orphaned_buckets(ctx: &Context, report: &mut Report) -> Result<(), SweepError> {
    let settings = &ctx.settings;
    let (aws, stats) = (&ctx.aws, &ctx.aws.stats);
    let listed =
        s3::list_buckets(&aws.s3, stats, &settings.bucket_prefix).await.map_err(SweepError::ListBuckets)?;
    for bucket in listed {
        if !old_enough(bucket.created, settings) {
            continue;
        }
        let client = aws.s3_in(bucket.region.as_deref().unwrap_or(&aws.region));
        let owner = Some(settings.account_id.as_str());
        let tags = match (BucketOps { client, stats, bucket: &bucket.name, owner }).tags().await {
            Ok(Some(tags)) => tags,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(bucket = %bucket.name, error = %err, "Cannot read the tags of a bucket");
                report.undecided += 1;
                continue;
            }
        };
        let claim = match judge(&tags, settings, &["Bucket"]) {
            Judgement::Claim(claim) => claim,
            Judgement::OtherCluster(uid) => {
                tracing::info!(bucket = %bucket.name, cluster_uid = %uid, "Left a bucket of another cluster alone");
                report.other_cluster.push(bucket.name);
                continue;
            }
            Judgement::NotOurs => continue,
        };
        // Released on purpose (deletionPolicy: Retain): the data was kept, not lost.
        if tags.iter().any(|(k, _)| k == tag::RELEASED) {
            continue;
        }
        if bucket.name != names::bucket_name(&settings.bucket_prefix, &claim.uid) {
            continue;
        }
        match is_live(&ctx.client, &claim).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    bucket = %bucket.name, namespace = %claim.namespace, name = %claim.name, uid = %claim.uid,
                    "Orphaned bucket: its Bucket is gone; kept, since it may hold data"
                );
                report.orphaned_buckets.push(bucket.name);
            }
            Err(err) => {
                tracing::warn!(bucket = %bucket.name, error = %err, "Cannot look up the owner of a bucket");
                report.undecided += 1;
            }
        }
    }
    Ok(())
}

/// What the sweeper makes of an AWS object's tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// This controller made it, in this cluster, for this owner: judge whether the owner lives.
    Claim(Claim),
    /// This controller's kind of object, made in another cluster (this kube-system uid): never touched.
    OtherCluster(String),
    /// Not ours to judge: made by someone else, or out of this controller's scope.
    NotOurs,
}

/// The owner named by `tags`, when they say this controller made the object for one of `kinds`, in this
/// cluster and in its scope (its deploy environment and, with `--namespace`, its namespace).
///
/// The cluster is proven by the kube-system uid tag. An object without one was made before clusters were
/// told apart by uid: it is judged only when it carries this cluster's non-empty `--cluster-name`, as
/// before; otherwise it could be another cluster's, and is left alone.
pub fn judge(tags: &[(String, String)], settings: &Settings, kinds: &[&str]) -> Judgement {
    let get = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if get(tag::CREATED_BY) != Some(tag::CREATED_BY_VALUE)
        || get(tag::DEPLOY_ENV) != Some(&settings.deploy_env)
        || !get(tag::KIND).is_some_and(|k| kinds.contains(&k))
    {
        return Judgement::NotOurs;
    }
    let name = get(tag::CLUSTER).unwrap_or_default();
    match get(tag::CLUSTER_UID) {
        Some(uid) if uid != settings.cluster_uid => return Judgement::OtherCluster(uid.to_owned()),
        Some(_) if name != settings.cluster_name => return Judgement::NotOurs,
        Some(_) => {}
        None if name.is_empty() || name != settings.cluster_name => return Judgement::NotOurs,
        None => {}
    }
    match claim(tags, settings) {
        Some(claim) => Judgement::Claim(claim),
        None => Judgement::NotOurs,
    }
}

/// The owner the tags name, within `--namespace` when set.
fn claim(tags: &[(String, String)], settings: &Settings) -> Option<Claim> {
    let get = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let namespace = get(tag::NAMESPACE).filter(|n| !n.is_empty())?;
    if settings.namespace.as_deref().is_some_and(|watched| watched != namespace) {
        return None;
    }
    Some(Claim {
        kind: get(tag::KIND)?.to_owned(),
        namespace: namespace.to_owned(),
        name: get(tag::NAME).filter(|n| !n.is_empty())?.to_owned(),
        uid: get(tag::UID).filter(|u| !u.is_empty())?.to_owned(),
    })
}

/// Whether the API server (not a cache) has the claimed owner with the claimed uid.
async fn is_live(client: &Client, claim: &Claim) -> Result<bool, kube::Error> {
    let uid = match claim.kind.as_str() {
        "Bucket" => uid_of::<Bucket>(client, claim).await?,
        "BucketBinding" => uid_of::<BucketBinding>(client, claim).await?,
        "BucketServiceKey" => uid_of::<BucketServiceKey>(client, claim).await?,
        // `claim` admits only the kinds above; anything else is never judged an orphan.
        _ => return Ok(true),
    };
    Ok(uid.as_deref() == Some(claim.uid.as_str()))
}

async fn uid_of<K>(client: &Client, claim: &Claim) -> Result<Option<String>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), &claim.namespace);
    match api.get(&claim.name).await {
        Ok(object) => Ok(object.meta().uid.clone()),
        // Gone only when the API server says this object is not found. A 404 for the whole resource (a
        // CRD version not served, an API server still syncing its CRDs) names no object: not an answer.
        Err(kube::Error::Api(status))
            if status.code == 404 && status.details.as_ref().is_some_and(|d| d.name == claim.name) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Whether an AWS object created at `created` (seconds since the epoch) is past the grace period. One
/// whose age AWS does not tell is judged: a create under way would have one.
fn old_enough(created: Option<i64>, settings: &Settings) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let Some(created) = created else { return true };
    let created = Duration::from_secs(u64::try_from(created).unwrap_or(0));
    now.saturating_sub(created) >= settings.orphan_grace
}

// The local settings are the test fixture; they exist with the `local` feature only.
#[cfg(all(test, feature = "local"))]
mod tests {
    use super::*;
    use crate::desired::names::Cluster;

    const HERE: &str = "5e1f0c7a-0000-4000-8000-000000000001";

    fn settings(namespace: Option<&str>) -> Settings {
        let mut settings = crate::local::settings("team");
        settings.deploy_env = "prod".to_owned();
        settings.cluster_uid = HERE.to_owned();
        settings.namespace = namespace.map(str::to_owned);
        settings
    }

    fn tags_in(kind: &str, namespace: &str, deploy_env: &str, cluster: Cluster<'_>) -> Vec<(String, String)> {
        let owner = names::Owner { kind, namespace, name: "app", uid: "0b6c3d4e" };
        names::tags(&owner, deploy_env, &cluster)
    }

    fn tags(kind: &str, namespace: &str, deploy_env: &str) -> Vec<(String, String)> {
        tags_in(kind, namespace, deploy_env, Cluster { name: "", uid: HERE })
    }

    fn claimed(judgement: Judgement) -> Option<Claim> {
        match judgement {
            Judgement::Claim(claim) => Some(claim),
            _ => None,
        }
    }

    #[test]
    fn only_our_tags_in_our_scope_make_a_claim() {
        let all = settings(None);
        let binding = ["BucketBinding"];
        let claim = claimed(judge(&tags("BucketBinding", "team", "prod"), &all, &binding)).expect("ours");
        assert_eq!((claim.kind.as_str(), claim.namespace.as_str()), ("BucketBinding", "team"));
        assert_eq!((claim.name.as_str(), claim.uid.as_str()), ("app", "0b6c3d4e"));
        assert_eq!(judge(&tags("Bucket", "team", "prod"), &all, &binding), Judgement::NotOurs, "kind");
        assert_eq!(judge(&tags("BucketBinding", "team", "dev"), &all, &binding), Judgement::NotOurs, "env");
        let one = settings(Some("other"));
        assert_eq!(judge(&tags("BucketBinding", "team", "prod"), &one, &binding), Judgement::NotOurs);
        let foreign: Vec<_> =
            tags("BucketBinding", "team", "prod").into_iter().filter(|(k, _)| k != tag::CREATED_BY).collect();
        assert_eq!(judge(&foreign, &all, &binding), Judgement::NotOurs, "not made by us");
        let no_uid: Vec<_> =
            tags("BucketBinding", "team", "prod").into_iter().filter(|(k, _)| k != tag::UID).collect();
        assert_eq!(judge(&no_uid, &all, &binding), Judgement::NotOurs, "no uid, no judgement");
    }

    #[test]
    fn another_clusters_objects_are_reported_never_claimed() {
        let here = settings(None);
        let binding = ["BucketBinding"];
        let restored = tags_in("BucketBinding", "team", "prod", Cluster { name: "", uid: "another-uid" });
        assert_eq!(
            judge(&restored, &here, &binding),
            Judgement::OtherCluster("another-uid".to_owned()),
            "same namespace, name and environment; another kube-system"
        );
        let mut named = settings(None);
        named.cluster_name = "east".to_owned();
        let east = tags_in("BucketBinding", "team", "prod", Cluster { name: "east", uid: HERE });
        assert!(claimed(judge(&east, &named, &binding)).is_some(), "this cluster's object");
        assert_eq!(
            judge(&east, &here, &binding),
            Judgement::NotOurs,
            "our uid under another name: not judged"
        );
        // Made before the uid tag: judged only under this cluster's own non-empty name, as before.
        let legacy_named = tags_in("BucketBinding", "team", "prod", Cluster { name: "east", uid: "" });
        assert!(claimed(judge(&legacy_named, &named, &binding)).is_some());
        let legacy_unnamed = tags_in("BucketBinding", "team", "prod", Cluster { name: "", uid: "" });
        assert_eq!(judge(&legacy_unnamed, &here, &binding), Judgement::NotOurs, "could be any cluster's");
    }

    #[test]
    fn nothing_younger_than_the_grace_period_is_judged() {
        let mut settings = settings(None);
        settings.orphan_grace = Duration::from_secs(600);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        assert!(!old_enough(Some(now - 1), &settings));
        assert!(!old_enough(Some(now + 5), &settings), "a creation date ahead of our clock");
        assert!(old_enough(Some(now - 601), &settings));
    }
}
