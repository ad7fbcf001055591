//! A fake Kubernetes API server for the integration tests.
//!
//! [`FakeApiServer`] listens on a loopback port (`127.0.0.1:0`) inside the test process and
//! speaks enough of the API server's HTTP/JSON wire protocol for the real `kube::Client`,
//! `kube::runtime::watcher`, `reflector`, `events::Recorder` and Lease-based leader election to
//! run unchanged against it over plain `http://`. Tests drive it through synchronous controls
//! ([`FakeApiServer::apply`], [`FakeApiServer::delete`], [`FakeApiServer::compact`],
//! [`FakeApiServer::drop_watches`], [`FakeApiServer::set_available`]) and assert on what
//! clients did ([`FakeApiServer::list_count`], [`FakeApiServer::watch_count`],
//! [`FakeApiServer::open_watches`], [`FakeApiServer::write_count`], [`FakeApiServer::writes`]). Waiting is done with
//! [`FakeApiServer::wait_until`], which wakes on every request and change and gives up at a
//! deadline; nothing inside sleeps to synchronise, and every watch ends by its timeout.
//!
//! ```ignore
//! let api = FakeApiServer::start().await;
//! api.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
//!                  "metadata": {"name": "web", "namespace": "default"}, "spec": {}}));
//! let client = api.client(); // or write api.kubeconfig_yaml() for a binary
//! // A relist: forget history, end watches; the re-watch gets 410 and lists again.
//! api.compact();
//! api.drop_watches();
//! // An outage: connections refused on the same port until it is back.
//! api.set_available(false);
//! api.set_available(true);
//! ```
//!
//! # What it fakes
//!
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}` and
//!   `/version`, for core `v1` (namespaces, nodes, services, secrets, configmaps, events),
//!   `networking.k8s.io/v1` (ingresses with `ingresses/status`, ingressclasses),
//!   `discovery.k8s.io/v1` (endpointslices), `coordination.k8s.io/v1` (leases) and
//!   `events.k8s.io/v1` (events).
//! - A store of JSON objects keyed by resource, namespace and name, with one global
//!   resourceVersion counter (like etcd) stamped on every write; create sets `uid`,
//!   `creationTimestamp` and `generation`, and a spec change bumps `generation`. A write that
//!   changes nothing is a no-op: no new resourceVersion, no watch event.
//! - LIST with `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//!   `k notin (a,b)`), `fieldSelector` (`=`, `==`, `!=` on any dotted field path such as
//!   `metadata.name`, `metadata.namespace` or `type`), and `limit` + `continue` paging.
//! - WATCH (`watch=true` or `watch=1`) as newline-delimited JSON events over a chunked
//!   response, replaying a bounded history after the requested resourceVersion; a
//!   resourceVersion older than the history (or than the last [`FakeApiServer::compact`]) gets
//!   one `ERROR` event holding a 410 `Expired` Status, then the stream ends. Without a
//!   resourceVersion (or with `"0"`, or with `sendInitialEvents=true`) the current objects come
//!   first as `ADDED` events; `sendInitialEvents=true` adds the `k8s.io/initial-events-end`
//!   bookmark. `allowWatchBookmarks=true` gets a `BOOKMARK` every
//!   [`Options::bookmark_interval`]; `timeoutSeconds` ends the stream. A watch with selectors
//!   sees an object leaving its selection as `DELETED` and entering it as `ADDED`.
//! - GET, POST (create, `generateName`), PUT (replace, 409 Conflict on a stale
//!   resourceVersion), PATCH (`application/merge-patch+json`,
//!   `application/strategic-merge-patch+json` and `application/apply-patch+yaml` with a JSON
//!   body, all applied as an RFC 7386 merge patch; apply creates a missing object), DELETE
//!   (with `preconditions`) and DELETE of a collection. The `/status` subresource writes only
//!   `.status`; writes to the main resource of a type with a status subresource keep the old
//!   `.status` (and create drops it), as the real server does. `dryRun` stores nothing.
//! - Errors as `Status` bodies with the real reasons and codes: `BadRequest` (400),
//!   `NotFound` (404), `MethodNotAllowed` (405), `AlreadyExists` and `Conflict` (409),
//!   `Expired` (410), `RequestEntityTooLarge` (413), `UnsupportedMediaType` (415) and
//!   `Invalid` (422).
//!
//! # What it does not fake
//!
//! Authentication, authorization and admission; TLS and HTTP/2; schema validation or
//! defaulting of objects (any JSON object is stored as sent); protobuf, YAML bodies, table or
//! metadata-only (`PartialObjectMetadata`) responses and aggregated discovery; JSON patch
//! (`application/json-patch+json`, answered 415); strategic-merge directives and list merge keys
//! (lists are replaced whole); server-side apply field ownership, conflicts and
//! `managedFields`; finalizers, `deletionTimestamp`, graceful deletion and garbage
//! collection; namespace existence checks; `resourceVersionMatch=Exact` and consistent
//! snapshots across `continue` pages (later pages show objects as they are now); the
//! different event shapes of core `v1` and `events.k8s.io/v1` (each group keeps its own
//! Events); `PUT` creating a missing object; field selectors being limited per type.
//!
//! # Dev-dependencies
//!
//! Everything it uses is already in the dependency tree through kube (resolved today to
//! hyper 1.12.0, hyper-util 0.1.21, http-body-util 0.1.5, bytes 1.12.2, futures 0.3.34,
//! serde_json 1.0.154, tokio 1.54.1, kube 5.0.0, k8s-openapi 0.29.0):
//!
//! ```toml
//! hyper = { version = "1", features = ["server", "http1"] }
//! hyper-util = { version = "0.1", features = ["tokio"] }
//! http-body-util = "0.1"
//! bytes = "1"
//! futures = { version = "0.3", default-features = false, features = ["std"] }
//! serde_json = "1"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "time", "sync"] }
//! kube = { version = "5", default-features = false, features = ["client", "runtime", "openssl-tls"] }
//! ```

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

// ---------------------------------------------------------------------------------------------
// The public test API.

/// Tunables of a [`FakeApiServer`]; `Options::default()` suits most tests.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many watch events are kept for replay; a watch from before them gets 410 Expired.
    pub history_limit: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// The longest a watch stays open, whatever `timeoutSeconds` asks for.
    pub max_watch_timeout: Duration,
    /// The largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// How many write requests [`FakeApiServer::writes`] keeps; the oldest go first.
    pub write_log_limit: usize,
    /// The read timeout of the clients made by [`FakeApiServer::client`].
    pub client_read_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(1),
            max_watch_timeout: Duration::from_secs(30 * 60),
            max_body_bytes: 8 << 20,
            write_log_limit: 50_000,
            client_read_timeout: Duration::from_secs(5),
        }
    }
}

/// One write request (POST, PUT, PATCH or DELETE) the server answered.
#[derive(Clone, Debug)]
pub struct Write {
    /// `"POST"`, `"PUT"`, `"PATCH"` or `"DELETE"`.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The raw query string, empty when there was none.
    pub query: String,
    /// The request's `Content-Type`, empty when there was none.
    pub content_type: String,
    /// The body as JSON; `Null` when empty, a JSON string when it was not JSON.
    pub body: Value,
    /// The HTTP status code answered.
    pub code: u16,
}

