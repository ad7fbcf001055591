//! Test support: loopback backends that say who answered, HTTP/1.1 and h2c clients, manifest
//! builders, and an in-process sluice on port 0 fed by a temporary folder of manifests.
//!
//! Every wait here is bounded in time; readiness is polled against a deadline, never slept for.

#![allow(dead_code)]

pub mod fake_apiserver;
pub mod pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// The longest any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `f` until it returns `Some`, every 10 ms, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A loopback HTTP/1.1 backend that answers every request with a JSON body naming itself and
/// echoing the request line and headers it received.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    /// Delay before each response, in milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Requests answered.
    pub hits: Arc<AtomicUsize>,
    /// Requests received (counted before the delay).
    pub arrivals: Arc<AtomicUsize>,
    /// The status every response carries (200 unless set).
    pub status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(name, listener)
    }

    /// A backend on a given loopback address and port; `Err` when it cannot be bound (the port
    /// is taken there).
    pub async fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        assert!(addr.ip().is_loopback(), "tests use loopback only: {addr}");
        Ok(Backend::serve(name, TcpListener::bind(addr).await?))
    }

    fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let (n, d, h, arr, st) = (
            name.to_string(),
            delay_ms.clone(),
            hits.clone(),
            arrivals.clone(),
            status.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (n, d, h, arr, st) = (n.clone(), d.clone(), h.clone(), arr.clone(), st.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (n, d, h) = (n.clone(), d.clone(), h.clone());
                        let code = st.load(Ordering::SeqCst);
                        arr.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, hyper::Error>(answer(req, &n, &d, &h, code).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            delay_ms,
            hits,
            arrivals,
            status,
            task,
        }
    }

    /// Makes every later response carry `code`.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    name: &str,
    delay: &AtomicU64,
    hits: &AtomicUsize,
    status: u16,
) -> Response<Full<Bytes>> {
    let ms = delay.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let headers = header_lists(req.headers());
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    hits.fetch_add(1, Ordering::SeqCst);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Each header's values, by lowercase name.
pub fn header_lists(headers: &hyper::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        out.entry(k.as_str().to_string())
            .or_default()
            .push(v.to_str().unwrap_or("").to_string());
    }
    out
}

/// A loopback endpoint that accepts connections, reads the request head, and closes the
/// connection without answering (a reset before any response byte). Counts the requests.
pub struct Resetter {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `stream` up to the end of a request head (a head sent together with bytes past
/// it is read whole); `false` when the connection ended or failed first.
pub async fn read_head(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

impl Resetter {
    pub async fn start() -> Resetter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    if !read_head(&mut stream).await {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Dropping the stream closes it with nothing written.
                });
            }
        });
        Resetter {
            addr,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An address on loopback where nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The JSON a [`Backend`] answered with.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not a backend reply ({e}): {} {}", self.status, self.body))
    }

    /// Which backend answered.
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The values of a header the backend received.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 keepalive connection to sluice.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for H1 {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        H1::connect_with(addr, &[]).await
    }

    /// A connection from the loopback address `from` (127.0.0.2 is another client than
    /// 127.0.0.1).
    pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> H1 {
        assert!(from.is_loopback(), "tests use loopback only: {from}");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        H1::over(socket.connect(addr), &[]).await
    }

    /// A connection that sends `preface` (a PROXY protocol header) before any HTTP.
    pub async fn connect_with(addr: SocketAddr, preface: &[u8]) -> H1 {
        H1::over(TcpStream::connect(addr), preface).await
    }

    async fn over(
        connect: impl std::future::Future<Output = std::io::Result<TcpStream>>,
        preface: &[u8],
    ) -> H1 {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::time::timeout(STEP, connect)
            .await
            .expect("connect timed out")
            .expect("connect failed");
        stream.write_all(preface).await.expect("preface written");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { sender, conn }
    }

    /// Sends a request on this connection; `Err` when the connection failed.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let fut = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            read_reply(resp).await
        };
        tokio::time::timeout(STEP, fut)
            .await
            .map_err(|_| "request timed out".to_string())?
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, String> {
        self.send(request(host, path)).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

pub async fn read_reply(resp: Response<Incoming>) -> Result<Reply, String> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A GET request for `host` and `path`.
pub fn request(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// One GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    H1::connect(addr)
        .await
        .get(host, path)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

/// One GET over HTTP/2 with prior knowledge (h2c); the host goes in `:authority`.
pub async fn get_h2c(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::builder()
        .uri(format!("http://{host}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send_h2c(addr, req).await
}

/// One request over HTTP/2 with prior knowledge (h2c) on a new connection; its URI carries the
/// host as `:authority`.
pub async fn send_h2c(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(STEP, sender.send_request(req))
        .await
        .expect("h2c request timed out")
        .expect("h2c request failed");
    let reply = read_reply(resp).await.unwrap();
    conn.abort();
    reply
}

/// Concurrent clients, each on its own keepalive connection, sending GETs in a loop (bounded in
/// count and time) and recording every request that did not get a 200.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut conn = H1::connect(addr).await;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    for _ in 0..50_000 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                            break;
                        }
                        match conn.get(host, "/").await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.body)),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                conn = H1::connect(addr).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            clients,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    pub async fn wait_for_more(&self, n: usize) {
        let target = self.ok() + n;
        let ok = self.ok.clone();
        eventually(STEP, "more requests under load", || {
            let now = ok.load(Ordering::SeqCst);
            async move { (now >= target).then_some(()) }
        })
        .await;
    }

    /// Stops the clients and returns every failure seen.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        failures
    }
}

