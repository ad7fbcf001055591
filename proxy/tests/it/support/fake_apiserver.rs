//! A fake Kubernetes API server for tests: real HTTP on loopback, the real wire protocol.
//!
//! It serves what sluice's kube-rs client asks for, in the shapes the real API server uses:
//!
//! - LIST of a collection (all namespaces or one), with `labelSelector` (`k`, `k=v`, `k!=v`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`, `type`), `limit` and `continue`;
//!   the list carries the current `resourceVersion`.
//! - WATCH (`watch=true`) from a `resourceVersion`: the retained history after it, then live
//!   events, as newline-delimited JSON in a chunked response (`ADDED`, `MODIFIED`, `DELETED`,
//!   `BOOKMARK` when `allowWatchBookmarks=true`); a `resourceVersion` older than the retained
//!   history gets one `ERROR` event carrying a 410 `Expired` Status, as etcd compaction causes.
//!   `timeoutSeconds` ends the stream.
//! - GET, POST (with `generateName`), PUT (409 on a stale `resourceVersion`), merge PATCH (also
//!   used for strategic-merge and apply patches; the `/status` subresource patches only
//!   `status`), DELETE; Status bodies for 404, 409 and 400.
//!
//! Test controls: [`FakeApiServer::apply`] and [`FakeApiServer::delete`] change objects while
//! watches are open; [`FakeApiServer::drop_watches`] ends every watch; [`FakeApiServer::compact`]
//! forgets history (re-watches get 410); [`FakeApiServer::set_available`] takes the server away
//! (connections are closed at once) and back on the same port. Counters and a log of writes let
//! tests assert what the client did.
//!
//! Not implemented: discovery documents (typed kube-rs clients do not read them), protobuf,
//! server-side apply field management, admission, RBAC.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

/// Events kept for re-watching from an older resourceVersion.
const HISTORY: usize = 10_000;
/// Interval between BOOKMARK events on watches that asked for them.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

/// (apiVersion, kind, plural, namespaced) of every resource served.
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "Service", "services", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Node", "nodes", false),
    ("v1", "Event", "events", true),
    ("v1", "Namespace", "namespaces", false),
    ("networking.k8s.io/v1", "Ingress", "ingresses", true),
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        false,
    ),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    ("events.k8s.io/v1", "Event", "events", true),
];

/// A request that changed something, for assertions.
#[derive(Debug, Clone)]
pub struct Write {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    /// `apiVersion/plural`
    resource: String,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// (`apiVersion/plural`, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<WatchEvent>,
    /// Watches from a resourceVersion below this get 410: history before it is gone.
    oldest_rv: u64,
    lists: HashMap<String, usize>,
    watches: HashMap<String, usize>,
    writes: Vec<Write>,
    next_name: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
    /// Bumped to end every open watch.
    epoch: watch::Sender<u64>,
    available: watch::Sender<bool>,
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.available.send_replace(false);
    }
}

fn resource_of(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)
        .map(|(_, _, p, n)| (*p, *n))
}

fn kind_of(api_version: &str, plural: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(v, _, p, _)| *v == api_version && *p == plural)
        .map(|(_, k, _, n)| (*k, *n))
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn status(code: u16, reason: &str, message: &str) -> Response<BoxBody> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn json_response(code: u16, v: &Value) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Parsed request path: resource (`apiVersion/plural`), namespace, name, subresource.
struct Target {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (plural.to_string(), None, false),
        [plural, name] => (plural.to_string(), Some(name.to_string()), false),
        [plural, name, "status"] => (plural.to_string(), Some(name.to_string()), true),
        _ => return None,
    };
    Some(Target {
        api_version,
        plural,
        namespace,
        name,
        status,
    })
}

