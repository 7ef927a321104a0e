//! Status conditions, the cert-manager way: a list keyed by `type`, each carrying the generation it
//! describes, and a `lastTransitionTime` that moves only when `status` flips. Because nothing else moves
//! on its own, a status computed twice from the same observations is equal, and the write can be skipped.
//!
//! Beside `Ready`, the two conditions of kstatus (the status library of Flux, kpt and cli-utils), both
//! "abnormal-true" and present only while true: `Reconciling` while the controller works towards Ready
//! by itself, `Stalled` when only a person can get it there (the reasons in [`needs_a_person`]). They are
//! derived from Ready, so GitOps tools read one truth: kstatus says InProgress, then Current or Failed.

use super::redact;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object is fully provisioned and usable.
    pub const READY: &str = "Ready";
    /// The credentials work only from the platform network.
    pub const NETWORK_RESTRICTED: &str = "NetworkRestricted";
    /// kstatus: not Ready yet, and the controller is getting there by itself (present only while true).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: not Ready, and it will not be until a person acts (present only while true).
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons: a fixed PascalCase set, also used as event reasons and metric labels.
pub mod reasons {
    pub const PROVISIONED: &str = "Provisioned";
    pub const BUCKET_NOT_READY: &str = "BucketNotReady";
    /// The Bucket a credential is for is being deleted.
    pub const BUCKET_DELETING: &str = "BucketDeleting";
    /// The installed CRD drops status fields this controller writes.
    pub const CRD_OUTDATED: &str = "CRDOutdated";
    /// A name in status that AWS does not show as the object's own was ignored.
    pub const STATUS_IGNORED: &str = "StatusIgnored";
    /// AWS still refuses a new access key after the propagation window.
    pub const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
    pub const CREDENTIALS_PROPAGATING: &str = "CredentialsPropagating";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const AWS_ERROR: &str = "AwsError";
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PLATFORM_NETWORK: &str = "PlatformNetwork";
    pub const EXTERNAL_ACCESS_ALLOWED: &str = "ExternalAccessAllowed";
    pub const PLATFORM_NETWORK_NOT_CONFIGURED: &str = "PlatformNetworkNotConfigured";
    /// An AWS object with the derived name belongs to another Kubernetes object.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// An AWS object changed under the pass (made or deleted by a concurrent pass): retried.
    pub const CONCURRENT_CHANGE: &str = "ConcurrentChange";
    /// The BucketClass a Bucket names does not exist.
    pub const CLASS_NOT_FOUND: &str = "ClassNotFound";
    /// The Bucket's class forbids what it (or a credential of it) asks for.
    pub const CLASS_FORBIDS: &str = "ClassForbids";
    /// The bucket name derived from the uid belongs to another AWS account.
    pub const BUCKET_NAME_TAKEN: &str = "BucketNameTaken";
    /// The account's Block Public Access settings forbid the public policy a public Bucket needs.
    pub const PUBLIC_ACCESS_BLOCKED_BY_ACCOUNT: &str = "PublicAccessBlockedByAccount";
    /// Access keys are not allowed (`--keyless=required`, or the class requires keyless bindings).
    pub const KEYS_NOT_ALLOWED: &str = "KeysNotAllowed";
    /// A keyless binding names a ServiceAccount that does not exist (yet).
    pub const SERVICE_ACCOUNT_NOT_FOUND: &str = "ServiceAccountNotFound";
    /// The ServiceAccount already names a role the controller did not make for it.
    pub const SERVICE_ACCOUNT_CONFLICT: &str = "ServiceAccountConflict";
    /// A binding names a ServiceAccount, and the platform has no keyless setup.
    pub const KEYLESS_NOT_CONFIGURED: &str = "KeylessNotConfigured";
}

