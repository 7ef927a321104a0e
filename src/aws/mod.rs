//! The AWS layer: thin, idempotent operations on S3, IAM and STS. "Already exists" and "already gone" are
//! success where the caller wants an object present or absent; every other error is classified by its
//! AWS error code (never by string matching) into an [`ErrorKind`] the controllers act on. Every call is
//! counted by service, operation and outcome ([`CallStats`]), for metrics and for tests that prove a
//! steady-state resync makes no write.

pub mod eks;
pub mod iam;
pub mod s3;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// The AWS clients the controllers use, and where they point.
#[derive(Clone)]
pub struct Aws {
    pub s3: aws_sdk_s3::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    /// EKS, for Pod Identity associations (keyless bindings with `--pod-identity-cluster-name`).
    pub eks: aws_sdk_eks::Client,
    /// The default region for new buckets.
    pub region: String,
    /// A non-AWS endpoint (S3-compatible store or emulator), if any.
    pub endpoint_url: Option<String>,
    pub stats: CallStats,
}

impl Aws {
    /// Clients from an SDK config. A custom endpoint gets path-style S3 addressing, which emulators and
    /// most S3-compatible stores need.
    pub fn new(sdk: &aws_config::SdkConfig, region: String, endpoint_url: Option<String>) -> Self {
        let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
        let mut iam = aws_sdk_iam::config::Builder::from(sdk);
        let mut sts = aws_sdk_sts::config::Builder::from(sdk);
        let mut eks = aws_sdk_eks::config::Builder::from(sdk);
        if let Some(url) = &endpoint_url {
            s3 = s3.endpoint_url(url).force_path_style(true);
            iam = iam.endpoint_url(url);
            sts = sts.endpoint_url(url);
            eks = eks.endpoint_url(url);
        }
        Aws {
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            eks: aws_sdk_eks::Client::from_conf(eks.build()),
            region,
            endpoint_url,
            stats: CallStats::default(),
        }
    }

    /// The controller's own AWS identity (STS GetCallerIdentity): proves at start-up that credentials
    /// were found and AWS accepts them, and names the account whose buckets are ours.
    pub async fn caller_identity(&self) -> Result<Identity, AwsError> {
        let identity = call(&self.stats, "sts", "GetCallerIdentity", self.sts.get_caller_identity().send())
            .await
            .map_err(refused_credentials)?;
        let account = identity.account().unwrap_or_default().to_owned();
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AwsError {
                service: "sts",
                operation: "GetCallerIdentity",
                kind: ErrorKind::Other,
                code: None,
                status: None,
                message: format!(
                    "the endpoint named no 12-digit account ({account:?}): check that it is AWS"
                ),
            });
        }
        Ok(Identity { arn: identity.arn().unwrap_or_default().to_owned(), account })
    }

    /// An S3 client for a bucket in another region than the default one.
    pub fn s3_in(&self, region: &str) -> aws_sdk_s3::Client {
        if region == self.region {
            return self.s3.clone();
        }
        let config = self.s3.config().to_builder().region(aws_sdk_s3::config::Region::new(region.to_owned()));
        aws_sdk_s3::Client::from_conf(config.build())
    }
}

/// Who the controller is in AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The ARN of the role or user: for the log only, never for tenants (it names the platform's account).
    pub arn: String,
    /// The 12-digit account id.
    pub account: String,
}

/// What kind of failure an AWS error is: decides between retrying, reporting and treating as success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The controller's own AWS identity may not do this: a configuration problem for a person to fix.
    AccessDenied,
    /// The request was refused as invalid: also for a person to fix.
    Invalid,
    /// A conflicting operation or state (for example deleting a non-empty bucket).
    Conflict,
    /// Throttling, a 5xx or a network failure: retried with backoff.
    Transient,
    /// The controller has no AWS credentials (nothing in the SDK's default chain): for a person to fix.
    NoCredentials,
    /// Anything else.
    Other,
}