fn query(uri: &hyper::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `obj` matches the selectors of a list or watch.
fn selected(obj: &Value, namespace: Option<&str>, q: &HashMap<String, String>) -> bool {
    if let Some(ns) = namespace {
        if obj["metadata"]["namespace"].as_str().unwrap_or("") != ns {
            return false;
        }
    }
    if let Some(sel) = q.get("labelSelector").filter(|s| !s.is_empty()) {
        let labels = &obj["metadata"]["labels"];
        for term in sel.split(',') {
            let ok = if let Some((k, v)) = term.split_once("!=") {
                labels[k].as_str() != Some(v)
            } else if let Some((k, v)) = term.split_once('=') {
                labels[k.trim_end_matches('=')].as_str() == Some(v)
            } else {
                labels.get(term).is_some()
            };
            if !ok {
                return false;
            }
        }
    }
    if let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty()) {
        for term in sel.split(',') {
            let Some((k, v)) = term.split_once('=') else {
                return false;
            };
            let (k, v, negate) = match k.strip_suffix('!') {
                Some(k) => (k, v, true),
                None => (k, v.trim_start_matches('='), false),
            };
            let actual = match k {
                "metadata.name" => obj["metadata"]["name"].as_str(),
                "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
                "type" => obj["type"].as_str(),
                _ => None,
            };
            if (actual == Some(v)) == negate {
                return false;
            }
        }
    }
    true
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, shared_events: &broadcast::Sender<WatchEvent>, ev: WatchEvent) {
        self.history.push(ev.clone());
        if self.history.len() > HISTORY {
            let cut = self.history.len() - HISTORY;
            self.history.drain(..cut);
            self.oldest_rv = self.history.first().map(|e| e.rv - 1).unwrap_or(self.rv);
        }
        let _ = shared_events.send(ev);
    }
}

impl FakeApiServer {
    /// Starts on 127.0.0.1, port 0.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1,
                oldest_rv: 0,
                ..Default::default()
            }),
            events,
            epoch: watch::channel(0).0,
            available: watch::channel(true).0,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if !*s.available.borrow() {
                    drop(stream); // away: refuse by closing at once
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let mut away = s.available.subscribe();
                    let svc = hyper::service::service_fn({
                        let s = s.clone();
                        move |req| {
                            let s = s.clone();
                            async move { Ok::<_, Infallible>(handle(&s, req).await) }
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = went_away(&mut away) => {}
                    }
                });
            }
        });
        FakeApiServer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context points at this server (no credentials).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             users:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.read_timeout = Some(Duration::from_secs(30));
        kube::Client::try_from(config).unwrap()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.shared.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Creates or replaces an object (by apiVersion, kind, namespace and name), as a client
    /// would; watchers see ADDED or MODIFIED.
    pub fn apply(&self, mut obj: Value) {
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let (plural, namespaced) = resource_of(&api_version, &kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"));
        let resource = format!("{api_version}/{plural}");
        let ns = if namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let events = self.shared.events.clone();
        self.with(|i| {
            let key = (resource.clone(), ns.clone(), name.clone());
            let previous = i.objects.get(&key).cloned();
            let rv = i.bump();
            stamp(&mut obj, &ns, namespaced, rv, previous.as_ref());
            let type_ = if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            i.objects.insert(key, obj.clone());
            i.record(
                &events,
                WatchEvent {
                    rv,
                    resource,
                    type_,
                    object: obj,
                },
            );
        });
    }

    /// Deletes an object; watchers see DELETED.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        self.remove(api_version, kind, ns, name, true);
    }

    /// Deletes an object without any watch event (as if the event fell into compacted history).
    pub fn delete_silently(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        self.remove(api_version, kind, ns, name, false);
    }

    fn remove(&self, api_version: &str, kind: &str, ns: &str, name: &str, announce: bool) {
        let Some((plural, namespaced)) = resource_of(api_version, kind) else {
            return;
        };
        let resource = format!("{api_version}/{plural}");
        let ns = if namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        let events = self.shared.events.clone();
        self.with(|i| {
            if let Some(mut obj) = i.objects.remove(&(resource.clone(), ns, name.to_string())) {
                let rv = i.bump();
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                if announce {
                    i.record(
                        &events,
                        WatchEvent {
                            rv,
                            resource,
                            type_: "DELETED",
                            object: obj,
                        },
                    );
                } else {
                    i.oldest_rv = rv;
                    i.history.clear();
                }
            }
        });
    }

    /// One object, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let (plural, namespaced) = resource_of(api_version, kind)?;
        let ns = if namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        self.with(|i| {
            i.objects
                .get(&(format!("{api_version}/{plural}"), ns, name.to_string()))
                .cloned()
        })
    }

    /// Every object of a kind (of any API group).
    pub fn list(&self, kind: &str) -> Vec<Value> {
        self.with(|i| {
            i.objects
                .values()
                .filter(|o| o["kind"] == kind)
                .cloned()
                .collect()
        })
    }

    /// Ends every open watch; clients must watch again.
    pub fn drop_watches(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the event history: a watch from any earlier resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        self.with(|i| {
            i.history.clear();
            i.oldest_rv = i.bump();
        });
    }

    /// Takes the server away (every connection is closed, new ones are closed at once) or
    /// brings it back on the same port.
    pub fn set_available(&self, up: bool) {
        // `send_replace` updates the value even when no connection is listening.
        self.shared.available.send_replace(up);
    }

    /// LIST requests served for a resource plural (all groups).
    pub fn list_count(&self, plural: &str) -> usize {
        self.with(|i| i.lists.get(plural).copied().unwrap_or(0))
    }

    /// WATCH requests served for a resource plural (all groups).
    pub fn watch_count(&self, plural: &str) -> usize {
        self.with(|i| i.watches.get(plural).copied().unwrap_or(0))
    }

    /// Every POST, PUT, PATCH and DELETE received, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.with(|i| i.writes.clone())
    }
}

