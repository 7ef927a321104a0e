//! End-to-end tests: each starts a server and talks to it with a real `kube::Client`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{ApiServer, Options, RequestMatcher};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn api_err(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.example.io"},
        "spec": {
            "group": "test.example.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList",
                "shortNames": ["wd"], "categories": ["toys"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "string", "enum": ["small", "large"]},
                                "replicas": {"type": "integer", "default": 1},
                                "color": {"type": "string"},
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "owner": {
                                    "type": "string",
                                    "x-kubernetes-validations": [
                                        {"rule": "self == oldSelf", "message": "owner is immutable"}
                                    ]
                                }
                            },
                            "x-kubernetes-validations": [
                                {"rule": "!has(self.tags) || size(self.tags) <= 3", "message": "at most three tags"}
                            ]
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "observedGeneration": {"type": "integer"},
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {
                                        "type": "object",
                                        "required": ["type", "status"],
                                        "properties": {
                                            "type": {"type": "string"},
                                            "status": {"type": "string"},
                                            "reason": {"type": "string"}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

fn widget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("test.example.io", "v1", "Widget"), "widgets")
}

async fn with_widgets() -> Result<(ApiServer, Api<DynamicObject>), Box<dyn std::error::Error>> {
    let server = ApiServer::start().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.create(&PostParams::default(), &serde_json::from_value(widget_crd())?).await?;
    let api = Api::namespaced_with(server.client(), "default", &widget_ar());
    Ok((server, api))
}

fn widget(name: &str, spec: Value) -> Result<DynamicObject, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "test.example.io/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec
    }))
}

fn configmap(name: &str, labels: Value) -> Result<ConfigMap, serde_json::Error> {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}))
}

fn owned_secret(name: &str, owner: &ConfigMap, block: bool) -> Result<Secret, serde_json::Error> {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name, "uid": owner.metadata.uid,
            "blockOwnerDeletion": block,
        }]},
    }))
}

async fn next_event<S>(stream: &mut S) -> Option<WatchEvent<DynamicObject>>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next()).await.ok().flatten().and_then(Result::ok)
}

#[tokio::test]
async fn discovery_version_and_unknown_resource() -> TestResult {
    let (server, _) = with_widgets().await?;
    let client = server.client();
    let v = client.apiserver_version().await?;
    assert_eq!(v.git_version, "v1.28.0");
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("test.example.io", "v1", "Widget"))
        .ok_or("widget not discovered")?;
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    assert!(discovery.resolve_gvk(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease")).is_some());
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get("widgets.test.example.io").await?;
    let conds = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    assert!(conds.iter().any(|c| c.type_ == "NamesAccepted" && c.status == "True"));

    let unknown =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("nope.example.io", "v1", "Nope"), "nopes");
    let nope: Api<DynamicObject> = Api::namespaced_with(client, "default", &unknown);
    let s = api_err(nope.get("x").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    Ok(())
}

#[tokio::test]
async fn create_get_generate_name_and_already_exists() -> TestResult {
    let server = ApiServer::start().await?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"generateName": "creds-"},
        "stringData": {"password": "hello"}
    }))?;
    let created = secrets.create(&PostParams::default(), &s).await?;
    let name = created.metadata.name.clone().ok_or("no name")?;
    assert!(name.starts_with("creds-") && name.len() == "creds-".len() + 5);
    let uid = created.metadata.uid.clone().ok_or("no uid")?;
    assert_eq!(uid.len(), 36);
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.resource_version.is_some());
    let data = created.data.clone().ok_or("no data")?;
    assert_eq!(data["password"].0, b"hello".to_vec());
    assert!(created.string_data.is_none());

    let got = secrets.get(&name).await?;
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    let mut again = got.clone();
    again.metadata.resource_version = None;
    let e = api_err(secrets.create(&PostParams::default(), &again).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    let missing: Api<Secret> = Api::namespaced(server.client(), "nowhere");
    again.metadata.namespace = None;
    let e = api_err(missing.create(&PostParams::default(), &again).await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert!(e.message.contains("namespaces \"nowhere\" not found"));

    let e = api_err(secrets.get("absent").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    let namespaces: Api<Namespace> = Api::all(server.client());
    assert!(namespaces.get("default").await.is_ok());
    Ok(())
}

#[tokio::test]
async fn list_selectors_and_pagination() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({"team": "x"})),
        ("e", json!({})),
    ] {
        cms.create(&PostParams::default(), &configmap(name, labels)?).await?;
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.into_iter().filter_map(|c| c.metadata.name).collect()
    };
    let q = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(names(cms.list(&q("app=web")).await?), ["a", "b"]);
    assert_eq!(names(cms.list(&q("app==db")).await?), ["c"]);
    assert_eq!(names(cms.list(&q("app!=web")).await?), ["c", "d", "e"]);
    assert_eq!(names(cms.list(&q("tier in (front,back)")).await?), ["a", "b"]);
    assert_eq!(names(cms.list(&q("app notin (web)")).await?), ["c", "d", "e"]);
    assert_eq!(names(cms.list(&q("team")).await?), ["d"]);
    assert_eq!(names(cms.list(&q("!app")).await?), ["d", "e"]);
    assert_eq!(names(cms.list(&q("app=web,tier=back")).await?), ["b"]);
    let f = |sel: &str| ListParams::default().fields(sel);
    assert_eq!(names(cms.list(&f("metadata.name=c")).await?), ["c"]);
    assert_eq!(names(cms.list(&f("metadata.name==c")).await?), ["c"]);
    assert_eq!(
        names(cms.list(&f("metadata.namespace=default,metadata.name!=a")).await?),
        ["b", "c", "d", "e"]
    );

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await?;
        assert!(page.metadata.resource_version.is_some());
        pages += 1;
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        seen.extend(names(page));
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);

    // All-namespace list.
    let all: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 5);
    Ok(())
}