/// The `Ready=False` reasons that the controller cannot resolve by itself however often it retries, so
/// that GitOps tools show the object as failed (kstatus `Failed`, Argo CD `Degraded`) instead of waiting:
/// each message says what a person must do. Every other reason is progress: waiting for the Bucket or for
/// AWS to accept a key, and every failure the controller retries (AWS and Kubernetes errors, a rejected
/// key, which is made again). `DeletionBlocked` is not among them: it is written only on an object being
/// deleted, which both tools judge by its deletionTimestamp alone.
pub fn needs_a_person(reason: &str) -> bool {
    [
        // Someone else's Secret holds the name: rename one of them.
        reasons::SECRET_CONFLICT,
        // The spec cannot be acted on: fix it.
        reasons::INVALID_SPEC,
        // The cluster's CRDs are older than the controller: apply the current ones.
        reasons::CRD_OUTDATED,
        // The Bucket is being deleted: this binding will never get credentials; delete it.
        reasons::BUCKET_DELETING,
        // The AWS bucket or user with this name carries another object's ownership tag.
        reasons::NAME_CONFLICT,
        // Another AWS account owns the bucket name: delete and re-create the Bucket (a new uid, a new name).
        reasons::BUCKET_NAME_TAKEN,
        // The account's Block Public Access forbids public buckets: ask the platform team, or make it private.
        reasons::PUBLIC_ACCESS_BLOCKED_BY_ACCOUNT,
        // The class is missing, or forbids what is asked: change the spec, or ask the platform team.
        reasons::CLASS_NOT_FOUND,
        reasons::CLASS_FORBIDS,
        // Keys are banned here: bind the app's ServiceAccount instead (serviceAccountName).
        reasons::KEYS_NOT_ALLOWED,
        // The ServiceAccount names another role: remove that annotation, or bind another ServiceAccount.
        reasons::SERVICE_ACCOUNT_CONFLICT,
        // The platform cannot give roles to ServiceAccounts: ask the platform team, or use a keyed binding.
        reasons::KEYLESS_NOT_CONFIGURED,
    ]
    .contains(&reason)
}

/// Whether a pass with these observations handled its generation, so that `status.observedGeneration`
/// moves to it: the spec was fully applied, or the pass found that only a person can get it further
/// (Stalled). Not while it retries or waits by itself: kstatus then reads the generation as in progress,
/// and a stalled one as failed, as the conditions of that generation say.
pub fn handled(applied: bool, observations: &[Observation]) -> bool {
    applied || observations.iter().any(|o| o.type_ == types::READY && !o.status && needs_a_person(o.reason))
}

/// One observation, before it becomes a [`Condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Observation {
    /// Tenants read conditions: the message goes without the platform's AWS identity ([`redact`]).
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Observation {
            type_: types::READY,
            status: true,
            reason,
            message: redact::for_tenants(&message.into()),
        }
    }

    /// Tenants read conditions: the message goes without the platform's AWS identity ([`redact`]).
    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Observation {
            type_: types::READY,
            status: false,
            reason,
            message: redact::for_tenants(&message.into()),
        }
    }
}

/// The conditions after `observations`: each observed type is replaced, keeping its `lastTransitionTime`
/// when its status did not change; other types are kept as they were.
pub fn merge(
    existing: &[Condition],
    observations: &[Observation],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut conditions = existing.to_vec();
    for observation in observations {
        let status = if observation.status { "True" } else { "False" }.to_owned();
        let position = conditions.iter().position(|c| c.type_ == observation.type_);
        let last_transition_time = match position.map(|i| &conditions[i]) {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: observation.type_.to_owned(),
            status,
            reason: observation.reason.to_owned(),
            message: observation.message.clone(),
            observed_generation: generation,
            last_transition_time,
        };
        match position {
            Some(i) => conditions[i] = condition,
            None => conditions.push(condition),
        }
    }
    if let Some(ready) = observations.iter().find(|o| o.type_ == types::READY) {
        conditions = with_kstatus(conditions, ready, generation, now);
    }
    conditions
}

/// `Reconciling` or `Stalled` as Ready says, or neither once it is true.
fn with_kstatus(
    mut conditions: Vec<Condition>,
    ready: &Observation,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let wanted = match ready.status {
        true => None,
        false if needs_a_person(ready.reason) => Some(types::STALLED),
        false => Some(types::RECONCILING),
    };
    let since = conditions
        .iter()
        .find(|c| Some(c.type_.as_str()) == wanted && c.status == "True")
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != types::RECONCILING && c.type_ != types::STALLED);
    if let Some(type_) = wanted {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: "True".to_owned(),
            reason: ready.reason.to_owned(),
            message: ready.message.clone(),
            observed_generation: generation,
            last_transition_time: since.unwrap_or_else(|| now.clone()),
        });
    }
    conditions
}

