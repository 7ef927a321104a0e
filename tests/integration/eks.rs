//! A fake of the EKS API's Pod Identity associations, for the keyless tests: moto 5.2.5 serves EKS clusters
//! but not `*PodIdentityAssociation*`. It keeps associations as EKS does (one per cluster, namespace and
//! ServiceAccount; `ResourceInUseException` for a second, `ResourceNotFoundException` for an unknown
//! cluster or id), answers in EKS's REST-JSON shapes (the SDK's own deserializers read them), and records
//! every request, refusing any not signed with SigV4 for the `eks` service. What it cannot show: EKS's
//! own checks of the role (that it exists, `iam:PassRole`) and the Pod Identity agent handing the role to
//! pods; the keyless tests assume the role through moto's STS instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// One association as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Association {
    pub(crate) id: String,
    pub(crate) cluster: String,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) role_arn: String,
    pub(crate) tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    associations: BTreeMap<String, Association>,
    /// `METHOD path` of every request, in order.
    requests: Vec<String>,
    next: u32,
}

/// The fake EKS endpoint, serving one cluster.
#[derive(Clone)]
pub(crate) struct FakeEks {
    pub(crate) url: String,
    state: Arc<Mutex<State>>,
}

impl FakeEks {
    /// Starts serving cluster `cluster` on a free port.
    pub(crate) async fn start(cluster: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let fake = FakeEks { url, state: Arc::default() };
        let (served, cluster) = (fake.clone(), cluster.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (fake, cluster) = (served.clone(), cluster.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (fake, cluster) = (fake.clone(), cluster.clone());
                        async move { Ok::<_, std::convert::Infallible>(fake.answer(&cluster, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    /// The controller's EKS client pointed at this fake.
    pub(crate) fn client(&self, like: &aws_sdk_eks::Client) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::from_conf(like.config().to_builder().endpoint_url(&self.url).build())
    }

    /// Every association, as EKS would list them.
    pub(crate) fn associations(&self) -> Vec<Association> {
        self.state.lock().expect("state").associations.values().cloned().collect()
    }

    /// Makes an association as someone else would (the platform team, another tool).
    pub(crate) fn associate(&self, cluster: &str, namespace: &str, service_account: &str, role_arn: &str) {
        let mut state = self.state.lock().expect("state");
        let id = state.new_id();
        let association = Association {
            id: id.clone(),
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            role_arn: role_arn.to_owned(),
            tags: BTreeMap::new(),
        };
        state.associations.insert(id, association);
    }

    /// Deletes an association as its owner would.
    pub(crate) fn dissociate(&self, id: &str) {
        self.state.lock().expect("state").associations.remove(id);
    }

    /// The requests whose `METHOD path` starts with `prefix`.
    pub(crate) fn requests(&self, method: &str) -> usize {
        self.state.lock().expect("state").requests.iter().filter(|r| r.starts_with(method)).count()
    }

    async fn answer(&self, cluster: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let query: BTreeMap<String, String> = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let signed_for_eks = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 ") && v.contains("/eks/aws4_request"));
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut state = self.state.lock().expect("state");
        state.requests.push(format!("{method} {path}"));
        if !signed_for_eks {
            return error(403, "AccessDeniedException", "the request is not signed for eks");
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (named, id) = match parts.as_slice() {
            ["clusters", name, "pod-identity-associations"] => (*name, None),
            ["clusters", name, "pod-identity-associations", id] => (*name, Some(*id)),
            _ => return error(404, "NotFoundException", "no such operation in this fake"),
        };
        if named != cluster {
            return error(404, "ResourceNotFoundException", &format!("No cluster found for name: {named}."));
        }
        match (method.as_str(), id) {
            ("GET", None) => {
                let listed: Vec<Value> = state
                    .associations
                    .values()
                    .filter(|a| a.cluster == cluster)
                    .filter(|a| query.get("namespace").is_none_or(|n| *n == a.namespace))
                    .filter(|a| query.get("serviceAccount").is_none_or(|s| *s == a.service_account))
                    .map(|a| {
                        json!({"clusterName": a.cluster, "namespace": a.namespace,
                               "serviceAccount": a.service_account, "associationId": a.id,
                               "associationArn": arn(a)})
                    })
                    .collect();
                ok(json!({"associations": listed}))
            }
            ("POST", None) => {
                let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
                let (namespace, service_account) = (field("namespace"), field("serviceAccount"));
                if state.associations.values().any(|a| {
                    a.cluster == cluster && a.namespace == namespace && a.service_account == service_account
                }) {
                    return error(409, "ResourceInUseException", "Association already exists");
                }
                let id = state.new_id();
                let tags = body["tags"]
                    .as_object()
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let association = Association {
                    id: id.clone(),
                    cluster: cluster.to_owned(),
                    namespace,
                    service_account,
                    role_arn: field("roleArn"),
                    tags,
                };
                state.associations.insert(id, association.clone());
                ok(json!({"association": full(&association)}))
            }
            (method, Some(id)) => {
                let Some(association) = state.associations.get_mut(id) else {
                    return error(404, "ResourceNotFoundException", &format!("Association {id} not found"));
                };
                match method {
                    "GET" => ok(json!({"association": full(association)})),
                    "POST" => {
                        if let Some(role) = body["roleArn"].as_str() {
                            association.role_arn = role.to_owned();
                        }
                        ok(json!({"association": full(association)}))
                    }
                    "DELETE" => {
                        let gone = full(association);
                        state.associations.remove(id);
                        ok(json!({"association": gone}))
                    }
                    _ => error(405, "InvalidRequestException", "method"),
                }
            }
            _ => error(405, "InvalidRequestException", "method"),
        }
    }
}

impl State {
    fn new_id(&mut self) -> String {
        self.next += 1;
        format!("a-{:017}", self.next)
    }
}

fn arn(a: &Association) -> String {
    format!("arn:aws:eks:eu-west-2:123456789012:podidentityassociation/{}/{}", a.cluster, a.id)
}

fn full(a: &Association) -> Value {
    json!({"clusterName": a.cluster, "namespace": a.namespace, "serviceAccount": a.service_account,
           "roleArn": a.role_arn, "associationArn": arn(a), "associationId": a.id, "tags": a.tags})
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    response
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = ok(json!({"message": message}));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert("x-amzn-errortype", code.parse().expect("header"));
    response
}
