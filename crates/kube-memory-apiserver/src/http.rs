//! HTTP/1.1 front end: URL routing, query parsing, verbs, responses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::error::ApiError;
use super::faults::RequestInfo;
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::store::{PatchKind, Scope, WriteOptions};
use super::watch::{self, WatchParams};
use super::{Body, Shared};
use super::{metadata, openapi, table};

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).map_err(|never: Infallible| match never {}).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// `includeObject` of a Table request: `None`, `Object` or (the default) `Metadata`.
fn include_object(q: &HashMap<String, String>) -> &str {
    q.get("includeObject").map(String::as_str).unwrap_or("Metadata")
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn version_json() -> Value {
    json!({
        "major": "1",
        "minor": "28",
        "gitVersion": "v1.28.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2023-08-15T00:00:00Z",
        "goVersion": "go1.20.7",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/openapi/v2`: an empty document. kubectl up to 1.29 loads it before validating anything and
/// reads only protobuf there; what it then checks comes from `/openapi/v3` (see [`openapi`]).
fn openapi_v2(accept: &str) -> Response<Body> {
    if !accept.contains("protobuf") {
        return json_response(
            200,
            &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.28.0"}, "paths": {}}),
        );
    }
    // gnostic `openapi_v2.Document` with field 1 (`swagger`) = "2.0".
    let mut r = Response::new(full(b"\x0a\x032.0".to_vec()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
    );
    r
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!("reading body: {e}"))));
        }
    };
    let query = parse_query(parts.uri.query());
    let header =
        |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query,
        content_type: header("content-type"),
        accept: header("accept"),
        user_agent: header("user-agent"),
        body: body.to_vec(),
    };
    tracing::debug!(method = %req.method, path = %req.path, "apiserver request");
    Ok(match route(&shared, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    })
}

struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: String,
    accept: String,
    user_agent: String,
    body: Vec<u8>,
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery = |v: Option<Value>| v.map(|v| json_response(200, &v)).ok_or_else(ApiError::no_route);
    match segs.as_slice() {
        ["version"] => Ok(json_response(200, &version_json())),
        ["healthz" | "readyz" | "livez"] => {
            let mut r = Response::new(full(b"ok".to_vec()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        ["api"] => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        )),
        ["apis"] => Ok(json_response(200, &shared.lock().registry.group_list())),
        ["api", "v1"] => discovery(shared.lock().registry.resource_list("", "v1")),
        ["apis", g] => discovery(shared.lock().registry.group(g)),
        ["apis", g, v] => discovery(shared.lock().registry.resource_list(g, v)),
        ["api", "v1", rest @ ..] => resource(shared, req, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(shared, req, g, v, rest),
        ["openapi", "v2"] => Ok(openapi_v2(&req.accept)),
        ["openapi", "v3"] => Ok(json_response(200, &openapi::index(&shared.lock().registry))),
        ["openapi", "v3", "api", "v1"] => discovery(openapi::document(&shared.lock().registry, "", "v1")),
        ["openapi", "v3", "apis", g, v] => discovery(openapi::document(&shared.lock().registry, g, v)),
        _ => Err(ApiError::no_route()),
    }
}

fn resource(
    shared: &Arc<Shared>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let (ns, plural, name, sub) = match rest {
        ["namespaces", n, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", Some(*n), Some(*sub))
        }
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route()),
    };
    let rt = shared.lock().registry.lookup(group, version, plural).ok_or_else(ApiError::no_route)?;
    if (!rt.namespaced && ns.is_some()) || (rt.namespaced && ns.is_none() && name.is_some()) {
        return Err(ApiError::no_route());
    }
    match sub {
        None => {}
        Some("status") if rt.status_subresource => {}
        Some("finalize") if rt.is_namespace() => {}
        Some(_) => return Err(ApiError::no_route()),
    }
    let q = &req.query;
    let verb = match (&req.method, name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if truthy(q, "watch") => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let info = RequestInfo {
        verb: verb.to_string(),
        resource: rt.plural.clone(),
        subresource: sub.unwrap_or_default().to_string(),
        namespace: ns.unwrap_or_default().to_string(),
        name: name.unwrap_or_default().to_string(),
    };
    shared.count(&info);
    if let Some(code) = shared.faults.take(&info) {
        return Err(ApiError::injected(code));
    }
    let selectors = || -> Result<Selectors, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
            fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
        })
    };
    let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
        let ua = req.user_agent.split('/').next().unwrap_or_default();
        if ua.is_empty() { "unknown".into() } else { ua.to_string() }
    });
    let body_json = || -> Result<Value, ApiError> {
        // kubectl's typed commands (`create namespace`, `create secret`) send built-in kinds as protobuf.
        if req.body.starts_with(b"k8s\0") {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml (this in-memory API server does not read protobuf, which \
                 kubectl create sends for built-in kinds; kubectl apply -f sends JSON)",
            ));
        }
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded: {e}")))
    };
    let write = WriteOptions {
        dry_run: match q.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                )));
            }
        },
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let name = name.unwrap_or_default();
    match verb {
        "get" => {
            let obj = shared.lock().get(&rt, ns, name)?;
            if table::wanted(&req.accept) {
                let meta = json!({ "resourceVersion": obj.pointer("/metadata/resourceVersion") });
                return Ok(json_response(200, &table::table(&rt, &[obj], meta, include_object(q))));
            }
            if metadata::wanted(&req.accept, "PartialObjectMetadata") {
                return Ok(json_response(200, &metadata::partial(&obj)));
            }
            Ok(json_response(200, &obj))
        }
        "list" => {
            let sel = selectors()?;
            let limit = match q.get("limit").filter(|l| !l.is_empty()) {
                Some(l) => {
                    Some(l.parse::<usize>().map_err(|_| ApiError::bad_request("limit must be an integer"))?)
                }
                None => None,
            };
            let list = {
                let st = shared.lock();
                let scope = Scope { rt: &rt, namespace: ns, selectors: &sel };
                st.list(&scope, limit, q.get("continue").map(String::as_str))?
            };
            if table::wanted(&req.accept) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let meta = list["metadata"].clone();
                return Ok(json_response(200, &table::table(&rt, &items, meta, include_object(q))));
            }
            if metadata::wanted(&req.accept, "PartialObjectMetadataList") {
                return Ok(json_response(200, &metadata::partial_list(&list)));
            }
            Ok(json_response(200, &list))
        }
        "watch" => {
            let sel = selectors()?;
            let from = match q.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(rv) => Some(
                    rv.parse::<u64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
                ),
            };
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .map(Duration::from_secs);
            let params = WatchParams {
                from,
                send_initial_events: truthy(q, "sendInitialEvents"),
                bookmarks: truthy(q, "allowWatchBookmarks"),
                timeout,
                metadata_only: metadata::wanted(&req.accept, "PartialObjectMetadata"),
            };
            let body = watch::open(shared, rt.clone(), ns.map(str::to_string), sel, params);
            let mut r = Response::new(body);
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        "create" => {
            let body = body_json()?;
            let obj = shared.lock().write(write, |st| {
                let obj = st.create(&rt, ns, body, super::store::Mgr::Update(&manager))?;
                // A dependent whose owners are all gone is collected, as upstream.
                st.collect_garbage();
                Ok(obj)
            })?;
            Ok(json_response(201, &obj))
        }
        "update" => {
            let body = body_json()?;
            let obj = shared.lock().write(write, |st| st.update(&rt, ns, name, sub, body, &manager))?;
            Ok(json_response(200, &obj))
        }
        "patch" => {
            let ct = req.content_type.split(';').next().unwrap_or_default().trim();
            let kind = match ct {
                "application/json-patch+json" => PatchKind::Json,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" => PatchKind::Apply,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                        ),
                    ));
                }
            };
            let manager_opt = if kind == PatchKind::Apply {
                q.get("fieldManager").map(String::as_str)
            } else {
                Some(manager.as_str())
            };
            let force = truthy(q, "force");
            let (obj, created) = shared
                .lock()
                .write(write, |st| st.patch(&rt, ns, name, sub, kind, &req.body, manager_opt, force))?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        "delete" | "deletecollection" => {
            let mut options =
                if req.body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { body_json()? };
            if let Some(p) = q.get("propagationPolicy") {
                options["propagationPolicy"] = json!(p);
            }
            // DeleteOptions may carry the dry run in the body instead of the query.
            let mut write = write;
            match options.get("dryRun").and_then(Value::as_array).map(Vec::as_slice) {
                None | Some([]) => {}
                Some([v]) if v == "All" => write.dry_run = true,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "dryRun: Unsupported value: {}: supported values: \"All\"",
                        Value::Array(other.to_vec())
                    )));
                }
            }
            if verb == "delete" {
                Ok(json_response(200, &shared.lock().write(write, |st| st.delete(&rt, ns, name, &options))?))
            } else {
                let sel = selectors()?;
                let scope = Scope { rt: &rt, namespace: ns, selectors: &sel };
                Ok(json_response(
                    200,
                    &shared.lock().write(write, |st| st.delete_collection(&scope, &options))?,
                ))
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
