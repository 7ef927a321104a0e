//! `bucket-broker quickstart`: the whole product on one machine with no cluster and no AWS account. It
//! starts moto (enforcing IAM) and the in-memory Kubernetes API server, runs the real controller against
//! them, applies `examples/`, and shows what a user gets: Buckets becoming Ready, the binding Secret's
//! `VCAP_SERVICES`, an upload and download with the binding's credentials, and a read-only binding being
//! refused a write. The controller watches every namespace, as in a cluster, and serves `/metrics` on a
//! printed address. The API server refuses what a real one refuses (the CRDs' schema and CEL rules), and the
//! examples are created as `kubectl apply` creates them. It writes a kubeconfig for kubectl (namespace `demo`)
//! and the controller's log into its state directory, and prints how to use both. With
//! [`Options::controller`] off, it starts only the environment and prints how to run one's own controller
//! against it.

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
use crate::metrics::Metrics;

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
    /// Run the controller; when false, only moto and the API server run (with the examples applied), for a
    /// controller of one's own, and what it needs is printed.
    pub controller: bool,
}

/// The annotation `kubectl apply` (client-side) keeps the applied manifest in; without it, a later
/// `kubectl apply` warns that the object was not created by `kubectl apply`.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The field manager of a client-side `kubectl apply` create.
const KUBECTL_MANAGER: &str = "kubectl-client-side-apply";

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

    if !options.controller {
        step(out, &format!("Applying {}", examples.display()))?;
        apply_examples(&client, examples, out).await?;
        step(out, "Done. Run your own controller against this environment, in another terminal:")?;
        own_controller(out, &kubeconfig, &moto)?;
        writeln!(
            out,
            "  kubectl get bucketbroker -A                         # the examples, Ready once your controller runs"
        )?;
        out.flush()?;
        hold.await;
        server.shutdown().await;
        moto.stop().await;
        return Ok(());
    }

    step(out, "Starting the controller, watching every namespace")?;
    let aws = moto.aws(moto.admin_credentials()).await;
    let cluster_uid =
        crate::run::cluster_identity(&client).await.map_err(|e| QuickstartError::Step(e.to_string()))?;
    // Every namespace, as the controller's default in a cluster: a Bucket in a namespace of one's own works.
    let settings = Settings {
        deploy_env: "quickstart".to_owned(),
        cluster_uid,
        namespace: None,
        ..super::settings(NAMESPACE)
    };
    let metrics = Metrics::new(aws.stats.clone());
    let (metrics_addr, serve_metrics) = crate::http::bind(([127, 0, 0, 1], 0).into(), metrics.clone())
        .await
        .map_err(|e| QuickstartError::Start(format!("cannot serve the controller's metrics: {e}")))?;
    let serve_metrics = tokio::spawn(serve_metrics);
    writeln!(out, "  (TLS-only bucket policies are off: moto serves plain HTTP)")?;
    writeln!(out, "  Its metrics: curl -s http://{metrics_addr}/metrics")?;
    writeln!(out, "  Its log: tail -f {}", log_path.display())?;
    let ctx = Context::with_metrics(client.clone(), aws, settings, metrics);
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
        secrets_of.push((name, binding.spec.permissions, secret, binding.spec.app.is_some()));
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
    // The plain read-write binding (`web-app` in examples/) rather than a member of an app's shared Secret.
    let read_write = secrets_of
        .iter()
        .filter(|(_, p, _, _)| *p == crate::api::Permissions::ReadWrite)
        .min_by_key(|(_, _, _, in_app)| *in_app);
    if let Some((name, _, secret, _)) = read_write {
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

    if let Some((name, _, secret, _)) =
        secrets_of.iter().find(|(_, p, _, _)| *p == crate::api::Permissions::ReadOnly)
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
    writeln!(
        out,
        "  The controller watches every namespace: a Bucket in a namespace of your own is provisioned too."
    )?;
    writeln!(out, "  The controller's metrics: curl -s http://{metrics_addr}/metrics")?;
    writeln!(out, "  The controller's log: tail -f {}", log_path.display())?;
    writeln!(
        out,
        "  To run a controller of your own against moto and this API server instead, start the quickstart with \
         --without-controller: two controllers acting on the same objects would replace each other's access keys."
    )?;
    out.flush()?;
    hold.await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    serve_metrics.abort();
    server.shutdown().await;
    moto.stop().await;
    Ok(())
}