/// Fails the test when `failures` (from [`Load::stop`]) holds any, showing the first few.
pub fn assert_no_failed_request(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// A Service with one port named `http` on port 80.
pub fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  ports:\n  - {{name: http, port: 80}}\n---\n"
    )
}

/// An EndpointSlice for `service` with its `http` port; each endpoint is (address, ready).
/// Endpoints must share one port (a slice has one port list).
pub fn slice(ns: &str, service: &str, endpoints: &[(SocketAddr, Option<bool>)]) -> String {
    let port = endpoints.first().map(|(a, _)| a.port()).unwrap_or(1);
    let mut eps = String::new();
    for (a, ready) in endpoints {
        assert_eq!(a.port(), port, "one slice, one port");
        match ready {
            Some(r) => eps.push_str(&format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: {r}}}\n",
                a.ip()
            )),
            None => eps.push_str(&format!("  - addresses: [\"{}\"]\n", a.ip())),
        }
    }
    if endpoints.is_empty() {
        eps.push_str("  []\n");
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {service}-{port}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {service}}}\n\
         addressType: IPv4\nports:\n- {{name: http, port: {port}}}\nendpoints:\n{eps}---\n"
    )
}

/// A Service plus one slice per endpoint address (so each backend keeps its own port).
pub fn service_with(ns: &str, name: &str, backends: &[SocketAddr]) -> String {
    let mut out = service(ns, name);
    for b in backends {
        out.push_str(&slice(ns, name, &[(*b, Some(true))]));
    }
    out
}

/// One path rule: (path, pathType, service).
pub type PathRule<'a> = (&'a str, &'a str, &'a str);

/// An Ingress of class `sluice` with one rule for `host` (`None`: any host).
pub fn ingress(ns: &str, name: &str, host: Option<&str>, paths: &[PathRule<'_>]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  ingressClassName: sluice\n  rules:\n  - "
    );
    if let Some(h) = host {
        out.push_str(&format!("host: \"{h}\"\n    "));
    }
    out.push_str("http:\n      paths:\n");
    for (p, t, svc) in paths {
        out.push_str(&format!(
            "      - path: \"{p}\"\n        pathType: {t}\n        backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n"
        ));
    }
    out.push_str("---\n");
    out
}

/// Adds annotations to a manifest made by [`ingress`].
pub fn annotate(ingress: &str, annotations: &[(&str, &str)]) -> String {
    let list: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect();
    ingress.replacen(
        "}\nspec:",
        &format!(", annotations: {{{}}}}}\nspec:", list.join(", ")),
        1,
    )
}

// ---------------------------------------------------------------------------------------------
// sluice in-process

tokio::task_local! {
    /// Set (by [`through_both_sources`]) to run a test's sluice on the kubernetes source: its
    /// manifests are applied to a fake API server instead of being written to a folder.
    pub static KUBE_SOURCE: bool;
}

/// Generates, for each named `async fn` test body, one test on the files source and one on the
/// kubernetes source.
#[macro_export]
macro_rules! through_both_sources {
    ($($name:ident),* $(,)?) => {
        mod files_source {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name().await
                }
            )*
        }
        mod kubernetes_source {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::KUBE_SOURCE.scope(true, super::$name()).await
                }
            )*
        }
    };
}

/// Settings text that reads `api` instead of the manifests folder; the kubeconfig goes in `dir`.
pub fn kube_settings_text(
    base: &str,
    dir: &Path,
    api: &fake_apiserver::FakeApiServer,
    identity: &str,
) -> String {
    let kubeconfig = dir.join(format!("kubeconfig-{identity}"));
    std::fs::write(&kubeconfig, api.kubeconfig_yaml()).unwrap();
    base.replace(
        "[source.files]\ndirectory = \"manifests\"\npoll_interval_ms = 20\n",
        "",
    ) + &format!(
        "[source]\nkind = \"kubernetes\"\n[source.kubernetes]\nkubeconfig = \"{}\"\n\
         [leader_election]\nlease_name = \"sluice-test\"\nlease_namespace = \"sluice\"\n\
         lease_duration_secs = 5\nrenew_period_secs = 1\nidentity = \"{identity}\"\n\
         [status]\naddresses = [\"192.0.2.10\", \"lb.example.test\"]\n",
        kubeconfig.display()
    )
}

