//! An in-memory Kubernetes API server for integration tests and the local quickstart.
//!
//! It speaks the real HTTP API (JSON over HTTP/1.1, chunked watch streams) so that an
//! ordinary `kube::Client` works against it, and mimics kube-apiserver 1.28 wherever a
//! controller depends on behaviour: `resourceVersion` concurrency, generation, status
//! subresources, watches with bookmarks and 410s, finalizers, ownerReference garbage
//! collection, namespace termination, JSON/merge/apply patches with managedFields, and CRD
//! structural schemas (pruning, defaulting, validation).
//!
//! Data model: see [`store`]: one mutex-protected store of JSON objects, one global
//! `resourceVersion` counter, a bounded event history and a broadcast channel feeding
//! watches.
//!
//! It also enforces what the registry strategies refuse (a Secret's `type`, immutable
//! Secrets and ConfigMaps) and the CRDs' CEL rules ([`rules`]), honours `dryRun` and
//! `fieldValidation=Strict`, and serves what kubectl reads: OpenAPI v3 ([`openapi`]),
//! Tables ([`table`]) and discovery with categories.
//!
//! Simplifications versus a real apiserver (each also noted where it is implemented):
//! no authn/authz or admission webhooks, `pattern` or `format`, CRD version conversion,
//! protobuf/CBOR, aggregated discovery, or list snapshots at an old `resourceVersion`
//! (lists always return current state); strategic merge patch replaces lists whole; the
//! garbage collector runs synchronously; built-in kinds have no schema (no validation
//! beyond metadata and the immutability rules); field selectors accept any dotted path.

mod apply;
mod error;
mod events;
mod faults;
mod gc;
mod http;
mod metadata;
mod openapi;
mod rules;
mod schema;
mod selector;
mod store;
mod table;
mod types;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use faults::{Faults, RequestMatcher, RequestStats, StatKey};

use faults::RequestInfo;
use store::State;

/// Tunables, mostly for tests.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many change events are kept for watches that resume from an older version.
    pub history: usize,
    /// How often an idle watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { history: 10_000, bookmark_interval: Duration::from_secs(1) }
    }
}

/// A response body: a whole JSON document ([`http`]) or a chunked watch stream ([`watch`]).
type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::io::Error>;

/// State shared by the server task, its connections and the `ApiServer` handle.
struct Shared {
    state: Mutex<State>,
    faults: Faults,
    stats: Mutex<BTreeMap<StatKey, u64>>,
    options: Options,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for a test server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, r: &RequestInfo) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *stats.entry((r.verb.clone(), r.resource.clone(), r.subresource.clone())).or_default() += 1;
    }
}

/// A running in-memory API server. Dropping it stops the server.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    client: kube::Client,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `127.0.0.1:0` and serves on a spawned tokio task.
    pub async fn start() -> std::io::Result<ApiServer> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(options.history)),
            faults: Faults::new(),
            stats: Mutex::new(BTreeMap::new()),
            options,
        });
        let url: hyper::Uri = format!("http://{addr}").parse().map_err(std::io::Error::other)?;
        let client = kube::Client::try_from(kube::Config::new(url)).map_err(std::io::Error::other)?;
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(ApiServer { addr, shared, client, task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this server, with default namespace `default`.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> RequestStats {
        RequestStats { counts: self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clone() }
    }

    pub fn reset_stats(&self) {
        self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the history of changes, as an etcd compaction does: a watch that resumes from a version
    /// before now gets a 410 ERROR event (too old resource version) and must list again. Open watches go
    /// on.
    pub fn compact(&self) {
        let mut state = self.shared.lock();
        state.history.clear();
        state.history_floor = state.rv;
    }

    /// Stops the server and waits until its task has ended.
    pub async fn shutdown(mut self) {
        self.shared.faults.cut_watches();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.shared.faults.cut_watches();
            task.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, ending every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "apiserver accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| http::handle(shared.clone(), req));
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "apiserver connection ended");
            }
        });
        while conns.try_join_next().is_some() {}
    }
}
