//! `bucket-broker run`: the wiring of the controller process.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::watch;

use k8s_openapi::api::core::v1::Namespace;

use crate::api::{Bucket, BucketBinding, BucketServiceKey, Permissions};
use crate::aws::{Aws, Identity, RateLimits};
use crate::config::{Boundary, LogFormat, RunArgs};
use crate::controller::{self, Context, Settings};
use crate::desired::names;
use crate::desired::policy::{self, PlatformNetwork};
use crate::http;
use crate::leader::{Elector, LeaseSettings, Lost};
use crate::metrics::Metrics;
use crate::sweeper;

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Kubernetes (no kubeconfig and not in a cluster?)")]
    Kubeconfig(#[source] kube::Error),
    #[error("the {0} CustomResourceDefinition is not installed: apply crds/ first (kubectl apply -k crds/)")]
    MissingCrd(&'static str),
    #[error("cannot reach the Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("no AWS region: pass --region or set AWS_REGION")]
    NoRegion,
    #[error("cannot serve metrics and health on {addr}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader Lease; exiting so that another replica leads")]
    LostLease,
    #[error(
        "--permissions-boundary-arn is required: the ARN of deploy/aws/boundary-policy.json as created in your account \
         (the most any key this controller issues may do), or --permissions-boundary-arn=none to run without one, knowingly"
    )]
    NoBoundary,
    #[error(
        "cannot read the kube-system namespace, whose uid is this cluster's identity on AWS objects: grant get on namespaces/kube-system (deploy/clusterrole.yaml)"
    )]
    ClusterIdentity(#[source] kube::Error),
    #[error("the kube-system namespace has no uid: the API server is not a conformant Kubernetes API server")]
    NoClusterUid,
    #[error("{0}")]
    PolicyTooLarge(String),
    #[error(
        "--keyless=required needs a way to give pods a role: --oidc-provider-arn (IRSA) or --pod-identity-cluster-name (EKS Pod Identity)"
    )]
    KeylessWithoutSetup,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    init_tracing(args.log_format);
    let boundary = args.permissions_boundary_arn.clone().ok_or(RunError::NoBoundary)?;
    if args.keyless == crate::config::Keyless::Required && args.keyless_setup().is_none() {
        return Err(RunError::KeylessWithoutSetup);
    }
    check_policy_sizes(&args)?;
    let client = Client::try_default().await.map_err(RunError::Kubeconfig)?;
    check_crds(&client, args.namespace.as_deref()).await?;
    let cluster_uid = cluster_identity(&client).await?;

    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &args.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    // Adaptive retries: on throttling the SDK also slows its own request rate, per client.
    // Every AWS call is bounded: a hung endpoint fails the pass (and backs off) instead of pinning it.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let sdk =
        loader.retry_config(aws_config::retry::RetryConfig::adaptive()).timeout_config(timeouts).load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or(RunError::NoRegion)?;
    let aws = Aws::new(&sdk, region.clone(), args.aws_endpoint_url.clone());
    aws.stats.limit(RateLimits { iam: args.aws_iam_rate, s3: args.aws_s3_rate, sts: args.aws_sts_rate });
    let metrics = Metrics::new(aws.stats.clone());
    metrics.set_permissions_boundary(boundary != Boundary::None);
    if boundary == Boundary::None {
        tracing::warn!(
            "Running with --permissions-boundary-arn=none: the users this controller creates have no permissions \
             boundary, so nothing but the controller's own policies limits what their keys may be given"
        );
    }
    if args.platform_cidrs.is_empty()
        && args.platform_vpc_endpoints.is_empty()
        && args.platform_vpcs.is_empty()
    {
        tracing::warn!("{NO_PLATFORM_NETWORK}");
    }

    let (addr, http) = http::bind(args.metrics_addr, metrics.clone())
        .await
        .map_err(|source| RunError::Http { addr: args.metrics_addr, source })?;
    tokio::spawn(http);

    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down");
        let _ = stop.send(true);
    });
    tracing::info!(region, namespace = ?args.namespace, metrics = %addr, cluster_uid, "Starting");
    let Some(identity) = await_aws_identity(&aws, &metrics, &mut stopped).await else {
        return Ok(());
    };
    let mut settings = Settings::new(&args, region);
    settings.account_id = identity.account;
    settings.cluster_uid = cluster_uid;
    let ctx = Context::with_metrics(client, aws, settings, metrics);
    let lease = args.leader_election.then(|| LeaseSettings::from_env(&args.leader_election_lease_name));
    serve(ctx, lease, stopped).await
}