/// A fake Kubernetes API server on a loopback port; see the module documentation.
///
/// Dropping it closes the listener and every connection, ending all watches.
pub struct FakeApiServer {
    inner: Arc<Inner>,
    listener: Arc<ListenerSlot>,
    /// While unavailable: a bound but not listening socket that keeps the port ours, so
    /// connections are refused and nothing else on the machine can take the port meanwhile.
    parked: Mutex<Option<TcpSocket>>,
    runtime: tokio::runtime::Handle,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server with default [`Options`] on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> FakeApiServer {
        FakeApiServer::start_with(Options::default()).await
    }

    /// Starts a server with `options` on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start_with(options: Options) -> FakeApiServer {
        let listener = listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("binding a loopback port for the fake API server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fake API server's address: {e}"));
        let inner = Arc::new(Inner::new(options, addr));
        let slot = Arc::new(ListenerSlot::default());
        slot.put(Some(listener));
        let accept_task = tokio::spawn(accept_loop(inner.clone(), slot.clone()));
        FakeApiServer {
            inner,
            listener: slot,
            parked: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
            accept_task,
        }
    }

    /// The socket address, on loopback.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The base URL, `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A real `kube::Client` for this server, with a short connect and read timeout.
    ///
    /// # Panics
    /// When kube refuses the configuration (never for a loopback `http://` URL).
    pub fn client(&self) -> kube::Client {
        let url = self
            .url()
            .parse()
            .unwrap_or_else(|e| panic!("the fake API server's URL: {e}"));
        let mut config = kube::Config::new(url);
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(self.inner.options.client_read_timeout);
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("a kube client: {e}"))
    }

    /// A kubeconfig document whose current context points at this server, with namespace
    /// `default` and no credentials.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    \
             namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n\
             preferences: {{}}\n",
            self.url()
        )
    }

    /// Creates or replaces `object` (found by apiVersion, kind, namespace and name; a
    /// namespaced object without a namespace goes to `default`), emitting ADDED or MODIFIED.
    /// The object is stored as given, `.status` included; identity fields and the
    /// resourceVersion are stamped. Returns the stored object; an identical object is a no-op.
    ///
    /// # Panics
    /// When the type is not served or the object has no `metadata.name`.
    pub fn apply(&self, object: Value) -> Value {
        let (res, ns, name) =
            locate(&object).unwrap_or_else(|e| panic!("FakeApiServer::apply: {e}"));
        self.inner.write(|store| {
            let old = store.get(res, &ns, &name).cloned();
            let new = store.stamp(res, object, old.as_ref(), &ns, &name);
            match old {
                Some(old) if same_object(&old, &new) => old,
                _ => store.put(res, new, true),
            }
        })
    }

    /// Deletes an object, emitting DELETED; returns it when it existed. `namespace` is
    /// ignored for cluster-scoped kinds.
    ///
    /// # Panics
    /// When the type is not served.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.remove(api_version, kind, namespace, name, true)
    }

    /// Deletes an object without a watch event (a change lost to every open watch; only a
    /// relist notices). The resourceVersion still moves on.
    ///
    /// # Panics
    /// When the type is not served.
    pub fn delete_silently(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.remove(api_version, kind, namespace, name, false)
    }

    /// The stored object, if any. `namespace` is ignored for cluster-scoped kinds.
    ///
    /// # Panics
    /// When the type is not served.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (res, ns) = resolve(api_version, kind, namespace);
        lock(&self.inner.store).get(res, &ns, name).cloned()
    }

    /// Every stored object of `kind` in any group (so `"Event"` gives both core and
    /// `events.k8s.io` Events), ordered by namespace and name.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let store = lock(&self.inner.store);
        RESOURCES
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == kind)
            .flat_map(|(res, _)| store.objects[res].values().cloned())
            .collect()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.store).rv
    }

    /// Ends every open watch stream now, cleanly; clients have to watch again.
    pub fn drop_watches(&self) {
        self.inner.dropped.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Forgets the event history: a new watch from any resourceVersion up to now gets
    /// 410 Expired, and so does a `continue` token from before. Open watches that are caught
    /// up go on, as with a real compaction: call [`FakeApiServer::drop_watches`] after this
    /// to make every client watch again, get 410 and relist.
    pub fn compact(&self) {
        // The moved resourceVersion is not announced, so no bookmark carries it to a client
        // before the `drop_watches` that usually follows.
        lock(&self.inner.store).compact();
        self.inner.touch();
    }

    /// Takes the server away (`false`: every connection is closed, new ones are refused,
    /// watches end) or brings it back on the same port (`true`).
    ///
    /// # Panics
    /// When the port cannot be bound again.
    pub fn set_available(&self, available: bool) {
        let mut parked = lock(&self.parked);
        match (available, parked.is_some()) {
            (false, false) => {
                *parked = Some(bind_port(self.inner.addr).unwrap_or_else(|e| {
                    panic!(
                        "holding port {} of the fake API server: {e}",
                        self.inner.addr
                    )
                }));
                self.listener.put(None);
                self.inner.serving.send_replace(false);
                self.drop_watches();
            }
            (true, true) => {
                let _runtime = self.runtime.enter();
                let listener = listen_on(self.inner.addr).unwrap_or_else(|e| {
                    panic!(
                        "listening again on {} for the fake API server: {e}",
                        self.inner.addr
                    )
                });
                self.inner.serving.send_replace(true);
                self.listener.put(Some(listener));
                *parked = None;
            }
            _ => {}
        }
    }

    /// Whether the server is available (see [`FakeApiServer::set_available`]).
    pub fn is_available(&self) -> bool {
        *self.inner.serving.borrow()
    }

    /// How many LIST requests were made for the resource `plural` (e.g. `"ingresses"`).
    pub fn list_count(&self, plural: &str) -> usize {
        lock(&self.inner.stats)
            .lists
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// How many WATCH requests were made for the resource `plural`.
    pub fn watch_count(&self, plural: &str) -> usize {
        lock(&self.inner.stats)
            .watches
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// How many watch streams on the resource `plural` are open now.
    pub fn open_watches(&self, plural: &str) -> usize {
        lock(&self.inner.stats)
            .open
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// How many write requests (POST, PUT, PATCH, DELETE) on the resource `plural` (e.g.
    /// `"leases"`) succeeded: a count that only grows, unlike the bounded [`FakeApiServer::writes`]
    /// log. A Lease renewal is one.
    pub fn write_count(&self, plural: &str) -> usize {
        lock(&self.inner.stats)
            .written
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// The write requests answered so far, oldest first.
    pub fn writes(&self) -> Vec<Write> {
        lock(&self.inner.stats).writes.iter().cloned().collect()
    }

    /// Waits until `done(self)` holds, re-checking after every request, store change and
    /// watch opening or closing; false when `timeout` passes first.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&FakeApiServer) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut activity = self.inner.activity.subscribe();
        loop {
            activity.borrow_and_update();
            if done(self) {
                return true;
            }
            tokio::select! {
                changed = activity.changed() => if changed.is_err() { return done(self) },
                _ = tokio::time::sleep_until(deadline) => return done(self),
            }
        }
    }

    fn remove(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        record: bool,
    ) -> Option<Value> {
        let (res, ns) = resolve(api_version, kind, namespace);
        self.inner
            .write(|store| store.remove(res, &ns, name, record))
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.listener.put(None);
        self.inner.serving.send_replace(false);
        self.drop_watches();
        self.accept_task.abort();
    }
}

/// The resource index and namespace of a test-side reference; panics for unserved types.
fn resolve(api_version: &str, kind: &str, namespace: &str) -> (usize, String) {
    let res = find_kind(api_version, kind)
        .unwrap_or_else(|| panic!("the fake API server serves no {kind} in {api_version}"));
    let ns = if RESOURCES[res].namespaced {
        namespace
    } else {
        ""
    };
    (res, ns.to_string())
}

/// The resource index, namespace and name of a test-side object.
fn locate(object: &Value) -> Result<(usize, String, String), String> {
    let api_version = str_at(object, "/apiVersion").ok_or("the object has no apiVersion")?;
    let kind = str_at(object, "/kind").ok_or("the object has no kind")?;
    let res = find_kind(api_version, kind)
        .ok_or_else(|| format!("the fake API server serves no {kind} in {api_version}"))?;
    let name = str_at(object, "/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or("the object has no metadata.name")?;
    let ns = if RESOURCES[res].namespaced {
        let ns = str_at(object, "/metadata/namespace");
        ns.filter(|n| !n.is_empty()).unwrap_or("default")
    } else {
        ""
    };
    Ok((res, ns.to_string(), name.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Resource types.

/// One resource type the fake serves.
struct ResourceType {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Whether it has a `/status` subresource.
    status: bool,
}

const fn rt(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        status,
    }
}

/// Every type served; the store is indexed by position in this table.
const RESOURCES: &[ResourceType] = &[
    rt("", "namespaces", "namespace", "Namespace", false, true),
    rt("", "nodes", "node", "Node", false, true),
    rt("", "services", "service", "Service", true, true),
    rt("", "secrets", "secret", "Secret", true, false),
    rt("", "configmaps", "configmap", "ConfigMap", true, false),
    rt("", "events", "event", "Event", true, false),
    rt(
        "networking.k8s.io",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        true,
    ),
    rt(
        "networking.k8s.io",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        false,
    ),
    rt(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        false,
    ),
    rt(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        false,
    ),
    rt("events.k8s.io", "events", "event", "Event", true, false),
];

const HEX: &[u8; 16] = b"0123456789abcdef";

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_string(),
            group => format!("{group}/{}", self.version),
        }
    }

    /// `plural.group`, as in error messages.
    fn qualified(&self) -> String {
        match self.group {
            "" => self.plural.to_string(),
            group => format!("{}.{group}", self.plural),
        }
    }
}

fn find_resource(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|t| t.group == group && t.version == version && t.plural == plural)
}

fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|t| t.kind == kind && t.api_version() == api_version)
}