#[tokio::test]
async fn generation_moves_only_on_spec_change() -> TestResult {
    let (_server, api) = with_widgets().await?;
    let w = api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    assert_eq!(w.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let w = api.patch("w", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await?;
    assert_eq!(w.metadata.generation, Some(1));
    let w = api.patch_status("w", &pp, &Patch::Merge(json!({"status": {"phase": "Ready"}}))).await?;
    assert_eq!(w.metadata.generation, Some(1));
    let w = api.patch("w", &pp, &Patch::Merge(json!({"spec": {"size": "large"}}))).await?;
    assert_eq!(w.metadata.generation, Some(2));
    // A patch that changes nothing writes nothing: same resourceVersion.
    let again = api.patch("w", &pp, &Patch::Merge(json!({"spec": {"size": "large"}}))).await?;
    assert_eq!(again.metadata.resource_version, w.metadata.resource_version);
    Ok(())
}

#[tokio::test]
async fn stale_update_conflicts_and_put_needs_resource_version() -> TestResult {
    let (server, api) = with_widgets().await?;
    let w = api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    let mut first = w.clone();
    first.data["spec"]["color"] = json!("red");
    api.replace("w", &PostParams::default(), &first).await?;
    let mut second = w.clone();
    second.data["spec"]["color"] = json!("blue");
    let e = api_err(api.replace("w", &PostParams::default(), &second).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"));

    let stale_patch = Patch::Merge(json!({
        "metadata": {"resourceVersion": w.metadata.resource_version},
        "spec": {"color": "green"}
    }));
    let e = api_err(api.patch("w", &PatchParams::default(), &stale_patch).await);
    assert_eq!(e.code, 409);

    let mut unconditional = api.get("w").await?;
    unconditional.metadata.resource_version = None;
    let e = api_err(api.replace("w", &PostParams::default(), &unconditional).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("must be specified for an update"));

    // Core kinds such as ConfigMaps allow unconditional updates, as upstream.
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut cm = cms.create(&PostParams::default(), &configmap("c", json!({}))?).await?;
    cm.metadata.resource_version = None;
    cm.data = Some([("k".to_string(), "w".to_string())].into());
    cms.replace("c", &PostParams::default(), &cm).await?;
    Ok(())
}

#[tokio::test]
async fn status_subresource_isolation() -> TestResult {
    let (_server, api) = with_widgets().await?;
    let mut w = widget("w", json!({"size": "small"}))?;
    w.data["status"] = json!({"phase": "Ignored"});
    let w = api.create(&PostParams::default(), &w).await?;
    assert!(w.data.get("status").is_none(), "status is dropped on create");

    let pp = PatchParams::default();
    api.patch_status("w", &pp, &Patch::Merge(json!({"status": {"phase": "Ready"}}))).await?;
    // Main-resource writes keep the status.
    let mut cur = api.get("w").await?;
    cur.data["status"] = json!({"phase": "Hacked"});
    cur.data["spec"]["color"] = json!("red");
    let after = api.replace("w", &PostParams::default(), &cur).await?;
    assert_eq!(after.data["status"]["phase"], json!("Ready"));
    assert_eq!(after.data["spec"]["color"], json!("red"));
    // Status writes keep the rest.
    let mut cur = api.get("w").await?;
    cur.data["status"]["phase"] = json!("Done");
    cur.data["spec"]["color"] = json!("blue");
    cur.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let after = api.replace_status("w", &PostParams::default(), &cur).await?;
    assert_eq!(after.data["status"]["phase"], json!("Done"));
    assert_eq!(after.data["spec"]["color"], json!("red"));
    assert!(after.metadata.labels.is_none());
    Ok(())
}

#[tokio::test]
async fn watch_events_selectors_bookmarks_and_timeout() -> TestResult {
    let (_server, api) = with_widgets().await?;
    api.create(&PostParams::default(), &widget("pre", json!({"size": "small"}))?).await?;
    let mut all = api.watch(&WatchParams::default(), "0").await?.boxed();
    let mut selected = api.watch(&WatchParams::default().labels("pick=yes"), "0").await?.boxed();
    match next_event(&mut all).await {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("pre")),
        other => panic!("expected initial ADDED, got {other:?}"),
    }
    api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    let pp = PatchParams::default();
    api.patch("w", &pp, &Patch::Merge(json!({"metadata": {"labels": {"pick": "yes"}}}))).await?;
    api.patch("w", &pp, &Patch::Merge(json!({"spec": {"color": "red"}}))).await?;
    api.patch("w", &pp, &Patch::Merge(json!({"metadata": {"labels": {"pick": "no"}}}))).await?;
    api.delete("w", &DeleteParams::default()).await?;

    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        match next_event(&mut all).await {
            Some(WatchEvent::Added(_)) => kinds.push("ADDED"),
            Some(WatchEvent::Modified(_)) => kinds.push("MODIFIED"),
            Some(WatchEvent::Deleted(_)) => kinds.push("DELETED"),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]);
    let mut sel = Vec::new();
    while sel.len() < 3 {
        match next_event(&mut selected).await {
            Some(WatchEvent::Added(_)) => sel.push("ADDED"),
            Some(WatchEvent::Modified(_)) => sel.push("MODIFIED"),
            Some(WatchEvent::Deleted(_)) => sel.push("DELETED"),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Selected when labelled, modified, then "deleted" when it stopped matching.
    assert_eq!(sel, ["ADDED", "MODIFIED", "DELETED"]);

    // Bookmarks on an idle watch (kube asks for them by default).
    let rv = api.list(&ListParams::default()).await?.metadata.resource_version;
    let mut idle = api.watch(&WatchParams::default(), rv.as_deref().ok_or("no rv")?).await?.boxed();
    match next_event(&mut idle).await {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(Some(b.metadata.resource_version), rv),
        other => panic!("expected BOOKMARK, got {other:?}"),
    }

    // Streaming-list: initial events then the initial-events-end bookmark.
    let mut stream = api.watch(&WatchParams::default().initial_events(), "0").await?.boxed();
    match next_event(&mut stream).await {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("pre")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next_event(&mut stream).await {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(
            b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str),
            Some("true")
        ),
        other => panic!("expected initial-events-end BOOKMARK, got {other:?}"),
    }

    // timeoutSeconds ends the stream cleanly.
    let mut short = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv.unwrap_or_default())
        .await?
        .boxed();
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while short.next().await.is_some() {} }).await;
    assert!(end.is_ok(), "watch did not end after timeoutSeconds");
    Ok(())
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410() -> TestResult {
    let server = ApiServer::start_with(Options { history: 5, ..Options::default() }).await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let first = cms.create(&PostParams::default(), &configmap("c", json!({}))?).await?;
    for i in 0..10 {
        cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"i": i.to_string()}}))).await?;
    }
    expired(&cms, &first.metadata.resource_version.ok_or("no rv")?).await?;
    // A recent version still replays from history.
    let list = cms.list(&ListParams::default()).await?;
    resumes(&cms, &list.metadata.resource_version.ok_or("no rv")?).await
}

/// A watch from `rv` gets a 410 ERROR event at once: it must list again.
async fn expired(cms: &Api<ConfigMap>, rv: &str) -> TestResult {
    let mut stream = cms.watch(&WatchParams::default(), rv).await?.boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    Ok(())
}

