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
    #[error("kubernetes request failed: {0}")]
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
    CrdOutdated { kind: String, fields: String },
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
    #[error("the pass took longer than {} s and was stopped; it is retried", .0.as_secs())]
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

    /// Whether retrying soon is likely to help (throttling, network) rather than waiting for a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws(err) => err.is(ErrorKind::Transient),
            Error::Kube(_) | Error::Timeout(_) | Error::ConcurrentChange(_) => true,
            _ => false,
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

/// The requeue after a failed reconcile: exponential per object, logged with its static reason.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    kind: &'static str,
    obj: &K,
    error: &ReconcileError,
    ctx: &Context,
) -> Action {
    ctx.metrics.failed(kind, failure_reason(error));
    let delay = ctx.backoff.next(&object_key(obj));
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