// ---------------------------------------------------------------------------------------------
// Shared state.

/// The listener, if any: [`FakeApiServer::set_available`] closes it and puts a new one in
/// at once (so a refused connection is refused as soon as the call returns), and the accept
/// loop polls whatever is there.
#[derive(Default)]
struct ListenerSlot {
    listener: Mutex<Option<TcpListener>>,
    replaced: tokio::sync::Notify,
}

impl ListenerSlot {
    /// Replaces the listener, closing the old one now.
    fn put(&self, listener: Option<TcpListener>) {
        let old = std::mem::replace(&mut *lock(&self.listener), listener);
        drop(old);
        self.replaced.notify_one();
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        match lock(&self.listener).as_ref() {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        }
    }
}

struct Inner {
    options: Options,
    addr: SocketAddr,
    store: Mutex<Store>,
    stats: Mutex<Stats>,
    /// The latest resourceVersion; watches wake on it.
    changed: watch::Sender<u64>,
    /// A generation bumped by `drop_watches`; watches end on it.
    dropped: watch::Sender<u64>,
    /// False while unavailable or dropped; connections close on it.
    serving: watch::Sender<bool>,
    /// Bumped on any change of store or counters, for `wait_until`.
    activity: watch::Sender<u64>,
}

#[derive(Default)]
struct Stats {
    lists: HashMap<String, usize>,
    watches: HashMap<String, usize>,
    open: HashMap<String, usize>,
    /// Successful writes by resource plural.
    written: HashMap<String, usize>,
    writes: VecDeque<Write>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn new(options: Options, addr: SocketAddr) -> Inner {
        let store = Store::new(options.history_limit.max(1));
        Inner {
            options,
            addr,
            store: Mutex::new(store),
            stats: Mutex::new(Stats::default()),
            changed: watch::Sender::new(0),
            dropped: watch::Sender::new(0),
            serving: watch::Sender::new(true),
            activity: watch::Sender::new(0),
        }
    }

    /// Runs `f` on the locked store, then wakes the watches if the resourceVersion moved.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = lock(&self.store);
            let out = f(&mut store);
            (out, store.rv)
        };
        self.changed
            .send_if_modified(|seen| std::mem::replace(seen, rv) != rv);
        self.touch();
        out
    }

    fn stats<T>(&self, f: impl FnOnce(&mut Stats) -> T) -> T {
        let out = f(&mut lock(&self.stats));
        self.touch();
        out
    }

    fn touch(&self) {
        self.activity.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn count(&self, watch: bool, plural: &str) {
        self.stats(|s| {
            let counts = if watch { &mut s.watches } else { &mut s.lists };
            *counts.entry(plural.to_string()).or_default() += 1;
        });
    }

    fn log_write(&self, call: &Call, code: u16) {
        if !matches!(
            call.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return;
        }
        let body = if call.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&call.body)
                .unwrap_or_else(|_| String::from_utf8_lossy(&call.body).into_owned().into())
        };
        let write = Write {
            method: call.method.to_string(),
            path: call.path.clone(),
            query: call.raw_query.clone(),
            content_type: call.content_type.clone(),
            body,
            code,
        };
        let limit = self.options.write_log_limit.max(1);
        let plural = resource_plural(&call.path).filter(|_| (200..300).contains(&code));
        self.stats(|s| {
            if let Some(plural) = plural {
                *s.written.entry(plural.to_string()).or_default() += 1;
            }
            s.writes.push_back(write);
            while s.writes.len() > limit {
                s.writes.pop_front();
            }
        });
    }
}