/// Said at start when no platform network is configured: every access key then works from anywhere.
pub const NO_PLATFORM_NETWORK: &str = "No platform network is configured (--platform-cidrs, \
     --platform-vpc-endpoints, --platform-vpcs), so the access keys this controller issues work from anywhere \
     on the internet, not only from the platform's network; set at least one of them to confine the keys \
     (bindings then report NetworkRestricted=False with reason PlatformNetworkNotConfigured until you do)";

/// The uid of the `kube-system` namespace: this cluster's identity on every AWS object it tags. Every
/// cluster has that namespace, and its uid is made once, by the cluster, out of anyone's reach.
pub async fn cluster_identity(client: &Client) -> Result<String, RunError> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let namespace = namespaces.get_metadata("kube-system").await.map_err(RunError::ClusterIdentity)?;
    namespace.metadata.uid.filter(|uid| !uid.is_empty()).ok_or(RunError::NoClusterUid)
}

/// Refuses a configuration whose documents AWS would refuse for every object: a user policy over IAM's
/// limit for a user's inline policies, or a bucket policy over S3's. Both grow only with the platform
/// network and are rendered here with the longest names the flags allow.
pub fn check_policy_sizes(args: &RunArgs) -> Result<(), RunError> {
    let network = PlatformNetwork {
        cidrs: args.platform_cidrs.clone(),
        vpc_endpoints: args.platform_vpc_endpoints.clone(),
        vpcs: args.platform_vpcs.clone(),
    };
    let bucket = names::bucket_name(&args.bucket_prefix, &"f".repeat(36));
    let arn = names::bucket_arn("aws-us-gov", &bucket);
    // The longest key ARN a class can name (a partition with a suffix, a long region, a 36-character id).
    let key = format!("arn:aws-us-gov:kms:ap-southeast-5:123456789012:key/{}", "f".repeat(36));
    let user = policy::user_policy(&arn, "123456789012", Permissions::ReadWrite, false, &network, Some(&key));
    let size = policy::iam_size(&user);
    if size > policy::MAX_USER_INLINE_POLICY_SIZE {
        return Err(RunError::PolicyTooLarge(format!(
            "the access policy for the configured platform network (--platform-cidrs, --platform-vpc-endpoints, \
             --platform-vpcs) takes {size} characters, over IAM's limit of {} for a user's inline policies: list \
             fewer or wider networks",
            policy::MAX_USER_INLINE_POLICY_SIZE
        )));
    }
    if let Some(bucket_policy) = policy::bucket_policy(&arn, true, args.require_tls) {
        let size = bucket_policy.to_string().len();
        if size > policy::MAX_BUCKET_POLICY_SIZE {
            return Err(RunError::PolicyTooLarge(format!(
                "the bucket policy takes {size} bytes, over S3's limit of {} (--bucket-prefix)",
                policy::MAX_BUCKET_POLICY_SIZE
            )));
        }
    }
    Ok(())
}

