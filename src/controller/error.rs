//! Reconcile failures: one error type for every controller, its static reason for conditions, events and
//! metrics, and the requeue after a failure.

use kube::Resource;
use kube::runtime::controller::Action;

use super::context::{Context, object_key};
use crate::aws::{AwsError, ErrorKind};
use crate::desired::conditions::reasons;

/// A reconcile failure. Messages are lowercase, never repeat their source, and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Aws(#[from] AwsError),
    // The cause is in the message (conditions show it) and therefore not also a `source`, so that a
    // printed error chain does not repeat it.
    #[error("{}", kube_message(.0))]
    Kube(kube::Error),
    /// Deletion must wait; the message says for what.
    #[error("{0}")]
    DeletionBlocked(String),
    /// An AWS object with our name belongs to another Kubernetes object.
    #[error("{0}")]
    Conflict(String),
    /// The bucket name derived from the uid is another AWS account's bucket: nothing is adopted.
    #[error("{0}")]
    BucketNameTaken(String),
    /// The account's Block Public Access settings refuse the public policy a public Bucket needs.
    #[error("{0}")]
    PublicAccessBlockedByAccount(String),
    /// The BucketClass the Bucket names does not exist.
    #[error("{0}")]
    ClassNotFound(String),
    /// The Bucket's class forbids what it asks for.
    #[error("{0}")]
    ClassForbids(String),
    /// Access keys are not allowed here; the message says by whom.
    #[error("{0}")]
    KeysNotAllowed(String),
    /// A keyless binding's ServiceAccount does not exist (yet).
    #[error("{0}")]
    ServiceAccountNotFound(String),
    /// The ServiceAccount names a role the controller did not make for it.
    #[error("{0}")]
    ServiceAccountConflict(String),
    /// A binding names a ServiceAccount, and the controller has no keyless setup.
    #[error("{0}")]
    KeylessNotConfigured(String),
    /// An AWS object changed under this pass (another pass made or deleted it meanwhile); retried.
    #[error("{0}")]
    ConcurrentChange(String),
    #[error("the object has no {0}")]
    Incomplete(&'static str),
    /// The installed CRD is older than the controller: it drops status fields the controller writes.
    #[error(
        "the {kind} CustomResourceDefinition on the cluster is outdated: it dropped {fields}; apply the CRDs of this controller version (kubectl apply -k crds/)"
    )]
    CrdOutdated {
        kind: String,
        fields: String,
        /// The resourceVersion of the status write that did land (what the CRD declares): its watch event
        /// is the controller's own, and must start no pass.
        written: Option<String>,
    },
    /// The Secret name is taken by a Secret this object cannot prove is its own.
    #[error("{0}")]
    SecretConflict(String),
    /// The spec cannot be acted on; the message says which field and why.
    #[error("{0}")]
    InvalidSpec(String),
    /// The AWS bucket a credential would be for is not (yet) shown by AWS to be its Bucket's.
    #[error("{0}")]
    BucketUnverified(String),
    /// A new access key that AWS still refuses after the propagation window.
    #[error("{0}")]
    CredentialsRejected(String),
    /// A pass ran out of time (a request that never answers); it was stopped and is retried.
    #[error(
        "the pass took longer than {} s (a request to AWS or to the Kubernetes API did not answer) and was \
         stopped; it is retried: if this lasts, check the controller's network access and its log",
        .0.as_secs()
    )]
    Timeout(std::time::Duration),
}

impl Error {
    /// A static PascalCase reason, for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Aws(_) => reasons::AWS_ERROR,
            Error::Kube(_) => "KubernetesError",
            Error::DeletionBlocked(_) => reasons::DELETION_BLOCKED,
            Error::Conflict(_) => reasons::NAME_CONFLICT,
            Error::BucketNameTaken(_) => reasons::BUCKET_NAME_TAKEN,
            Error::ClassNotFound(_) => reasons::CLASS_NOT_FOUND,
            Error::ClassForbids(_) => reasons::CLASS_FORBIDS,
            Error::PublicAccessBlockedByAccount(_) => reasons::PUBLIC_ACCESS_BLOCKED_BY_ACCOUNT,
            Error::ConcurrentChange(_) => reasons::CONCURRENT_CHANGE,
            Error::KeysNotAllowed(_) => reasons::KEYS_NOT_ALLOWED,
            Error::ServiceAccountNotFound(_) => reasons::SERVICE_ACCOUNT_NOT_FOUND,
            Error::ServiceAccountConflict(_) => reasons::SERVICE_ACCOUNT_CONFLICT,
            Error::KeylessNotConfigured(_) => reasons::KEYLESS_NOT_CONFIGURED,
            Error::Incomplete(_) => reasons::INVALID_SPEC,
            Error::CrdOutdated { .. } => reasons::CRD_OUTDATED,
            Error::SecretConflict(_) => reasons::SECRET_CONFLICT,
            Error::BucketUnverified(_) => reasons::BUCKET_NOT_READY,
            Error::InvalidSpec(_) => reasons::INVALID_SPEC,
            Error::CredentialsRejected(_) => reasons::CREDENTIALS_REJECTED,
            Error::Timeout(_) => "Timeout",
        }
    }

    /// Whether the API server definitely refused a write (a 4xx answer), as opposed to an outcome that is
    /// unknown (a timeout, a dropped connection, a 5xx after which the write may have landed).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::SecretConflict(_) => true,
            Error::Kube(kube::Error::Api(status)) => (400..500).contains(&status.code),
            _ => false,
        }
    }

    /// Whether this is a harmless race: the API server answered 404 (the object, or what the pass was
    /// writing, is gone) or 409 (changed since it was read). The next pass settles it; no person need look.
    pub fn is_race(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 404 || status.code == 409)
    }

    /// Whether retrying soon is likely to help (throttling, network) rather than waiting for a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws(err) => err.is(ErrorKind::Transient),
            Error::Kube(_) | Error::Timeout(_) | Error::ConcurrentChange(_) => true,
            _ => false,
        }
    }
}