/// The resource plural a request path names (`/api/v1/namespaces/{ns}/{plural}/...`,
/// `/apis/{group}/{version}/{plural}/...`), if any.
fn resource_plural(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..)?,
        Some(&"apis") => segments.get(3..)?,
        _ => return None,
    };
    match rest {
        ["namespaces", _, plural, ..] => Some(plural),
        [plural, ..] => Some(plural),
        [] => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The object store and its event history.

/// (namespace, name); the namespace is empty for cluster-scoped objects.
type Key = (String, String);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One recorded write, as a watch replays it.
struct Change {
    rv: u64,
    res: usize,
    kind: ChangeKind,
    object: Value,
    /// The object before a modification, to tell selector entries and exits.
    prev: Option<Value>,
}

struct Store {
    rv: u64,
    seq: u64,
    objects: Vec<BTreeMap<Key, Value>>,
    history: VecDeque<Change>,
    /// Every change after this resourceVersion is in `history`.
    floor: u64,
    /// A new watch or `continue` token must be at least this resourceVersion (moved by
    /// `compact`, which also moves `rv` on so that a fresh LIST is past it).
    horizon: u64,
    limit: usize,
}

impl Store {
    fn new(limit: usize) -> Store {
        Store {
            rv: 0,
            seq: 0,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            floor: 0,
            horizon: 0,
            limit,
        }
    }

    fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects[res].get(&(ns.to_string(), name.to_string()))
    }

    /// Stores a stamped object under a new resourceVersion; records ADDED or MODIFIED.
    fn put(&mut self, res: usize, mut object: Value, record: bool) -> Value {
        self.rv += 1;
        set_resource_version(&mut object, self.rv);
        let key = key_of(&object);
        let prev = self.objects[res].insert(key, object.clone());
        if record {
            let kind = if prev.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            };
            self.push(Change {
                rv: self.rv,
                res,
                kind,
                object: object.clone(),
                prev,
            });
        }
        object
    }

    /// Removes an object under a new resourceVersion; records DELETED.
    fn remove(&mut self, res: usize, ns: &str, name: &str, record: bool) -> Option<Value> {
        let mut object = self.objects[res].remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        set_resource_version(&mut object, self.rv);
        if record {
            let change = Change {
                rv: self.rv,
                res,
                kind: ChangeKind::Deleted,
                object: object.clone(),
                prev: None,
            };
            self.push(change);
        }
        Some(object)
    }

    /// Stamps an object for a write: type, name, namespace, uid, creationTimestamp and
    /// generation (kept or bumped from `old`). The resourceVersion is left to `put`.
    fn stamp(
        &mut self,
        res: usize,
        mut object: Value,
        old: Option<&Value>,
        ns: &str,
        name: &str,
    ) -> Value {
        let t = &RESOURCES[res];
        let generation = next_generation(old, &object);
        let uid = match old.and_then(|o| str_at(o, "/metadata/uid")) {
            Some(uid) => uid.to_string(),
            None => self.next_uid(),
        };
        let created = old
            .and_then(|o| str_at(o, "/metadata/creationTimestamp"))
            .or_else(|| str_at(&object, "/metadata/creationTimestamp"))
            .map(String::from)
            .unwrap_or_else(now_rfc3339);
        let root = ensure_object(&mut object);
        root.insert("apiVersion".into(), t.api_version().into());
        root.insert("kind".into(), t.kind.into());
        let meta = meta_mut(&mut object);
        meta.insert("name".into(), name.into());
        match ns {
            "" => meta.remove("namespace"),
            ns => meta.insert("namespace".into(), ns.into()),
        };
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), created.into());
        meta.insert("generation".into(), generation.into());
        meta.remove("resourceVersion");
        object
    }

    /// Stamps and stores the update of `old` to `new`; a no-op returns `old` untouched.
    fn update(&mut self, res: usize, old: &Value, new: Value, dry_run: bool) -> Value {
        let (ns, name) = key_of(old);
        let new = self.stamp(res, new, Some(old), &ns, &name);
        if same_object(old, &new) {
            return old.clone();
        }
        if dry_run {
            return new;
        }
        self.put(res, new, true)
    }

    fn push(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > self.limit {
            if let Some(gone) = self.history.pop_front() {
                self.floor = gone.rv;
            }
        }
    }

    /// Forgets the history. Open watches that are caught up go on; anything that starts
    /// from a resourceVersion up to now is expired.
    fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        self.rv += 1;
        self.horizon = self.rv;
    }

    /// The oldest resourceVersion a new watch or `continue` token may start from.
    fn oldest_start(&self) -> u64 {
        self.floor.max(self.horizon)
    }

    /// The changes after `cursor`, or None when some of them are no longer kept (or, for a
    /// watch that is only starting, when `cursor` is from before a compaction).
    fn changes_after(&self, cursor: u64, starting: bool) -> Option<impl Iterator<Item = &Change>> {
        let oldest = if starting {
            self.oldest_start()
        } else {
            self.floor
        };
        if cursor < oldest {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= cursor);
        Some(self.history.range(start..))
    }

    fn next_uid(&mut self) -> String {
        self.seq += 1;
        format!("6661b3e0-0000-4000-8000-{:012x}", self.seq)
    }

    /// A name for `generateName`: the prefix and five characters.
    fn generated_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
        self.seq += 1;
        let mut n = self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        let mut name = prefix.to_string();
        for _ in 0..5 {
            let digit = usize::try_from(n % 27).unwrap_or_default();
            name.push(char::from(ALPHABET[digit]));
            n /= 27;
        }
        name
    }

    /// One page of a LIST.
    fn page(
        &self,
        scope: &Scope,
        token: Option<&ContinueToken>,
        limit: Option<usize>,
    ) -> Result<Page, ApiError> {
        let rv = match token {
            Some(t) if t.rv < self.oldest_start() => {
                return Err(ApiError::expired(EXPIRED_CONTINUE))
            }
            Some(t) => t.rv,
            None => self.rv,
        };
        let lower = token.map_or(Bound::Unbounded, |t| Bound::Excluded(t.key.clone()));
        let matching: Vec<(&Key, &Value)> = self.objects[scope.res]
            .range((lower, Bound::Unbounded))
            .filter(|(_, o)| scope.matches(o))
            .collect();
        let take = limit.map_or(matching.len(), |l| l.min(matching.len()));
        let last = take.checked_sub(1).and_then(|i| matching.get(i));
        let next = last
            .filter(|_| take < matching.len())
            .map(|(key, _)| ContinueToken {
                rv,
                key: (*key).clone(),
            });
        let items = matching
            .iter()
            .take(take)
            .map(|(_, o)| (*o).clone())
            .collect();
        Ok(Page {
            rv,
            items,
            next,
            remaining: matching.len() - take,
        })
    }
}

struct Page {
    rv: u64,
    items: Vec<Value>,
    next: Option<ContinueToken>,
    remaining: usize,
}

const EXPIRED_CONTINUE: &str =
    "The provided continue parameter is too old to display a consistent list result. \
     You can start a new list without the continue parameter.";