/// A watch from `rv` goes on: a change made after it starts is its first event.
async fn resumes(cms: &Api<ConfigMap>, rv: &str) -> TestResult {
    let mut stream = cms.watch(&WatchParams::default().disable_bookmarks(), rv).await?.boxed();
    cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"z": "1"}}))).await?;
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?;
    assert!(matches!(ev, Some(Ok(WatchEvent::Modified(_)))), "{ev:?}");
    Ok(())
}

/// After a compaction, a watch resuming from an earlier version must list again; one from the current
/// version goes on with what comes next.
#[tokio::test]
async fn a_compaction_expires_every_earlier_version() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let first = cms.create(&PostParams::default(), &configmap("c", json!({}))?).await?;
    let second = cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "1"}}))).await?;
    server.compact();
    expired(&cms, &first.metadata.resource_version.ok_or("no rv")?).await?;
    resumes(&cms, &second.metadata.resource_version.ok_or("no rv")?).await
}

#[tokio::test]
async fn kube_watcher_recovers_after_cut_watches() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(&PostParams::default(), &configmap("before", json!({}))?).await?;
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = async |want: &str, deleted: bool, seen: &mut Vec<String>| -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, events.next()).await else {
                return false;
            };
            match next {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) if !deleted => {
                    let n = o.metadata.name.unwrap_or_default();
                    seen.push(n.clone());
                    if n == want {
                        return true;
                    }
                }
                Some(Ok(watcher::Event::Delete(o))) if deleted => {
                    if o.metadata.name.as_deref() == Some(want) {
                        return true;
                    }
                }
                Some(_) => {}
                None => return false,
            }
        }
    };
    assert!(wait_for("before", false, &mut seen).await);
    cms.create(&PostParams::default(), &configmap("during", json!({}))?).await?;
    assert!(wait_for("during", false, &mut seen).await);
    cms.patch("during", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "1"}}))).await?;
    assert!(wait_for("during", false, &mut seen).await);
    server.faults().cut_watches();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cms.create(&PostParams::default(), &configmap("after", json!({}))?).await?;
    assert!(wait_for("after", false, &mut seen).await, "seen: {seen:?}");
    cms.delete("after", &DeleteParams::default()).await?;
    assert!(wait_for("after", true, &mut seen).await);
    assert!(server.stats().count("watch", "configmaps") >= 2);
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_and_forbid_new_ones() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut cm = configmap("held", json!({}))?;
    cm.metadata.finalizers = Some(vec!["test/one".into()]);
    let cm = cms.create(&PostParams::default(), &cm).await?;

    let e = api_err(
        cms.delete(
            "held",
            &DeleteParams::default()
                .preconditions(Preconditions { uid: Some("wrong".into()), resource_version: None }),
        )
        .await,
    );
    assert_eq!(e.code, 409);
    let res = cms
        .delete(
            "held",
            &DeleteParams::default()
                .preconditions(Preconditions { uid: cm.metadata.uid.clone(), resource_version: None }),
        )
        .await?;
    let pending = res.left().ok_or("expected the object back")?;
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));
    assert!(cms.get("held").await?.metadata.deletion_timestamp.is_some());

    let e = api_err(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/one", "test/two"]}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("no new finalizers can be added if the object is being deleted"));

    let rv = cms.get("held").await?.metadata.resource_version;
    let mut watch =
        cms.watch(&WatchParams::default().disable_bookmarks(), rv.as_deref().unwrap_or("0")).await?.boxed();
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    assert_eq!(api_err(cms.get("held").await).code, 404);
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await? {
            Some(Ok(WatchEvent::Modified(_))) => kinds.push("MODIFIED"),
            Some(Ok(WatchEvent::Deleted(_))) => kinds.push("DELETED"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);
    Ok(())
}

#[tokio::test]
async fn owner_reference_gc_background_orphan_foreground() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PostParams::default();

    // Background (default): dependents go, a dependent's own finalizer is respected.
    let owner = cms.create(&pp, &configmap("owner1", json!({}))?).await?;
    secrets.create(&pp, &owned_secret("dep1", &owner, false)?).await?;
    let mut held = owned_secret("dep1-held", &owner, false)?;
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    secrets.create(&pp, &held).await?;
    cms.delete("owner1", &DeleteParams::default()).await?;
    assert_eq!(api_err(cms.get("owner1").await).code, 404);
    assert_eq!(api_err(secrets.get("dep1").await).code, 404);
    assert!(secrets.get("dep1-held").await?.metadata.deletion_timestamp.is_some());
    secrets
        .patch("dep1-held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    assert_eq!(api_err(secrets.get("dep1-held").await).code, 404);

    // Orphan: dependents stay, without the reference.
    let owner = cms.create(&pp, &configmap("owner2", json!({}))?).await?;
    secrets.create(&pp, &owned_secret("dep2", &owner, false)?).await?;
    cms.delete("owner2", &DeleteParams::orphan()).await?;
    assert_eq!(api_err(cms.get("owner2").await).code, 404);
    let dep = secrets.get("dep2").await?;
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());

    // Foreground: the owner waits for blocking dependents.
    let owner = cms.create(&pp, &configmap("owner3", json!({}))?).await?;
    let mut blocker = owned_secret("dep3", &owner, true)?;
    blocker.metadata.finalizers = Some(vec!["test/hold".into()]);
    secrets.create(&pp, &blocker).await?;
    secrets.create(&pp, &owned_secret("dep3-free", &owner, false)?).await?;
    cms.delete("owner3", &DeleteParams::foreground()).await?;
    let waiting = cms.get("owner3").await?;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(waiting.metadata.finalizers.unwrap_or_default().contains(&"foregroundDeletion".to_string()));
    assert_eq!(api_err(secrets.get("dep3-free").await).code, 404);
    assert!(secrets.get("dep3").await?.metadata.deletion_timestamp.is_some());
    secrets
        .patch("dep3", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    assert_eq!(api_err(secrets.get("dep3").await).code, 404);
    assert_eq!(api_err(cms.get("owner3").await).code, 404);
    Ok(())
}

#[tokio::test]
async fn namespace_deletion_empties_the_namespace() -> TestResult {
    let (server, _) = with_widgets().await?;
    let namespaces: Api<Namespace> = Api::all(server.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}}))?;
    let ns = namespaces.create(&PostParams::default(), &ns).await?;
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let secrets: Api<Secret> = Api::namespaced(server.client(), "team");
    let plain: Secret = serde_json::from_value(json!({"metadata": {"name": "plain"}}))?;
    secrets.create(&PostParams::default(), &plain).await?;
    let held: Secret =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["test/hold"]}}))?;
    secrets.create(&PostParams::default(), &held).await?;
    let widgets: Api<DynamicObject> = Api::namespaced_with(server.client(), "team", &widget_ar());
    widgets.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;

    namespaces.delete("team", &DeleteParams::default()).await?;
    let ns = namespaces.get("team").await?;
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    assert_eq!(api_err(secrets.get("plain").await).code, 404);
    assert_eq!(api_err(widgets.get("w").await).code, 404);
    assert!(secrets.get("held").await?.metadata.deletion_timestamp.is_some());
    let e = api_err(secrets.create(&PostParams::default(), &plain).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));

    secrets
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    assert_eq!(api_err(namespaces.get("team").await).code, 404);
    Ok(())
}

