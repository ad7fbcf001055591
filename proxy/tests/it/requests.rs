//! Requests as an attacker or a careless client writes them: paths that normalize to another
//! route, hosts that are not hosts, bodies over the limit, smuggling probes. Every request is
//! written byte for byte on a raw loopback socket, so nothing in a client library cleans it up
//! first, and the backends report what they received.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A response as read off a raw socket: status (0 when the connection closed without one),
/// and the body, de-chunked.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a backend reply ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header `name` (lowercase) of a response or request head.
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Decodes a chunked body; `None` while incomplete or malformed.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Parses the first response in `bytes`.
fn parse_reply(bytes: &[u8]) -> RawReply {
    let Some(end) = find(bytes, b"\r\n\r\n") else {
        return RawReply {
            status: 0,
            head: String::from_utf8_lossy(bytes).into_owned(),
            body: Vec::new(),
        };
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &bytes[end + 4..];
    let body = if head_value(&head, "transfer-encoding").is_some() {
        dechunk(rest).unwrap_or_default()
    } else {
        let len = head_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(rest.len());
        rest[..len.min(rest.len())].to_vec()
    };
    RawReply { status, head, body }
}

/// Writes `request` on a new connection and reads until sluice closes it (every request here
/// asks for `Connection: close`, or is one sluice refuses and closes on) or [`STEP`] passes.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> RawReply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    parse_reply(&out)
}

/// A GET for `target` with the given extra header lines, closing after the answer.
fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// A backend that records the requests it receives, as it framed them.