/// A failed AWS call, without any secret in it (AWS error messages carry none).
#[derive(Debug, thiserror::Error)]
#[error("{service} {operation} failed: {message}")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub code: Option<String>,
    /// The HTTP status, when AWS answered.
    pub status: Option<u16>,
    pub message: String,
}

impl AwsError {
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// A static PascalCase label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::AccessDenied => "AccessDenied",
            ErrorKind::Invalid => "InvalidRequest",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Transient => "Transient",
            ErrorKind::NoCredentials => "NoCredentials",
            ErrorKind::Other => "Other",
        }
    }
}

const NOT_FOUND: &[&str] = &[
    "NoSuchBucket",
    "NotFound",
    "NoSuchEntity",
    "NoSuchTagSet",
    "NoSuchTagSetError",
    "NoSuchBucketPolicy",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchLifecycleConfiguration",
    "NoSuchCORSConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError",
    "OwnershipControlsNotFoundError",
    "ResourceNotFoundException",
];
/// `ResourceInUseException`: EKS's answer to a second Pod Identity association for one ServiceAccount.
const ALREADY_EXISTS: &[&str] = &["BucketAlreadyOwnedByYou", "EntityAlreadyExists", "ResourceInUseException"];
const ACCESS_DENIED: &[&str] =
    &["AccessDenied", "AccessDeniedException", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"];
/// Codes that say the caller's credentials themselves are wrong, rather than what they allow.
const BAD_CREDENTIALS: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
];
const CONFLICT: &[&str] =
    &["BucketNotEmpty", "DeleteConflict", "OperationAborted", "BucketAlreadyExists", "LimitExceeded"];
const TRANSIENT: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalError",
    "ServiceUnavailable",
    "ServiceFailure",
    "RequestTimeout",
];

fn classify(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    let is = |set: &[&str]| code.is_some_and(|c| set.contains(&c));
    if is(NOT_FOUND) {
        ErrorKind::NotFound
    } else if is(ALREADY_EXISTS) {
        ErrorKind::AlreadyExists
    } else if is(ACCESS_DENIED) {
        ErrorKind::AccessDenied
    } else if is(CONFLICT) {
        ErrorKind::Conflict
    } else if is(TRANSIENT) {
        ErrorKind::Transient
    } else {
        // Errors without a code (HeadBucket has no body) fall back to the HTTP status.
        match status {
            Some(404) => ErrorKind::NotFound,
            Some(403) => ErrorKind::AccessDenied,
            Some(409) => ErrorKind::Conflict,
            Some(429) | Some(500..=599) | None => ErrorKind::Transient,
            Some(400..=499) => ErrorKind::Invalid,
            Some(_) => ErrorKind::Other,
        }
    }
}