/// The opaque `continue` token: hex of `[resourceVersion, namespace, name]`.
struct ContinueToken {
    rv: u64,
    key: Key,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let text = json!([self.rv, self.key.0, self.key.1]).to_string();
        text.bytes().fold(String::new(), |mut hex, b| {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
            hex
        })
    }

    fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| token.get(i..i + 2).and_then(hex_byte))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(invalid)?;
        let parsed: (u64, String, String) =
            serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        Ok(ContinueToken {
            rv: parsed.0,
            key: (parsed.1, parsed.2),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers.

fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// `value` as an object, replacing anything else by an empty object.
fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    ensure_object(
        ensure_object(object)
            .entry("metadata")
            .or_insert(Value::Null),
    )
}

fn key_of(object: &Value) -> Key {
    let ns = str_at(object, "/metadata/namespace").unwrap_or_default();
    let name = str_at(object, "/metadata/name").unwrap_or_default();
    (ns.to_string(), name.to_string())
}

fn set_resource_version(object: &mut Value, rv: u64) {
    meta_mut(object).insert("resourceVersion".into(), rv.to_string().into());
}

/// Sets (`Some`) or removes (`None`) a top-level field.
fn set_field(object: &mut Value, key: &str, value: Option<Value>) {
    let map = ensure_object(object);
    match value {
        Some(v) => map.insert(key.to_string(), v),
        None => map.remove(key),
    };
}

/// Whether the stamped `new` equals `old` but for the resourceVersion.
fn same_object(old: &Value, new: &Value) -> bool {
    let mut new = new.clone();
    match str_at(old, "/metadata/resourceVersion") {
        Some(rv) => meta_mut(&mut new).insert("resourceVersion".into(), rv.into()),
        None => meta_mut(&mut new).remove("resourceVersion"),
    };
    *old == new
}

/// 1 on create; the old generation, plus one when anything but metadata and status changed.
fn next_generation(old: Option<&Value>, new: &Value) -> u64 {
    let Some(old) = old else { return 1 };
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if content(old) == content(new) {
        generation
    } else {
        generation + 1
    }
}

/// The fields of an object that are neither metadata nor status.
fn content(object: &Value) -> Map<String, Value> {
    let fields = object.as_object().into_iter().flatten();
    fields
        .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    let map = ensure_object(target);
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn hex_byte(two: &str) -> Option<u8> {
    let hex = two.len() == 2 && two.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| u8::from_str_radix(two, 16).ok()).flatten()
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------------
// Errors as Status objects.

struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, t: &ResourceType, name: &str) -> ApiError {
        self.details = Some(json!({"name": name, "group": t.group, "kind": t.plural}));
        self
    }

    fn not_found(t: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", t.qualified());
        ApiError::new(404, "NotFound", message).about(t, name)
    }

    fn already_exists(t: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" already exists", t.qualified());
        ApiError::new(409, "AlreadyExists", message).about(t, name)
    }

    fn conflict(t: &ResourceType, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            t.qualified()
        );
        ApiError::new(409, "Conflict", message).about(t, name)
    }

    fn invalid(t: &ResourceType, name: &str, why: &str) -> ApiError {
        let message = format!("{} \"{name}\" is invalid: {why}", t.kind);
        ApiError::new(422, "Invalid", message).about(t, name)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    fn unsupported_media(content_type: &str) -> ApiError {
        let message = format!(
            "the body of the request was in an unknown format ({content_type:?}) - accepted media types \
             include: application/merge-patch+json, application/strategic-merge-patch+json, \
             application/apply-patch+yaml"
        );
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    fn expired(message: &str) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            set_field(&mut status, "details", Some(details.clone()));
        }
        status
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// The decoded query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        let pairs = raw.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        });
        Query(pairs.collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| !v.is_empty())
    }
}

/// Form-urlencoded decoding: `+` is a space, `%XX` a byte; a stray `%` is kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = s
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(hex_byte);
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request, read whole.
struct Call {
    method: Method,
    path: String,
    raw_query: String,
    query: Query,
    content_type: String,
    body: Bytes,
}

impl Call {
    fn new(parts: &Parts, body: Bytes) -> Call {
        let raw_query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Call {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: Query::parse(&raw_query),
            raw_query,
            content_type,
            body,
        }
    }

