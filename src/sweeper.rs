//! The orphan sweeper: finds AWS users and buckets whose Kubernetes object no longer exists.
//!
//! Leader election keeps two replicas from acting at once, but a request already sent when leadership
//! ends (a `CreateUser` landing after the new leader cleaned up), or a crash between AWS and Kubernetes
//! writes, can still leave an AWS object behind that no reconcile will ever look at again. The leader
//! sweeps once at start and then every `--orphan-sweep-interval`:
//!
//! - users under `--iam-path` named `<user-prefix><uid>`, and buckets named `<bucket-prefix><uid>`, whose
//!   tags say we made them (`created_by`, our `deploy_env`, the owner's kind, namespace, name and uid; with
//!   `--namespace`, only that namespace). Anything else is never touched.
//! - Nothing younger than the grace period is judged: a create may be under way.
//! - The owner is looked up on the API server, not in a cache: an orphan is an owner that the API server
//!   does not have, or has with another uid. uids are never reused, so a dead uid stays dead.
//! - An orphaned user loses its access keys, policies and the user itself (a live key nobody owns is a
//!   security hole). An orphaned bucket is reported in the log and `bucket_broker_orphaned_buckets`, and
//!   kept: it may hold someone's data.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::api::{Bucket, BucketBinding, BucketServiceKey};
use crate::aws::iam::{self, UserOps};
use crate::aws::s3::{self, BucketOps};
use crate::aws::{AwsError, Priority};
use crate::controller::{Context, Settings};
use crate::desired::names::{self, tag};

/// The `kind` label of `bucket_broker_orphans_swept_total` for users.
pub const USER: &str = "User";
/// The `kind` label of `bucket_broker_orphans_swept_total` for access keys.
pub const ACCESS_KEY: &str = "AccessKey";

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Orphaned users deleted, with their keys and policies.
    pub users: Vec<String>,
    /// Access keys deleted with those users.
    pub access_keys: u64,
    /// Orphaned buckets found, and kept.
    pub orphaned_buckets: Vec<String>,
    /// Objects that could not be judged this time (an AWS or Kubernetes error); tried again next sweep.
    pub undecided: u64,
}

/// A sweep could not list what it judges.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot list the IAM users")]
    ListUsers(#[source] AwsError),
    #[error("cannot list the buckets")]
    ListBuckets(#[source] AwsError),
    #[error("no --cluster-name: another cluster's objects could not be told apart from orphans")]
    NoClusterName,
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
/// interval is zero, or without `--cluster-name`: an object of another cluster sharing the AWS account is
/// missing from this cluster's API server too, and only the cluster tag tells the two apart.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let interval = ctx.settings.orphan_sweep_interval;
    if interval.is_zero() {
        return;
    }
    if ctx.settings.cluster_name.is_empty() {
        tracing::warn!(
            "The orphan sweeper is off: set --cluster-name (a name unique among the clusters sharing this AWS account) to turn it on"
        );
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

/// One sweep of users and buckets; see the module documentation.
pub async fn sweep(ctx: &Context) -> Result<Report, SweepError> {
    if ctx.settings.cluster_name.is_empty() {
        return Err(SweepError::NoClusterName);
    }
    let mut report = Report::default();
    sweep_users(ctx, &mut report).await?;
    find_orphaned_buckets(ctx, &mut report).await?;
    ctx.metrics.set_orphaned_buckets(report.orphaned_buckets.len());
    Ok(report)
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
        let Some(claim) = claim(&tags, settings, &["BucketBinding", "BucketServiceKey"]) else { continue };
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
        let tags = match (BucketOps { client, stats, bucket: &bucket.name }).tags().await {
            Ok(Some(tags)) => tags,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(bucket = %bucket.name, error = %err, "Cannot read the tags of a bucket");
                report.undecided += 1;
                continue;
            }
        };
        let Some(claim) = claim(&tags, settings, &["Bucket"]) else { continue };
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

/// The owner named by `tags`, when they say this controller made the object for one of `kinds` in its
/// scope (its deploy environment and, with `--namespace`, its namespace). `None`: not ours to judge.
pub fn claim(tags: &[(String, String)], settings: &Settings, kinds: &[&str]) -> Option<Claim> {
    let get = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if get(tag::CREATED_BY) != Some(tag::CREATED_BY_VALUE)
        || get(tag::DEPLOY_ENV) != Some(&settings.deploy_env)
        // Another cluster's objects live in another API server: never judged here.
        || get(tag::CLUSTER).unwrap_or_default() != settings.cluster_name
    {
        return None;
    }
    let kind = get(tag::KIND).filter(|k| kinds.contains(k))?;
    let namespace = get(tag::NAMESPACE).filter(|n| !n.is_empty())?;
    if settings.namespace.as_deref().is_some_and(|watched| watched != namespace) {
        return None;
    }
    Some(Claim {
        kind: kind.to_owned(),
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

    fn settings(namespace: Option<&str>) -> Settings {
        let mut settings = crate::local::settings("team");
        settings.deploy_env = "prod".to_owned();
        settings.namespace = namespace.map(str::to_owned);
        settings
    }

    fn tags(kind: &str, namespace: &str, deploy_env: &str) -> Vec<(String, String)> {
        let owner = names::Owner { kind, namespace, name: "app", uid: "0b6c3d4e" };
        names::tags(&owner, deploy_env, "")
    }

    #[test]
    fn only_our_tags_in_our_scope_make_a_claim() {
        let all = settings(None);
        let claim = claim(&tags("BucketBinding", "team", "prod"), &all, &["BucketBinding"]).expect("ours");
        assert_eq!((claim.kind.as_str(), claim.namespace.as_str()), ("BucketBinding", "team"));
        assert_eq!((claim.name.as_str(), claim.uid.as_str()), ("app", "0b6c3d4e"));
        assert_eq!(super::claim(&tags("Bucket", "team", "prod"), &all, &["BucketBinding"]), None, "kind");
        assert_eq!(
            super::claim(&tags("BucketBinding", "team", "dev"), &all, &["BucketBinding"]),
            None,
            "env"
        );
        let one = settings(Some("other"));
        assert_eq!(super::claim(&tags("BucketBinding", "team", "prod"), &one, &["BucketBinding"]), None);
        let foreign: Vec<_> =
            tags("BucketBinding", "team", "prod").into_iter().filter(|(k, _)| k != tag::CREATED_BY).collect();
        assert_eq!(super::claim(&foreign, &all, &["BucketBinding"]), None, "not made by us");
        let no_uid: Vec<_> =
            tags("BucketBinding", "team", "prod").into_iter().filter(|(k, _)| k != tag::UID).collect();
        assert_eq!(super::claim(&no_uid, &all, &["BucketBinding"]), None, "no uid, no judgement");
        let owner = names::Owner { kind: "BucketBinding", namespace: "team", name: "app", uid: "0b6c3d4e" };
        let east = names::tags(&owner, "prod", "east");
        assert_eq!(super::claim(&east, &all, &["BucketBinding"]), None, "another cluster's object");
        let mut named = settings(None);
        named.cluster_name = "east".to_owned();
        assert!(super::claim(&east, &named, &["BucketBinding"]).is_some(), "this cluster's object");
        assert_eq!(
            super::claim(&tags("BucketBinding", "team", "prod"), &named, &["BucketBinding"]),
            None,
            "a named cluster leaves unnamed objects alone"
        );
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