impl AwsError {
    /// One line for a person: which call failed (from `Display`), the error code or what went wrong on
    /// the way, and a hint at what to check. Never the SDK's debug output, which runs to kilobytes.
    fn from_sdk<E>(service: &'static str, operation: &'static str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (kind, code, status, message) = match &err {
            SdkError::ServiceError(service_err) => {
                let code = service_err.err().code().map(str::to_owned);
                let status = service_err.raw().status().as_u16();
                let kind = classify(code.as_deref(), Some(status));
                let detail = service_err.err().message().map(one_line);
                let message = match (&code, detail) {
                    (Some(code), Some(detail)) => format!("{code}: {detail}"),
                    (Some(code), None) => code.clone(),
                    (None, _) => format!("HTTP {status}"),
                };
                let message = match hint(kind, code.as_deref()) {
                    Some(hint) => format!("{message}: {hint}"),
                    None => message,
                };
                (kind, code, Some(status), message)
            }
            SdkError::ResponseError(response) => {
                let status = response.raw().status().as_u16();
                let message = format!(
                    "unreadable response (HTTP {status}: {}): check that the endpoint is AWS or S3-compatible",
                    innermost(&err)
                );
                (classify(None, Some(status)), None, Some(status), message)
            }
            // Only "nothing in the chain" is a missing identity; a provider that timed out or failed (a
            // throttled AssumeRoleWithWebIdentity, a bad trust policy) says what happened instead.
            SdkError::DispatchFailure(_)
                if source_of::<CredentialsError>(&err)
                    .is_some_and(|e| matches!(e, CredentialsError::CredentialsNotLoaded(_))) =>
            {
                (ErrorKind::NoCredentials, None, None, NO_CREDENTIALS.to_owned())
            }
            SdkError::DispatchFailure(_) if source_of::<CredentialsError>(&err).is_some() => {
                let message = format!("cannot get AWS credentials: {}", innermost(&err));
                (ErrorKind::Transient, None, None, message)
            }
            SdkError::DispatchFailure(failure) => {
                let cause = match source_of::<std::io::Error>(&err).map(std::io::Error::kind) {
                    Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
                    Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_owned(),
                    Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_owned(),
                    _ if failure.is_timeout() => "connection timed out".to_owned(),
                    _ => innermost(&err),
                };
                let message = format!("cannot reach AWS ({cause}): check network access to the endpoint");
                (ErrorKind::Transient, None, None, message)
            }
            SdkError::TimeoutError(_) => (
                ErrorKind::Transient,
                None,
                None,
                "no answer from AWS in time: check network access to the endpoint".to_owned(),
            ),
            _ => (ErrorKind::Other, None, None, format!("cannot send the request: {}", innermost(&err))),
        };
        AwsError { service, operation, kind, code, status, message }
    }
}

/// GetCallerIdentity needs no permission (no policy can deny it), so AWS refusing it means the credentials
/// themselves are wrong or expired: the message says so, and where they come from, instead of pointing at
/// the controller's IAM policy.
fn refused_credentials(mut err: AwsError) -> AwsError {
    if err.kind == ErrorKind::AccessDenied
        || err.code.as_deref().is_some_and(|c| BAD_CREDENTIALS.contains(&c))
    {
        let said = err.code.clone().unwrap_or_else(|| format!("HTTP {}", err.status.unwrap_or(403)));
        err.kind = ErrorKind::NoCredentials;
        err.message = format!(
            "AWS refused the controller's credentials ({said}): they are invalid or expired (this call needs no \
             permission, so it is not the IAM policy). With IRSA, check the ServiceAccount's \
             eks.amazonaws.com/role-arn annotation and that role's trust policy; with EKS Pod Identity, the \
             ServiceAccount's pod identity association; keys in the environment may be deactivated or expired"
        );
    }
    err
}

/// What the SDK's default credential chain needs, in the order it looks.
const NO_CREDENTIALS: &str = "no AWS credentials: nothing in the default chain (environment, profile, \
     IRSA web identity, EKS Pod Identity, instance profile); give the controller's ServiceAccount an IAM role";

/// What a person should check for an error of this kind, if there is a general answer.
fn hint(kind: ErrorKind, code: Option<&str>) -> Option<&'static str> {
    if code.is_some_and(|c| BAD_CREDENTIALS.contains(&c)) {
        return Some("check the controller's AWS credentials");
    }
    match kind {
        ErrorKind::AccessDenied => {
            Some("check the controller's IAM permissions (deploy/aws/controller-policy.json)")
        }
        ErrorKind::Transient => Some("retried with backoff"),
        _ => None,
    }
}

/// The first error of type `T` in the chain of sources (typed, never by its text).
fn source_of<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The last error in the chain of sources, on one line: the root cause, such as "Connection refused
/// (os error 111)", without the wrappers around it.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    one_line(&current.to_string())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Counts of AWS calls by (service, operation, outcome), and the pace each service's calls keep; shared by
/// clones.
#[derive(Clone, Debug, Default)]
pub struct CallStats(
    Arc<Mutex<BTreeMap<CallKey, u64>>>,
    Arc<std::sync::OnceLock<BTreeMap<&'static str, Pacer>>>,
    Fence,
);

