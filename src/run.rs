//! `bucket-broker run`: the wiring of the controller process.

use aws_config::{BehaviorVersion, Region};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::api::{Bucket, BucketBinding, BucketServiceKey};
use crate::aws::Aws;
use crate::config::{LogFormat, RunArgs};
use crate::controller::{self, Context, Settings};

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Kubernetes (no kubeconfig and not in a cluster?)")]
    Kubeconfig(#[source] kube::Error),
    #[error("the {0} CustomResourceDefinition is not installed: apply crds/ first (kubectl apply -f crds/)")]
    MissingCrd(&'static str),
    #[error("cannot reach the Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("no AWS region: pass --region or set AWS_REGION")]
    NoRegion,
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

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down");
        let _ = stop.send(true);
    });
    tracing::info!(region, namespace = ?args.namespace, "Starting controllers");
    controller::run_all(ctx, stopped).await;
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