/// Resolves when the server is taken away.
async fn went_away(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|up| !*up).await.map(|_| ());
}

/// Sets the server-owned metadata of an object being stored.
fn stamp(obj: &mut Value, ns: &str, namespaced: bool, rv: u64, previous: Option<&Value>) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let m = &mut obj["metadata"];
    if namespaced {
        m["namespace"] = json!(ns);
    }
    m["resourceVersion"] = json!(rv.to_string());
    let (uid, created) = match previous {
        Some(p) => (
            p["metadata"]["uid"].clone(),
            p["metadata"]["creationTimestamp"].clone(),
        ),
        None => (json!(format!("uid-{rv}")), json!(now_rfc3339())),
    };
    if m["uid"].is_null() {
        m["uid"] = uid;
    }
    if m["creationTimestamp"].is_null() {
        m["creationTimestamp"] = created;
    }
    if let Some(map) = m.as_object_mut() {
        map.remove("managedFields");
    }
}

async fn handle(s: &Arc<Shared>, req: Request<Incoming>) -> Response<BoxBody> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(400, "BadRequest", "unreadable body"),
    };
    let Some(t) = parse_path(&path) else {
        return status(404, "NotFound", &format!("no such path {path}"));
    };
    let Some((kind, namespaced)) = kind_of(&t.api_version, &t.plural) else {
        return status(
            404,
            "NotFound",
            &format!("no resource {}/{}", t.api_version, t.plural),
        );
    };
    let resource = format!("{}/{}", t.api_version, t.plural);
    let q = query(&uri);
    let body_json: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status(400, "BadRequest", &format!("body is not JSON: {e}")),
        }
    };
    if method != Method::GET {
        let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.writes.push(Write {
            method: method.to_string(),
            path: path.clone(),
            body: body_json.clone(),
        });
    }
    let ns = if namespaced {
        t.namespace.clone()
    } else {
        None
    };
    match (&method, &t.name) {
        (&Method::GET, None)
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch_response(s, &t, &resource, ns, q)
        }
        (&Method::GET, None) => list_response(s, &t, kind, &resource, ns.as_deref(), &q),
        (&Method::GET, Some(name)) => {
            let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            match g
                .objects
                .get(&(resource, ns.unwrap_or_default(), name.clone()))
            {
                Some(o) => json_response(200, o),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", t.plural),
                ),
            }
        }
        (&Method::POST, None) => create(s, &t, kind, &resource, ns, namespaced, body_json),
        (&Method::PUT, Some(name)) => replace(s, &resource, ns, namespaced, name, body_json),
        (&Method::PATCH, Some(name)) => patch(
            s,
            &resource,
            ns,
            namespaced,
            name,
            t.status,
            &content_type,
            body_json,
        ),
        (&Method::DELETE, Some(name)) => {
            let events = s.events.clone();
            let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            match g
                .objects
                .remove(&(resource.clone(), ns.unwrap_or_default(), name.clone()))
            {
                Some(mut obj) => {
                    let rv = g.bump();
                    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                    g.record(
                        &events,
                        WatchEvent {
                            rv,
                            resource,
                            type_: "DELETED",
                            object: obj.clone(),
                        },
                    );
                    json_response(200, &obj)
                }
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", t.plural),
                ),
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "not supported by the fake API server",
        ),
    }
}