/// A Kubernetes failure as a person reads it: the API server's code, reason and message (never kube's
/// debug dump of the whole `Status`), or what went wrong on the way to it.
fn kube_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            let reason = Some(status.reason.as_str()).filter(|r| !r.is_empty()).map(|r| format!(" {r}"));
            let message = Some(status.message.trim()).filter(|m| !m.is_empty()).unwrap_or("no message");
            format!("the Kubernetes API answered {}{}: {message}", status.code, reason.unwrap_or_default())
        }
        other => {
            let mut cause: &(dyn std::error::Error + 'static) = other;
            while let Some(source) = cause.source() {
                cause = source;
            }
            let cause = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            format!("cannot complete a Kubernetes API request: {cause}")
        }
    }
}

impl From<crate::desired::class::Refusal> for Error {
    fn from(refusal: crate::desired::class::Refusal) -> Self {
        match refusal {
            crate::desired::class::Refusal::NotFound(message) => Error::ClassNotFound(message),
            crate::desired::class::Refusal::Forbids(message) => Error::ClassForbids(message),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        Error::Kube(err)
    }
}

/// The reconcile result of every controller: the finalizer helper wraps our error.
pub type ReconcileError = kube::runtime::finalizer::Error<Error>;

/// The static reason of a reconcile failure, for metrics.
pub fn failure_reason(error: &ReconcileError) -> &'static str {
    use kube::runtime::finalizer::Error as F;
    match error {
        F::ApplyFailed(err) | F::CleanupFailed(err) => err.reason(),
        F::AddFinalizer(_) | F::RemoveFinalizer(_) => "KubernetesError",
        _ => reasons::INVALID_SPEC,
    }
}

/// Whether a failure is a harmless race ([`Error::is_race`]), in the pass or in its finalizer patch.
fn is_race(error: &ReconcileError) -> bool {
    use kube::runtime::finalizer::Error as F;
    match error {
        F::ApplyFailed(err) | F::CleanupFailed(err) => err.is_race(),
        F::AddFinalizer(kube::Error::Api(status)) | F::RemoveFinalizer(kube::Error::Api(status)) => {
            status.code == 404 || status.code == 409
        }
        _ => false,
    }
}

/// The limit a reconcile's pass was stopped at, when it was (`Context::reconcile` stops a pass that takes
/// longer than `--pass-timeout`: the pass itself then reported nothing).
pub fn timed_out<T>(result: &Result<T, ReconcileError>) -> Option<std::time::Duration> {
    match result {
        Err(kube::runtime::finalizer::Error::ApplyFailed(Error::Timeout(limit))) => Some(*limit),
        _ => None,
    }
}

/// The requeue after a failed reconcile: exponential per object, logged with its static reason.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    kind: &'static str,
    obj: &K,
    error: &ReconcileError,
    ctx: &Context,
) -> Action {
    ctx.metrics.failed(kind, failure_reason(error));
    let delay = ctx.backoff.next(&object_key(obj));
    if is_race(error) {
        // The object changed or went away during the pass (deleted, or written by someone else): the next
        // pass, or none, settles it. Nothing for a person to look at.
        tracing::debug!(
            kind,
            namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
            name = obj.meta().name.as_deref().unwrap_or_default(),
            error = %error,
            retry_in = ?delay,
            "Reconcile raced with a change to the object; retrying"
        );
        return Action::requeue(delay);
    }
    tracing::warn!(
        kind,
        namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
        name = obj.meta().name.as_deref().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "Reconcile failed"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_owned(),
            message: message.to_owned(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_kubernetes_refusal_reads_as_one_sentence_without_the_status_dump() {
        let err = Error::Kube(api_error(
            403,
            "Forbidden",
            "secrets \"app\" is forbidden: User \"system:serviceaccount:bb:bucket-broker\" cannot update resource",
        ));
        let message = err.to_string();
        assert_eq!(
            message,
            "the Kubernetes API answered 403 Forbidden: secrets \"app\" is forbidden: User \
             \"system:serviceaccount:bb:bucket-broker\" cannot update resource"
        );
        assert!(!message.contains("Status {") && !message.contains("ApiError"), "{message}");
        assert_eq!(err.reason(), "KubernetesError");
    }

    #[test]
    fn only_a_gone_or_changed_object_is_a_race() {
        use kube::runtime::finalizer::Error as F;
        assert!(is_race(&F::ApplyFailed(Error::Kube(api_error(404, "NotFound", "gone")))));
        assert!(is_race(&F::AddFinalizer(api_error(409, "Conflict", "modified"))));
        assert!(!is_race(&F::ApplyFailed(Error::Kube(api_error(403, "Forbidden", "no")))));
        assert!(!is_race(&F::ApplyFailed(Error::InvalidSpec("bad".to_owned()))));
    }
}
