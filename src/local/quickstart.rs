//! `bucket-broker quickstart`: the whole product on one machine with no cluster and no AWS account. It
//! starts moto (enforcing IAM) and the in-memory Kubernetes API server, runs the real controller against
//! them, applies `examples/`, and shows what a user gets: Buckets becoming Ready, the binding Secret's
//! `VCAP_SERVICES`, an upload and download with the binding's credentials, and a read-only binding being
//! refused a write. It writes a kubeconfig for kubectl (namespace `demo`) and the controller's log into its
//! state directory, and prints how to use both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_memory_apiserver::ApiServer;
use serde_json::Value;
use tokio::sync::watch;

use super::moto::{Moto, MotoOptions};
use crate::api::{Bucket, BucketBinding, BucketServiceKey, CredentialStatus, find_condition};
use crate::aws::Aws;
use crate::controller::{self, Context, Settings};

/// The namespace of the examples, and of the kubeconfig's context.
pub const NAMESPACE: &str = "demo";
/// The kubeconfig, in the state directory.
pub const KUBECONFIG: &str = "kubeconfig";
/// The controller's log, in the state directory.
pub const CONTROLLER_LOG: &str = "controller.log";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A failed quickstart step.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    #[error("cannot start the local environment: {0}")]
    Start(String),
    #[error("cannot read {path}: {message}")]
    Example { path: PathBuf, message: String },
    #[error("kubernetes request failed")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Step(String),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

/// Where the quickstart finds its examples and keeps its files.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory of example manifests to apply.
    pub examples: PathBuf,
    /// Where the kubeconfig and the controller's log are written (created if missing).
    pub state_dir: PathBuf,
}