/// One request as a backend read it: the request line, the header lines, the body.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) line: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// A loopback HTTP/1.1 backend that frames each request by its `Content-Length` or chunked
/// encoding, records it whole, and answers `200 ok`. A request whose body never completes is
/// not recorded.
pub(crate) struct Recorder {
    pub(crate) addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub(crate) async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Recorder::serve(stream, sink.clone()));
            }
        });
        Recorder { addr, got, task }
    }

    async fn serve(mut stream: TcpStream, sink: Arc<Mutex<Vec<Received>>>) {
        let mut buf = Vec::new();
        // Bounded: at most 100 requests per connection, each read within STEP.
        for _ in 0..100 {
            let Some(req) = Recorder::read_one(&mut stream, &mut buf).await else {
                return;
            };
            sink.lock().unwrap().push(req);
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(ok).await.is_err() {
                return;
            }
        }
    }

    /// Reads one whole request from `stream` (bytes already read are in `buf`).
    async fn read_one(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Some(req) = Recorder::frame(buf) {
                return Some(req);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Takes one complete request off the front of `buf`.
    fn frame(buf: &mut Vec<u8>) -> Option<Received> {
        let end = find(buf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let line = lines.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let rest = &buf[end + 4..];
        let (body, used) = if value("transfer-encoding").is_some() {
            let body = dechunk(rest)?;
            // The encoded length: find the terminating zero chunk after the data.
            let used = find(rest, b"0\r\n\r\n").map(|i| i + 5)?;
            (body, used)
        } else {
            let len: usize = value("content-length")
                .map(|v| v.parse().unwrap_or(0))
                .unwrap_or(0);
            if rest.len() < len {
                return None;
            }
            (rest[..len].to_vec(), len)
        };
        buf.drain(..end + 4 + used);
        Some(Received {
            line,
            headers,
            body,
        })
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// `/` goes to `public`, `/admin` to `admin`, the Exact `/exact` to `exact` on `app.test`;
/// on `raw.test` (with `sluice.dev/forward-raw-path`) `/keys` goes to `raw`.
async fn path_fixture() -> (Sluice, Vec<Backend>) {
    let backends = vec![
        Backend::start("public").await,
        Backend::start("admin").await,
        Backend::start("exact").await,
        Backend::start("raw").await,
    ];
    let mut manifests: String = backends
        .iter()
        .map(|b| service_with("default", &b.name, &[b.addr]))
        .collect();
    manifests.push_str(&ingress(
        "default",
        "app",
        Some("app.test"),
        &[
            ("/", "Prefix", "public"),
            ("/admin", "Prefix", "admin"),
            ("/exact", "Exact", "exact"),
        ],
    ));
    manifests.push_str(&annotate(
        &ingress(
            "default",
            "raw",
            Some("raw.test"),
            &[("/keys", "Prefix", "raw")],
        ),
        &[("sluice.dev/forward-raw-path", "true")],
    ));
    (Sluice::start(&manifests).await, backends)
}

/// Each row: request target, the backend it must reach (or the status sluice answers), and
/// the path and query the backend must receive. Before normalization, every `admin` row below
/// reached `public`; routing by the raw path again makes this fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_matching_and_the_upstream_sees_the_normalized_path() {
    let (s, _backends) = path_fixture().await;
    for (host, target, want, upstream) in [
        ("app.test", "/public/../admin/x", "admin", "/admin/x"),
        ("app.test", "//admin/x", "admin", "/admin/x"),
        ("app.test", "/./admin/x", "admin", "/admin/x"),
        ("app.test", "/%61dmin/x", "admin", "/admin/x"),
        ("app.test", "/x/%2e%2e/admin/x", "admin", "/admin/x"),
        ("app.test", "/x/%2E%2E/admin", "admin", "/admin"),
        (
            "app.test",
            "/admin;jsessionid=1",
            "admin",
            "/admin;jsessionid=1",
        ),
        ("app.test", "/x/..;/admin/y", "admin", "/admin/y"),
        ("app.test", "/exact;v=1", "exact", "/exact;v=1"),
        ("app.test", "/exact/", "public", "/exact/"),
        ("app.test", "/admin%2Fx", "public", "/admin%2Fx"),
        ("app.test", "/a%5C..%5Cadmin", "public", "/a%5C..%5Cadmin"),
        ("app.test", "/adminx", "public", "/adminx"),
        (
            "app.test",
            "/p/./q//r?x=/../admin&y=%61",
            "public",
            "/p/q/r?x=/../admin&y=%61",
        ),
        ("raw.test", "/keys//a/./b%61", "raw", "/keys//a/./b%61"),
        ("raw.test", "//keys/../keys/k", "raw", "//keys/../keys/k"),
    ] {
        let r = exchange(s.addr, &get(target, &format!("Host: {host}\r\n"))).await;
        assert_eq!(r.status, 200, "{host}{target}: {}", r.head);
        let json = r.json();
        assert_eq!(json["backend"], want, "{host}{target}");
        assert_eq!(json["uri"], upstream, "{host}{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_climbs_above_the_root_is_refused_with_400() {
    let (s, backends) = path_fixture().await;
    for target in [
        "/..",
        "/../admin",
        "/a/../../admin",
        "/%2e%2e/admin",
        "/..;x/admin",
    ] {
        let r = exchange(s.addr, &get(target, "Host: app.test\r\n")).await;
        assert_eq!(r.status, 400, "{target}: {}", r.head);
    }
    assert!(backends.iter().all(|b| b.hits() == 0));
}

/// A rule path written in another form is served as normalized and reported.
async fn a_rule_path_that_normalization_changes_is_served_normalized_and_reported() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress(
            "default",
            "odd",
            Some("odd.test"),
            &[("//api/./v1", "Prefix", "svc-a")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = exchange(s.addr, &get("/api/v1/x", "Host: odd.test\r\n")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["backend"], "a");
    let reported = s.skipped();
    assert!(
        reported
            .iter()
            .any(|k| k.reason.as_str() == "NormalizedPath"
                && k.message.contains("`//api/./v1` is served as `/api/v1`")),
        "{reported:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hosts

async fn host_fixture() -> (Sluice, Backend, Backend) {
    let (app, any) = (Backend::start("app").await, Backend::start("any").await);
    let manifests = [
        service_with("default", "app", &[app.addr]),
        service_with("default", "any", &[any.addr]),
        ingress(
            "default",
            "app",
            Some("app.test"),
            &[("/", "Prefix", "app")],
        ),
        ingress("default", "any", None, &[("/", "Prefix", "any")]),
    ]
    .concat();
    (Sluice::start(&manifests).await, app, any)
}

/// Hosts that are not names never reach a host-less rule: before validation each of these
/// was forwarded verbatim to `any`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_host_are_refused_with_400() {
    let (s, app, any) = host_fixture().await;
    for (what, request) in [
        (
            "no Host on HTTP/1.1",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("a path in the host", get("/", "Host: a/../x\r\n")),
        ("markup in the host", get("/", "Host: <script>\r\n")),
        ("a space in the host", get("/", "Host: a b\r\n")),
        ("an empty label", get("/", "Host: app..test\r\n")),
        ("a bad port", get("/", "Host: app.test:80x\r\n")),
        (
            "two Host headers",
            get("/", "Host: app.test\r\nHost: app.test\r\n"),
        ),
        (
            "an absolute-form authority and another Host",
            get("http://app.test/", "Host: other.test\r\n"),
        ),
    ] {
        let r = exchange(s.addr, &request).await;
        assert_eq!(r.status, 400, "{what}: {}", r.head);
    }
    assert_eq!(app.hits() + any.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_form_authority_is_the_host_and_the_upstream_gets_the_routed_host() {
    let (s, app, _any) = host_fixture().await;
    // No Host header: the authority routes (not the host-less rule) and becomes the Host.
    let r = exchange(
        s.addr,
        b"GET http://app.test/admin/x?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let json = r.json();
    assert_eq!(json["backend"], "app");
    assert_eq!(json["uri"], "/admin/x?q=1");
    assert_eq!(json["headers"]["host"][0], "app.test");
    // Both, agreeing: one Host upstream, origin form.
    let r = exchange(s.addr, &get("http://app.test/y", "Host: app.test\r\n")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["headers"]["host"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["uri"], "/y");
    // Case, a port and a trailing dot do not change the host.
    let r = exchange(s.addr, &get("/", "Host: APP.test.:8080\r\n")).await;
    assert_eq!(r.json()["backend"], "app");
    assert_eq!(app.hits(), 3);
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// Settings with a 1 KiB default body limit.
fn small_body_settings() -> String {
    test_settings("").replace("[server]\n", "[server]\nmax_request_body_bytes = 1024\n")
}

async fn body_fixture(settings: &str) -> (Sluice, Recorder) {
    let rec = Recorder::start().await;
    let manifests = [
        service_with("default", "rec", &[rec.addr]),
        ingress(
            "default",
            "small",
            Some("small.test"),
            &[("/", "Prefix", "rec")],
        ),
        annotate(
            &ingress(
                "default",
                "big",
                Some("big.test"),
                &[("/", "Prefix", "rec")],
            ),
            &[("sluice.dev/proxy-body-size", "4k")],
        ),
        annotate(
            &ingress(
                "default",
                "free",
                Some("free.test"),
                &[("/", "Prefix", "rec")],
            ),
            &[("sluice.dev/proxy-body-size", "0")],
        ),
    ]
    .concat();
    (Sluice::start_with(&manifests, settings).await, rec)
}

fn post(host: &str, body_len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.resize(r.len() + body_len, b'x');
    r
}

/// A body whose Content-Length is over the route's limit gets 413 and nothing reaches the
/// backend; at the limit it passes whole. Without the limit the 1025-byte body passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_by_content_length_gets_413_before_anything_is_forwarded() {
    let (s, rec) = body_fixture(&small_body_settings()).await;
    for (host, len, want) in [
        ("small.test", 1024, 200),
        ("small.test", 1025, 413),
        ("big.test", 4096, 200),
        ("big.test", 4097, 413),
        ("free.test", 3 << 20, 200),
    ] {
        let r = exchange(s.addr, &post(host, len)).await;
        assert_eq!(r.status, want, "{host} {len}: {}", r.head);
    }
    let lens: Vec<usize> = rec.received().iter().map(|r| r.body.len()).collect();
    assert_eq!(lens, vec![1024, 4096, 3 << 20]);
}

/// A chunked body has no length up front: it is cut when it grows over the limit, and the
/// backend never receives a whole request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_that_grows_over_the_limit_is_cut_with_413() {
    let (s, rec) = body_fixture(&small_body_settings()).await;
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let r = exchange(s.addr, request.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.head);
    // Within the limit, the same framing passes whole.
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n"
    );
    let r = exchange(s.addr, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let lens: Vec<usize> = rec.received().iter().map(|r| r.body.len()).collect();
    assert_eq!(lens, vec![600]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_limit_is_one_mebibyte() {
    let (s, rec) = body_fixture(&test_settings("")).await;
    assert_eq!(
        exchange(s.addr, &post("small.test", 1 << 20)).await.status,
        200
    );
    assert_eq!(
        exchange(s.addr, &post("small.test", (1 << 20) + 1))
            .await
            .status,
        413
    );
    assert_eq!(rec.received().len(), 1);
}

/// Sends 3 of 10 announced body bytes to `host` and expects 408 (well within [`STEP`], so
/// the 60 s default deadline would fail it), with nothing forwarded.
async fn expect_408_for_a_silent_body(s: &Sluice, rec: &Recorder, host: &str) {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\nabc");
    c.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(STEP, c.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was still open after {STEP:?}");
    assert_eq!(
        parse_reply(&out).status,
        408,
        "{host}: {}",
        String::from_utf8_lossy(&out)
    );
    assert!(rec.received().is_empty());
}

/// A client silent in the middle of its body is answered 408 after `client_body_timeout`, from
/// the settings or from the route's `sluice.dev/client-body-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_in_the_middle_of_its_body_gets_408() {
    let settings =
        test_settings("").replace("[server]\n", "[server]\nclient_body_timeout_secs = 1\n");
    let (s, rec) = body_fixture(&settings).await;
    expect_408_for_a_silent_body(&s, &rec, "small.test").await;
    let rec = Recorder::start().await;
    let manifests = [
        service_with("default", "rec", &[rec.addr]),
        annotate(
            &ingress(
                "default",
                "slow",
                Some("slow.test"),
                &[("/", "Prefix", "rec")],
            ),
            &[("sluice.dev/client-body-timeout", "1s")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    expect_408_for_a_silent_body(&s, &rec, "slow.test").await;
}

// ---------------------------------------------------------------------------------------------
// Headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_underscores_are_dropped_unless_allowed() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let request = get("/", "Host: x.test\r\nX_User: admin\r\nX-User: alice\r\n");
    let s = Sluice::start(&manifests).await;
    let json = exchange(s.addr, &request).await.json();
    assert!(json["headers"].get("x_user").is_none(), "{json}");
    assert_eq!(json["headers"]["x-user"][0], "alice");
    let allowing =
        test_settings("").replace("[server]\n", "[server]\nunderscores_in_headers = true\n");
    let s = Sluice::start_with(&manifests, &allowing).await;
    let json = exchange(s.addr, &request).await.json();
    assert_eq!(json["headers"]["x_user"][0], "admin");
}

// ---------------------------------------------------------------------------------------------
// Smuggling: every probe is refused, or framed one way on both sides. The backend must never
// see a request that the client hid inside another one's body.

/// What a probe must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 400, and nothing reaches the backend.
    Refused,
    /// Framed by `Transfer-Encoding` (never by `Content-Length` beside it): one request reaches
    /// the backend with exactly this body, and the connection is closed after the answer, so
    /// nothing after the ambiguous message is read as a request (RFC 9112 section 6.1).
    ///
    /// The bytes after the chunked body may also be seen while the backend's answer is still
    /// on its way; then the client gets 400 instead of 200 (a race between the two, either
    /// answer safe). What must hold in both cases: nothing but that one request, framed by
    /// chunked, reaches the backend, and the connection is closed.
    ChunkedThenClosed(&'static str),
}

/// `/smuggled` is the request a desync would let through.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// Each probe: what it is, the bytes, and what must happen.
fn smuggling_probes() -> Vec<(&'static str, String, Outcome)> {
    use Outcome::*;
    let post = "POST / HTTP/1.1\r\nHost: app.test\r\n";
    let h = HIDDEN;
    let n = HIDDEN.len();
    vec![
        (
            "CL.TE",
            format!("{post}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{h}", 5 + n),
            ChunkedThenClosed(""),
        ),
        (
            "TE.CL",
            format!("{post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{h}\r\n0\r\n\r\n"),
            ChunkedThenClosed(HIDDEN),
        ),
        (
            "TE with a space before the colon",
            format!("{post}Content-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused,
        ),
        (
            "TE xchunked",
            format!("{post}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{h}"),
            Refused,
        ),
        (
            "TE chunked then identity",
            format!("{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{h}"),
            Refused,
        ),
        (
            "TE with a tab and a comma list",
            format!("{post}Transfer-Encoding:\tchunked, identity\r\n\r\n0\r\n\r\n{h}"),
            Refused,
        ),
        (
            "two differing Content-Length",
            format!("{post}Content-Length: 0\r\nContent-Length: {n}\r\n\r\n{h}"),
            Refused,
        ),
        (
            "a Content-Length list",
            format!("{post}Content-Length: 0, {n}\r\n\r\n{h}"),
            Refused,
        ),
        (
            "a chunk size that is not hex",
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{h}\r\n0\r\n\r\n"),
            Refused,
        ),
        (
            "a negative chunk size",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n-1\r\n{h}\r\n0\r\n\r\n"),
            Refused,
        ),
        (
            "an overflowing chunk size",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{h}\r\n0\r\n\r\n"),
            Refused,
        ),
        (
            "a 0x chunk size",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n0x2a\r\n{h}\r\n0\r\n\r\n"),
            Refused,
        ),
        (
            "obs-fold in Transfer-Encoding",
            format!("{post}Content-Length: 5\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused,
        ),
        (
            "obs-fold in another header",
            format!("{post}X-Note: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            Refused,
        ),
    ]
}

/// The smuggling defences that hold today stay: each probe is refused, or framed by its
/// chunked encoding alone with the connection closed after it, and the backend receives
/// exactly that. An honest request follows each probe on the same connection; a desync would
/// answer it or hand the hidden request to the backend. A regression in Pingora's parser or
/// framing (or in a vendored patch) makes this fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_are_refused_or_framed_safely() {
    let rec = Recorder::start().await;
    let manifests = [
        service_with("default", "rec", &[rec.addr]),
        ingress(
            "default",
            "app",
            Some("app.test"),
            &[("/", "Prefix", "rec")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for (what, probe, outcome) in smuggling_probes() {
        let before = rec.received().len();
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(probe.as_bytes()).await.unwrap();
        let _ = c
            .write_all(b"GET /honest HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(STEP, c.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "{what}: the connection stayed open");
        let text = String::from_utf8_lossy(&out);
        // One answer on the connection, never one for the honest request behind the probe.
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{what}: {text}");
        let first = parse_reply(&out);
        let got = rec.received();
        let new = &got[before..];
        match outcome {
            Outcome::Refused => {
                assert_eq!(first.status, 400, "{what}: {}", first.head);
                assert!(new.is_empty(), "{what}: refused but forwarded: {new:?}");
            }
            Outcome::ChunkedThenClosed(body) => {
                assert!(
                    first.status == 200 || first.status == 400,
                    "{what}: {}",
                    first.head
                );
                if first.status == 400 && new.is_empty() {
                    continue;
                }
                assert_eq!(new.len(), 1, "{what}: {new:?}");
                assert_eq!(new[0].line, "POST / HTTP/1.1", "{what}");
                assert_eq!(String::from_utf8_lossy(&new[0].body), body, "{what}");
                assert!(
                    new[0].headers.iter().all(|(k, _)| k != "content-length"),
                    "{what}: Content-Length beside the chunked encoding reached the backend: {new:?}"
                );
            }
        }
    }
}

// Reported through both sources: the report is where a user sees the normalized rule.
crate::through_both_sources!(
    a_rule_path_that_normalization_changes_is_served_normalized_and_reported
);