#[tokio::test]
async fn json_patch_and_merge_patch() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(&PostParams::default(), &configmap("c", json!({"a": "1"}))?).await?;
    let pp = PatchParams::default();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "add", "path": "/data/n", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"}
    ]))?;
    let c = cms.patch("c", &pp, &Patch::Json::<()>(ops)).await?;
    let data = c.data.unwrap_or_default();
    assert_eq!(data.get("n").map(String::as_str), Some("2"));
    assert!(c.metadata.labels.unwrap_or_default().is_empty());

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "other"},
        {"op": "add", "path": "/data/z", "value": "x"}
    ]))?;
    let e = api_err(cms.patch("c", &pp, &Patch::Json::<()>(failing)).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(!cms.get("c").await?.data.unwrap_or_default().contains_key("z"));

    let c = cms.patch("c", &pp, &Patch::Merge(json!({"data": {"k": null, "m": "3"}}))).await?;
    let data = c.data.unwrap_or_default();
    assert!(!data.contains_key("k"));
    assert_eq!(data.get("m").map(String::as_str), Some("3"));
    let c = cms.patch("c", &pp, &Patch::Strategic(json!({"data": {"s": "4"}}))).await?;
    assert_eq!(c.data.unwrap_or_default().get("s").map(String::as_str), Some("4"));
    Ok(())
}

fn managers(o: &DynamicObject) -> Vec<(String, String)> {
    o.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect()
}

fn owns(o: &DynamicObject, manager: &str, needle: &str) -> bool {
    o.metadata.managed_fields.clone().unwrap_or_default().iter().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.fields_v1.as_ref().is_some_and(|f| f.0.to_string().contains(needle))
    })
}

#[tokio::test]
async fn server_side_apply_ownership_conflicts_and_list_maps() -> TestResult {
    let (server, api) = with_widgets().await?;
    let apply = |spec: Value| {
        json!({"apiVersion": "test.example.io/v1", "kind": "Widget",
               "metadata": {"name": "w"}, "spec": spec})
    };
    // Apply creates.
    let w = api
        .patch(
            "w",
            &PatchParams::apply("alice"),
            &Patch::Apply(apply(json!({"size": "small", "color": "red", "tags": ["a"]}))),
        )
        .await?;
    assert_eq!(w.data["spec"]["color"], json!("red"));
    assert_eq!(w.data["spec"]["replicas"], json!(1));
    assert_eq!(managers(&w), [("alice".to_string(), "Apply".to_string())]);
    assert!(owns(&w, "alice", "\"f:spec\":{\"f:color\":{}"));

    // Fields alice stops applying are removed.
    let w = api
        .patch(
            "w",
            &PatchParams::apply("alice"),
            &Patch::Apply(apply(json!({"size": "small", "tags": ["a"]}))),
        )
        .await?;
    assert!(w.data["spec"].get("color").is_none());

    // Another manager changing alice's field conflicts, unless forced.
    let e = api_err(
        api.patch("w", &PatchParams::apply("bob"), &Patch::Apply(apply(json!({"size": "large"})))).await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"alice\""), "{}", e.message);
    // Same value: shared ownership, no conflict.
    api.patch("w", &PatchParams::apply("carol"), &Patch::Apply(apply(json!({"size": "small"})))).await?;
    let w = api
        .patch("w", &PatchParams::apply("bob").force(), &Patch::Apply(apply(json!({"size": "large"}))))
        .await?;
    assert_eq!(w.data["spec"]["size"], json!("large"));
    assert!(owns(&w, "bob", "f:size"));
    assert!(!owns(&w, "alice", "f:size"));
    // alice no longer owns size, so dropping it from her config keeps bob's value.
    let w = api
        .patch("w", &PatchParams::apply("alice"), &Patch::Apply(apply(json!({"tags": ["a", "b"]}))))
        .await?;
    assert_eq!(w.data["spec"]["size"], json!("large"));
    assert_eq!(w.data["spec"]["tags"], json!(["a", "b"]));

    // Status conditions merge by key between managers.
    let status = |conds: Value| {
        json!({"apiVersion": "test.example.io/v1", "kind": "Widget",
               "metadata": {"name": "w"}, "status": {"conditions": conds}})
    };
    api.patch_status(
        "w",
        &PatchParams::apply("ctrl-a"),
        &Patch::Apply(status(json!([{"type": "Ready", "status": "True"}]))),
    )
    .await?;
    let w = api
        .patch_status(
            "w",
            &PatchParams::apply("ctrl-b"),
            &Patch::Apply(status(json!([{"type": "Synced", "status": "False"}]))),
        )
        .await?;
    let types: Vec<&str> = w.data["status"]["conditions"]
        .as_array()
        .ok_or("no conditions")?
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Ready", "Synced"]);
    assert!(owns(&w, "ctrl-a", "k:{\\\"type\\\":\\\"Ready\\\"}"));
    assert_eq!(w.data["spec"]["size"], json!("large"), "status apply leaves spec alone");
    let w = api.patch_status("w", &PatchParams::apply("ctrl-a"), &Patch::Apply(status(json!([])))).await?;
    let types: Vec<&str> = w.data["status"]["conditions"]
        .as_array()
        .ok_or("no conditions")?
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Synced"]);

    // A non-apply update takes ownership with operation Update.
    let w = api
        .patch(
            "w",
            &PatchParams { field_manager: Some("editor".into()), ..PatchParams::default() },
            &Patch::Merge(json!({"spec": {"color": "green"}})),
        )
        .await?;
    assert!(managers(&w).contains(&("editor".to_string(), "Update".to_string())));
    assert!(owns(&w, "editor", "f:color"));

    // Re-applying the same configuration writes nothing.
    let before = api.get("w").await?.metadata.resource_version;
    let again = api
        .patch("w", &PatchParams::apply("alice"), &Patch::Apply(apply(json!({"tags": ["a", "b"]}))))
        .await?;
    assert_eq!(again.metadata.resource_version, before);

    // fieldManager is required for apply.
    let req = hyper::Request::patch("/apis/test.example.io/v1/namespaces/default/widgets/w")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: test.example.io/v1\nkind: Widget\nmetadata:\n  name: w\n".to_vec())?;
    let e = api_err(server.client().request::<DynamicObject>(req).await);
    assert_eq!(e.code, 400);
    // A YAML body works.
    let req =
        hyper::Request::patch("/apis/test.example.io/v1/namespaces/default/widgets/w?fieldManager=yaml")
            .header("content-type", "application/apply-patch+yaml")
            .body(
                b"apiVersion: test.example.io/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  replicas: 3\n"
                    .to_vec(),
            )?;
    let w: DynamicObject = server.client().request(req).await?;
    assert_eq!(w.data["spec"]["replicas"], json!(3));
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError;