fn list_response(
    s: &Arc<Shared>,
    t: &Target,
    kind: &str,
    resource: &str,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Response<BoxBody> {
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    *g.lists.entry(t.plural.clone()).or_default() += 1;
    let all: Vec<Value> = g
        .objects
        .iter()
        .filter(|((r, _, _), o)| r == resource && selected(o, ns, q))
        .map(|(_, o)| o.clone())
        .collect();
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": g.rv.to_string()});
    if start.saturating_add(page.len()) < all.len() {
        metadata["continue"] = json!((start + page.len()).to_string());
    }
    json_response(
        200,
        &json!({"apiVersion": t.api_version, "kind": format!("{kind}List"),
                "metadata": metadata, "items": page}),
    )
}

fn watch_response(
    s: &Arc<Shared>,
    t: &Target,
    resource: &str,
    ns: Option<String>,
    q: HashMap<String, String>,
) -> Response<BoxBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    // Subscribe before reading history so nothing falls between the two.
    let mut live = s.events.subscribe();
    let mut epoch = s.epoch.subscribe();
    let mut away = s.available.subscribe();
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && v.as_str() != "0")
        .and_then(|v| v.parse().ok());
    let (backlog, expired, current_rv) = {
        let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.watches.entry(t.plural.clone()).or_default() += 1;
        let expired = from.is_some_and(|rv| rv < g.oldest_rv);
        let backlog: Vec<WatchEvent> = match from {
            Some(rv) if !expired => g.history.iter().filter(|e| e.rv > rv).cloned().collect(),
            Some(_) => Vec::new(),
            // No resourceVersion: start with the current state, as ADDED events.
            None => g
                .objects
                .iter()
                .filter(|((r, _, _), _)| r == resource)
                .map(|(_, o)| WatchEvent {
                    rv: g.rv,
                    resource: resource.to_string(),
                    type_: "ADDED",
                    object: o.clone(),
                })
                .collect(),
        };
        (backlog, expired, g.rv)
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let resource = resource.to_string();
    let api_version = t.api_version.clone();
    let line = |type_: &str, object: &Value| {
        Bytes::from(format!("{}\n", json!({"type": type_, "object": object})))
    };
    tokio::spawn(async move {
        if expired {
            let st = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = tx.send(line("ERROR", &st)).await;
            return;
        }
        let mut last = from.unwrap_or(0);
        for ev in backlog {
            if selected(&ev.object, ns.as_deref(), &q)
                && tx.send(line(ev.type_, &ev.object)).await.is_err()
            {
                return;
            }
            last = last.max(ev.rv);
        }
        last = last.max(if from.is_none() { current_rv } else { 0 });
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = went_away(&mut away) => return,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"apiVersion": api_version, "kind": "Bookmark",
                                    "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last || ev.resource != resource {
                            continue;
                        }
                        last = ev.rv;
                        if selected(&ev.object, ns.as_deref(), &q)
                            && tx.send(line(ev.type_, &ev.object)).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind the broadcast: end the watch, the client re-watches.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn create(
    s: &Arc<Shared>,
    t: &Target,
    kind: &str,
    resource: &str,
    ns: Option<String>,
    namespaced: bool,
    mut obj: Value,
) -> Response<BoxBody> {
    if !obj.is_object() {
        return status(400, "BadRequest", "the body is not an object");
    }
    let events = s.events.clone();
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        let prefix = obj["metadata"]["generateName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if prefix.is_empty() {
            return status(
                400,
                "BadRequest",
                "metadata.name or generateName is required",
            );
        }
        g.next_name += 1;
        name = format!("{prefix}{:05}", g.next_name);
        obj["metadata"]["name"] = json!(name);
    }
    let ns = ns.unwrap_or_default();
    let key = (resource.to_string(), ns.clone(), name.clone());
    if g.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", t.plural),
        );
    }
    obj["apiVersion"] = json!(t.api_version);
    obj["kind"] = json!(kind);
    let rv = g.bump();
    stamp(&mut obj, &ns, namespaced, rv, None);
    g.objects.insert(key, obj.clone());
    g.record(
        &events,
        WatchEvent {
            rv,
            resource: resource.to_string(),
            type_: "ADDED",
            object: obj.clone(),
        },
    );
    json_response(201, &obj)
}