/// A sluice started in-process on loopback port 0, reading a temporary folder of manifests.
pub struct Sluice {
    /// The fake API server, when the test runs on the kubernetes source.
    pub api: Option<fake_apiserver::FakeApiServer>,
    pub running: Option<sluice::Running>,
    pub addr: SocketAddr,
    /// The first HTTPS listener, when the settings have one.
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Everything the access log wrote.
    pub access_log: SharedBuf,
}

/// A writer whose bytes a test can read.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Settings text for tests: loopback port 0, fast polling, short timeouts.
pub fn test_settings(extra_upstream: &str) -> String {
    format!(
        "[server]\nhttp_listen = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\nworker_threads = 2\n\
         shutdown_grace_period_secs = 5\n\
         [upstream]\nconnect_timeout_ms = 1000\nread_timeout_ms = 2000\n{extra_upstream}\n\
         [source.files]\ndirectory = \"manifests\"\npoll_interval_ms = 20\n"
    )
}

/// [`test_settings`] with `extra_server` lines added to its `[server]` table.
pub fn settings_with_server(extra_server: &str) -> String {
    test_settings("").replacen("[server]\n", &format!("[server]\n{extra_server}\n"), 1)
}

impl Sluice {
    /// Starts sluice with `manifests` as `manifests/routes.yaml` and default test settings.
    pub async fn start(manifests: &str) -> Sluice {
        Sluice::start_with(manifests, &test_settings("")).await
    }

    pub async fn start_with(manifests: &str, settings_text: &str) -> Sluice {
        if KUBE_SOURCE.try_with(|k| *k).unwrap_or(false) {
            let api = fake_apiserver::FakeApiServer::start().await;
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifests).unwrap();
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                api.apply(doc);
            }
            let dir = tempfile::tempdir().unwrap();
            let text = kube_settings_text(settings_text, dir.path(), &api, "test");
            let mut s = Sluice::start_in(dir, &text, true).await;
            s.api = Some(api);
            return s;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        std::fs::write(dir.path().join("manifests/routes.yaml"), manifests).unwrap();
        Sluice::start_in(dir, settings_text, true).await
    }

    /// Starts sluice with `settings_text` as `sluice.toml` in `dir`; waits for readiness when
    /// `ready` is set.
    pub async fn start_in(dir: tempfile::TempDir, settings_text: &str, ready: bool) -> Sluice {
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, settings_text).unwrap();
        let settings = sluice::settings::load(&config).unwrap();
        let access_log = SharedBuf::default();
        let running = sluice::start_with(settings, Box::new(access_log.clone())).unwrap();
        let (addr, admin) = (running.http_addrs[0], running.admin_addr);
        let https = running.https_addrs.first().copied();
        let state = running.state.clone();
        if ready {
            eventually(STEP, "the first snapshot", || {
                let ready = state.is_ready();
                async move { ready.then_some(()) }
            })
            .await;
        }
        Sluice {
            api: None,
            running: Some(running),
            addr,
            https,
            admin,
            dir,
            access_log,
        }
    }

    /// The running proxy's shared state.
    pub fn state(&self) -> &std::sync::Arc<sluice::state::State> {
        &self.running.as_ref().expect("sluice is running").state
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Every rule the live snapshot skips, with why.
    pub fn skipped(&self) -> Vec<sluice_config::Finding> {
        self.running
            .as_ref()
            .expect("sluice is running")
            .state
            .live()
            .skipped
            .to_vec()
    }

    /// The finding the live snapshot reports for Ingress `name`; fails the test without one.
    pub fn finding_of(&self, name: &str) -> sluice_config::Finding {
        self.skipped()
            .into_iter()
            .find(|f| f.ingress.name == name)
            .unwrap_or_else(|| panic!("no finding for Ingress {name}"))
    }

    /// Replaces a manifest file atomically (write then rename), as a ConfigMap update does.
    pub fn write_manifest(&self, name: &str, text: &str) {
        write_atomically(&self.manifests_dir().join(name), text);
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        get(self.addr, host, path).await
    }

    /// Waits until a request for (host, path) is answered by `backend`.
    pub async fn wait_for_backend(&self, host: &str, path: &str, backend: &str) {
        let addr = self.addr;
        eventually(
            STEP,
            &format!("{host}{path} to reach {backend}"),
            || async move {
                let r = get(addr, host, path).await;
                (r.status == 200 && r.backend() == backend).then_some(())
            },
        )
        .await;
    }

    /// Starts a graceful shutdown and waits for the process-level stop, bounded by [`STEP`].
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            let waited = tokio::task::spawn_blocking(move || r.wait());
            tokio::time::timeout(STEP, waited)
                .await
                .expect("sluice did not stop in time")
                .unwrap();
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// The text of the admin listener's `/metrics`.
pub async fn scrape(s: &Sluice) -> String {
    let r = get(s.admin, "admin", "/metrics").await;
    assert_eq!(r.status, 200);
    r.body
}

/// The value of the sample whose line starts with `prefix` (labels in alphabetical order).
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