#[tokio::test]
async fn kube_finalizer_helper_end_to_end() -> TestResult {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(&PostParams::default(), &configmap("f", json!({}))?).await?;
    const NAME: &str = "test.example.io/cleanup";
    let cleaned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = |obj: ConfigMap| {
        let cms = cms.clone();
        let cleaned = cleaned.clone();
        let applied = applied.clone();
        async move {
            finalizer(&cms, NAME, Arc::new(obj), |ev| async move {
                match ev {
                    Event::Apply(_) => applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                    Event::Cleanup(_) => cleaned.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                };
                Ok::<_, ReconcileError>(Action::await_change())
            })
            .await
        }
    };
    // First pass adds the finalizer, second applies.
    run(cms.get("f").await?).await?;
    let cm = cms.get("f").await?;
    assert_eq!(cm.metadata.finalizers.clone().unwrap_or_default(), [NAME]);
    run(cm).await?;
    assert_eq!(applied.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A stale object makes the helper's JSON-patch `test` fail with 422.
    let stale = cms.get("f").await?;
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": [NAME, "other/one"]}})),
    )
    .await?;
    cms.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": [NAME]}})))
        .await?;
    cms.delete("f", &DeleteParams::default()).await?;
    let deleting = cms.get("f").await?;
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let mut stale_deleting = deleting.clone();
    stale_deleting.metadata.finalizers = Some(vec!["x".into(), NAME.into()]);
    let r = run(stale_deleting).await;
    assert!(r.is_err(), "finalizer removal on a stale view must fail");
    drop(stale);
    run(deleting).await?;
    assert_eq!(cleaned.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(api_err(cms.get("f").await).code, 404);
    Ok(())
}

#[tokio::test]
async fn fault_injection_and_stats() -> TestResult {
    let server = ApiServer::start().await?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}}))?;
    secrets.create(&PostParams::default(), &s).await?;

    server.faults().fail_next(2, RequestMatcher::verb("get").resource("secrets"), 500);
    server.faults().fail_next(1, RequestMatcher::verb("patch").resource("secrets").name("s"), 429);
    server.faults().fail_next(1, RequestMatcher::verb("update").resource("secrets"), 409);
    let e = api_err(secrets.get("s").await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert_eq!(api_err(secrets.get("s").await).code, 500);
    // kube retries 429 by itself (honouring Retry-After): the second attempt succeeds.
    server.reset_stats();
    secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {}}))).await?;
    assert_eq!(server.stats().count("patch", "secrets"), 2);
    let cur = secrets.get("s").await?;
    let e = api_err(secrets.replace("s", &PostParams::default(), &cur).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    secrets.replace("s", &PostParams::default(), &cur).await?;

    server.reset_stats();
    assert_eq!(server.stats().total(), 0);
    secrets.get("s").await?;
    secrets.list(&ListParams::default()).await?;
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await?;
    secrets.delete("s", &DeleteParams::default()).await?;
    let stats = server.stats();
    assert_eq!(stats.count("get", "secrets"), 1);
    assert_eq!(stats.count("list", "secrets"), 1);
    assert_eq!(stats.count_sub("patch", "secrets", ""), 1);
    assert_eq!(stats.writes(), 2);
    assert_eq!(stats.writes_for("secrets"), 2);
    assert_eq!(stats.writes_for("configmaps"), 0);
    Ok(())
}

#[tokio::test]
async fn crd_defaulting_pruning_and_validation() -> TestResult {
    let (_server, api) = with_widgets().await?;
    let w =
        api.create(&PostParams::default(), &widget("ok", json!({"size": "large", "unknown": "x"}))?).await?;
    assert_eq!(w.data["spec"]["replicas"], json!(1));
    assert!(w.data["spec"].get("unknown").is_none());

    let e = api_err(
        api.create(&PostParams::default(), &widget("bad", json!({"size": "huge", "replicas": "two"}))?).await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let mut causes: Vec<String> =
        e.details.map(|d| d.causes.into_iter().map(|c| c.field).collect()).unwrap_or_default();
    causes.sort();
    // `<nil>`: the real server's cause saying that the CEL rules were not checked on an object this invalid.
    assert_eq!(causes, ["<nil>", "spec.replicas", "spec.size"]);
    assert!(e.message.starts_with("Widget.test.example.io \"bad\" is invalid"));
    assert!(e.message.contains("<nil>: Invalid value: \"null\": some validation rules were not checked"));

    let e = api_err(api.create(&PostParams::default(), &widget("missing", json!({"color": "red"}))?).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.size: Required value"), "{}", e.message);

    let e = api_err(
        api.patch("ok", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": "medium"}}))).await,
    );
    assert_eq!(e.code, 422);
    let e = api_err(
        api.patch_status(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready"}]}})),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    Ok(())
}

#[tokio::test]
async fn crd_deletion_removes_its_objects_and_routes() -> TestResult {
    let (server, api) = with_widgets().await?;
    api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.delete("widgets.test.example.io", &DeleteParams::default()).await?;
    let e = api_err(api.get("w").await);
    assert_eq!(e.code, 404);
    crds.create(&PostParams::default(), &serde_json::from_value(widget_crd())?).await?;
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn delete_collection_and_dangling_owner_collection() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    for (name, labels) in [("a", json!({"x": "1"})), ("b", json!({"x": "1"})), ("c", json!({}))] {
        cms.create(&PostParams::default(), &configmap(name, labels)?).await?;
    }
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("x=1")).await?;
    let left: Vec<String> =
        cms.list(&ListParams::default()).await?.items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(left, ["c"]);
    assert_eq!(server.stats().count("deletecollection", "configmaps"), 1);

    // An object whose only owner does not exist is garbage from the start.
    let ghost: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "ghost", "uid": "00000000-0000-4000-8000-000000000000"}}),
    )?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets.create(&PostParams::default(), &owned_secret("orphaned", &ghost, false)?).await?;
    assert_eq!(api_err(secrets.get("orphaned").await).code, 404);
    Ok(())
}