    /// The body as a JSON object whose `metadata`, if any, is an object.
    fn object(&self) -> Result<Value, ApiError> {
        let value: Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if value.get("metadata").is_some_and(|m| !m.is_object()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        Ok(value)
    }
}

enum Reply {
    Json(u16, Value),
    Watch(Box<WatchSpec>),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::Json(e.code, e.status())
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl Reply {
    fn code(&self) -> u16 {
        match self {
            Reply::Json(code, _) => *code,
            Reply::Watch(_) => 200,
        }
    }

    fn into_response(self, inner: &Arc<Inner>) -> Response<Body> {
        let (code, body) = match self {
            Reply::Json(code, value) => (
                code,
                Full::new(Bytes::from(value.to_string())).boxed_unsync(),
            ),
            Reply::Watch(spec) => (200, watch_body(WatchStream::open(inner.clone(), *spec))),
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

async fn handle(
    inner: Arc<Inner>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, inner.options.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let error = ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("reading the request body: {e}"),
            );
            return Ok(Reply::from(error).into_response(&inner));
        }
    };
    let call = Call::new(&parts, body);
    let reply = route(&inner, &call).unwrap_or_else(Reply::from);
    inner.log_write(&call, reply.code());
    Ok(reply.into_response(&inner))
}

fn route(inner: &Arc<Inner>, call: &Call) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = call.path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => read_only(call, version_info()),
        ["api"] => read_only(call, api_versions(inner.addr)),
        ["apis"] => read_only(call, group_list()),
        ["api", "v1"] => read_only(
            call,
            resource_list("", "v1").ok_or_else(ApiError::no_route)?,
        ),
        ["apis", group] => read_only(call, api_group(group).ok_or_else(ApiError::no_route)?),
        ["apis", group, version] => read_only(
            call,
            resource_list(group, version).ok_or_else(ApiError::no_route)?,
        ),
        ["api", "v1", rest @ ..] => resource(inner, call, parse_target("", "v1", rest)?),
        ["apis", group, version, rest @ ..] => {
            resource(inner, call, parse_target(group, version, rest)?)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn read_only(call: &Call, value: Value) -> Result<Reply, ApiError> {
    match call.method {
        Method::GET => Ok(Reply::Json(200, value)),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// What a resource path names.
enum Target {
    /// A collection; `ns` is None for all namespaces or a cluster-scoped type.
    Collection { res: usize, ns: Option<String> },
    /// One object; `ns` is empty for cluster-scoped types.
    Object {
        res: usize,
        ns: String,
        name: String,
        status: bool,
    },
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    if let ["namespaces", ns, plural, tail @ ..] = rest {
        let namespaced = find_resource(group, version, plural).filter(|&r| RESOURCES[r].namespaced);
        if let Some(res) = namespaced {
            return target_in(res, Some(*ns), tail);
        }
    }
    let [plural, tail @ ..] = rest else {
        return Err(ApiError::no_route());
    };
    let res = find_resource(group, version, plural).ok_or_else(ApiError::no_route)?;
    target_in(res, None, tail)
}

fn target_in(res: usize, ns: Option<&str>, tail: &[&str]) -> Result<Target, ApiError> {
    let t = &RESOURCES[res];
    let object = |name: &str, status| Target::Object {
        res,
        ns: ns.unwrap_or_default().to_string(),
        name: name.to_string(),
        status,
    };
    match tail {
        [] => Ok(Target::Collection {
            res,
            ns: ns.map(String::from),
        }),
        _ if t.namespaced && ns.is_none() => Err(ApiError::no_route()),
        [name] => Ok(object(name, false)),
        [name, "status"] if t.status => Ok(object(name, true)),
        _ => Err(ApiError::no_route()),
    }
}

fn resource(inner: &Arc<Inner>, call: &Call, target: Target) -> Result<Reply, ApiError> {
    match target {
        Target::Collection { res, ns } => collection(inner, call, res, ns.as_deref()),
        Target::Object {
            res,
            ns,
            name,
            status,
        } => object(inner, call, res, &ns, &name, status),
    }
}

fn collection(
    inner: &Arc<Inner>,
    call: &Call,
    res: usize,
    ns: Option<&str>,
) -> Result<Reply, ApiError> {
    match call.method {
        Method::GET if call.query.flag("watch") => watch(inner, call, res, ns, None),
        Method::GET => list(inner, call, res, ns),
        Method::POST => create(inner, call, res, ns),
        Method::DELETE => delete_collection(inner, call, res, ns),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn object(
    inner: &Arc<Inner>,
    call: &Call,
    res: usize,
    ns: &str,
    name: &str,
    status: bool,
) -> Result<Reply, ApiError> {
    let scope_ns = Some(ns).filter(|ns| !ns.is_empty());
    match call.method {
        Method::GET if !status && call.query.flag("watch") => {
            watch(inner, call, res, scope_ns, Some(name))
        }
        Method::GET => get_object(inner, res, ns, name),
        Method::PUT => replace(inner, call, res, ns, name, status),
        Method::PATCH => patch(inner, call, res, ns, name, status),
        Method::DELETE if !status => delete(inner, call, res, ns, name),
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ---------------------------------------------------------------------------------------------
// Verbs.

fn get_object(inner: &Inner, res: usize, ns: &str, name: &str) -> Result<Reply, ApiError> {
    let store = lock(&inner.store);
    let object = store.get(res, ns, name).cloned();
    object
        .map(|o| Reply::Json(200, o))
        .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
}

fn list(inner: &Inner, call: &Call, res: usize, ns: Option<&str>) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let scope = Scope::new(res, ns, None, &call.query)?;
    let limit = match call.query.get("limit") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let token = call
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(ContinueToken::decode)
        .transpose()?;
    inner.count(false, t.plural);
    let page = lock(&inner.store).page(&scope, token.as_ref(), limit.filter(|&l| l > 0))?;
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some(next) = &page.next {
        let fields = ensure_object(&mut metadata);
        fields.insert("continue".into(), next.encode().into());
        fields.insert("remainingItemCount".into(), page.remaining.into());
    }
    let list = json!({
        "kind": format!("{}List", t.kind), "apiVersion": t.api_version(),
        "metadata": metadata, "items": page.items,
    });
    Ok(Reply::Json(200, list))
}

fn create(inner: &Inner, call: &Call, res: usize, ns: Option<&str>) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let ns = match (t.namespaced, ns) {
        (true, Some(ns)) => ns,
        (true, None) => return Err(ApiError::method_not_allowed()),
        (false, _) => "",
    };
    let mut body = call.object()?;
    check_body(t, &body, ns, None)?;
    if t.status {
        set_field(&mut body, "status", None);
    }
    let dry_run = call.query.dry_run();
    inner.write(|store| {
        let name = new_name(store, t, &body)?;
        if store.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(t, &name));
        }
        let object = store.stamp(res, body, None, ns, &name);
        Ok(Reply::Json(
            201,
            if dry_run {
                object
            } else {
                store.put(res, object, true)
            },
        ))
    })
}

/// The name of a new object: its own, or one made from `generateName`.
fn new_name(store: &mut Store, t: &ResourceType, body: &Value) -> Result<String, ApiError> {
    let name = match (
        str_at(body, "/metadata/name"),
        str_at(body, "/metadata/generateName"),
    ) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => store.generated_name(prefix),
        _ => {
            return Err(ApiError::invalid(
                t,
                "",
                "metadata.name: Required value: name or generateName is required",
            ))
        }
    };
    if name.contains('/') || name.contains('%') || name.len() > 253 {
        return Err(ApiError::invalid(t, &name, "metadata.name: Invalid value"));
    }
    Ok(name)
}

/// Refuses a body whose type, namespace or name disagree with the request.
fn check_body(
    t: &ResourceType,
    body: &Value,
    ns: &str,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let api_version = t.api_version();
    if let Some(got) = str_at(body, "/apiVersion").filter(|v| *v != api_version) {
        return Err(ApiError::bad_request(format!(
            "apiVersion {got:?} does not match {api_version:?}"
        )));
    }
    if let Some(got) = str_at(body, "/kind").filter(|k| *k != t.kind) {
        return Err(ApiError::bad_request(format!(
            "kind {got:?} does not match {:?}",
            t.kind
        )));
    }
    let body_ns = str_at(body, "/metadata/namespace").unwrap_or_default();
    if t.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    match (name, str_at(body, "/metadata/name")) {
        (Some(url), Some(got)) if !got.is_empty() && got != url => Err(ApiError::bad_request(
            format!("the name of the object ({got}) does not match the name on the URL ({url})"),
        )),
        _ => Ok(()),
    }
}

/// 409 when the body names a resourceVersion other than the stored one.
fn check_version(
    t: &ResourceType,
    name: &str,
    old: &Value,
    wanted: Option<&str>,
) -> Result<(), ApiError> {
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) if Some(w) != str_at(old, "/metadata/resourceVersion") => {
            Err(ApiError::conflict(t, name))
        }
        _ => Ok(()),
    }
}

/// What a write may change: only `.status` through the status subresource; all but
/// `.status` through the main resource of a type that has one.
fn scope_write(t: &ResourceType, old: &Value, mut new: Value, status_only: bool) -> Value {
    if status_only {
        let mut out = old.clone();
        set_field(&mut out, "status", new.get("status").cloned());
        out
    } else {
        if t.status {
            set_field(&mut new, "status", old.get("status").cloned());
        }
        new
    }
}

fn replace(
    inner: &Inner,
    call: &Call,
    res: usize,
    ns: &str,
    name: &str,
    status_only: bool,
) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let body = call.object()?;
    check_body(t, &body, ns, Some(name))?;
    let wanted = str_at(&body, "/metadata/resourceVersion").map(String::from);
    let dry_run = call.query.dry_run();
    inner.write(|store| {
        let old = store
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(t, name))?;
        check_version(t, name, &old, wanted.as_deref())?;
        let new = scope_write(t, &old, body, status_only);
        Ok(Reply::Json(200, store.update(res, &old, new, dry_run)))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Apply,
}

fn patch_kind(content_type: &str) -> Result<PatchKind, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(PatchKind::Merge)
        }
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
        other => Err(ApiError::unsupported_media(other)),
    }
}

fn patch(
    inner: &Inner,
    call: &Call,
    res: usize,
    ns: &str,
    name: &str,
    status_only: bool,
) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let kind = patch_kind(&call.content_type)?;
    let body = call.object()?;
    check_body(t, &body, ns, Some(name))?;
    let wanted = str_at(&body, "/metadata/resourceVersion").map(String::from);
    let dry_run = call.query.dry_run();
    inner.write(|store| {
        let Some(old) = store.get(res, ns, name).cloned() else {
            if kind == PatchKind::Apply && !status_only {
                return Ok(apply_create(store, res, ns, name, body, dry_run));
            }
            return Err(ApiError::not_found(t, name));
        };
        check_version(t, name, &old, wanted.as_deref())?;
        let mut merged = old.clone();
        merge_patch(&mut merged, &body);
        let new = scope_write(t, &old, merged, status_only);
        Ok(Reply::Json(200, store.update(res, &old, new, dry_run)))
    })
}

/// Server-side apply of a missing object creates it.
fn apply_create(
    store: &mut Store,
    res: usize,
    ns: &str,
    name: &str,
    mut body: Value,
    dry_run: bool,
) -> Reply {
    if RESOURCES[res].status {
        set_field(&mut body, "status", None);
    }
    let object = store.stamp(res, body, None, ns, name);
    Reply::Json(
        201,
        if dry_run {
            object
        } else {
            store.put(res, object, true)
        },
    )
}