/// Until when this replica may change anything in AWS: with leader election, the validity of its
/// leadership (the renew deadline from its last confirmed renew), so that a leader that lost its Lease
/// without knowing it yet (a hung renew, a paused process) sends no write after a standby may have taken
/// over. Without leader election it is open. Shared by clones.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<Option<tokio::time::Instant>>>);

impl Fence {
    /// Allows writes until `until` (and no later, until extended again).
    pub fn hold_until(&self, until: tokio::time::Instant) {
        if let Ok(mut valid) = self.0.lock() {
            *valid = Some(until);
        }
    }

    /// Whether a write may be sent now.
    pub fn allows_writes(&self) -> bool {
        self.0
            .lock()
            .map(|valid| valid.is_none_or(|until| tokio::time::Instant::now() < until))
            .unwrap_or(false)
    }
}

/// The most calls per second to each AWS service (`--aws-iam-rate`, `--aws-s3-rate`, `--aws-sts-rate`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    pub iam: f64,
    pub s3: f64,
    pub sts: f64,
}

/// Spaces one service's calls evenly: each call takes a slot, `1 / rate` after the previous one. Without a
/// burst allowance, the rate is never exceeded, however many reconciles run.
///
/// Two classes share the slots ([`Priority`]): an urgent call (a create, a spec change, a Secret edited)
/// reserves the next free slot, however far ahead, and waits for it; a background call (a periodic resync,
/// the orphan sweep) only takes a slot that is free now, with no urgent call queued before it, and
/// otherwise waits and looks again. So resyncs use only the capacity that urgent work leaves, and an urgent
/// call never waits behind more than the one background call in flight.
#[derive(Debug)]
pub struct Pacer {
    interval: std::time::Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub fn new(per_second: f64) -> Self {
        Pacer {
            interval: std::time::Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this call's slot.
    pub async fn wait(&self, priority: Priority) {
        loop {
            let wait_until = {
                let Ok(mut next) = self.next.lock() else { return };
                let now = tokio::time::Instant::now();
                match priority {
                    Priority::Urgent => {
                        let slot = (*next).max(now);
                        *next = slot + self.interval;
                        slot
                    }
                    Priority::Background if *next <= now => {
                        *next = now + self.interval;
                        return;
                    }
                    Priority::Background => *next,
                }
            };
            tokio::time::sleep_until(wait_until).await;
            if priority == Priority::Urgent {
                return;
            }
        }
    }
}

/// How urgent the AWS calls of the current task are; see [`Pacer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Work a person or an event is waiting for.
    Urgent,
    /// Periodic verification: only the capacity urgent work leaves.
    Background,
}

tokio::task_local! {
    static PRIORITY: Priority;
}

impl Priority {
    /// Runs `work` with every AWS call in it paced at this priority.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        PRIORITY.scope(self, work).await
    }

    /// The priority of the current task: urgent outside any scope (start-up checks).
    pub fn current() -> Self {
        PRIORITY.try_with(|p| *p).unwrap_or(Priority::Urgent)
    }
}

