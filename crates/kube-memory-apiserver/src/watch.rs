//! Watch streams: newline-delimited `{"type", "object"}` events in a chunked response.
//!
//! A watch takes the store lock once to collect its initial events (current state or the
//! history after its `resourceVersion`) and to subscribe to the broadcast of changes, so no
//! change can fall between the two. A watch that falls behind the broadcast buffer gets a
//! 410 ERROR event and ends, which is what a real watch cache does to slow clients.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Body;
use super::Shared;
use super::error::ApiError;
use super::selector::Selectors;
use super::store::{Scope, State, WatchEvent};
use super::types::ResourceType;

/// The watch-related query parameters.
#[derive(Debug, Clone, Default)]
pub(super) struct WatchParams {
    /// `None`: begin with ADDED events for the current state.
    pub from: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`: objects as metadata only.
    pub metadata_only: bool,
}

type Chunk = Result<Frame<Bytes>, std::io::Error>;

fn line(v: &Value, metadata_only: bool) -> Chunk {
    let shaped;
    let v = if metadata_only && v["type"] != "ERROR" {
        let mut event = v.clone();
        event["object"] = super::metadata::partial(&v["object"]);
        shaped = event;
        &shaped
    } else {
        v
    };
    let mut bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(Frame::data(Bytes::from(bytes)))
}

fn translate(ev: &WatchEvent, rt: &ResourceType, ns: Option<&str>, sel: &Selectors) -> Option<Value> {
    if ev.key.0 != rt.group || ev.key.1 != rt.plural {
        return None;
    }
    if ns.is_some_and(|n| n != ev.namespace) {
        return None;
    }
    let now = sel.matches(&ev.object);
    let was = ev.old.as_ref().map(|o| sel.matches(o));
    // An object that stops matching a selector looks deleted to this watch, as upstream.
    let ty = match (ev.kind, was, now) {
        ("ADDED", _, true) | ("MODIFIED", Some(false), true) => "ADDED",
        ("MODIFIED", Some(true), true) => "MODIFIED",
        ("DELETED", _, true) | ("MODIFIED", Some(true), false) => "DELETED",
        _ => return None,
    };
    Some(json!({"type": ty, "object": State::present(rt, ev.object.clone())}))
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}})
}

fn expired_event(message: String) -> Value {
    json!({"type": "ERROR", "object": ApiError::expired(message).to_status()})
}

/// Starts a watch; the returned body streams its events.
pub(super) fn open(
    shared: &Arc<Shared>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    selectors: Selectors,
    params: WatchParams,
) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(256);
    let mut first: Vec<Value> = Vec::new();
    let mut live: Option<(broadcast::Receiver<Arc<WatchEvent>>, u64)> = None;
    {
        let st = shared.lock();
        let ns = namespace.as_deref();
        match params.from {
            Some(rv) if !params.send_initial_events && rv < st.history_floor => {
                first.push(expired_event(format!(
                    "too old resource version: {rv} ({})",
                    st.history_floor + 1
                )));
            }
            Some(rv) if !params.send_initial_events => {
                first.extend(
                    st.history.iter().filter(|e| e.rv > rv).filter_map(|e| translate(e, &rt, ns, &selectors)),
                );
                live = Some((st.tx.subscribe(), st.rv));
            }
            _ => {
                let scope = Scope { rt: &rt, namespace: ns, selectors: &selectors };
                first.extend(
                    st.matching(&scope)
                        .map(|o| json!({"type": "ADDED", "object": State::present(&rt, o.clone())})),
                );
                if params.send_initial_events {
                    first.push(bookmark(&rt, st.rv, true));
                }
                live = Some((st.tx.subscribe(), st.rv));
            }
        }
    }
    let cut = shared.faults.cut_signal();
    let interval = shared.options.bookmark_interval;
    let metadata_only = params.metadata_only;
    tokio::spawn(async move {
        for ev in &first {
            if tx.send(line(ev, metadata_only)).await.is_err() {
                return;
            }
        }
        if let Some((rx, rv)) = live {
            run(tx, rx, cut, rt, namespace, selectors, rv, params, interval).await;
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    StreamBody::new(stream).boxed()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    tx: mpsc::Sender<Chunk>,
    mut rx: broadcast::Receiver<Arc<WatchEvent>>,
    mut cut: tokio::sync::watch::Receiver<u64>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    selectors: Selectors,
    mut seen: u64,
    params: WatchParams,
    interval: Duration,
) {
    cut.mark_unchanged();
    let timeout = tokio::time::sleep(params.timeout.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(timeout);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    seen = ev.rv;
                    if let Some(v) = translate(&ev, &rt, namespace.as_deref(), &selectors)
                        && tx.send(line(&v, params.metadata_only)).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let expired = expired_event(format!("too old resource version: {seen}"));
                    let _ = tx.send(line(&expired, false)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if params.bookmarks => {
                if tx.send(line(&bookmark(&rt, seen, false), params.metadata_only)).await.is_err() {
                    return;
                }
            }
            _ = &mut timeout => return,
            _ = cut.changed() => {
                let _ = tx.send(Err(std::io::Error::other("watch cut by fault injection"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