fn delete(inner: &Inner, call: &Call, res: usize, ns: &str, name: &str) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let (uid, version) = preconditions(call)?;
    let dry_run = call.query.dry_run();
    inner.write(|store| {
        let old = store
            .get(res, ns, name)
            .ok_or_else(|| ApiError::not_found(t, name))?;
        check_version(t, name, old, version.as_deref())?;
        if uid
            .as_deref()
            .is_some_and(|u| Some(u) != str_at(old, "/metadata/uid"))
        {
            return Err(ApiError::conflict(t, name));
        }
        if dry_run {
            return Ok(Reply::Json(200, old.clone()));
        }
        let gone = store
            .remove(res, ns, name, true)
            .ok_or_else(|| ApiError::not_found(t, name))?;
        Ok(Reply::Json(200, gone))
    })
}

/// The uid and resourceVersion preconditions of a `DeleteOptions` body, if any.
fn preconditions(call: &Call) -> Result<(Option<String>, Option<String>), ApiError> {
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let options = call.object()?;
    let uid = str_at(&options, "/preconditions/uid").map(String::from);
    let version = str_at(&options, "/preconditions/resourceVersion").map(String::from);
    Ok((uid, version))
}

fn delete_collection(
    inner: &Inner,
    call: &Call,
    res: usize,
    ns: Option<&str>,
) -> Result<Reply, ApiError> {
    let t = &RESOURCES[res];
    let scope = Scope::new(res, ns, None, &call.query)?;
    let dry_run = call.query.dry_run();
    let deleted = inner.write(|store| {
        let keys: Vec<Key> = store.objects[res]
            .iter()
            .filter(|(_, o)| scope.matches(o))
            .map(|(k, _)| k.clone())
            .collect();
        let keys = keys.iter();
        if dry_run {
            let found = keys.filter_map(|(ns, name)| store.get(res, ns, name).cloned());
            found.collect::<Vec<_>>()
        } else {
            let gone = keys.filter_map(|(ns, name)| store.remove(res, ns, name, true));
            gone.collect::<Vec<_>>()
        }
    });
    let rv = lock(&inner.store).rv;
    let list = json!({
        "kind": format!("{}List", t.kind), "apiVersion": t.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}, "items": deleted,
    });
    Ok(Reply::Json(200, list))
}

// ---------------------------------------------------------------------------------------------
// Selectors.

