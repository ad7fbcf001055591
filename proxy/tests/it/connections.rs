//! Client connections as an attacker or a careless client meets them: silent and slow-head
//! connections closed at their deadline, idle keepalive connections closed after the keepalive
//! timeout, the connection caps holding while `/healthz` answers, an oversized head refused
//! before it is buffered, a client that stops reading dropped after the send timeout, an HTTP/2
//! connection ended with a graceful GOAWAY after its last allowed request, and requests on open
//! keepalive connections served through the drain after shutdown.
//!
//! Deadlines here are 1 s, so each close is awaited with a bound of a few seconds; the lower
//! bounds check that the close comes from the deadline, not from something earlier.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

fn manifests(backend: &Backend) -> String {
    [
        service_with("default", "app", &[backend.addr]),
        ingress(
            "default",
            "app",
            Some("app.test"),
            &[("/", "Prefix", "app")],
        ),
    ]
    .concat()
}

/// Test settings with `server_keys` added to `[server]`.
fn settings(server_keys: &str) -> String {
    test_settings("").replacen("[server]\n", &format!("[server]\n{server_keys}\n"), 1)
}

/// A backend `app` for host `app.test`, and sluice with `settings_text`.
async fn start(settings_text: &str) -> (Backend, Sluice) {
    let backend = Backend::start("app").await;
    let sluice = Sluice::start_with(&manifests(&backend), settings_text).await;
    (backend, sluice)
}

/// Sends one GET on `conn` and checks it is answered 200; returns the response, lower case.
async fn get_ok(conn: &mut TcpStream) -> String {
    conn.write_all(GET).await.unwrap();
    let resp = read_response(conn).await.to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
    resp
}