/// Runs the quickstart, writing what it shows to `out`. Everything stays up until `hold` completes (at
/// once, or on Ctrl-C to explore the API server with kubectl).
pub async fn run(
    options: &Options,
    out: &mut (dyn Write + Send),
    hold: impl Future<Output = ()>,
) -> Result<(), QuickstartError> {
    let examples = options.examples.as_path();
    let state_error = |e: std::io::Error| {
        QuickstartError::Start(format!("cannot write into {}: {e}", options.state_dir.display()))
    };
    std::fs::create_dir_all(&options.state_dir).map_err(state_error)?;
    // Absolute, for the printed commands, but not resolved: `.tools` may be a link to a shared directory.
    let state_dir = std::path::absolute(&options.state_dir).map_err(state_error)?;
    let log_path = state_dir.join(CONTROLLER_LOG);
    let log = std::fs::File::create(&log_path).map_err(state_error)?;

    step(out, "Starting moto (AWS emulator, IAM enforced) and the in-memory Kubernetes API server")?;
    let moto = Moto::start(MotoOptions { enforce_iam: true })
        .await
        .map_err(|e| QuickstartError::Start(e.to_string()))?;
    let server = ApiServer::start().await.map_err(|e| QuickstartError::Start(e.to_string()))?;
    let client = server.client();
    writeln!(out, "  Kubernetes API: {}\n  AWS API: {}", server.url(), moto.endpoint_url())?;
    let kubeconfig = state_dir.join(KUBECONFIG);
    std::fs::write(&kubeconfig, kubeconfig_yaml(&server.url())).map_err(state_error)?;
    install_crds(&client).await?;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
        .map_err(|e| QuickstartError::Step(e.to_string()))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;

    step(out, "Starting the controller")?;
    let aws = moto.aws(moto.admin_credentials()).await;
    let cluster_uid =
        crate::run::cluster_identity(&client).await.map_err(|e| QuickstartError::Step(e.to_string()))?;
    let settings =
        Settings { deploy_env: "quickstart".to_owned(), cluster_uid, ..super::settings(NAMESPACE) };
    writeln!(out, "  (TLS-only bucket policies are off: moto serves plain HTTP)")?;
    writeln!(out, "  Its log: tail -f {}", log_path.display())?;
    let ctx = Context::new(client.clone(), aws, settings);
    let (stop, stopped) = watch::channel(false);
    // The controller's log goes to a file of its own, without colour codes, so that it does not mix with
    // this output. Reconciles run on tasks of their own, so the subscriber must be the process's: unless the
    // process has one already (a program embedding the quickstart), in which case the log goes there.
    let logger = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .finish();
    if tracing::subscriber::set_global_default(logger).is_err() {
        writeln!(out, "  (this process already has a log subscriber: the controller logs there instead)")?;
    }
    let controllers = tokio::spawn(controller::run_all(ctx, stopped));

    step(out, &format!("Applying {}", examples.display()))?;
    apply_examples(&client, examples, out).await?;

    step(out, "Waiting for the Buckets to be Ready")?;
    let buckets = Api::<Bucket>::namespaced(client.clone(), NAMESPACE);
    for bucket in buckets.list(&Default::default()).await?.items {
        let name = bucket.metadata.name.clone().unwrap_or_default();
        let ready = wait(&format!("Bucket {name}"), || async {
            let b = buckets.get(&name).await.ok()?;
            let status = b.status.clone()?;
            find_condition(&status.conditions, "Ready").filter(|c| c.status == "True")?;
            Some(b)
        })
        .await?;
        let status = ready.status.unwrap_or_default();
        writeln!(
            out,
            "  {name:<16} bucket={} public={} ready=True{}",
            status.bucket_name.unwrap_or_default(),
            ready.spec.public,
            status.public_url.map(|u| format!(" publicUrl={u}")).unwrap_or_default()
        )?;
    }

    step(out, "Waiting for the bindings and service keys to be Ready")?;
    let bindings = Api::<BucketBinding>::namespaced(client.clone(), NAMESPACE);
    let keys = Api::<BucketServiceKey>::namespaced(client.clone(), NAMESPACE);
    let mut secrets_of = Vec::new();
    for binding in bindings.list(&Default::default()).await?.items {
        let name = binding.metadata.name.clone().unwrap_or_default();
        let status = wait(&format!("BucketBinding {name}"), || async {
            ready_status(bindings.get(&name).await.ok()?.status)
        })
        .await?;
        let secret = status.binding.map(|b| b.name).unwrap_or_default();
        writeln!(
            out,
            "  BucketBinding/{name:<12} {:?} secret={secret} user={}",
            binding.spec.permissions,
            status.user_name.unwrap_or_default()
        )?;
        secrets_of.push((name, binding.spec.permissions, secret));
    }
    for key in keys.list(&Default::default()).await?.items {
        let name = key.metadata.name.clone().unwrap_or_default();
        let status = wait(&format!("BucketServiceKey {name}"), || async {
            ready_status(keys.get(&name).await.ok()?.status)
        })
        .await?;
        writeln!(
            out,
            "  BucketServiceKey/{name:<9} secret={} userArn={}",
            status.binding.map(|b| b.name).unwrap_or_default(),
            status.user_arn.unwrap_or_default()
        )?;
    }

    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let read_write = secrets_of.iter().find(|(_, p, _)| *p == crate::api::Permissions::ReadWrite);
    if let Some((name, _, secret)) = read_write {
        let secret = secrets.get(secret).await?;
        step(out, &format!("VCAP_SERVICES of BucketBinding {name} (the secret key masked here)"))?;
        let vcap: Value = serde_json::from_str(&value(&secret, "VCAP_SERVICES")?)
            .map_err(|e| QuickstartError::Step(e.to_string()))?;
        let mut shown = vcap.clone();
        shown["aws-s3-bucket"][0]["credentials"]["aws_secret_access_key"] = Value::from("****");
        writeln!(out, "{}", serde_json::to_string_pretty(&shown).unwrap_or_default())?;

        step(out, "Uploading and downloading with those credentials")?;
        let credentials = &vcap["aws-s3-bucket"][0]["credentials"];
        let app = client_for(
            &moto,
            credentials["aws_access_key_id"].as_str(),
            credentials["aws_secret_access_key"].as_str(),
        )
        .await;
        let bucket = credentials["bucket_name"].as_str().unwrap_or_default();
        app.s3
            .put_object()
            .bucket(bucket)
            .key("hello.txt")
            .body(ByteStream::from_static(b"hello from bucket-broker"))
            .send()
            .await
            .map_err(|e| {
                QuickstartError::Step(format!("upload failed: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
            })?;
        let body = app
            .s3
            .get_object()
            .bucket(bucket)
            .key("hello.txt")
            .send()
            .await
            .map_err(|e| {
                QuickstartError::Step(format!(
                    "download failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?
            .body
            .collect()
            .await
            .map_err(|e| QuickstartError::Step(e.to_string()))?
            .into_bytes();
        writeln!(
            out,
            "  PUT s3://{bucket}/hello.txt: ok\n  GET s3://{bucket}/hello.txt: {:?}",
            String::from_utf8_lossy(&body)
        )?;
    }

    if let Some((name, _, secret)) =
        secrets_of.iter().find(|(_, p, _)| *p == crate::api::Permissions::ReadOnly)
    {
        step(out, &format!("Writing with the read-only BucketBinding {name}"))?;
        let secret = secrets.get(secret).await?;
        let reader = client_for(
            &moto,
            Some(&value(&secret, "AWS_ACCESS_KEY_ID")?),
            Some(&value(&secret, "AWS_SECRET_ACCESS_KEY")?),
        )
        .await;
        let bucket = value(&secret, "BUCKET_NAME")?;
        let write = reader
            .s3
            .put_object()
            .bucket(&bucket)
            .key("not-allowed.txt")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        match write {
            Ok(_) => {
                return Err(QuickstartError::Step("a read-only binding was allowed to write".to_owned()));
            }
            Err(err) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&err).unwrap_or("denied").to_owned();
                writeln!(out, "  PUT s3://{bucket}/not-allowed.txt: refused ({code}), as it should be")?;
            }
        }
        let read = reader.s3.get_object().bucket(&bucket).key("hello.txt").send().await;
        writeln!(out, "  GET s3://{bucket}/hello.txt: {}", if read.is_ok() { "ok" } else { "refused" })?;
    }

    step(out, "Done. Use kubectl against the local API server (namespace demo) in another terminal:")?;
    writeln!(out, "  export KUBECONFIG={}", kubeconfig.display())?;
    writeln!(out, "  kubectl get bucketbroker -o wide")?;
    writeln!(out, "  kubectl describe bucket assets")?;
    writeln!(out, "  The controller's log: tail -f {}", log_path.display())?;
    out.flush()?;
    hold.await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    server.shutdown().await;
    moto.stop().await;
    Ok(())
}

/// A kubeconfig for the in-memory server: its URL, no credentials, the examples' namespace.
fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: quickstart\n  cluster:\n    server: {url}\n\
         contexts:\n- name: quickstart\n  context:\n    cluster: quickstart\n    user: quickstart\n    \
         namespace: {NAMESPACE}\nusers:\n- name: quickstart\n  user: {{}}\ncurrent-context: quickstart\n"
    )
}

fn step(out: &mut (dyn Write + Send), title: &str) -> std::io::Result<()> {
    writeln!(out, "\n==> {title}")?;
    out.flush()
}

fn ready_status(status: Option<CredentialStatus>) -> Option<CredentialStatus> {
    status.filter(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
}

fn value(secret: &Secret, key: &str) -> Result<String, QuickstartError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .ok_or_else(|| QuickstartError::Step(format!("the Secret has no {key}")))
}

async fn wait<T, F, Fut>(what: &str, mut check: F) -> Result<T, QuickstartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(done) = check().await {
            return Ok(done);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(QuickstartError::Step(format!("{what} did not become Ready in {TIMEOUT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn client_for(moto: &Moto, id: Option<&str>, secret: Option<&str>) -> Aws {
    let credentials = aws_sdk_iam::config::Credentials::new(
        id.unwrap_or_default(),
        secret.unwrap_or_default(),
        None,
        None,
        "quickstart",
    );
    moto.aws(credentials).await
}

async fn install_crds(client: &Client) -> Result<(), QuickstartError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("bucket-broker-quickstart").force(), &Patch::Apply(&crd))
            .await?;
    }
    Ok(())
}

/// Creates every bucketbroker.io object of `dir` (sorted by file name); other kinds are listed as skipped,
/// since nothing runs workloads here.
async fn apply_examples(
    client: &Client,
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<(), QuickstartError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| QuickstartError::Example { path: dir.to_owned(), message: e.to_string() })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let fail = |message: String| QuickstartError::Example { path: path.clone(), message };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let object: Value = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let params = PostParams::default();
        match kind.as_str() {
            "Bucket" => {
                let typed: Bucket = serde_json::from_value(object).map_err(|e| fail(e.to_string()))?;
                Api::<Bucket>::namespaced(client.clone(), NAMESPACE).create(&params, &typed).await?;
            }
            "BucketBinding" => {
                let typed: BucketBinding = serde_json::from_value(object).map_err(|e| fail(e.to_string()))?;
                Api::<BucketBinding>::namespaced(client.clone(), NAMESPACE).create(&params, &typed).await?;
            }
            "BucketServiceKey" => {
                let typed: BucketServiceKey =
                    serde_json::from_value(object).map_err(|e| fail(e.to_string()))?;
                Api::<BucketServiceKey>::namespaced(client.clone(), NAMESPACE)
                    .create(&params, &typed)
                    .await?;
            }
            _ => {
                writeln!(out, "  skipped {kind}/{name} ({}): no workloads run here", path.display())?;
                continue;
            }
        }
        writeln!(out, "  created {kind}/{name}")?;
    }
    Ok(())
}
