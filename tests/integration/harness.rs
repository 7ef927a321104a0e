//! Test environment: a Kubernetes API, a fresh namespace, a moto server, and the controller.

use std::sync::Arc;
use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey};
use bucket_broker::aws::Aws;
use bucket_broker::controller::{self, Context, Settings};
use bucket_broker::local::moto::{Moto, MotoOptions};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Resource};
use kube_memory_apiserver::ApiServer;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Names a kubeconfig: the integration tests then run against that cluster.
pub const KUBECONFIG_ENV: &str = "BUCKET_BROKER_TEST_KUBECONFIG";

/// How long a test waits for the controller to converge.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How long the teardown waits for the controller to finish deleting what a test made.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the teardown waits for the test namespace to be gone.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the Kubernetes API is, so that the teardown can connect again from a thread of its own.
#[derive(Clone)]
enum Cluster {
    /// The in-memory API server at this URL.
    InMemory(String),
    /// The real cluster named by this kubeconfig file.
    Real(String),
}

impl Cluster {
    async fn client(&self) -> Client {
        match self {
            Cluster::InMemory(url) => {
                let url = url.parse().expect("the in-memory server's URL");
                Client::try_from(kube::Config::new(url)).expect("client")
            }
            Cluster::Real(path) => real_cluster_client(path).await,
        }
    }
}

/// A namespaced kind the harness can create, read and wait for.
pub trait Namespaced:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// One test's world.
pub struct TestEnv {
    /// The test's own client: a cluster administrator.
    pub client: Client,
    /// The controller's client. On a real cluster it is the ServiceAccount that `deploy/` creates, bound
    /// by `deploy/`'s RBAC, so that what the controller may do in a test is what it may do when installed.
    pub controller_client: Client,
    /// What `controller_client` was made from, for a client through a proxy or a kubeconfig file.
    controller_config: kube::Config,
    /// The controller's ServiceAccount token, on a real cluster.
    controller_token: Option<String>,
    pub namespace: String,
    /// The uid of the cluster's kube-system namespace: its identity on AWS tags.
    pub cluster_uid: String,
    /// The in-memory API server, when no real cluster is used.
    pub server: Option<ApiServer>,
    pub moto: Moto,
    /// AWS clients with administrator credentials, for the test's own checks.
    pub admin: Aws,
    controller: Option<(watch::Sender<bool>, JoinHandle<()>, Aws)>,
    cluster: Cluster,
    /// Held until the teardown is done (fields drop after `Drop::drop`).
    _turn: Option<Turn>,
}

/// A test's turn on a real cluster, which every test of the run shares: most tests share it, and one that
/// changes what the others depend on (a CRD) has it alone. The in-memory server is a test's own.
enum Turn {
    Shared { _guard: tokio::sync::OwnedRwLockReadGuard<()> },
    Alone { _guard: tokio::sync::OwnedRwLockWriteGuard<()> },
}

/// Whose turn it is on a real cluster; fair, so a test waiting to be alone holds back those that start later.
static CLUSTER_TURNS: std::sync::LazyLock<Arc<tokio::sync::RwLock<()>>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::RwLock::new(())));

impl TestEnv {
    /// A namespace on the Kubernetes API and a moto server that does not enforce IAM.
    pub async fn new() -> TestEnv {
        Self::with(MotoOptions::default()).await
    }

    pub async fn with(options: MotoOptions) -> TestEnv {
        Self::start(options, false).await
    }

    /// For a test that changes what every test on a shared cluster depends on (a CRD): on a real cluster
    /// it waits until no other test runs, and no other starts until it is done.
    pub async fn alone(options: MotoOptions) -> TestEnv {
        Self::start(options, true).await
    }