/// Reads until the peer closes the connection (EOF or reset); the time it took, or `None` when
/// it was still open after `limit`. Bytes read on the way are returned too.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), seen)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// Connects to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(STEP, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// Connects from `from` and checks the connection is closed at once, before any byte is sent.
async fn assert_refused(what: &str, from: &str, addr: SocketAddr) {
    let mut conn = connect_from(from, addr).await;
    let closed = closed_within(&mut conn, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "{what} was kept");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// Reads one response head (and the JSON body the test backend sends, which has a
/// Content-Length) from `stream`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + STEP;
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("response timed out")
            .expect("read failed");
        assert!(n > 0, "connection closed before a whole response: {text:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn assert_closed_at_deadline(what: &str, closed: Option<(Duration, Vec<u8>)>) {
    let (after, _) = closed.unwrap_or_else(|| panic!("{what}: still open after 5 s"));
    // The deadline is 1 s: an earlier close would not be the deadline's doing.
    assert!(
        after >= Duration::from_millis(800),
        "{what}: closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_head_connections_are_closed_at_the_header_deadline() {
    let tls = "[tls]\nhttps_listen = [\"127.0.0.1:0\"]\n";
    let (backend, sluice) = start(&(settings("client_header_timeout_secs = 1") + tls)).await;
    let https = sluice.https.unwrap();
    let limit = Duration::from_secs(5);

    // A silent socket on the plain port (stuck in the HTTP/2 prior-knowledge check), one on the
    // TLS port (stuck in the handshake), and one that sends only part of an HTTP/2 preface.
    let mut silent = connect(sluice.addr).await;
    let mut silent_tls = connect(https).await;
    let mut half_preface = connect(sluice.addr).await;
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (a, b, c) = tokio::join!(
        closed_within(&mut silent, limit),
        closed_within(&mut silent_tls, limit),
        closed_within(&mut half_preface, limit),
    );
    assert_closed_at_deadline("silent plain connection", a);
    assert_closed_at_deadline("silent TLS connection", b);
    assert_closed_at_deadline("partial HTTP/2 preface", c);

    // A head trickling in a byte every 100 ms: each read is quick, the whole head is not.
    let mut slow = connect(sluice.addr).await;
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        if let Some((_, _)) = closed_within(&mut slow, Duration::from_millis(1)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow head was still being read after 5 s");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "slow head closed after {after:?}"
    );
    assert_eq!(backend.hits(), 0);

    // A prompt client on a reused connection is not affected.
    let mut prompt = connect(sluice.addr).await;
    for _ in 0..2 {
        get_ok(&mut prompt).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_after_the_keepalive_timeout() {
    let (_backend, sluice) = start(&settings("keepalive_timeout_secs = 1")).await;
    let limit = Duration::from_secs(5);

    // HTTP/1.1: one request, then silence.
    let mut h1 = connect(sluice.addr).await;
    get_ok(&mut h1).await;
    assert_closed_at_deadline(
        "idle HTTP/1.1 connection",
        closed_within(&mut h1, limit).await,
    );

    // HTTP/2 with prior knowledge: one stream, then no stream open.
    let stream = connect(sluice.addr).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("http://app.test/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(read_reply(resp).await.unwrap().status, 200);
    let idle_from = Instant::now();
    tokio::time::timeout(limit, conn)
        .await
        .expect("idle HTTP/2 connection still open after 5 s")
        .unwrap()
        .ok();
    let after = idle_from.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_its_last_allowed_request() {
    let (_backend, sluice) = start(&settings("keepalive_requests = 3")).await;
    let mut conn = connect(sluice.addr).await;
    for n in 1..=3 {
        let resp = get_ok(&mut conn).await;
        assert_eq!(
            resp.contains("connection: close"),
            n == 3,
            "request {n}: {resp}"
        );
    }
    let closed = closed_within(&mut conn, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "still open after the third request");
}

/// A plain-text HTTP/2 client speaking frames directly, so the GOAWAY frames the server sends
/// are seen as they are on the wire (an HTTP/2 library hides them).
struct H2Frames {
    stream: TcpStream,
    /// The last stream id of each GOAWAY received, in order.
    goaways: Vec<u32>,
    /// Per stream: the first byte of its response header block (0x88 is `:status: 200`), and
    /// whether the response has ended.
    responses: BTreeMap<u32, (u8, bool)>,
    /// Streams the server reset.
    resets: Vec<u32>,
    closed: bool,
}

const FRAME_DATA: u8 = 0;
const FRAME_HEADERS: u8 = 1;
const FRAME_RST_STREAM: u8 = 3;
const FRAME_SETTINGS: u8 = 4;
const FRAME_PING: u8 = 6;
const FRAME_GOAWAY: u8 = 7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HPACK's static-table `:status: 200`.
const STATUS_200: u8 = 0x88;

impl H2Frames {
    /// Connects with prior knowledge: the preface and an empty SETTINGS frame.
    async fn connect(addr: SocketAddr) -> H2Frames {
        let mut h2 = H2Frames {
            stream: connect(addr).await,
            goaways: Vec::new(),
            responses: BTreeMap::new(),
            resets: Vec::new(),
            closed: false,
        };
        h2.stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        h2.send(FRAME_SETTINGS, 0, 0, &[]).await;
        h2
    }

    async fn send(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends `GET http://app.test/` on `stream_id`, without a body.
    async fn get(&mut self, stream_id: u32) {
        // :method GET, :scheme http, :path / (static table), :authority as a literal.
        let mut block = vec![0x82, 0x86, 0x84, 0x01, 8];
        block.extend_from_slice(b"app.test");
        self.send(
            FRAME_HEADERS,
            FLAG_END_STREAM | FLAG_END_HEADERS,
            stream_id,
            &block,
        )
        .await;
    }

    /// Reads one frame and records it, answering SETTINGS and PING (a graceful GOAWAY waits
    /// for the PING's answer); false once the connection is closed.
    async fn read_frame(&mut self, deadline: Instant) -> bool {
        let mut head = [0u8; 9];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.read_exact(&mut head)).await {
            Err(_) => panic!("no frame before the deadline; so far {:?}", self.goaways),
            Ok(Err(_)) => {
                self.closed = true;
                return false;
            }
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        let read = tokio::time::timeout(STEP, self.stream.read_exact(&mut payload)).await;
        assert!(matches!(read, Ok(Ok(_))), "a frame's payload was cut short");
        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                self.send(FRAME_SETTINGS, FLAG_ACK, 0, &[]).await
            }
            FRAME_PING if flags & FLAG_ACK == 0 => {
                self.send(FRAME_PING, FLAG_ACK, 0, &payload).await
            }
            FRAME_GOAWAY => self.goaways.push(
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
            ),
            FRAME_RST_STREAM => self.resets.push(stream_id),
            FRAME_HEADERS => {
                let mut at = 0;
                if flags & FLAG_PADDED != 0 {
                    at += 1;
                }
                if flags & FLAG_PRIORITY != 0 {
                    at += 5;
                }
                let entry = self
                    .responses
                    .entry(stream_id)
                    .or_insert((payload[at], false));
                entry.1 |= flags & FLAG_END_STREAM != 0;
            }
            FRAME_DATA if flags & FLAG_END_STREAM != 0 => {
                if let Some(entry) = self.responses.get_mut(&stream_id) {
                    entry.1 = true;
                }
            }
            _ => {}
        }
        true
    }

    /// Reads frames until the responses on `stream_ids` have ended.
    async fn responses_to(&mut self, stream_ids: &[u32]) {
        let deadline = Instant::now() + STEP;
        while !stream_ids
            .iter()
            .all(|id| self.responses.get(id).is_some_and(|r| r.1))
        {
            assert!(
                self.read_frame(deadline).await,
                "closed before the responses to {stream_ids:?}: {:?}",
                self.responses
            );
        }
        for id in stream_ids {
            assert_eq!(
                self.responses[id].0, STATUS_200,
                "stream {id} not answered 200"
            );
        }
    }

    /// Reads frames until the server closes the connection.
    async fn until_closed(&mut self) {
        let deadline = Instant::now() + STEP;
        while self.read_frame(deadline).await {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_a_graceful_goaway_after_its_last_allowed_request() {
    let (backend, sluice) = start(&settings("keepalive_requests = 3")).await;
    let mut h2 = H2Frames::connect(sluice.addr).await;
    h2.get(1).await;
    h2.responses_to(&[1]).await;
    h2.get(3).await;
    h2.responses_to(&[3]).await;
    assert!(
        h2.goaways.is_empty(),
        "GOAWAY before the limit: {:?}",
        h2.goaways
    );

    // The third request reaches the limit; the fourth is sent before the GOAWAY can have
    // arrived, so it is in flight and is served too.
    h2.get(5).await;
    h2.get(7).await;
    h2.responses_to(&[5, 7]).await;
    h2.until_closed().await;
    assert_eq!(
        h2.goaways,
        [0x7fff_ffff, 7],
        "a graceful GOAWAY (last stream id MAX, then the last one served)"
    );
    assert!(h2.resets.is_empty(), "streams reset: {:?}", h2.resets);
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 4);

    // The client's next request goes on a fresh connection, which is served.
    let mut fresh = H2Frames::connect(sluice.addr).await;
    fresh.get(1).await;
    fresh.responses_to(&[1]).await;
    assert!(fresh.goaways.is_empty() && !fresh.closed);
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_gets_431_before_it_is_complete() {
    let (backend, sluice) = start(&settings("max_request_header_bytes = 4096")).await;
    // 6 000 bytes of head with no end: refused without waiting for more (before the patch
    // series, Pingora kept reading up to 1 MiB and this timed out).
    let mut conn = connect(sluice.addr).await;
    let mut head = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    while head.len() < 6000 {
        head.extend_from_slice(b"X-Filler: ");
        head.extend_from_slice(&[b'a'; 90]);
        head.extend_from_slice(b"\r\n");
    }
    head.truncate(6000);
    conn.write_all(&head).await.unwrap();
    let (_, seen) = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("no answer to an oversized head within 5 s");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 431"), "{seen:?}");
    assert_eq!(backend.hits(), 0);

    // A head under the limit still passes.
    let mut conn = connect(sluice.addr).await;
    get_ok(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_caps_hold_while_healthz_answers() {
    let (_backend, sluice) = start(&settings(
        "max_connections = 8\nmax_connections_per_client = 5",
    ))
    .await;

    // Five silent connections from 127.0.0.1 fill its per-client share; a sixth is closed at
    // once, while another client address still gets in.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.0.1", sluice.addr).await);
    }
    assert_refused(
        "a sixth connection from one client",
        "127.0.0.1",
        sluice.addr,
    )
    .await;
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", sluice.addr).await);
    }
    // The process cap (8) is reached: a connection from yet another address is closed at once.
    assert_refused(
        "a connection over the process cap",
        "127.0.0.3",
        sluice.addr,
    )
    .await;
    // The held connections are untouched.
    for c in &mut held {
        assert!(closed_within(c, Duration::from_millis(50)).await.is_none());
    }
    // The admin listener answers whatever the proxy listeners suffer.
    let health = get(sluice.admin, "localhost", "/healthz").await;
    assert_eq!(health.status, 200);
    let metrics = get(sluice.admin, "localhost", "/metrics").await.body;
    assert!(
        metrics.contains("sluice_downstream_connections_refused_total{limit=\"client\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_downstream_connections_refused_total{limit=\"process\"} 1"),
        "{metrics}"
    );

    // Closing one connection frees a slot for a new one, which is served.
    drop(held.pop());
    let addr = sluice.addr;
    eventually(STEP, "a freed slot", || async move {
        let mut c = connect_from("127.0.0.4", addr).await;
        c.write_all(GET).await.ok()?;
        let mut buf = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"HTTP/1.1 200" => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_open_keepalive_connections_are_served_through_the_drain() {
    // To see this test fail, set drain_secs = 0: the idle connection is then dropped at
    // shutdown and its request is lost.
    let (_backend, mut sluice) = start(&settings("drain_secs = 3")).await;

    // One idle keepalive connection, and clients sending requests back to back.
    let mut idle = connect(sluice.addr).await;
    get_ok(&mut idle).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_until_refused(sluice.addr, stop.clone(), ok.clone())))
        .collect();
    let counted = ok.clone();
    eventually(STEP, "requests under load", || {
        let n = counted.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 50).then_some(()) }
    })
    .await;

    let addr = sluice.addr;
    let running = sluice.running.take().unwrap();
    running.shutdown();
    // New connections are refused at once.
    eventually(STEP, "the listener to close", || async move {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    // A request written onto the idle connection after the shutdown began is served, and
    // the connection is then closed.
    let resp = get_ok(&mut idle).await;
    assert!(resp.contains("connection: close"), "{resp}");
    assert!(closed_within(&mut idle, Duration::from_secs(2))
        .await
        .is_some());

    // The clients under load each got a last answer with `Connection: close`; their attempts
    // to reconnect to the closed listener are not requests.
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert_no_failed_request(&failures);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let waited = tokio::task::spawn_blocking(move || running.wait());
    tokio::time::timeout(STEP, waited).await.unwrap().unwrap();
}

/// A client sending GETs back to back on a keepalive connection, opening a new one when
/// the server closes it, until a connection is refused (the listener closed), `stop` is set,
/// or 10 s or 100 000 requests pass. Returns every request that was sent and not answered 200.
async fn client_until_refused(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    use std::sync::atomic::Ordering;
    let mut failures = Vec::new();
    let deadline = Instant::now() + STEP;
    let mut sender = None;
    for _ in 0..100_000 {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            break;
        }
        let s = match &mut sender {
            Some(s) => s,
            None => {
                let Ok(stream) = TcpStream::connect(addr).await else {
                    break;
                };
                let io = hyper_util::rt::TokioIo::new(stream);
                let Ok((s, conn)) = hyper::client::conn::http1::handshake(io).await else {
                    break;
                };
                tokio::spawn(conn);
                sender.insert(s)
            }
        };
        // A connection the server closed after `Connection: close` is not ready: no request
        // is sent on it.
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let sent = tokio::time::timeout(STEP, async {
            let resp = s
                .send_request(request("app.test", "/"))
                .await
                .map_err(|e| e.to_string())?;
            read_reply(resp).await
        })
        .await;
        match sent {
            Ok(Ok(r)) if r.status == 200 => {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(r)) => failures.push(format!("{} {}", r.status, r.body)),
            Ok(Err(e)) => {
                failures.push(e);
                sender = None;
            }
            Err(_) => failures.push("request timed out".into()),
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    // A backend streaming a body far larger than the socket buffers between it, sluice and the
    // client; it records when its writes start failing (sluice closed the upstream side).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<Instant>();
    let backend = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        // At most 1 GiB, the length announced.
        for _ in 0..16 * 1024 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = cut_tx.send(Instant::now());
    });
    let manifests = [
        service_with("default", "app", &[backend_addr]),
        ingress(
            "default",
            "app",
            Some("app.test"),
            &[("/", "Prefix", "app")],
        ),
    ]
    .concat();
    let text = settings("client_send_timeout_secs = 1")
        .replace("read_timeout_ms = 2000", "read_timeout_ms = 60000");
    let sluice = Sluice::start_with(&manifests, &text).await;
    let mut client = connect(sluice.addr).await;
    client.write_all(GET).await.unwrap();
    // Read the first bytes, then stop reading.
    let mut first = [0u8; 12];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let stopped = Instant::now();
    // Without the send timeout, sluice would hold the upstream connection for as long as the
    // client stays (here, past the 10 s bound).
    let cut = tokio::time::timeout(STEP, cut_rx)
        .await
        .expect("the upstream connection was still held 10 s after the client stopped reading")
        .unwrap();
    let after = cut.duration_since(stopped);
    assert!(after >= Duration::from_millis(800), "cut after {after:?}");
    backend.abort();
}
