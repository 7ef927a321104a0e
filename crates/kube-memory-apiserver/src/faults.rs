//! Fault injection and request statistics, for tests of a controller's error handling and
//! of how many writes it makes.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Which requests a fault applies to. Unset parts match anything (so a matcher without a
/// subresource also matches `/status` requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMatcher {
    verb: Option<String>,
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl RequestMatcher {
    /// Matches one verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub fn verb(verb: &str) -> Self {
        RequestMatcher {
            verb: Some(verb.to_string()),
            resource: None,
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    /// Matches every resource request.
    pub fn any() -> Self {
        RequestMatcher { verb: None, resource: None, subresource: None, namespace: None, name: None }
    }

    /// Resource plural, e.g. `secrets`.
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.to_string());
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    fn matches(&self, r: &RequestInfo) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.verb, &r.verb)
            && ok(&self.resource, &r.resource)
            && ok(&self.subresource, &r.subresource)
            && ok(&self.namespace, &r.namespace)
            && ok(&self.name, &r.name)
    }
}

/// What the router learned about a resource request.
#[derive(Debug, Clone, Default)]
pub(super) struct RequestInfo {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug)]
struct Rule {
    remaining: usize,
    matcher: RequestMatcher,
    status: u16,
}

/// Fault injection handle (`ApiServer::faults`).
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Faults {
    pub(super) fn new() -> Faults {
        Faults { rules: Mutex::new(Vec::new()), cut: tokio::sync::watch::Sender::new(0) }
    }

    /// The next `n` requests matching `matcher` fail with `status` (as a Kubernetes
    /// `Status`: 409 Conflict, 429 TooManyRequests with Retry-After, 500 InternalError…).
    pub fn fail_next(&self, n: usize, matcher: RequestMatcher, status: u16) {
        if n == 0 {
            return;
        }
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(Rule { remaining: n, matcher, status });
    }

    /// Forgets every pending fault.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Ends every open watch stream abruptly; clients must re-watch.
    pub fn cut_watches(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    pub(super) fn cut_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cut.subscribe()
    }

    /// Consumes one matching fault, if any.
    pub(super) fn take(&self, r: &RequestInfo) -> Option<u16> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules.iter().position(|x| x.matcher.matches(r))?;
        let status = rules[idx].status;
        rules[idx].remaining -= 1;
        if rules[idx].remaining == 0 {
            rules.remove(idx);
        }
        Some(status)
    }
}

/// `(verb, resource plural, subresource)`; subresource is `""` for the main resource.
pub type StatKey = (String, String, String);

/// A snapshot of request counts (`ApiServer::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub counts: BTreeMap<StatKey, u64>,
}

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl RequestStats {
    /// Requests with this verb on this resource (any subresource).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counts.iter().filter(|((v, r, _), _)| v == verb && r == resource).map(|(_, n)| n).sum()
    }

    /// Requests with this verb on this resource and subresource (`""` for the main one).
    pub fn count_sub(&self, verb: &str, resource: &str, sub: &str) -> u64 {
        self.counts.get(&(verb.to_string(), resource.to_string(), sub.to_string())).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// create/update/patch/delete requests of every resource.
    pub fn writes(&self) -> u64 {
        self.counts.iter().filter(|((v, _, _), _)| WRITE_VERBS.contains(&v.as_str())).map(|(_, n)| n).sum()
    }

    /// create/update/patch/delete requests of one resource (plural).
    pub fn writes_for(&self, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((v, r, _), _)| WRITE_VERBS.contains(&v.as_str()) && r == resource)
            .map(|(_, n)| n)
            .sum()
    }
}