fn causes(e: &kube::core::Status) -> Vec<(String, String)> {
    e.details.iter().flat_map(|d| d.causes.iter()).map(|c| (c.field.clone(), c.message.clone())).collect()
}

#[tokio::test]
async fn secret_type_is_immutable() -> TestResult {
    let server = ApiServer::start().await?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))?;
    let created = secrets.create(&PostParams::default(), &s).await?;
    assert_eq!(created.type_.as_deref(), Some("Opaque"), "the type defaults to Opaque");

    let e = api_err(
        secrets
            .patch("s", &PatchParams::default(), &Patch::Merge(json!({"type": "servicebinding.io/s3"})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"Secret "s" is invalid: type: Invalid value: "servicebinding.io/s3": field is immutable"#
    );
    let mut replaced = created.clone();
    replaced.type_ = Some("kubernetes.io/tls".into());
    assert_eq!(api_err(secrets.replace("s", &PostParams::default(), &replaced).await).code, 422);

    // Everything else stays writable, and the type did not move.
    secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"k": "w"}}))).await?;
    assert_eq!(secrets.get("s").await?.type_.as_deref(), Some("Opaque"));
    Ok(())
}

#[tokio::test]
async fn an_immutable_secret_keeps_its_data_and_flag_but_not_its_metadata() -> TestResult {
    let server = ApiServer::start().await?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "immutable": true, "data": {"k": "dg=="}}))?;
    secrets.create(&PostParams::default(), &s).await?;

    let e = api_err(
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "dw=="}}))).await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(causes(&e), [("data".into(), "Forbidden: field is immutable when `immutable` is set".into())]);
    let e = api_err(
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"immutable": false}))).await,
    );
    assert_eq!(causes(&e)[0].0, "immutable");
    let e = api_err(
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"new": "x"}}))).await,
    );
    assert_eq!(causes(&e)[0].0, "data", "stringData is data");

    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await?;
    assert_eq!(secrets.get("s").await?.data.map(|d| d.len()), Some(1));
    secrets.delete("s", &DeleteParams::default()).await?;
    assert!(secrets.get_opt("s").await?.is_none(), "an immutable Secret can be deleted");

    // Setting the flag is an ordinary update; the data is frozen from then on.
    let plain: Secret = serde_json::from_value(json!({"metadata": {"name": "p"}, "data": {"k": "dg=="}}))?;
    secrets.create(&PostParams::default(), &plain).await?;
    secrets
        .patch("p", &PatchParams::default(), &Patch::Merge(json!({"immutable": true, "data": {"j": "dg=="}})))
        .await?;
    let e = api_err(
        secrets.patch("p", &PatchParams::default(), &Patch::Merge(json!({"data": {"j": null}}))).await,
    );
    assert_eq!(e.code, 422);
    Ok(())
}

#[tokio::test]
async fn an_immutable_configmap_keeps_its_data_and_binary_data() -> TestResult {
    let server = ApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "c"}, "immutable": true, "data": {"k": "v"}, "binaryData": {"b": "AA=="}}),
    )?;
    cms.create(&PostParams::default(), &cm).await?;
    for (patch, field) in [
        (json!({"data": {"k": "w"}}), "data"),
        (json!({"binaryData": {"b": null}}), "binaryData"),
        (json!({"immutable": null}), "immutable"),
    ] {
        let e = api_err(cms.patch("c", &PatchParams::default(), &Patch::Merge(patch)).await);
        assert_eq!((e.code, causes(&e)[0].0.as_str()), (422, field));
        assert!(e.message.starts_with(r#"ConfigMap "c" is invalid: "#), "{}", e.message);
    }
    cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})))
        .await?;
    assert_eq!(cms.get("c").await?.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("v"));
    Ok(())
}

#[tokio::test]
async fn cel_rules_are_enforced_on_create_and_update() -> TestResult {
    let (_server, api) = with_widgets().await?;
    let e = api_err(
        api.create(
            &PostParams::default(),
            &widget("many", json!({"size": "small", "tags": ["a", "b", "c", "d"]}))?,
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"Widget.test.example.io "many" is invalid: spec: Invalid value: "object": at most three tags"#
    );
    assert!(api.get_opt("many").await?.is_none());

    api.create(&PostParams::default(), &widget("w", json!({"size": "small", "tags": ["a"]}))?).await?;
    let e = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tags": ["a", "b", "c", "d"]}})),
        )
        .await,
    );
    assert_eq!(causes(&e), [("spec".into(), r#"Invalid value: "object": at most three tags"#.into())]);
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"tags": ["a", "b", "c"]}})))
        .await?;
    Ok(())
}