/// Whether a condition list says `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_are_redacted_where_they_are_made() {
        let message = "User: arn:aws:sts::123456789012:assumed-role/bucket-broker/s is not authorized";
        for observation in [Observation::ready("R", message), Observation::not_ready("R", message)] {
            assert_eq!(observation.message, "User: <the controller's AWS role> is not authorized");
        }
    }
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first =
            merge(&[], &[Observation::not_ready(reasons::BUCKET_NOT_READY, "waiting")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        assert_eq!(first[0].status, "False");

        let same_status =
            merge(&first, &[Observation::not_ready(reasons::AWS_ERROR, "access denied")], Some(2), &at(200));
        assert_eq!(same_status[0].last_transition_time, at(100), "reason changed, status did not");
        assert_eq!(same_status[0].reason, "AwsError");
        assert_eq!(same_status[0].observed_generation, Some(2));

        let flipped =
            merge(&same_status, &[Observation::ready(reasons::PROVISIONED, "ready")], Some(2), &at(300));
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert!(is_true(&flipped, types::READY));
    }

    #[test]
    fn identical_observations_give_identical_conditions() {
        let observations = [
            Observation::ready(reasons::PROVISIONED, "ready"),
            Observation {
                type_: types::NETWORK_RESTRICTED,
                status: false,
                reason: reasons::PLATFORM_NETWORK_NOT_CONFIGURED,
                message: "no platform network".into(),
            },
        ];
        let once = merge(&[], &observations, Some(3), &at(10));
        let twice = merge(&once, &observations, Some(3), &at(99));
        assert_eq!(once, twice, "a resync must not change the status");
        assert_eq!(once.len(), 2);

        let waiting = [Observation::not_ready(reasons::BUCKET_NOT_READY, "waiting")];
        let once = merge(&[], &waiting, Some(3), &at(10));
        assert_eq!(merge(&once, &waiting, Some(3), &at(99)), once, "nor while it waits");
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
        conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn kstatus_conditions_follow_ready() {
        let waiting =
            merge(&[], &[Observation::not_ready(reasons::BUCKET_NOT_READY, "waiting")], Some(1), &at(1));
        let reconciling = find(&waiting, types::RECONCILING).expect("Reconciling while waiting");
        assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "BucketNotReady"));
        assert_eq!(reconciling.message, "waiting");
        assert!(find(&waiting, types::STALLED).is_none());

        let retried =
            merge(&waiting, &[Observation::not_ready(reasons::AWS_ERROR, "throttled")], Some(1), &at(5));
        let reconciling = find(&retried, types::RECONCILING).expect("a retried error is progress");
        assert_eq!(
            (reconciling.reason.as_str(), reconciling.last_transition_time.clone()),
            ("AwsError", at(1))
        );

        let conflict =
            merge(&retried, &[Observation::not_ready(reasons::SECRET_CONFLICT, "taken")], Some(2), &at(9));
        let stalled = find(&conflict, types::STALLED).expect("Stalled when a person must act");
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "SecretConflict"));
        assert_eq!((stalled.observed_generation, stalled.last_transition_time.clone()), (Some(2), at(9)));
        assert!(find(&conflict, types::RECONCILING).is_none(), "never both");

        let ready = merge(&conflict, &[Observation::ready(reasons::PROVISIONED, "done")], Some(2), &at(12));
        assert!(find(&ready, types::STALLED).is_none() && find(&ready, types::RECONCILING).is_none());
        assert_eq!(ready.len(), 1, "a Ready object carries Ready alone: {ready:?}");

        // Observations without Ready leave them alone.
        let network = Observation {
            type_: types::NETWORK_RESTRICTED,
            status: true,
            reason: reasons::PLATFORM_NETWORK,
            message: String::new(),
        };
        let kept = merge(&conflict, &[network], Some(2), &at(20));
        assert!(find(&kept, types::STALLED).is_some());
    }

    #[test]
    fn the_reasons_a_person_must_act_on_are_the_terminal_ones() {
        for reason in [
            reasons::SECRET_CONFLICT,
            reasons::INVALID_SPEC,
            reasons::CRD_OUTDATED,
            reasons::BUCKET_DELETING,
            reasons::NAME_CONFLICT,
            reasons::BUCKET_NAME_TAKEN,
            reasons::PUBLIC_ACCESS_BLOCKED_BY_ACCOUNT,
            reasons::CLASS_NOT_FOUND,
            reasons::CLASS_FORBIDS,
        ] {
            assert!(needs_a_person(reason), "{reason}");
        }
        for reason in [
            reasons::BUCKET_NOT_READY,
            reasons::CREDENTIALS_PROPAGATING,
            reasons::AWS_ERROR,
            "KubernetesError",
            "Timeout",
            reasons::CREDENTIALS_REJECTED,
            reasons::DELETION_BLOCKED,
            reasons::CONCURRENT_CHANGE,
        ] {
            assert!(!needs_a_person(reason), "{reason}");
        }
    }

    #[test]
    fn other_condition_types_are_kept() {
        let network = Observation {
            type_: types::NETWORK_RESTRICTED,
            status: true,
            reason: reasons::PLATFORM_NETWORK,
            message: String::new(),
        };
        let both = merge(&[], &[network, Observation::ready(reasons::PROVISIONED, "")], None, &at(1));
        let updated = merge(&both, &[Observation::not_ready(reasons::SECRET_CONFLICT, "")], None, &at(2));
        assert_eq!(updated.len(), 3, "NetworkRestricted kept, Ready and its Stalled: {updated:?}");
        assert!(is_true(&updated, types::NETWORK_RESTRICTED));
        assert!(!is_true(&updated, types::READY));
    }
}