fn replace(
    s: &Arc<Shared>,
    resource: &str,
    ns: Option<String>,
    namespaced: bool,
    name: &str,
    mut obj: Value,
) -> Response<BoxBody> {
    let events = s.events.clone();
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let ns = ns.unwrap_or_default();
    let key = (resource.to_string(), ns.clone(), name.to_string());
    let Some(current) = g.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("\"{name}\" not found"));
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != current["metadata"]["resourceVersion"].as_str() {
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            );
        }
    }
    obj["apiVersion"] = current["apiVersion"].clone();
    obj["kind"] = current["kind"].clone();
    let rv = g.bump();
    obj["metadata"]["resourceVersion"] = Value::Null;
    stamp(&mut obj, &ns, namespaced, rv, Some(&current));
    g.objects.insert(key, obj.clone());
    g.record(
        &events,
        WatchEvent {
            rv,
            resource: resource.to_string(),
            type_: "MODIFIED",
            object: obj.clone(),
        },
    );
    json_response(200, &obj)
}

#[allow(clippy::too_many_arguments)]
fn patch(
    s: &Arc<Shared>,
    resource: &str,
    ns: Option<String>,
    namespaced: bool,
    name: &str,
    status_only: bool,
    content_type: &str,
    body: Value,
) -> Response<BoxBody> {
    if !content_type.contains("merge-patch")
        && !content_type.contains("strategic-merge-patch")
        && !content_type.contains("apply-patch")
    {
        return status(
            415,
            "UnsupportedMediaType",
            &format!("patch type {content_type} is not supported"),
        );
    }
    let events = s.events.clone();
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let ns = ns.unwrap_or_default();
    let key = (resource.to_string(), ns.clone(), name.to_string());
    let Some(mut obj) = g.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("\"{name}\" not found"));
    };
    let body = if status_only {
        json!({"status": body.get("status").cloned().unwrap_or(Value::Null)})
    } else {
        body
    };
    let before = obj.clone();
    merge_patch(&mut obj, &body);
    if obj == before {
        return json_response(200, &obj);
    }
    let rv = g.bump();
    obj["metadata"]["resourceVersion"] = Value::Null;
    stamp(&mut obj, &ns, namespaced, rv, Some(&before));
    g.objects.insert(key, obj.clone());
    g.record(
        &events,
        WatchEvent {
            rv,
            resource: resource.to_string(),
            type_: "MODIFIED",
            object: obj.clone(),
        },
    );
    json_response(200, &obj)
}

#[cfg(test)]
mod tests {
    // Unused when this module is compiled into a bench, which runs no tests.
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": {"b": 1, "c": [1]}, "d": 1});
        merge_patch(&mut v, &json!({"a": {"b": null, "c": [2]}, "e": "x"}));
        assert_eq!(v, json!({"a": {"c": [2]}, "d": 1, "e": "x"}));
    }

    #[test]
    fn paths_parse_into_resource_namespace_name_and_subresource() {
        let t =
            parse_path("/apis/networking.k8s.io/v1/namespaces/web/ingresses/site/status").unwrap();
        assert_eq!(
            (t.api_version.as_str(), t.plural.as_str()),
            ("networking.k8s.io/v1", "ingresses")
        );
        assert_eq!(t.namespace.as_deref(), Some("web"));
        assert_eq!(t.name.as_deref(), Some("site"));
        assert!(t.status);
        let t = parse_path("/api/v1/services").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_path("/api/v1/namespaces/web").unwrap();
        assert_eq!(
            (t.plural.as_str(), t.name.as_deref()),
            ("namespaces", Some("web"))
        );
    }

    #[test]
    fn selectors_match_labels_and_fields() {
        let o = json!({"metadata": {"name": "n", "namespace": "x", "labels": {"app": "web"}}, "type": "kubernetes.io/tls"});
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(selected(&o, Some("x"), &q("labelSelector", "app=web")));
        assert!(selected(&o, None, &q("labelSelector", "app")));
        assert!(!selected(&o, None, &q("labelSelector", "app!=web")));
        assert!(!selected(&o, Some("y"), &HashMap::new()));
        assert!(selected(
            &o,
            None,
            &q("fieldSelector", "type=kubernetes.io/tls")
        ));
        assert!(!selected(
            &o,
            None,
            &q("fieldSelector", "type!=kubernetes.io/tls")
        ));
    }
}