#[tokio::test]
async fn cel_transition_rules_compare_with_the_stored_object() -> TestResult {
    let (_server, api) = with_widgets().await?;
    // On create there is no oldSelf: the transition rule does not run.
    api.create(&PostParams::default(), &widget("w", json!({"size": "small", "owner": "ann"}))?).await?;

    for patch in [
        Patch::Merge(json!({"spec": {"owner": "bob"}})),
        Patch::Apply(
            json!({"apiVersion": "test.example.io/v1", "kind": "Widget", "spec": {"size": "small", "owner": "bob"}}),
        ),
    ] {
        let pp = if matches!(patch, Patch::Apply(_)) {
            PatchParams::apply("t").force()
        } else {
            PatchParams::default()
        };
        let e = api_err(api.patch("w", &pp, &patch).await);
        assert_eq!(e.code, 422);
        assert_eq!(
            causes(&e),
            [("spec.owner".into(), r#"Invalid value: "string": owner is immutable"#.into())]
        );
    }
    let mut w = api.get("w").await?;
    w.data["spec"]["owner"] = json!("bob");
    assert_eq!(api_err(api.replace("w", &PostParams::default(), &w).await).code, 422);

    // Other fields, and the status subresource, stay writable.
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": "large"}}))).await?;
    api.patch_status("w", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Up"}}))).await?;
    assert_eq!(api.get("w").await?.data["spec"]["owner"], json!("ann"));
    Ok(())
}

#[tokio::test]
async fn dry_run_validates_but_stores_and_announces_nothing() -> TestResult {
    let (server, api) = with_widgets().await?;
    api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    let before = api.list(&ListParams::default()).await?.metadata.resource_version;
    let mut events = api
        .watch(&WatchParams::default().disable_bookmarks(), before.as_deref().unwrap_or("0"))
        .await?
        .boxed();

    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let made = api.create(&dry, &widget("new", json!({"size": "large"}))?).await?;
    assert_eq!(made.data["spec"]["replicas"], json!(1), "defaulted as a real create");
    assert!(api.get_opt("new").await?.is_none());
    let e = api_err(api.create(&dry, &widget("bad", json!({"size": "huge"}))?).await);
    assert_eq!(e.code, 422, "a dry run still validates");

    let pp = PatchParams { dry_run: true, ..PatchParams::default() };
    let patched = api.patch("w", &pp, &Patch::Merge(json!({"spec": {"size": "large"}}))).await?;
    assert_eq!(patched.data["spec"]["size"], json!("large"));
    let e =
        api_err(api.patch("w", &pp, &Patch::Merge(json!({"spec": {"tags": ["a", "b", "c", "d"]}}))).await);
    assert_eq!(e.code, 422, "CEL rules run on a dry run too");
    let dp = DeleteParams { dry_run: true, ..DeleteParams::default() };
    api.delete("w", &dp).await?;

    let stored = api.get("w").await?;
    assert_eq!(stored.data["spec"]["size"], json!("small"));
    assert_eq!(
        api.list(&ListParams::default()).await?.metadata.resource_version,
        before,
        "no version was used"
    );
    // Events are sent while the request holds the store lock: any would be queued already.
    let event = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(event.is_err(), "a dry run reaches no watch: {event:?}");

    let e = api_err(
        server
            .client()
            .request::<Value>(
                hyper::Request::delete("/apis/test.example.io/v1/namespaces/default/widgets/w?dryRun=Some")
                    .body(Vec::new())?,
            )
            .await,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, r#"dryRun: Unsupported value: "Some": supported values: "All""#)
    );
    Ok(())
}

#[tokio::test]
async fn strategic_merge_patch_of_secret_data() -> TestResult {
    let server = ApiServer::start().await?;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s", "labels": {"keep": "1"}}, "data": {"a": "YQ==", "b": "Yg=="}}),
    )?;
    secrets.create(&PostParams::default(), &s).await?;
    let keys = |s: &Secret| s.data.iter().flat_map(|d| d.keys().cloned()).collect::<Vec<_>>();

    // Keys merge one by one and null removes one; what the patch does not name stays.
    let s = secrets
        .patch("s", &PatchParams::default(), &Patch::Strategic(json!({"data": {"b": null, "c": "Yw=="}})))
        .await?;
    assert_eq!(keys(&s), ["a", "c"]);
    assert_eq!(s.metadata.labels.and_then(|l| l.get("keep").cloned()).as_deref(), Some("1"));

    // `$patch: replace` makes the map exactly the patch's, and no directive is stored.
    let s = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"$patch": "replace", "z": "eg=="}})),
        )
        .await?;
    assert_eq!(keys(&s), ["z"]);
    // `$patch: delete` removes the map.
    let s = secrets
        .patch("s", &PatchParams::default(), &Patch::Strategic(json!({"data": {"$patch": "delete"}})))
        .await?;
    assert!(s.data.is_none_or(|d| d.is_empty()));
    Ok(())
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() -> TestResult {
    let (server, api) = with_widgets().await?;
    // kube's PostParams sets no field validation; kubectl sends `fieldValidation=Strict`, so do as it does.
    let client = server.client();
    let body = serde_json::to_vec(&widget("w", json!({"size": "small", "extra": 1}))?)?;
    let e = api_err(
        client
            .request::<Value>(
                hyper::Request::post(
                    "/apis/test.example.io/v1/namespaces/default/widgets?fieldValidation=Strict",
                )
                .header("content-type", "application/json")
                .body(body.clone())?,
            )
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        r#"Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.extra""#
    );
    assert!(api.get_opt("w").await?.is_none());
    // Without it, the unknown field is pruned as before.
    let w = client
        .request::<Value>(
            hyper::Request::post(
                "/apis/test.example.io/v1/namespaces/default/widgets?fieldValidation=Ignore",
            )
            .header("content-type", "application/json")
            .body(body)?,
        )
        .await?;
    assert!(w["spec"].get("extra").is_none());
    Ok(())
}

async fn get_json(server: &ApiServer, path: &str, accept: &str) -> Result<Value, kube::Error> {
    server
        .client()
        .request::<Value>(
            hyper::Request::get(path)
                .header("accept", accept)
                .body(Vec::new())
                .map_err(kube::Error::HttpError)?,
        )
        .await
}

#[tokio::test]
async fn discovery_lists_categories_and_short_names() -> TestResult {
    let (server, _api) = with_widgets().await?;
    let list = get_json(&server, "/apis/test.example.io/v1", "application/json").await?;
    let widgets = &list["resources"][0];
    assert_eq!((widgets["name"].as_str(), &widgets["categories"]), (Some("widgets"), &json!(["toys"])));
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    let apps = get_json(&server, "/apis/apps/v1", "application/json").await?;
    assert_eq!(apps["resources"][0]["name"], json!("deployments"), "examples' Deployments can be applied");
    Ok(())
}

