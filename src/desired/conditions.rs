//! Status conditions, the cert-manager way: a list keyed by `type`, each carrying the generation it
//! describes, and a `lastTransitionTime` that moves only when `status` flips. Because nothing else moves
//! on its own, a status computed twice from the same observations is equal, and the write can be skipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object is fully provisioned and usable.
    pub const READY: &str = "Ready";
    /// The credentials work only from the platform network.
    pub const NETWORK_RESTRICTED: &str = "NetworkRestricted";
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
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Observation { type_: types::READY, status: true, reason, message: message.into() }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Observation { type_: types::READY, status: false, reason, message: message.into() }
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
    conditions
}

/// Whether a condition list says `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let updated = merge(&both, &[Observation::not_ready(reasons::DELETION_BLOCKED, "")], None, &at(2));
        assert_eq!(updated.len(), 2);
        assert!(is_true(&updated, types::NETWORK_RESTRICTED));
        assert!(!is_true(&updated, types::READY));
    }
}
