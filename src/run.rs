//! `bucket-broker run`: the wiring of the controller process.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::api::{Bucket, BucketBinding, BucketServiceKey};
use crate::aws::Aws;
use crate::config::{LogFormat, RunArgs};
use crate::controller::{self, Context, Settings};
use crate::http;
use crate::leader::{Elector, LeaseSettings};

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
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    init_tracing(args.log_format);
    let client = Client::try_default().await.map_err(RunError::Kubeconfig)?;
    check_crds(&client).await?;

    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &args.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or(RunError::NoRegion)?;
    let aws = Aws::new(&sdk, region.clone(), args.aws_endpoint_url.clone());
    let ctx = Context::new(client, aws, Settings::new(&args, region.clone()));

    let (addr, http) = http::bind(args.metrics_addr, ctx.metrics.clone())
        .await
        .map_err(|source| RunError::Http { addr: args.metrics_addr, source })?;
    tokio::spawn(http);

    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down");
        let _ = stop.send(true);
    });
    tracing::info!(region, namespace = ?args.namespace, metrics = %addr, "Starting");
    if await_aws_identity(&ctx, &mut stopped).await.is_none() {
        return Ok(());
    }
    let lease = args.leader_election.then(LeaseSettings::from_env);
    serve(ctx, lease, stopped).await
}

/// Resolves the controller's AWS identity (STS GetCallerIdentity), retrying with backoff, before any
/// controller starts: until then the process is not ready, and `/readyz` and the log say why. `None` on
/// shutdown.
pub async fn await_aws_identity(ctx: &Context, shutdown: &mut watch::Receiver<bool>) -> Option<String> {
    let mut delay = Duration::from_secs(1);
    loop {
        match ctx.aws.caller_identity().await {
            Ok(arn) => {
                ctx.metrics.set_aws_identity_error(None);
                tracing::info!(arn, "Resolved the controller's AWS identity");
                return Some(arn);
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "No AWS identity yet; not ready");
                ctx.metrics.set_aws_identity_error(Some(err.to_string()));
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

/// Runs the controllers until `shutdown` turns true; with a Lease, only while holding it.
pub async fn serve(
    ctx: Arc<Context>,
    lease: Option<LeaseSettings>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(lease) = lease else {
        controller::run_all(ctx, shutdown).await;
        return Ok(());
    };
    let elector = Elector::new(ctx.client.clone(), lease.clone());
    ctx.metrics.set_standby(true);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match elector.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "Failed to acquire the leader Lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(lease.retry) => {}
            _ = shutdown.changed() => {}
        }
    }
    ctx.metrics.set_standby(false);
    tracing::info!(identity = %lease.identity, lease = %lease.name, "Acquired the leader Lease");

    let (stop, stopped) = watch::channel(false);
    let controllers = tokio::spawn(controller::run_all(ctx.clone(), stopped));
    let mut renewed = tokio::time::Instant::now();
    let lost = loop {
        tokio::select! {
            _ = tokio::time::sleep(lease.retry) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break false;
        }
        match elector.renew().await {
            Ok(true) => renewed = tokio::time::Instant::now(),
            Ok(false) => break true,
            // Unable to renew for as long as the Lease lasts: another replica may lead by now.
            Err(err) if renewed.elapsed() + lease.retry >= lease.duration => {
                tracing::warn!(error = %err, "Failed to renew the leader Lease in time");
                break true;
            }
            Err(err) => tracing::warn!(error = %err, "Failed to renew the leader Lease"),
        }
    };
    let _ = stop.send(true);
    let _ = controllers.await;
    if lost {
        return Err(RunError::LostLease);
    }
    if let Err(err) = elector.release().await {
        tracing::warn!(error = %err, "Failed to release the leader Lease");
    }
    Ok(())
}

/// Fails with a clear message when a CRD is missing, instead of watches that fail forever.
pub async fn check_crds(client: &Client) -> Result<(), RunError> {
    let one = ListParams::default().limit(1);
    let check = |result: Result<(), kube::Error>, kind| match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::MissingCrd(kind)),
        Err(err) => Err(RunError::Kube(err)),
    };
    check(Api::<Bucket>::all(client.clone()).list_metadata(&one).await.map(drop), "buckets.bucketbroker.io")?;
    check(
        Api::<BucketBinding>::all(client.clone()).list_metadata(&one).await.map(drop),
        "bucketbindings.bucketbroker.io",
    )?;
    check(
        Api::<BucketServiceKey>::all(client.clone()).list_metadata(&one).await.map(drop),
        "bucketservicekeys.bucketbroker.io",
    )
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