    async fn start(options: MotoOptions, alone: bool) -> TestEnv {
        init_log();
        let (client, server, cluster, turn) = match std::env::var(KUBECONFIG_ENV) {
            Ok(path) if !path.is_empty() => {
                let turns = CLUSTER_TURNS.clone();
                let turn = match alone {
                    true => Turn::Alone { _guard: turns.write_owned().await },
                    false => Turn::Shared { _guard: turns.read_owned().await },
                };
                (real_cluster_client(&path).await, None, Cluster::Real(path), Some(turn))
            }
            _ => {
                let server = ApiServer::start().await.expect("in-memory API server starts");
                let url = server.url();
                (server.client(), Some(server), Cluster::InMemory(url), None)
            }
        };
        install_crds(&client).await;
        let namespace = match cluster {
            Cluster::Real(_) => unique_name("bb-test"),
            Cluster::InMemory(_) => "test".to_owned(),
        };
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"bucketbroker.io/test": "true"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        let (controller_config, controller_token) = match &cluster {
            Cluster::Real(path) => {
                let (config, token) = deployed_identity(&client, path, &namespace).await;
                (config, Some(token))
            }
            Cluster::InMemory(url) => {
                (kube::Config::new(url.parse().expect("the in-memory server's URL")), None)
            }
        };
        let controller_client = Client::try_from(controller_config.clone()).expect("client");
        let cluster_uid = bucket_broker::run::cluster_identity(&client).await.expect("kube-system's uid");
        let moto = Moto::start(options).await.expect("moto starts");
        let admin = aws_for(&moto, moto.admin_credentials()).await;
        TestEnv {
            client,
            controller_client,
            controller_config,
            controller_token,
            namespace,
            cluster_uid,
            server,
            moto,
            admin,
            controller: None,
            cluster,
            _turn: turn,
        }
    }