#[tokio::test]
async fn tables_print_the_crd_columns() -> TestResult {
    let (server, api) = with_widgets().await?;
    api.create(&PostParams::default(), &widget("a", json!({"size": "small"}))?).await?;
    api.create(&PostParams::default(), &widget("b", json!({"size": "large", "replicas": 3}))?).await?;
    api.patch_status(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await?;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let table = get_json(&server, "/apis/test.example.io/v1/namespaces/default/widgets", accept).await?;
    assert_eq!(
        (table["kind"].as_str(), table["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["Name", "Size", "Replicas", "Ready", "Age"]);
    let rows: Vec<&Value> = table["rows"].as_array().into_iter().flatten().map(|r| &r["cells"]).collect();
    assert_eq!(
        rows[0].as_array().map(|c| &c[..4]),
        Some(&[json!("a"), json!("small"), json!(1), Value::Null][..])
    );
    assert_eq!(
        rows[1].as_array().map(|c| &c[..4]),
        Some(&[json!("b"), json!("large"), json!(3), json!("True")][..])
    );
    assert!(rows[1][4].as_str().is_some_and(|age| age.ends_with('s')), "a date is printed as an age");
    assert_eq!(table["rows"][0]["object"]["kind"], json!("PartialObjectMetadata"));

    let one = get_json(&server, "/apis/test.example.io/v1/namespaces/default/widgets/b", accept).await?;
    assert_eq!(one["rows"].as_array().map(Vec::len), Some(1));
    let plain = get_json(&server, "/api/v1/namespaces/default", accept).await?;
    assert_eq!(plain["columnDefinitions"][1]["name"], json!("Created At"), "built-in kinds: name and age");
    let json = get_json(&server, "/apis/test.example.io/v1/namespaces/default/widgets/b", "application/json")
        .await?;
    assert_eq!(json["kind"], json!("Widget"), "only a Table request gets a Table");
    Ok(())
}

#[tokio::test]
async fn openapi_v3_describes_custom_resources_and_field_validation() -> TestResult {
    let (server, _api) = with_widgets().await?;
    let index = get_json(&server, "/openapi/v3", "application/json").await?;
    let url = index["paths"]["apis/test.example.io/v1"]["serverRelativeURL"].as_str().unwrap_or_default();
    assert!(url.starts_with("/openapi/v3/apis/test.example.io/v1?hash="), "{index}");
    let doc = get_json(&server, url, "application/json").await?;
    let schema = &doc["components"]["schemas"]["io.example.test.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "test.example.io", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(schema["properties"]["spec"]["properties"]["size"]["enum"], json!(["small", "large"]));
    assert!(
        schema["properties"]["metadata"]["allOf"][0]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("ObjectMeta"))
    );
    // kubectl sends fieldValidation=Strict only when a kind's PATCH operation lists the parameter.
    let patch = &doc["paths"]["/apis/test.example.io/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], json!("Widget"));
    let params: Vec<&str> =
        patch["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert!(params.contains(&"fieldValidation"), "{params:?}");
    let e = api_err(get_json(&server, "/openapi/v3/apis/nothing.example.io/v1", "application/json").await);
    assert_eq!(e.code, 404);
    Ok(())
}

#[tokio::test]
async fn server_side_apply_removes_a_map_whose_last_field_is_dropped() -> TestResult {
    let server = ApiServer::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let apply = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": data});
    api.patch("m", &PatchParams::apply("alice"), &Patch::Apply(apply(json!({"k": "v"})))).await?;
    let dropped = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}});
    let m = api.patch("m", &PatchParams::apply("alice"), &Patch::Apply(dropped)).await?;
    assert_eq!(m.data, None, "the emptied map goes with its last field, as upstream");
    // A map the applier still sends, even empty, stays.
    let m = api.patch("m", &PatchParams::apply("alice"), &Patch::Apply(apply(json!({})))).await?;
    assert!(m.data.is_none_or(|d| d.is_empty()));
    Ok(())
}

#[tokio::test]
async fn metadata_only_get_list_and_watch_carry_no_data() -> TestResult {
    let server = ApiServer::start().await?;
    let client = server.client();
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s", "labels": {"a": "b"}},
        "stringData": {"password": "hunter2"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let metadata = Api::<kube::core::PartialObjectMeta<Secret>>::namespaced(client.clone(), "default");
    let one = metadata.get("s").await?;
    assert_eq!(one.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    assert_eq!(one.metadata.labels.as_ref().and_then(|l| l.get("a")).map(String::as_str), Some("b"));
    let list = metadata.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.types.kind, "PartialObjectMetadataList");

    // The raw bytes: no data (managedFields name the keys, as upstream, never their values).
    let request = hyper::http::Request::get("/api/v1/namespaces/default/secrets")
        .header("accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        .body(Vec::new())?;
    let text = client.request_text(request).await?;
    assert!(!text.contains("aHVudGVyMg") && !text.contains("\"data\":"), "{text}");
    let mut events = metadata.watch(&WatchParams::default(), "0").await?.boxed();
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"password": "2"}})))
        .await?;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        match event? {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                seen.push(o.types.map(|t| t.kind).unwrap_or_default());
                if seen.len() == 2 {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["PartialObjectMetadata", "PartialObjectMetadata"]);
    Ok(())
}

#[tokio::test]
async fn server_side_apply_of_an_undeclared_field_is_refused_as_upstream_does() -> TestResult {
    let (_server, api) = with_widgets().await?;
    api.create(&PostParams::default(), &widget("w", json!({"size": "small"}))?).await?;
    let status = |status: Value| -> Result<DynamicObject, serde_json::Error> {
        serde_json::from_value(json!({"apiVersion": "test.example.io/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "status": status}))
    };
    // A real kube-apiserver types the applied object first: one undeclared field fails the whole request,
    // with no reason, naming the object as the applied body does (here without a name).
    let e = api_err(
        api.patch_status(
            "w",
            &PatchParams::apply("ctrl").force(),
            &Patch::Apply(status(json!({"phase": "Up", "bucketName": "b"}))?),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (500, ""));
    assert_eq!(
        e.message,
        "failed to create typed patch object (/w; test.example.io/v1, Kind=Widget): \
         .status.bucketName: field not declared in schema"
    );
    // Of several, it names the first.
    let e = api_err(
        api.patch(
            "w",
            &PatchParams::apply("ctrl"),
            &Patch::Apply(widget("w", json!({"size": "small", "extra": 1, "more": 2}))?),
        )
        .await,
    );
    assert_eq!(
        e.message,
        "failed to create typed patch object (/w; test.example.io/v1, Kind=Widget): .spec.extra: field not declared in schema"
    );
    let w = api.get("w").await?;
    assert!(w.data.get("status").is_none_or(|s| s.get("phase").is_none()), "nothing was written: {w:?}");
    // A merge patch of the same field is pruned, as upstream.
    let w = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Up", "bucketName": "b"}})),
        )
        .await?;
    assert_eq!(w.data["status"], json!({"phase": "Up"}));
    Ok(())
}

/// A protobuf body (what `kubectl create namespace` sends) is a 415 that says what to use instead, not a
/// JSON parse error about "line 1 column 1".
#[tokio::test]
async fn a_protobuf_body_is_unsupported_media_type() -> TestResult {
    let server = ApiServer::start().await?;
    let client = server.client();
    // The envelope's magic number, then an `Unknown` message; the server needs to read no further.
    let request = hyper::http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09Namespace".to_vec())?;
    let e = api_err(client.request_text(request).await);
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(
        e.message.contains("does not read protobuf") && e.message.contains("kubectl apply -f"),
        "{}",
        e.message
    );
    server.shutdown().await;
    Ok(())
}