/// (service, operation, outcome): the outcome is `success` or an error's static reason.
pub type CallKey = (&'static str, &'static str, &'static str);

impl CallStats {
    /// Paces every later call through these counts (and their clones) to `limits`; set once.
    pub fn limit(&self, limits: RateLimits) {
        let pacers = BTreeMap::from([
            ("iam", Pacer::new(limits.iam)),
            ("s3", Pacer::new(limits.s3)),
            ("sts", Pacer::new(limits.sts)),
            // EKS calls (Pod Identity associations) come only with IAM role changes: they keep IAM's pace.
            ("eks", Pacer::new(limits.iam)),
        ]);
        let _ = self.1.set(pacers);
    }

    /// Waits for a slot of `service`, at the priority of the task the call runs in (`Priority::scope`).
    async fn pace(&self, service: &str) {
        if let Some(pacer) = self.1.get().and_then(|p| p.get(service)) {
            pacer.wait(Priority::current()).await;
        }
    }

    /// The fence every write of these counts (and their clones) passes.
    pub fn fence(&self) -> &Fence {
        &self.2
    }

    fn record(&self, service: &'static str, operation: &'static str, outcome: &'static str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry((service, operation, outcome)).or_default() += 1;
        }
    }

    /// A snapshot of every count.
    pub fn snapshot(&self) -> BTreeMap<CallKey, u64> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How many calls changed something in AWS (every operation that is not a Get, Head, List or Describe).
    pub fn writes(&self) -> u64 {
        self.snapshot().iter().filter(|((_, op, _), _)| is_write(op)).map(|(_, n)| n).sum()
    }

    /// How many calls were made in all.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Whether an operation changes state in AWS.
pub fn is_write(operation: &str) -> bool {
    !["Get", "Head", "List", "Describe"].iter().any(|p| operation.starts_with(p))
}

/// Runs one SDK call, counts it, and turns its error into an [`AwsError`].
async fn call<T, E>(
    stats: &CallStats,
    service: &'static str,
    operation: &'static str,
    future: impl Future<Output = Result<T, SdkError<E>>>,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    stats.pace(service).await;
    // Judged after pacing, just before sending: the wait for a slot may outlast the leadership.
    if is_write(operation) && !stats.fence().allows_writes() {
        stats.record(service, operation, "Fenced");
        return Err(AwsError {
            service,
            operation,
            kind: ErrorKind::Transient,
            code: None,
            status: None,
            message: "not sent: this replica's leadership is not confirmed (another replica may lead by now)"
                .to_owned(),
        });
    }
    match future.await {
        Ok(value) => {
            stats.record(service, operation, "success");
            Ok(value)
        }
        Err(err) => {
            let err = AwsError::from_sdk(service, operation, err);
            stats.record(service, operation, err.reason());
            Err(err)
        }
    }
}

/// `Ok(None)` for a not-found error: reading something absent is an answer, not a failure.
fn optional<T>(result: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is(ErrorKind::NotFound) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pacer_spaces_calls_to_its_rate() {
        let pacer = Pacer::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            pacer.wait(Priority::Urgent).await;
        }
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(1), "11 calls at 10/s: the first at once");
        let stats = CallStats::default();
        stats.limit(RateLimits { iam: 2.0, s3: 100.0, sts: 100.0 });
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            stats.pace("iam").await;
        }
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(1));
        stats.pace("unknown").await;
        assert_eq!(
            start.elapsed(),
            std::time::Duration::from_secs(1),
            "an unpaced service waits for nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_calls_go_before_queued_background_calls() {
        use tokio::time::{Duration, Instant};
        let pacer = Arc::new(Pacer::new(10.0));
        let start = Instant::now();
        let background: Vec<_> = (0..20)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.wait(Priority::Background).await;
                    Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(450)).await;
        let urgent_start = Instant::now();
        let mut urgent = Vec::new();
        for _ in 0..3 {
            pacer.wait(Priority::Urgent).await;
            urgent.push(Instant::now());
        }
        assert!(
            urgent_start.elapsed() <= Duration::from_millis(300),
            "3 urgent calls take the next 3 slots, ahead of 15 queued background calls: {:?}",
            urgent_start.elapsed()
        );
        let mut times = urgent;
        for handle in background {
            times.push(handle.await.expect("background call"));
        }
        times.sort();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(100)),
            "the rate holds across both classes"
        );
        assert!(times.last().is_some_and(|t| *t - start <= Duration::from_millis(2300)), "no slot is wasted");
    }

    /// A call that answers at once, for tests of what `call` does around the request.
    async fn answered(
        sent: Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
    ) -> Result<(), SdkError<aws_sdk_s3::operation::head_bucket::HeadBucketError>> {
        sent.lock().expect("sent").push(name);
        Ok(())
    }

    /// Through `call`, as the controllers use it: a background task's calls (resync, sweep) wait for the
    /// slots urgent work leaves, instead of queueing in front of it.
    #[tokio::test(start_paused = true)]
    async fn call_paces_by_the_priority_of_the_task_it_runs_in() {
        use tokio::time::{Duration, Instant};
        let stats = CallStats::default();
        stats.limit(RateLimits { iam: 10.0, s3: 100.0, sts: 100.0 });
        let sent = Arc::new(Mutex::new(Vec::new()));
        let background: Vec<_> =
            (0..10)
                .map(|_| {
                    let (stats, sent) = (stats.clone(), sent.clone());
                    tokio::spawn(Priority::Background.scope(async move {
                        call(&stats, "iam", "GetUser", answered(sent, "background")).await
                    }))
                })
                .collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let start = Instant::now();
        for _ in 0..3 {
            call(&stats, "iam", "CreateUser", answered(sent.clone(), "urgent")).await.expect("sent");
        }
        assert!(
            start.elapsed() <= Duration::from_millis(300),
            "3 urgent calls outside any scope take the next 3 slots, ahead of the 7 background calls still queued: {:?}",
            start.elapsed()
        );
        for handle in background {
            handle.await.expect("task").expect("sent");
        }
        let order = sent.lock().expect("sent").clone();
        let first_urgent = order.iter().position(|c| *c == "urgent").expect("urgent");
        assert!(first_urgent <= 3, "urgent work waited behind background calls: {order:?}");
        assert_eq!(order.iter().filter(|c| **c == "background").count(), 10);
    }

    /// A write is not sent once the replica's leadership has passed its validity; reads still are, and an
    /// extended leadership lets writes through again.
    #[tokio::test(start_paused = true)]
    async fn call_sends_no_write_after_the_leadership_is_no_longer_valid() {
        use tokio::time::{Duration, Instant};
        let stats = CallStats::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        call(&stats, "iam", "CreateUser", answered(sent.clone(), "unfenced"))
            .await
            .expect("no election: open");
        stats.fence().hold_until(Instant::now() + Duration::from_secs(10));
        call(&stats, "iam", "CreateUser", answered(sent.clone(), "valid")).await.expect("within validity");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let refused = call(&stats, "iam", "CreateAccessKey", answered(sent.clone(), "expired")).await;
        let err = refused.expect_err("fenced");
        assert!(err.is(ErrorKind::Transient) && err.message.contains("leadership"), "{err}");
        call(&stats, "iam", "GetUser", answered(sent.clone(), "read")).await.expect("reads are harmless");
        stats.fence().hold_until(Instant::now() + Duration::from_secs(10));
        call(&stats, "iam", "DeleteAccessKey", answered(sent.clone(), "renewed")).await.expect("renewed");
        assert_eq!(*sent.lock().expect("sent"), ["unfenced", "valid", "read", "renewed"]);
        assert_eq!(stats.snapshot().get(&("iam", "CreateAccessKey", "Fenced")), Some(&1));
    }

    #[test]
    fn errors_are_classified_by_code_then_status() {
        assert_eq!(classify(Some("NoSuchBucket"), Some(404)), ErrorKind::NotFound);
        assert_eq!(classify(Some("NoSuchLifecycleConfiguration"), Some(404)), ErrorKind::NotFound);
        assert_eq!(classify(Some("NoSuchCORSConfiguration"), Some(404)), ErrorKind::NotFound);
        assert_eq!(classify(Some("BucketAlreadyOwnedByYou"), Some(409)), ErrorKind::AlreadyExists);
        assert_eq!(classify(Some("BucketNotEmpty"), Some(409)), ErrorKind::Conflict);
        assert_eq!(classify(Some("SlowDown"), Some(503)), ErrorKind::Transient);
        assert_eq!(classify(Some("AccessDenied"), Some(403)), ErrorKind::AccessDenied);
        assert_eq!(classify(Some("MalformedPolicy"), Some(400)), ErrorKind::Invalid);
        assert_eq!(classify(None, Some(404)), ErrorKind::NotFound);
        assert_eq!(classify(None, Some(403)), ErrorKind::AccessDenied);
        assert_eq!(classify(None, Some(503)), ErrorKind::Transient);
        assert_eq!(classify(None, None), ErrorKind::Transient, "network failures are retried");
    }

    /// Clients for `endpoint` whose credentials come from `credentials`, with no retries.
    fn aws_at(endpoint: &str, credentials: impl aws_sdk_sts::config::ProvideCredentials + 'static) -> Aws {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-2"))
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(credentials))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        Aws::new(&sdk, "eu-west-2".to_owned(), Some(endpoint.to_owned()))
    }

    /// What the SDK's default chain answers when it finds nothing.
    #[derive(Debug)]
    struct NoCredentials;

    impl aws_sdk_sts::config::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                CredentialsError::not_loaded("no providers in chain provided credentials"),
            ))
        }
    }

    /// A local port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_one_readable_transient_line() {
        let endpoint = format!("http://127.0.0.1:{}", closed_port());
        let credentials = aws_sdk_sts::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let err = aws_at(&endpoint, credentials).caller_identity().await.expect_err("nothing listens");
        assert_eq!(
            err.to_string(),
            "sts GetCallerIdentity failed: cannot reach AWS (connection refused): check network access to the \
             endpoint"
        );
        assert_eq!(err.kind, ErrorKind::Transient);
        assert_eq!(err.reason(), "Transient");
    }

    /// An endpoint answering every request with `status` and `body`; its URL.
    async fn answering(status: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 65536];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        endpoint
    }

    #[tokio::test]
    async fn refused_credentials_at_start_are_called_bad_or_expired_not_a_policy() {
        let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                    <Code>ExpiredToken</Code><Message>The security token included in the request is expired</Message>\
                    </Error><RequestId>1</RequestId></ErrorResponse>";
        let endpoint = answering("403 Forbidden", body).await;
        let credentials = aws_sdk_sts::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let err = aws_at(&endpoint, credentials).caller_identity().await.expect_err("refused");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "sts GetCallerIdentity failed: AWS refused the controller's credentials (ExpiredToken): they are \
                 invalid or expired"
            ),
            "{message}"
        );
        assert!(message.contains("IRSA") && message.contains("EKS Pod Identity"), "{message}");
        assert!(!message.contains("controller-policy.json"), "not blamed on the policy: {message}");
        assert_eq!(err.kind, ErrorKind::NoCredentials);
    }

    #[tokio::test]
    async fn missing_credentials_say_so_and_are_not_transient() {
        let endpoint = format!("http://127.0.0.1:{}", closed_port());
        let err = aws_at(&endpoint, NoCredentials).caller_identity().await.expect_err("no credentials");
        let message = err.to_string();
        assert!(message.starts_with("sts GetCallerIdentity failed: no AWS credentials: "), "{message}");
        assert!(message.contains("IRSA") && message.contains("EKS Pod Identity"), "{message}");
        assert!(!message.contains('\n') && !message.contains("DispatchFailure"), "{message}");
        assert_eq!(err.kind, ErrorKind::NoCredentials);
        assert_eq!(err.reason(), "NoCredentials");
    }

    #[test]
    fn service_errors_carry_the_code_and_a_hint() {
        assert_eq!(
            hint(ErrorKind::AccessDenied, Some("AccessDenied")),
            Some("check the controller's IAM permissions (deploy/aws/controller-policy.json)")
        );
        assert_eq!(
            hint(classify(Some("InvalidClientTokenId"), Some(403)), Some("InvalidClientTokenId")),
            Some("check the controller's AWS credentials")
        );
        assert_eq!(hint(ErrorKind::Conflict, Some("BucketNotEmpty")), None);
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }

    #[test]
    fn reads_are_not_writes() {
        assert!(!is_write("HeadBucket"));
        assert!(!is_write("GetBucketPolicy"));
        assert!(!is_write("ListObjectsV2"));
        assert!(is_write("PutBucketPolicy"));
        assert!(is_write("DeleteBucketPolicy"));
        assert!(is_write("CreateBucket"));
    }
}