/// Prints what a controller of one's own needs to run against this environment: the kubeconfig, moto's
/// administrator credentials and endpoint, and the settings moto requires (no TLS, no permissions boundary).
fn own_controller(out: &mut (dyn Write + Send), kubeconfig: &Path, moto: &Moto) -> std::io::Result<()> {
    let credentials = moto.admin_credentials();
    writeln!(out, "  export KUBECONFIG={}", kubeconfig.display())?;
    writeln!(out, "  export AWS_ACCESS_KEY_ID={}", credentials.access_key_id())?;
    writeln!(out, "  export AWS_SECRET_ACCESS_KEY={}", credentials.secret_access_key())?;
    writeln!(out, "  export AWS_REGION={}", super::moto::REGION)?;
    writeln!(out, "  export BUCKET_BROKER_AWS_ENDPOINT_URL={}", moto.endpoint_url())?;
    writeln!(out, "  export BUCKET_BROKER_REQUIRE_TLS=false              # moto serves plain HTTP")?;
    writeln!(out, "  export BUCKET_BROKER_PERMISSIONS_BOUNDARY_ARN=none  # moto has no boundary policy")?;
    writeln!(out, "  export BUCKET_BROKER_METRICS_ADDR=127.0.0.1:8080")?;
    writeln!(
        out,
        "  cargo run -- run                                    # then: curl -s http://127.0.0.1:8080/metrics"
    )?;
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

/// Creates every bucketbroker.io object of `dir` (sorted by file name) as `kubectl apply` does: with the
/// manifest in the last-applied-configuration annotation and kubectl's field manager, in the manifest's
/// namespace or `demo`. Other kinds are listed as skipped, since nothing runs workloads here.
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
    let params = PostParams { field_manager: Some(KUBECTL_MANAGER.to_owned()), ..Default::default() };
    for path in files {
        let fail = |message: String| QuickstartError::Example { path: path.clone(), message };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let mut object: Value = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if !matches!(kind.as_str(), "Bucket" | "BucketBinding" | "BucketServiceKey") {
            writeln!(out, "  skipped {kind}/{name} ({}): no workloads run here", path.display())?;
            continue;
        }
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE).to_owned();
        // kubectl's annotation, byte for byte (so that a later `kubectl apply` of the same file finds nothing
        // to change): the manifest with the namespace it was applied to and its annotations (an empty map when
        // it has none), as compact JSON with sorted keys, and a newline.
        object["metadata"]["namespace"] = Value::from(namespace.as_str());
        if !object["metadata"]["annotations"].is_object() {
            object["metadata"]["annotations"] = Value::Object(Default::default());
        }
        let applied =
            format!("{}\n", serde_json::to_string(&sorted(&object)).map_err(|e| fail(e.to_string()))?);
        object["metadata"]["annotations"][LAST_APPLIED] = Value::from(applied);
        match kind.as_str() {
            "Bucket" => create::<Bucket>(client, &namespace, object, &params).await,
            "BucketBinding" => create::<BucketBinding>(client, &namespace, object, &params).await,
            _ => create::<BucketServiceKey>(client, &namespace, object, &params).await,
        }
        .map_err(|e| match e {
            CreateError::Parse(message) => fail(message),
            CreateError::Kube(e) => QuickstartError::Kube(e),
        })?;
        let shown = if namespace == NAMESPACE { String::new() } else { format!(" in namespace {namespace}") };
        writeln!(out, "  created {kind}/{name}{shown}")?;
    }
    Ok(())
}

/// `value` with every object's keys in order, as Go's encoding/json writes a map (serde_json keeps insertion
/// order when a crate of the build enables its `preserve_order`).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

enum CreateError {
    Parse(String),
    Kube(kube::Error),
}

async fn create<K>(
    client: &Client,
    namespace: &str,
    object: Value,
    params: &PostParams,
) -> Result<(), CreateError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(object).map_err(|e| CreateError::Parse(e.to_string()))?;
    Api::<K>::namespaced(client.clone(), namespace)
        .create(params, &typed)
        .await
        .map_err(CreateError::Kube)?;
    Ok(())
}