    /// A kubeconfig for tools such as kubectl, written into `dir` for the in-memory server (its URL,
    /// no credentials); the given file for a real cluster.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match &self.cluster {
            Cluster::Real(path) => path.into(),
            Cluster::InMemory(url) => {
                let file = dir.join("kubeconfig");
                let text = format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: memory\n  cluster:\n    server: {url}\n\
                     contexts:\n- name: memory\n  context:\n    cluster: memory\n    user: anonymous\n\
                     users:\n- name: anonymous\n  user: {{}}\ncurrent-context: memory\n"
                );
                std::fs::write(&file, text).expect("kubeconfig written");
                file
            }
        }
    }

    /// The Kubernetes API's URL (`http://` for the in-memory server, `https://` for a real cluster).
    pub fn api_url(&self) -> String {
        self.controller_config.cluster_url.to_string()
    }

    /// A client with the controller's identity that connects to `url` instead of [`Self::api_url`]: a
    /// proxy in front of it. The TLS server name stays 127.0.0.1, which the test cluster's certificate holds.
    pub fn controller_client_through(&self, url: &str) -> Client {
        let mut config = self.controller_config.clone();
        config.cluster_url = url.parse().expect("a URL");
        Client::try_from(config).expect("client")
    }

    /// A kubeconfig with the controller's identity, written into `dir`, for the controller binary.
    pub fn controller_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let (Cluster::Real(path), Some(token)) = (&self.cluster, &self.controller_token) else {
            return self.kubeconfig(dir);
        };
        let mut kubeconfig = Kubeconfig::read_from(path).expect("readable kubeconfig");
        for named in &mut kubeconfig.auth_infos {
            named.auth_info =
                Some(kube::config::AuthInfo { token: Some(token.clone().into()), ..Default::default() });
        }
        let file = dir.join("controller.kubeconfig");
        // JSON is YAML: kubectl and kube read it as a kubeconfig. It holds a token: readable by us alone.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| f.write_all(serde_json::to_string(&kubeconfig).expect("kubeconfig").as_bytes()))
            .expect("kubeconfig written");
        file
    }

    /// The in-memory API server, for what only it offers (fault injection, request counters). On a
    /// real cluster, says in the test output that this part is skipped, and returns `None`.
    pub fn in_memory(&self, needs: &str) -> Option<&ApiServer> {
        if self.server.is_none() {
            eprintln!("skipped on a real cluster: needs {needs}");
        }
        self.server.as_ref()
    }

    /// On a real cluster, the controller acts from now on as the ServiceAccount [`NAMESPACED_IDENTITY`]
    /// (made here from `deploy/`'s file), once the RBAC the test applied for it lets it list Buckets and
    /// read its Lease in the test namespace. [`Self::controller_client`] and [`Self::controller_kubeconfig`]
    /// then act as it too.
    pub async fn act_as_namespaced_identity(&mut self) {
        use k8s_openapi::api::core::v1::ServiceAccount;
        assert!(self.controller.is_none(), "the controller is already running");
        let Cluster::Real(path) = &self.cluster else { panic!("only a real cluster has RBAC") };
        let mut account: ServiceAccount = deploy_file("serviceaccount.yaml");
        account.metadata.name = Some(NAMESPACED_IDENTITY.to_owned());
        apply(Api::<ServiceAccount>::namespaced(self.client.clone(), TEST_IDENTITY), &account).await;
        let (config, token) =
            service_account_identity(&self.client, path, NAMESPACED_IDENTITY, &self.namespace).await;
        self.controller_client = Client::try_from(config.clone()).expect("client");
        self.controller_config = config;
        self.controller_token = Some(token);
    }

    /// On a real cluster, a client of the tenant `user`, as a team is set up (README, "Give teams access"):
    /// the built-in `edit` ClusterRole granted in the test namespace by a RoleBinding, with
    /// `deploy/tenant-roles` aggregated into it (applied under the names `bucket-broker-tests-*`). The
    /// admin impersonates `user`.
    pub async fn tenant_client(&self, user: &str) -> Client {
        use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
        let Cluster::Real(path) = &self.cluster else { panic!("only a real cluster has RBAC") };
        for file in ["tenant-roles/edit.yaml", "tenant-roles/view.yaml"] {
            let mut role: ClusterRole = deploy_file(file);
            let name = role.metadata.name.as_deref().expect("a named ClusterRole");
            let renamed = name.replacen(CONTROLLER_SERVICE_ACCOUNT, TEST_IDENTITY, 1);
            role.metadata.name = Some(renamed);
            apply(Api::<ClusterRole>::all(self.client.clone()), &role).await;
        }
        // Reading the BucketClasses: every signed-in user's, by a ClusterRoleBinding (classes are cluster-scoped).
        let mut reader: ClusterRole = deploy_file("tenant-roles/classes-reader.yaml");
        let reader_name = reader.metadata.name.as_deref().expect("named").replacen(
            CONTROLLER_SERVICE_ACCOUNT,
            TEST_IDENTITY,
            1,
        );
        reader.metadata.name = Some(reader_name.clone());
        apply(Api::<ClusterRole>::all(self.client.clone()), &reader).await;
        let mut everyone: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
            deploy_file("tenant-roles/classes-reader-binding.yaml");
        everyone.metadata.name = Some(reader_name.clone());
        everyone.role_ref.name = reader_name;
        apply(Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(self.client.clone()), &everyone)
            .await;
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("tenant-{user}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .expect("a RoleBinding");
        apply(Api::<RoleBinding>::namespaced(self.client.clone(), &self.namespace), &binding).await;
        let mut config = real_cluster_config(path).await;
        config.auth_info.impersonate = Some(user.to_owned());
        let tenant = Client::try_from(config).expect("client");

        // The aggregation controller adds the tenant roles' rules to `edit` asynchronously.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match Api::<Bucket>::namespaced(tenant.clone(), &self.namespace)
                .list(&ListParams::default())
                .await
            {
                Ok(_) => return tenant,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "the tenant {user} cannot act: {e}")
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Settings for functional tests: no TLS-only policy and no platform network, because moto applies
    /// a conditional Deny as an unconditional one (DESIGN.md, Tests); those documents are unit-tested.
    pub fn settings(&self) -> Settings {
        Settings {
            deploy_env: "test".to_owned(),
            cluster_name: "test".to_owned(),
            bucket_prefix: "bb-".to_owned(),
            user_prefix: "bb-".to_owned(),
            concurrency: 2,
            cluster_uid: self.cluster_uid.clone(),
            ..bucket_broker::local::settings(&self.namespace)
        }
    }

    /// Starts the controller with [`Self::settings`].
    pub async fn start_controller(&mut self) -> Arc<Context> {
        let settings = self.settings();
        self.start_controller_with(settings).await
    }

    /// Starts the controller with the given settings, and administrator AWS credentials of its own (so
    /// that its AWS calls are counted apart from the test's).
    pub async fn start_controller_with(&mut self, settings: Settings) -> Arc<Context> {
        let admin = self.moto.admin_credentials();
        self.start_controller_as(settings, admin).await
    }

    /// Starts the controller signing its AWS calls with `credentials`.
    pub async fn start_controller_as(
        &mut self,
        settings: Settings,
        credentials: aws_sdk_iam::config::Credentials,
    ) -> Arc<Context> {
        let aws = aws_for(&self.moto, credentials).await;
        self.start_controller_on(settings, aws)
    }

    /// Starts the controller with AWS clients of the test's choosing (an STS stand-in, say).
    pub fn start_controller_on(&mut self, settings: Settings, aws: Aws) -> Arc<Context> {
        assert!(self.controller.is_none(), "the controller is already running");
        let ctx = Context::new(self.controller_client.clone(), aws.clone(), settings);
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(controller::run_all(ctx.clone(), stopped));
        self.controller = Some((stop, handle, aws));
        ctx
    }

    /// Kills the controller at whatever line it is on, as a crash would.
    pub async fn kill_controller(&mut self) {
        if let Some((_, handle, _)) = self.controller.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Stops the controller gracefully, as on SIGTERM; fails the test if it does not stop in time.
    pub async fn stop_controller(&mut self) {
        let (stop, handle, _) = self.controller.take().expect("controller running");
        stop.send(true).expect("controller listening for shutdown");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the controller stops within 30s")
            .expect("the controller task ends without panicking");
    }

    /// The AWS calls made by the running controller.
    pub fn controller_aws(&self) -> &Aws {
        &self.controller.as_ref().expect("controller running").2
    }

    /// Whether the controller started by this environment is still running (it never panicked or quit).
    pub fn controller_alive(&self) -> bool {
        self.controller.as_ref().is_some_and(|(_, handle, _)| !handle.is_finished())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates an object in the test namespace from JSON.
    pub async fn create<K: Namespaced + serde::Serialize>(&self, object: serde_json::Value) -> K {
        let object: K = serde_json::from_value(object).expect("valid object");
        self.api::<K>().create(&PostParams::default(), &object).await.expect("object created")
    }

    /// Waits until `name` satisfies `done`, returning it; fails the test after [`TIMEOUT`].
    pub async fn wait_for<K: Namespaced>(&self, name: &str, what: &str, done: impl Fn(&K) -> bool) -> K {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let current = api.get_opt(name).await.expect("get");
            if let Some(object) = &current
                && done(object)
            {
                return object.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name} to be {what}: {:#?}",
                current.map(without_managed_fields)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `name` no longer exists; fails the test after [`TIMEOUT`].
    pub async fn wait_gone<K: Namespaced>(&self, name: &str) {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while let Some(object) = api.get_opt(name).await.expect("get") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name} to be deleted: {:#?}",
                without_managed_fields(object)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The notes of the events with `reason` in the test namespace.
    pub async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), &self.namespace);
        let listed = events.list(&ListParams::default()).await.expect("events");
        listed
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Deletes an object in the test namespace.
    pub async fn delete<K: Namespaced>(&self, name: &str) {
        self.api::<K>().delete(name, &DeleteParams::default()).await.expect("delete accepted");
    }
}

impl Drop for TestEnv {
    /// Leaves nothing behind, also after a failed test: what the test made is deleted while the
    /// controller still runs (or, with no controller running, our finalizers are stripped), then the
    /// namespace is deleted and waited for. Every wait is bounded.
    ///
    /// Drop cannot await, so the teardown runs on a thread and runtime of its own, with a client
    /// built there: a client made on the test's runtime has its connection tasks on this blocked
    /// thread and would never answer. `block_in_place` lets the test's runtime keep running the
    /// controller (and the in-memory server) meanwhile.
    fn drop(&mut self) {
        let on_multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let controller_runs =
            on_multi_thread && self.controller.as_ref().is_some_and(|(_, handle, _)| !handle.is_finished());
        let (cluster, namespace) = (self.cluster.clone(), self.namespace.clone());
        let teardown = move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(async {
                    let client = cluster.client().await;
                    teardown(&client, &namespace, controller_runs).await;
                }),
                Err(e) => eprintln!("teardown: no runtime: {e}"),
            }
        };
        let join = || {
            if std::thread::spawn(teardown).join().is_err() {
                eprintln!("teardown of namespace {} panicked", self.namespace);
            }
        };
        if on_multi_thread {
            tokio::task::block_in_place(join);
        } else if self.server.is_none() {
            // Nothing else needs this runtime: the real cluster does not run on it.
            join();
        }
        if let Some((_, handle, _)) = self.controller.take() {
            handle.abort();
        }
    }
}

/// Whether the tests run on a real cluster. On the in-memory server, says in the test output that what
/// needs a real one (`needs`) is skipped.
pub fn on_real_cluster(needs: &str) -> bool {
    let real = std::env::var(KUBECONFIG_ENV).is_ok_and(|path| !path.is_empty());
    if !real {
        eprintln!("skipped on the in-memory server: needs {needs}");
    }
    real
}

/// True for the finalizers the controller puts on our kinds.
fn is_ours(finalizer: &str) -> bool {
    finalizer.ends_with("bucketbroker.io/finalizer")
}

/// See [`TestEnv`]'s `Drop`. Reports instead of panicking: a panic here would hide the test's own.
async fn teardown(client: &Client, namespace: &str, controller_runs: bool) {
    if controller_runs {
        // Credentials first: a Bucket waits for its bindings. `Retain` leaves the test's AWS data in
        // moto, which ends with the test.
        delete_all::<BucketBinding>(client, namespace).await;
        delete_all::<BucketServiceKey>(client, namespace).await;
        wait_none::<BucketBinding>(client, namespace).await;
        wait_none::<BucketServiceKey>(client, namespace).await;
        let buckets = Api::<Bucket>::namespaced(client.clone(), namespace);
        for bucket in buckets.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = bucket.metadata.name.unwrap_or_default();
            let retain = serde_json::json!({"spec": {"deletionPolicy": "Retain"}});
            let _ = buckets.patch(&name, &PatchParams::default(), &Patch::Merge(retain)).await;
        }
        delete_all::<Bucket>(client, namespace).await;
        wait_none::<Bucket>(client, namespace).await;
    }
    strip_finalizers::<BucketBinding>(client, namespace).await;
    strip_finalizers::<BucketServiceKey>(client, namespace).await;
    strip_finalizers::<Bucket>(client, namespace).await;

    let namespaces = Api::<Namespace>::all(client.clone());
    if let Err(e) = namespaces.delete(namespace, &DeleteParams::background()).await {
        eprintln!("teardown: deleting namespace {namespace}: {e}");
        return;
    }
    let deadline = tokio::time::Instant::now() + NAMESPACE_TIMEOUT;
    while let Ok(Some(_)) = namespaces.get_opt(namespace).await {
        if tokio::time::Instant::now() > deadline {
            eprintln!("teardown: namespace {namespace} still exists after {NAMESPACE_TIMEOUT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn delete_all<K: Namespaced>(client: &Client, namespace: &str) {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    if let Err(e) = api.delete_collection(&DeleteParams::background(), &ListParams::default()).await {
        eprintln!("teardown: deleting {}: {e}", K::plural(&()));
    }
}

async fn wait_none<K: Namespaced>(client: &Client, namespace: &str) {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + CLEANUP_TIMEOUT;
    while api.list(&ListParams::default()).await.is_ok_and(|l| !l.items.is_empty()) {
        if tokio::time::Instant::now() > deadline {
            eprintln!("teardown: {} still present after {CLEANUP_TIMEOUT:?}", K::plural(&()));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With no controller to remove them, our finalizers would keep the objects, and so the namespace,
/// forever.
async fn strip_finalizers<K: Namespaced>(client: &Client, namespace: &str) {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    for object in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let meta = object.meta();
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| is_ours(f)) {
            continue;
        }
        let name = meta.name.clone().unwrap_or_default();
        let kept: Vec<&String> = finalizers.iter().filter(|f| !is_ours(f)).collect();
        let patch = serde_json::json!({"metadata": {
            "finalizers": kept, "resourceVersion": meta.resource_version,
        }});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => eprintln!("teardown: stripped our finalizer from {} {name}", K::kind(&())),
            Err(e) => eprintln!("teardown: stripping the finalizer of {} {name}: {e}", K::kind(&())),
        }
    }
}

/// AWS clients for moto with the given credentials.
pub async fn aws_for(moto: &Moto, credentials: aws_sdk_iam::config::Credentials) -> Aws {
    moto.aws(credentials).await
}

async fn real_cluster_client(path: &str) -> Client {
    Client::try_from(real_cluster_config(path).await).expect("client")
}

async fn real_cluster_config(path: &str) -> kube::Config {
    let kubeconfig = Kubeconfig::read_from(path).expect("readable kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig")
}

/// The ServiceAccount `deploy/` runs the controller as, in `deploy/`'s namespace.
const CONTROLLER_SERVICE_ACCOUNT: &str = "bucket-broker";
/// The name the tests give `deploy/`'s Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding and
/// admission policy with its binding, so that a cluster where bucket-broker is installed keeps its own
/// (nothing of an installed release is changed). Delete them after a run on a shared cluster, as the
/// README's Development section says.
pub const TEST_IDENTITY: &str = "bucket-broker-tests";

/// The ServiceAccount, in the namespace [`TEST_IDENTITY`], that the test of the namespace-scoped install
/// (`platform.rs`) runs the controller as: bound only by what `deploy/components/namespace-scoped` renders.
pub const NAMESPACED_IDENTITY: &str = "bucket-broker-tests-namespaced";

/// `deploy/`'s bindings name its ServiceAccount: they are pointed at the tests' ServiceAccount `account`
/// (in the namespace [`TEST_IDENTITY`]) instead.
pub fn subjects_for(
    subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>,
    account: &str,
) -> Option<Vec<k8s_openapi::api::rbac::v1::Subject>> {
    let subjects = subjects.unwrap_or_default();
    assert!(
        subjects.iter().all(|s| s.kind == "ServiceAccount" && s.name == CONTROLLER_SERVICE_ACCOUNT),
        "deploy/ binds its roles to the ServiceAccount {CONTROLLER_SERVICE_ACCOUNT}: {subjects:?}"
    );
    let to_tests = |s| k8s_openapi::api::rbac::v1::Subject {
        name: account.to_owned(),
        namespace: Some(TEST_IDENTITY.to_owned()),
        ..s
    };
    Some(subjects.into_iter().map(to_tests).collect())
}

/// A client acting as the controller's ServiceAccount, installed from `deploy/`'s own files under the
/// name [`TEST_IDENTITY`]: the Namespace, ServiceAccount, ClusterRole (its rules as shipped) and
/// ClusterRoleBinding, and the leader-election Role and RoleBinding in the test namespace (the
/// controller's own namespace, for a test). Its token comes from the TokenRequest API, as a pod's projected
/// token does. `deploy/`'s admission policy is installed too, once per run (see [`install_admission_policy`]).
async fn deployed_identity(admin: &Client, kubeconfig: &str, test_namespace: &str) -> (kube::Config, String) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let ns = TEST_IDENTITY;
    let named = |mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.name = Some(TEST_IDENTITY.to_owned());
        meta
    };
    let to_tests = |subjects| subjects_for(subjects, TEST_IDENTITY);
    let mut namespace: Namespace = deploy_file("namespace.yaml");
    namespace.metadata = named(namespace.metadata);
    apply(Api::<Namespace>::all(admin.clone()), &namespace).await;
    let mut account: ServiceAccount = deploy_file("serviceaccount.yaml");
    account.metadata = named(account.metadata);
    apply(Api::<ServiceAccount>::namespaced(admin.clone(), ns), &account).await;
    let mut role: ClusterRole = deploy_file("clusterrole.yaml");
    role.metadata = named(role.metadata);
    apply(Api::<ClusterRole>::all(admin.clone()), &role).await;
    let mut binding: ClusterRoleBinding = deploy_file("clusterrolebinding.yaml");
    binding.metadata = named(binding.metadata);
    binding.role_ref.name = TEST_IDENTITY.to_owned();
    binding.subjects = to_tests(binding.subjects);
    apply(Api::<ClusterRoleBinding>::all(admin.clone()), &binding).await;
    let election: Role = deploy_file("role.yaml");
    apply(Api::<Role>::namespaced(admin.clone(), test_namespace), &election).await;
    let mut election_binding: RoleBinding = deploy_file("rolebinding.yaml");
    election_binding.subjects = to_tests(election_binding.subjects);
    apply(Api::<RoleBinding>::namespaced(admin.clone(), test_namespace), &election_binding).await;

    ADMISSION_POLICY.get_or_init(|| install_admission_policy(admin)).await;
    service_account_identity(admin, kubeconfig, TEST_IDENTITY, test_namespace).await
}

/// A config and token acting as the ServiceAccount `account` of the namespace [`TEST_IDENTITY`], once its
/// RBAC lets it list Buckets and read the leader-election Lease in the test namespace. The token comes
/// from the TokenRequest API, as a pod's projected token does.
async fn service_account_identity(
    admin: &Client,
    kubeconfig: &str,
    account: &str,
    test_namespace: &str,
) -> (kube::Config, String) {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), TEST_IDENTITY)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token for the controller's ServiceAccount")
        .status
        .and_then(|status| status.token)
        .expect("the token request's status holds a token");
    let mut config = real_cluster_config(kubeconfig).await;
    config.auth_info = kube::config::AuthInfo { token: Some(token.clone().into()), ..Default::default() };
    let client = Client::try_from(config.clone()).expect("client");

    // RBAC is served from a cache: wait until the new bindings are in effect before the controller starts.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let buckets =
            Api::<Bucket>::namespaced(client.clone(), test_namespace).list(&ListParams::default()).await;
        let lease =
            Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), test_namespace)
                .get_opt("bucket-broker")
                .await;
        match (buckets, lease) {
            (Ok(_), Ok(_)) => return (config, token),
            (b, l) => assert!(
                tokio::time::Instant::now() < deadline,
                "the ServiceAccount {account} cannot act: {:?} {:?}",
                b.err(),
                l.err()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `deploy/`'s admission policy is installed on the real cluster of this run.
static ADMISSION_POLICY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// `deploy/`'s deletion-protection policy, as shipped, under the name `bucket-broker-tests-deletion-protection`
/// and bound in test namespaces only; and its finalizer policy and its binding, under the name
/// [`TEST_IDENTITY`], with the controller's
/// user name changed to the tests' ServiceAccounts ([`TEST_IDENTITY`] and [`NAMESPACED_IDENTITY`]), and
/// bound only in test namespaces: the policy is cluster-wide, and must neither refuse an installed
/// release's controller nor this run's. Test teardowns strip finalizers as the admin: through the
/// break-glass `system:masters` on the suite's control plane, and on another cluster, whose admin may not
/// be in that group, through one more exemption for the admin's user name.
async fn install_admission_policy(admin: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        MatchCondition, MatchResources, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    let cel_string = |s: &str| serde_json::to_string(s).expect("a JSON string is a CEL string");
    let user_of = |account: &str| format!("system:serviceaccount:{TEST_IDENTITY}:{account}");
    let mut policy: ValidatingAdmissionPolicy = deploy_file("validatingadmissionpolicy.yaml");
    policy.metadata.name = Some(TEST_IDENTITY.to_owned());
    let spec = policy.spec.as_mut().expect("the policy's spec");
    let conditions = spec.match_conditions.as_mut().expect("the policy's matchConditions");
    let controller =
        conditions.iter_mut().find(|c| c.name == "not-the-controller").expect("the controller's exemption");
    let deploy_namespace: Namespace = deploy_file("namespace.yaml");
    let deploy_namespace = deploy_namespace.metadata.name.expect("deploy/'s namespace");
    let deployed = format!("'system:serviceaccount:{deploy_namespace}:{CONTROLLER_SERVICE_ACCOUNT}'");
    assert_eq!(controller.expression.matches(&deployed).count(), 1, "{}", controller.expression);
    controller.expression = controller.expression.replace(&deployed, &cel_string(&user_of(TEST_IDENTITY)));
    let exempt = |name: &str, user: &str| MatchCondition {
        name: name.to_owned(),
        expression: format!("request.userInfo.username != {}", cel_string(user)),
    };
    conditions.push(exempt("not-the-namespace-scoped-controller", &user_of(NAMESPACED_IDENTITY)));
    let me = Api::<SelfSubjectReview>::all(admin.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("the admin's user info")
        .status
        .and_then(|s| s.user_info)
        .unwrap_or_default();
    if !me.groups.unwrap_or_default().iter().any(|g| g == "system:masters") {
        conditions.push(exempt("not-the-tests-admin", &me.username.expect("the admin's user name")));
    }
    apply(Api::<ValidatingAdmissionPolicy>::all(admin.clone()), &policy).await;

    let mut binding: ValidatingAdmissionPolicyBinding = deploy_file("validatingadmissionpolicybinding.yaml");
    binding.metadata.name = Some(TEST_IDENTITY.to_owned());
    let spec = &mut binding.spec;
    spec.policy_name = TEST_IDENTITY.to_owned();
    assert!(
        spec.match_resources.is_none(),
        "deploy/ binds the policy everywhere: {:?}",
        spec.match_resources
    );
    let test_namespaces = [("bucketbroker.io/test".to_owned(), "true".to_owned())].into();
    spec.match_resources = Some(MatchResources {
        namespace_selector: Some(LabelSelector { match_labels: Some(test_namespaces), ..Default::default() }),
        ..Default::default()
    });
    apply(Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone()), &binding).await;

    // Deletion protection, as shipped (it exempts nobody), bound in test namespaces too.
    let name = format!("{TEST_IDENTITY}-deletion-protection");
    let mut policy: ValidatingAdmissionPolicy =
        deploy_file("validatingadmissionpolicy-deletion-protection.yaml");
    policy.metadata.name = Some(name.clone());
    apply(Api::<ValidatingAdmissionPolicy>::all(admin.clone()), &policy).await;
    let mut binding: ValidatingAdmissionPolicyBinding =
        deploy_file("validatingadmissionpolicybinding-deletion-protection.yaml");
    binding.metadata.name = Some(name.clone());
    binding.spec.policy_name = name;
    assert!(binding.spec.match_resources.is_none(), "deploy/ binds the policy everywhere");
    binding.spec.match_resources = Some(MatchResources {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([("bucketbroker.io/test".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    apply(Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone()), &binding).await;
}

/// One file of `deploy/`.
fn deploy_file<K: DeserializeOwned>(file: &str) -> K {
    crate::deploy::parse(&format!("deploy/{file}"))
}

/// Server-side applies `object` through `api`.
async fn apply<K>(api: Api<K>, object: &K)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().expect("a named object");
    api.patch(&name, &PatchParams::apply("bucket-broker-tests").force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&())));
}

/// Applies the committed `crds/` (not the Rust types: what users install is what is tested) and waits
/// until they are established.
async fn install_crds(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in bucket_broker::api::crds() {
        let file = dir.join(bucket_broker::cli::crd_file_name(&crd));
        let yaml = std::fs::read_to_string(&file).expect("crds/ file");
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(yaml.trim_start_matches("---\n")).expect("crd");
        let name = crd.metadata.name.clone().expect("crd name");
        api.patch(&name, &PatchParams::apply("bucket-broker-tests").force(), &Patch::Apply(&crd))
            .await
            .expect("crd applied");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let current = api.get(&name).await.expect("crd");
            let established = current
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A name unlikely to collide, for namespaces on a shared cluster.
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    format!("{prefix}-{:08x}", hasher.finish() as u32)
}

/// A plain anonymous HTTP GET: the status code, as a browser following a public URL would see it.
pub async fn anonymous_get(url: &str) -> u16 {
    http_get(url).await.0
}

/// A plain HTTP/1.1 GET without credentials: the status code and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) =
        rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".to_owned()));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status =
        response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("an HTTP status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// An object as a failed wait shows it: without `managedFields`, which would bury its status.
fn without_managed_fields<K: Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

/// The controllers' log, when asked for (`BUCKET_BROKER_TEST_LOG=bucket_broker=debug`; the test command
/// asks for `info`): each test's lines are captured with its output and shown when it fails, or as they
/// come with `-- --nocapture`. Returns whether the log is taken so.
pub fn init_log() -> bool {
    let Some(filter) = std::env::var("BUCKET_BROKER_TEST_LOG").ok().filter(|f| !f.is_empty()) else {
        return false;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    true
}