/// Which objects a LIST or WATCH sees.
struct Scope {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Scope {
    fn new(
        res: usize,
        ns: Option<&str>,
        name: Option<&str>,
        query: &Query,
    ) -> Result<Scope, ApiError> {
        let labels = parse_labels(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = parse_fields(query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
        Ok(Scope {
            res,
            ns: ns.map(String::from),
            name: name.map(String::from),
            labels,
            fields,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let (ns, name) = (
            str_at(object, "/metadata/namespace"),
            str_at(object, "/metadata/name"),
        );
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.ns
            .as_deref()
            .is_none_or(|want| ns.unwrap_or_default() == want)
            && self.name.as_deref().is_none_or(|want| name == Some(want))
            && self.labels.iter().all(|req| req.matches(labels))
            && self.fields.iter().all(|req| req.matches(object))
    }

    /// How a recorded change shows in this scope: an entry is ADDED, an exit DELETED.
    fn view<'c>(&self, change: &'c Change) -> Option<(&'static str, &'c Value)> {
        if change.res != self.res {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.prev.as_ref().is_some_and(|p| self.matches(p));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Added, _, true) | (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Deleted, _, true) | (ChangeKind::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some((kind, &change.object))
    }
}

enum LabelReq {
    Exists(String),
    Absent(String),
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelReq {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        match self {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::Absent(k) => get(k).is_none(),
            LabelReq::Equal(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEqual(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        }
    }
}

fn parse_labels(selector: &str) -> Result<Vec<LabelReq>, String> {
    split_outside_parens(selector)
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_label_req)
        .collect()
}

/// Splits on the commas that are not inside parentheses.
fn split_outside_parens(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_label_req(part: &str) -> Result<LabelReq, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelReq::Absent(label_key(key)?));
    }
    if let Some((head, values)) = part.split_once('(') {
        return parse_set_req(head, values);
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelReq::NotEqual(label_key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelReq::Equal(label_key(k)?, v.trim().to_string()));
    }
    Ok(LabelReq::Exists(label_key(part)?))
}

fn parse_set_req(head: &str, values: &str) -> Result<LabelReq, String> {
    let values = values
        .trim_end()
        .strip_suffix(')')
        .ok_or("unclosed parenthesis")?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let words: Vec<&str> = head.split_whitespace().collect();
    match words.as_slice() {
        [key, "in"] => Ok(LabelReq::In(label_key(key)?, values)),
        [key, "notin"] => Ok(LabelReq::NotIn(label_key(key)?, values)),
        _ => Err(format!(
            "expected `key in (...)` or `key notin (...)`, got {head:?}"
        )),
    }
}

fn label_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        Err(format!("invalid label key {key:?}"))
    } else {
        Ok(key.to_string())
    }
}

/// `path=value`, `path==value` or `path!=value` on a dotted field path.
struct FieldReq {
    pointer: String,
    value: String,
    equal: bool,
}

impl FieldReq {
    fn matches(&self, object: &Value) -> bool {
        let actual = match object.pointer(&self.pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

fn parse_fields(selector: &str) -> Result<Vec<FieldReq>, String> {
    let parts = selector.split(',').map(str::trim).filter(|p| !p.is_empty());
    parts.map(parse_field_req).collect()
}

fn parse_field_req(part: &str) -> Result<FieldReq, String> {
    let (path, value, equal) = if let Some((k, v)) = part.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        (k, v, true)
    } else {
        return Err(format!("invalid field selector requirement {part:?}"));
    };
    let path = path.trim();
    if path.is_empty() {
        return Err(format!("invalid field selector requirement {part:?}"));
    }
    let pointer = format!("/{}", path.replace('.', "/"));
    Ok(FieldReq {
        pointer,
        value: value.trim().to_string(),
        equal,
    })
}

// ---------------------------------------------------------------------------------------------
// Watches.

/// A validated WATCH request.
struct WatchSpec {
    scope: Scope,
    /// Replay after this resourceVersion; None sends the current objects first.
    since: Option<u64>,
    /// Whether to mark the end of the initial events with a bookmark.
    initial_events_end: bool,
    bookmarks: bool,
    timeout: Duration,
}

fn watch(
    inner: &Inner,
    call: &Call,
    res: usize,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<Reply, ApiError> {
    let query = &call.query;
    let scope = Scope::new(res, ns, name, query)?;
    let initial_events_end = query.flag("sendInitialEvents");
    let since = match query.get("resourceVersion") {
        _ if initial_events_end => None,
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let most = inner.options.max_watch_timeout;
    let timeout = match query.get("timeoutSeconds") {
        None | Some("" | "0") => most,
        Some(s) => s
            .parse::<u64>()
            .map(|secs| Duration::from_secs(secs).min(most))
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
    };
    inner.count(true, RESOURCES[res].plural);
    let bookmarks = query.flag("allowWatchBookmarks");
    Ok(Reply::Watch(Box::new(WatchSpec {
        scope,
        since,
        initial_events_end,
        bookmarks,
        timeout,
    })))
}

/// Counts an open watch stream while it lives.
struct OpenWatch {
    inner: Arc<Inner>,
    plural: &'static str,
}

impl OpenWatch {
    fn new(inner: Arc<Inner>, plural: &'static str) -> OpenWatch {
        inner.stats(|s| *s.open.entry(plural.to_string()).or_default() += 1);
        OpenWatch { inner, plural }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.inner.stats(|s| {
            if let Some(n) = s.open.get_mut(self.plural) {
                *n = n.saturating_sub(1);
            }
        });
    }
}

/// The state of one watch response: lines to send, and where in the history it is.
struct WatchStream {
    inner: Arc<Inner>,
    scope: Scope,
    cursor: u64,
    /// False until the first catch-up: a starting watch is held to the compaction horizon.
    live: bool,
    pending: VecDeque<Bytes>,
    finished: bool,
    changed: watch::Receiver<u64>,
    dropped: watch::Receiver<u64>,
    deadline: Instant,
    bookmarks: Option<Interval>,
    /// Set once the watch has started (not for one that only says 410).
    counted: Option<OpenWatch>,
}

enum Wake {
    Changed,
    Bookmark,
    End,
}

impl WatchStream {
    fn open(inner: Arc<Inner>, spec: WatchSpec) -> WatchStream {
        let every = inner
            .options
            .bookmark_interval
            .max(Duration::from_millis(1));
        let bookmarks = spec.bookmarks.then(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let mut stream = WatchStream {
            changed: inner.changed.subscribe(),
            dropped: inner.dropped.subscribe(),
            counted: None,
            inner,
            scope: spec.scope,
            cursor: spec.since.unwrap_or(0),
            live: spec.since.is_none(),
            pending: VecDeque::new(),
            finished: false,
            deadline: Instant::now() + spec.timeout,
            bookmarks,
        };
        // Decided now, at request time: a later `compact` does not expire a started watch.
        if spec.since.is_none() {
            stream.initial_events(spec.initial_events_end);
        } else {
            stream.catch_up();
        }
        if !stream.finished {
            let plural = RESOURCES[stream.scope.res].plural;
            stream.counted = Some(OpenWatch::new(stream.inner.clone(), plural));
        }
        stream
    }

    /// The current objects as ADDED events, optionally closed by the initial-events-end bookmark.
    fn initial_events(&mut self, end_bookmark: bool) {
        let (lines, rv) = {
            let store = lock(&self.inner.store);
            let objects = store.objects[self.scope.res]
                .values()
                .filter(|o| self.scope.matches(o));
            let lines: Vec<Bytes> = objects.map(|o| event_line("ADDED", o)).collect();
            (lines, store.rv)
        };
        self.pending.extend(lines);
        self.cursor = rv;
        if end_bookmark {
            self.pending
                .push_back(bookmark_line(self.scope.res, rv, true));
        }
    }

    /// The next line to send; None ends the response.
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.finished {
                return None;
            }
            self.changed.borrow_and_update();
            self.catch_up();
            if self.pending.is_empty() && !self.finished {
                self.wait().await;
            }
        }
    }

    /// Queues the changes after the cursor, or the 410 Expired error when they are gone.
    fn catch_up(&mut self) {
        let (lines, rv) = {
            let store = lock(&self.inner.store);
            let lines: Option<Vec<Bytes>> =
                store.changes_after(self.cursor, !self.live).map(|changes| {
                    changes
                        .filter_map(|c| self.scope.view(c))
                        .map(|(kind, o)| event_line(kind, o))
                        .collect()
                });
            (lines, store.rv)
        };
        match lines {
            Some(lines) => {
                self.pending.extend(lines);
                self.cursor = self.cursor.max(rv);
                self.live = true;
            }
            None => {
                let expired = ApiError::expired("too old resource version");
                self.pending
                    .push_back(event_line("ERROR", &expired.status()));
                self.finished = true;
            }
        }
    }

    /// Sleeps until a change, a bookmark tick, the timeout or `drop_watches`.
    async fn wait(&mut self) {
        let wake = tokio::select! {
            changed = self.changed.changed() => if changed.is_ok() { Wake::Changed } else { Wake::End },
            _ = self.dropped.changed() => Wake::End,
            _ = tokio::time::sleep_until(self.deadline) => Wake::End,
            _ = tick(self.bookmarks.as_mut()) => Wake::Bookmark,
        };
        match wake {
            Wake::Changed => {}
            Wake::Bookmark => {
                self.pending
                    .push_back(bookmark_line(self.scope.res, self.cursor, false))
            }
            Wake::End => self.finished = true,
        }
    }
}

async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_line(res: usize, rv: u64, initial_events_end: bool) -> Bytes {
    let t = &RESOURCES[res];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        let annotations = json!({"k8s.io/initial-events-end": "true"});
        set_field(&mut metadata, "annotations", Some(annotations));
    }
    let object = json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": metadata});
    event_line("BOOKMARK", &object)
}

fn watch_body(stream: WatchStream) -> Body {
    let frames = futures::stream::unfold(stream, |mut stream| async move {
        let line = stream.next_line().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), stream))
    });
    StreamBody::new(frames).boxed_unsync()
}

// ---------------------------------------------------------------------------------------------
// Discovery.

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "127.0.0.0/8", "serverAddress": addr.to_string()}],
    })
}

/// The named groups, in table order, without repeats.
fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for t in RESOURCES.iter().filter(|t| !t.group.is_empty()) {
        if !groups.contains(&t.group) {
            groups.push(t.group);
        }
    }
    groups
}

fn api_group(group: &str) -> Option<Value> {
    let t = RESOURCES
        .iter()
        .find(|t| t.group == group && !group.is_empty())?;
    let version = json!({"groupVersion": t.api_version(), "version": t.version});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [version], "preferredVersion": version,
    }))
}

fn group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().filter_map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let types = RESOURCES
        .iter()
        .filter(|t| t.group == group && t.version == version);
    let resources: Vec<Value> = types.flat_map(resource_entries).collect();
    let group_version = RESOURCES
        .iter()
        .find(|t| t.group == group && t.version == version)?
        .api_version();
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources,
    }))
}

fn resource_entries(t: &ResourceType) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
        "kind": t.kind, "verbs": VERBS,
    })];
    if t.status {
        entries.push(json!({
            "name": format!("{}/status", t.plural), "singularName": "",
            "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"],
        }));
    }
    entries
}

// ---------------------------------------------------------------------------------------------
// Listening and connections.

/// A loopback socket bound to `addr`, sharing the port with our own earlier socket.
fn bind_port(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_port(addr)?.listen(1024)
}

/// Accepts connections from whatever listener the slot holds; a replaced listener wakes it.
async fn accept_loop(inner: Arc<Inner>, slot: Arc<ListenerSlot>) {
    loop {
        let accepted = tokio::select! {
            accepted = std::future::poll_fn(|cx| slot.poll_accept(cx)) => accepted,
            () = slot.replaced.notified() => continue,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(inner.clone(), stream));
            }
            // Out of descriptors or similar: back off a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves HTTP/1.1 on one connection until the client leaves or the server goes away.
async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    let mut serving = inner.serving.subscribe();
    let service = hyper::service::service_fn(move |request| handle(inner.clone(), request));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = serving.wait_for(|serving| !*serving) => {}
    }
}