/// Resolves the controller's AWS identity (STS GetCallerIdentity), retrying with backoff, before any
/// controller starts: until then the process is not ready, and `/readyz` and the log say why. `None` on
/// shutdown.
pub async fn await_aws_identity(
    aws: &Aws,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Identity> {
    let mut delay = Duration::from_secs(1);
    loop {
        let answer = tokio::select! {
            answer = aws.caller_identity() => answer,
            _ = shutdown.changed() => return None,
        };
        match answer {
            Ok(identity) => {
                metrics.set_aws_identity_error(None);
                tracing::info!(arn = %identity.arn, "Resolved the controller's AWS identity");
                return Some(identity);
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "No AWS identity yet; not ready");
                metrics.set_aws_identity_error(Some(err.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return None;
        }
        delay = (delay * 2).min(MAX_IDENTITY_RETRY);
    }
}

/// The longest wait between two attempts to resolve the AWS identity.
const MAX_IDENTITY_RETRY: Duration = Duration::from_secs(30);

/// Runs the controllers and the orphan sweeper until `shutdown` turns true; with a Lease, only while
/// holding it. Losing the Lease, or failing to confirm it in time, drops them at once (every reconcile in
/// flight is cancelled, not drained) and returns [`RunError::LostLease`]: the process exits and restarts
/// as a standby.
pub async fn serve(
    ctx: Arc<Context>,
    lease: Option<LeaseSettings>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(lease) = lease else {
        lead(ctx, shutdown).await;
        return Ok(());
    };
    let mut elector = Elector::new(ctx.client.clone(), lease).fencing(ctx.aws.stats.fence().clone());
    ctx.metrics.set_standby(true);
    let mut wanted = shutdown.clone();
    let Some(valid_until) = elector.acquire(stopped(&mut wanted)).await else {
        return Ok(());
    };
    ctx.metrics.set_standby(false);
    let settings = elector.settings();
    tracing::info!(identity = %settings.identity, lease = %settings.name, "Acquired the leader Lease");

    let (stop, stop_work) = watch::channel(false);
    // Not spawned: dropping this future is what cancels the reconciles in flight.
    let mut work = Box::pin(lead(ctx.clone(), stop_work));
    let mut keep = Box::pin(elector.keep(valid_until));
    let finished = tokio::select! {
        lost = &mut keep => return lost_lease(lost),
        () = stopped(&mut shutdown) => false,
        () = &mut work => true,
    };
    if !finished {
        // A clean shutdown: the reconciles in flight finish while the Lease is still renewed.
        let _ = stop.send(true);
        tokio::select! {
            lost = &mut keep => return lost_lease(lost),
            () = &mut work => {}
        }
    }
    drop(keep);
    if let Err(err) = elector.release().await {
        tracing::warn!(error = %err, "Failed to release the leader Lease");
    }
    Ok(())
}

/// What the leader runs: every controller and the orphan sweeper, until `shutdown` turns true.
pub async fn lead(ctx: Arc<Context>, shutdown: watch::Receiver<bool>) {
    let mut sweeper_stop = shutdown.clone();
    tokio::join!(
        controller::run_all(ctx.clone(), shutdown),
        sweeper::run(ctx, async move { stopped(&mut sweeper_stop).await }),
    );
}

fn lost_lease(lost: Lost) -> Result<(), RunError> {
    tracing::warn!(?lost, "Lost the leader Lease; stopped reconciling");
    Err(RunError::LostLease)
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Fails with a clear message when a CRD is missing, instead of watches that fail forever. With
/// `namespace` (`--namespace`), it lists only there: a namespaced install may list nothing cluster-wide.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), RunError> {
    async fn one<K>(client: &Client, namespace: Option<&str>, crd: &'static str) -> Result<(), RunError>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = match namespace {
            Some(ns) => Api::<K>::namespaced(client.clone(), ns),
            None => Api::<K>::all(client.clone()),
        };
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::MissingCrd(crd)),
            Err(err) => Err(RunError::Kube(err)),
        }
    }
    one::<Bucket>(client, namespace, "buckets.bucketbroker.io").await?;
    one::<BucketBinding>(client, namespace, "bucketbindings.bucketbroker.io").await?;
    one::<BucketServiceKey>(client, namespace, "bucketservicekeys.bucketbroker.io").await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: log collectors would store them verbatim.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
