//! Upstream protocols, with real servers at both ends: HTTPS endpoints, h2c endpoints and their
//! multiplexed connections, gRPC streaming over h2c and over TLS, WebSockets, chosen by
//! `sluice.dev/backend-protocol` or the Service port's `appProtocol`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{select_next_proto, AlpnError, NameType, Ssl, SslAcceptor, SslMethod};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::pki::*;
use crate::support::*;

type Body = BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------------------------------------
// Backends

/// What a [`ProtoBackend`] speaks on each connection it accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Speaks {
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// TLS, then HTTP/1.1; the handshake fails unless the client offers ALPN `http/1.1`.
    TlsH1,
    /// TLS, then HTTP/2; the handshake fails unless the client offers ALPN `h2`.
    TlsH2,
}

/// A loopback backend of one protocol. Plain requests get JSON saying how they arrived (HTTP
/// version, TLS, SNI, ALPN); `/echo.Echo/*` are hand-framed gRPC streaming methods.
struct ProtoBackend {
    addr: SocketAddr,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Most plain requests in progress at once.
    max_in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProtoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one connection reached the backend.
#[derive(Default)]
struct ConnInfo {
    tls: bool,
    sni: Option<String>,
    alpn: Option<String>,
}

impl ProtoBackend {
    async fn start(speaks: Speaks) -> ProtoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let acceptor = match speaks {
            Speaks::H2c => None,
            Speaks::TlsH1 => Some(Arc::new(acceptor(b"\x08http/1.1"))),
            Speaks::TlsH2 => Some(Arc::new(acceptor(b"\x02h2"))),
        };
        let (conns, max) = (connections.clone(), max_in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (acceptor, counts) = (acceptor.clone(), (in_flight.clone(), max.clone()));
                tokio::spawn(async move {
                    let Some(acceptor) = acceptor else {
                        serve(TokioIo::new(stream), true, ConnInfo::default(), counts).await;
                        return;
                    };
                    let ssl = Ssl::new(acceptor.context()).unwrap();
                    let mut tls = tokio_openssl::SslStream::new(ssl, stream).unwrap();
                    if Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    let info = ConnInfo {
                        tls: true,
                        sni: tls
                            .ssl()
                            .servername(NameType::HOST_NAME)
                            .map(str::to_string),
                        alpn: tls
                            .ssl()
                            .selected_alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                    };
                    let h2 = info.alpn.as_deref() == Some("h2");
                    serve(TokioIo::new(tls), h2, info, counts).await;
                });
            }
        });
        ProtoBackend {
            addr,
            connections,
            max_in_flight,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A TLS server context with a certificate for `backend.test` (from a CA no one trusts: sluice
/// does not verify upstream certificates) that accepts only the ALPN protocol `alpn` (wire
/// format).
fn acceptor(alpn: &'static [u8]) -> SslAcceptor {
    let ca = Ca::root("upstream test CA");
    let leaf = ca.issue(&Leaf::server("backend.test", &["backend.test"]));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&leaf.cert).unwrap();
    b.set_private_key(&leaf.key).unwrap();
    b.set_alpn_select_callback(move |_, offered| {
        select_next_proto(alpn, offered).ok_or(AlpnError::ALERT_FATAL)
    });
    b.build()
}

/// Serves one connection with hyper, HTTP/2 or HTTP/1.1.
async fn serve<I>(
    io: TokioIo<I>,
    h2: bool,
    info: ConnInfo,
    counts: (Arc<AtomicUsize>, Arc<AtomicUsize>),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (info, counts) = (info.clone(), counts.clone());
        async move { Ok::<_, Infallible>(handle(req, &info, &counts).await) }
    });
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

async fn handle(
    req: Request<Incoming>,
    info: &ConnInfo,
    (in_flight, max): &(Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> Response<Body> {
    match req.uri().path() {
        "/echo.Echo/Bidi" => return grpc_bidi(req),
        "/echo.Echo/Ticks" => return grpc_ticks(req),
        "/echo.Echo/Collect" => return grpc_collect(req),
        _ => {}
    }
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(now, Ordering::SeqCst);
    // `?delay_ms=N` holds the answer, so that concurrent requests overlap at the backend.
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("delay_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    in_flight.fetch_sub(1, Ordering::SeqCst);
    let body = serde_json::json!({
        "version": format!("{:?}", req.version()),
        "tls": info.tls,
        "sni": info.sni,
        "alpn": info.alpn,
        "host": req.headers().get("host").and_then(|v| v.to_str().ok()),
        "authority": req.uri().authority().map(|a| a.to_string()),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// gRPC framing, by hand: a 1-byte compression flag, a 4-byte big-endian length, the message.

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + msg.len());
    b.push(0);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b.into()
}

/// Takes one complete message off the front of `buf`, if there is one.
fn take_message(buf: &mut BytesMut) -> Option<Vec<u8>> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).to_vec())
}

/// A body fed frame by frame from a channel; it ends when the sender is dropped.
fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(16);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A gRPC response whose messages and trailers the returned sender streams. The head goes out
/// at once, as gRPC servers send it; it says which `te` the request carried (gRPC clients send
/// `te: trailers` to detect proxies that would drop trailers).
fn grpc_response(req: &Request<Incoming>) -> (mpsc::Sender<Frame<Bytes>>, Response<Body>) {
    let (tx, body) = channel_body();
    let te = req.headers().get("te").cloned();
    let resp = Response::builder()
        .header("content-type", "application/grpc")
        .header(
            "x-request-te",
            te.unwrap_or_else(|| "none".parse().unwrap()),
        )
        .body(body)
        .unwrap();
    (tx, resp)
}

fn grpc_ok() -> Frame<Bytes> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    t.insert("grpc-message", "done".parse().unwrap());
    Frame::trailers(t)
}

/// Reads the request's gRPC messages one by one as they arrive.
struct Messages {
    body: Incoming,
    buf: BytesMut,
}

impl Messages {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(m) = take_message(&mut self.buf) {
                return Some(m);
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

fn messages(req: Request<Incoming>) -> Messages {
    Messages {
        body: req.into_body(),
        buf: BytesMut::new(),
    }
}

/// Bidirectional streaming: answers each message with `echo:` and it, as soon as it arrives;
/// when the client ends its stream, `grpc-status: 0`.
fn grpc_bidi(req: Request<Incoming>) -> Response<Body> {
    let (tx, resp) = grpc_response(&req);
    tokio::spawn(async move {
        let mut msgs = messages(req);
        while let Some(m) = msgs.next().await {
            let reply = [b"echo:".as_slice(), &m].concat();
            if tx.send(Frame::data(grpc_frame(&reply))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(grpc_ok()).await;
    });
    resp
}

/// Server streaming: the request message is `COUNT,INTERVAL_MS`; answers with COUNT messages
/// `tick N`, one every INTERVAL_MS, then `grpc-status: 0`.
fn grpc_ticks(req: Request<Incoming>) -> Response<Body> {
    let (tx, resp) = grpc_response(&req);
    tokio::spawn(async move {
        let Some(m) = messages(req).next().await else {
            return;
        };
        let text = String::from_utf8_lossy(&m).into_owned();
        let (count, interval) = text.split_once(',').unwrap();
        let (count, interval): (usize, u64) = (count.parse().unwrap(), interval.parse().unwrap());
        for i in 0..count {
            tokio::time::sleep(Duration::from_millis(interval)).await;
            let msg = grpc_frame(format!("tick {i}").as_bytes());
            if tx.send(Frame::data(msg)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(grpc_ok()).await;
    });
    resp
}

/// Client streaming: one answer, every message joined by `+`, once the client ends its stream.
fn grpc_collect(req: Request<Incoming>) -> Response<Body> {
    let (tx, resp) = grpc_response(&req);
    tokio::spawn(async move {
        let mut msgs = messages(req);
        let mut all = Vec::new();
        while let Some(m) = msgs.next().await {
            all.push(String::from_utf8_lossy(&m).into_owned());
        }
        let _ = tx
            .send(Frame::data(grpc_frame(all.join("+").as_bytes())))
            .await;
        let _ = tx.send(grpc_ok()).await;
    });
    resp
}

// ---------------------------------------------------------------------------------------------
// Clients

/// An HTTP/2 connection to sluice: h2c on `addr`, or, with `sni`, h2 over TLS (ALPN `h2`).
async fn h2_client(addr: SocketAddr, sni: Option<&str>) -> SendRequest<Body> {
    let sender = match sni {
        None => {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }
        Some(name) => {
            let (stream, served) = tls_connect(addr, &ClientTls::sni(name).h2()).await.unwrap();
            assert_eq!(
                served.alpn.as_deref(),
                Some("h2"),
                "sluice speaks h2 over TLS"
            );
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }
    };
    sender
}

/// One gRPC call in progress, as a client sees it.
struct Call {
    /// Sends request messages; `None` once the client ended its stream.
    tx: Option<mpsc::Sender<Frame<Bytes>>>,
    body: Incoming,
    buf: BytesMut,
    /// The response's trailers, once they arrived.
    trailers: Option<HeaderMap>,
    /// The `te` header the backend received.
    te: String,
}

impl Call {
    /// Starts a call of `method` on `host`; returns when the response head arrived.
    async fn start(client: &mut SendRequest<Body>, scheme: &str, host: &str, method: &str) -> Call {
        let (tx, body) = channel_body();
        let req = Request::builder()
            .method("POST")
            .uri(format!("{scheme}://{host}/echo.Echo/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let resp = tokio::time::timeout(STEP, client.send_request(req))
            .await
            .expect("the response head did not arrive while the request stream is open")
            .expect("the call failed");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/grpc"
        );
        let te = resp.headers().get("x-request-te").unwrap();
        let te = te.to_str().unwrap().to_string();
        Call {
            te,
            tx: Some(tx),
            body: resp.into_body(),
            buf: BytesMut::new(),
            trailers: None,
        }
    }

    async fn send(&self, msg: &str) {
        let tx = self.tx.as_ref().expect("the request stream is open");
        tx.send(Frame::data(grpc_frame(msg.as_bytes())))
            .await
            .unwrap();
    }

    /// Ends the request stream.
    fn close(&mut self) {
        self.tx = None;
    }

    /// The next response message; `Ok(None)` at the end of the response (trailers, if any, in
    /// `self.trailers`); `Err` when the stream failed or nothing came within [`STEP`].
    async fn next(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(m) = take_message(&mut self.buf) {
                return Ok(Some(String::from_utf8_lossy(&m).into_owned()));
            }
            match tokio::time::timeout(STEP, self.body.frame()).await {
                Err(_) => return Err("no response frame in time".to_string()),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
            }
        }
    }

    fn status(&self) -> Option<String> {
        let t = self.trailers.as_ref()?;
        Some(t.get("grpc-status")?.to_str().ok()?.to_string())
    }
}

/// Sends message 1 and waits for its echo before sending message 2, and so on; then ends the
/// stream and expects `grpc-status: 0`. A proxy that buffered the request or the response
/// (waiting for the end of either) would never deliver reply 1 and the call would time out.
async fn bidi_echo(client: &mut SendRequest<Body>, scheme: &str, host: &str) {
    let mut call = Call::start(client, scheme, host, "Bidi").await;
    assert_eq!(call.te, "trailers", "te: trailers reaches the endpoint");
    for i in 1..=3 {
        let msg = format!("message {i}");
        call.send(&msg).await;
        let reply = call
            .next()
            .await
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(reply, Some(format!("echo:{msg}")));
    }
    call.close();
    assert_eq!(call.next().await.unwrap(), None);
    assert_eq!(
        call.status().as_deref(),
        Some("0"),
        "trailers reach the client"
    );
    let message = call.trailers.as_ref().unwrap().get("grpc-message").unwrap();
    assert_eq!(message, "done");
}

/// Sluice with an HTTPS listener on port 0 (default self-signed certificate).
async fn start_with_tls(manifests: &str, extra_upstream: &str) -> Sluice {
    let settings = format!(
        "{}[tls]\nhttps_listen = [\"127.0.0.1:0\"]\nredirect_port = 0\n",
        test_settings(extra_upstream)
    );
    Sluice::start_with(manifests, &settings).await
}

/// A Service `name` whose port 80 (`http`) has `appProtocol`, and its endpoint `addr`.
fn service_with_app_protocol(name: &str, app_protocol: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  ports:\n  - {{name: http, port: 80, appProtocol: \"{app_protocol}\"}}\n---\n{}",
        slice("default", name, &[(addr, Some(true))])
    )
}

/// An Ingress for `host` to `service`, annotated with `sluice.dev/backend-protocol: protocol`
/// (none when empty) and `more`.
fn routed(name: &str, host: &str, service: &str, protocol: &str, more: &[(&str, &str)]) -> String {
    let ing = ingress("default", name, Some(host), &[("/", "Prefix", service)]);
    let mut annotations: Vec<(&str, &str)> = more.to_vec();
    if !protocol.is_empty() {
        annotations.push(("sluice.dev/backend-protocol", protocol));
    }
    if annotations.is_empty() {
        ing
    } else {
        annotate(&ing, &annotations)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

crate::through_both_sources!(
    an_https_backend_is_reached_over_tls_by_annotation_and_by_app_protocol
);

async fn an_https_backend_is_reached_over_tls_by_annotation_and_by_app_protocol() {
    let backend = ProtoBackend::start(Speaks::TlsH1).await;
    let manifests = [
        service_with("default", "by-annotation", &[backend.addr]),
        service_with_app_protocol("by-app-protocol", "https", backend.addr),
        routed("a", "secure.test", "by-annotation", "https", &[]),
        routed("b", "app.test", "by-app-protocol", "", &[]),
        // Rules without a host, for requests whose host is an address.
        ingress("default", "c", None, &[("/", "Prefix", "by-app-protocol")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    // The SNI drops the port and the case of the host; an address is never sent as SNI.
    let r = s.get("Secure.TEST:8443", "/").await;
    assert_eq!(r.json()["sni"], "secure.test");
    let r = s.get("127.0.0.1", "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tls"], true);
    assert_eq!(r.json()["sni"], serde_json::Value::Null);
    for host in ["secure.test", "app.test"] {
        let r = s.get(host, "/").await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        let j = r.json();
        assert_eq!(j["tls"], true, "{host}");
        assert_eq!(j["alpn"], "http/1.1", "{host}");
        assert_eq!(j["version"], "HTTP/1.1", "{host}");
        // The SNI is the request's host, and the unverifiable certificate was accepted.
        assert_eq!(j["sni"], host, "{host}");
        assert_eq!(j["host"], host, "{host}");
    }
}

/// `sluice.dev/upstream-vhost` names both the `Host` and the TLS server name of the upstream
/// request (the SNI without the port); without it both would be `public.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vhost_is_the_host_and_the_tls_server_name_sent_upstream() {
    let backend = ProtoBackend::start(Speaks::TlsH1).await;
    let manifests = [
        service_with("default", "svc", &[backend.addr]),
        routed(
            "a",
            "public.test",
            "svc",
            "https",
            &[("sluice.dev/upstream-vhost", "internal.test:8443")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = s.get("public.test", "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["tls"], true);
    assert_eq!(j["sni"], "internal.test");
    assert_eq!(j["host"], "internal.test:8443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_gets_http2_with_prior_knowledge_by_annotation_and_by_app_protocol() {
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "h2c", &[backend.addr]),
        service_with_app_protocol("h2c-port", "kubernetes.io/h2c", backend.addr),
        routed("a", "h2c.test", "h2c", "H2C", &[]),
        routed("b", "port.test", "h2c-port", "", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for host in ["h2c.test", "port.test"] {
        // An HTTP/1.1 client and an h2c client alike.
        for r in [s.get(host, "/").await, get_h2c(s.addr, host, "/").await] {
            assert_eq!(r.status, 200, "{host}: {}", r.body);
            let j = r.json();
            assert_eq!(j["version"], "HTTP/2.0", "{host}");
            assert_eq!(j["tls"], false, "{host}");
            assert_eq!(j["authority"], host, "{host}");
        }
    }
}

/// Guards `max_h2_streams`: Pingora's default of 1 opens a connection per request in flight
/// (set `H2_STREAMS_PER_CONNECTION` in the router to 1 and this test fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_upstream_h2c_connection() {
    const N: usize = 8;
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "h2c", &[backend.addr]),
        routed("a", "h2c.test", "h2c", "H2C", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    // One request first, so the concurrent ones find an open connection.
    assert_eq!(s.get("h2c.test", "/").await.status, 200);
    let addr = s.addr;
    let requests: Vec<_> = (0..N)
        .map(|_| tokio::spawn(async move { get(addr, "h2c.test", "/?delay_ms=400").await }))
        .collect();
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["version"], "HTTP/2.0");
    }
    let (connections, overlap) = (
        backend.connections(),
        backend.max_in_flight.load(Ordering::SeqCst),
    );
    // Requests overlapped at the backend on fewer connections than requests: streams of one
    // connection ran at the same time.
    assert!(
        overlap > connections,
        "{overlap} at once over {connections} connections"
    );
    assert!(
        connections < N,
        "{N} concurrent requests used {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidirectional_streaming_over_h2c_echoes_each_message_before_the_next_is_sent() {
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "grpc", &[backend.addr]),
        routed("a", "grpc.test", "grpc", "GRPC", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut client = h2_client(s.addr, None).await;
    bidi_echo(&mut client, "http", "grpc.test").await;
    // Two calls at once on one client connection.
    let mut other = client.clone();
    tokio::join!(
        bidi_echo(&mut client, "http", "grpc.test"),
        bidi_echo(&mut other, "http", "grpc.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_bidirectional_streaming_works_with_tls_on_both_sides() {
    let backend = ProtoBackend::start(Speaks::TlsH2).await;
    let manifests = [
        service_with("default", "grpcs", &[backend.addr]),
        service_with_app_protocol("grpcs-port", "grpcs", backend.addr),
        routed("a", "grpcs.test", "grpcs", "GRPCS", &[]),
        routed("b", "port.test", "grpcs-port", "", &[]),
    ]
    .concat();
    let s = start_with_tls(&manifests, "").await;
    let https = s.https.unwrap();
    for host in ["grpcs.test", "port.test"] {
        let mut client = h2_client(https, Some(host)).await;
        bidi_echo(&mut client, "https", host).await;
        // And from a downstream h2c client to the same TLS endpoint.
        let mut plain = h2_client(s.addr, None).await;
        bidi_echo(&mut plain, "http", host).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_works_for_a_client_on_tls_h2() {
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "grpc", &[backend.addr]),
        routed("a", "grpc.test", "grpc", "grpc", &[]),
    ]
    .concat();
    let s = start_with_tls(&manifests, "").await;
    let mut client = h2_client(s.https.unwrap(), Some("grpc.test")).await;
    bidi_echo(&mut client, "https", "grpc.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_streaming_gets_its_answer_after_the_client_ends_its_stream() {
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "grpc", &[backend.addr]),
        routed("a", "grpc.test", "grpc", "GRPC", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut client = h2_client(s.addr, None).await;
    let mut call = Call::start(&mut client, "http", "grpc.test", "Collect").await;
    for m in ["a", "b", "c"] {
        call.send(m).await;
    }
    call.close();
    assert_eq!(call.next().await.unwrap().as_deref(), Some("a+b+c"));
    assert_eq!(call.next().await.unwrap(), None);
    assert_eq!(call.status().as_deref(), Some("0"));
}

/// A stream that keeps sending outlives the read timeout many times over: the timeout is
/// between two reads, not for the whole response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_streaming_delivers_each_message_when_sent_and_outlives_the_read_timeout() {
    let backend = ProtoBackend::start(Speaks::TlsH2).await;
    let manifests = [
        service_with("default", "grpcs", &[backend.addr]),
        routed(
            "a",
            "ticks.test",
            "grpcs",
            "GRPCS",
            &[("sluice.dev/read-timeout", "700ms")],
        ),
    ]
    .concat();
    let s = start_with_tls(&manifests, "").await;
    let mut client = h2_client(s.https.unwrap(), Some("ticks.test")).await;
    let started = Instant::now();
    let mut call = Call::start(&mut client, "https", "ticks.test", "Ticks").await;
    // Eight messages 250 ms apart: 2 s in all, nearly three times the read timeout.
    call.send("8,250").await;
    call.close();
    let mut arrivals = Vec::new();
    for i in 0..8 {
        let m = call
            .next()
            .await
            .unwrap_or_else(|e| panic!("tick {i}: {e}"));
        assert_eq!(m, Some(format!("tick {i}")));
        arrivals.push(started.elapsed());
    }
    assert_eq!(call.next().await.unwrap(), None);
    assert_eq!(call.status().as_deref(), Some("0"));
    // Each message arrived when it was sent, not all at the end: the first well before the
    // last (a proxy that buffered the response would deliver them together).
    let spread = arrivals[7] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(1000),
        "messages arrived {arrivals:?} after the start"
    );
}

/// A stream that sends nothing for longer than the read timeout is ended, like any response
/// whose endpoint goes quiet: the client gets no `grpc-status: 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_silent_for_longer_than_the_read_timeout_is_ended() {
    let backend = ProtoBackend::start(Speaks::H2c).await;
    let manifests = [
        service_with("default", "grpc", &[backend.addr]),
        routed(
            "a",
            "idle.test",
            "grpc",
            "GRPC",
            &[("sluice.dev/read-timeout", "300ms")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut client = h2_client(s.addr, None).await;
    let started = Instant::now();
    let mut call = Call::start(&mut client, "http", "idle.test", "Ticks").await;
    // One message after 1.5 s: five times the read timeout of silence.
    call.send("1,1500").await;
    call.close();
    let outcome = call.next().await;
    let ended = started.elapsed();
    assert!(
        !matches!(outcome, Ok(Some(_))),
        "the message after the silence still arrived: {outcome:?}"
    );
    assert_ne!(call.status().as_deref(), Some("0"));
    assert!(
        ended >= Duration::from_millis(300) && ended < Duration::from_millis(1500),
        "ended after {ended:?}: {outcome:?}"
    );
}

/// A raw WebSocket endpoint: answers the Upgrade handshake with 101, sends a line of its own,
/// then echoes every byte back.
async fn websocket_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let head = String::from_utf8_lossy(&head).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                    })
                };
                let upgrade =
                    header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                let (Some(key), true) = (header("sec-websocket-key"), upgrade) else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let accept = websocket_accept(key);
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                stream.write_all(reply.as_bytes()).await.unwrap();
                stream.write_all(b"hello from the backend\n").await.unwrap();
                let mut buf = [0u8; 4096];
                for _ in 0..1000 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
fn websocket_accept(key: &str) -> String {
    let digest =
        openssl::sha::sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    openssl::base64::encode_block(&digest)
}

/// Reads up to the end of an HTTP/1.1 head; bytes after it stay unread only when the peer sends
/// nothing more before our reply (true of both sides here).
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") && seen.len() < 16 * 1024 {
        match tokio::time::timeout(STEP, stream.read(&mut byte)).await {
            Ok(Ok(1)) => seen.push(byte[0]),
            _ => break,
        }
    }
    seen
}

/// Reads exactly `n` bytes within [`STEP`].
async fn read_n(stream: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(STEP, stream.read_exact(&mut buf))
        .await
        .expect("bytes over the upgraded connection in time")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Opens a WebSocket to `host` through sluice at `addr`: the handshake, then the backend's
/// unprompted greeting; returns the upgraded connection.
async fn websocket(addr: SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    stream
        .write_all(
            format!(
                "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&read_head(&mut stream).await).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{host}: {head}");
    // RFC 6455's own example key and answer.
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the backend's handshake answer reaches the client: {head}"
    );
    // The backend speaks first, unprompted.
    assert_eq!(read_n(&mut stream, 23).await, "hello from the backend\n");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_carries_bytes_both_ways_starting_with_the_backend() {
    let (backend, _task) = websocket_backend().await;
    let manifests = [
        service_with_app_protocol("ws", "kubernetes.io/ws", backend),
        routed("a", "ws.test", "ws", "", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut stream = websocket(s.addr, "ws.test").await;
    for i in 0..3 {
        let line = format!("client message {i}\n");
        stream.write_all(line.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut stream, line.len()).await, line);
    }
}

/// HTTP/2 cannot carry an HTTP/1.1 Upgrade: on a route whose endpoints speak h2c (a server that
/// takes both, as many gRPC-with-WebSocket servers do), the handshake still goes in HTTP/1.1.
/// (Drop the `upgrade` case of the router's `set_protocol` and this gets 502.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_an_h2c_route_is_handshaken_over_http1() {
    let (backend, _task) = websocket_backend().await;
    let manifests = [
        service_with("default", "ws", &[backend]),
        routed("a", "ws.test", "ws", "H2C", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut stream = websocket(s.addr, "ws.test").await;
    stream.write_all(b"over h1\n").await.unwrap();
    assert_eq!(read_n(&mut stream, 8).await, "over h1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_backend_protocol_is_reported_and_the_route_serves_over_http1() {
    let backend = Backend::start("plain").await;
    let manifests = [
        service_with("default", "plain", &[backend.addr]),
        routed("a", "plain.test", "plain", "SPDY", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = s.get("plain.test", "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "plain");
    let skipped = s.skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].reason.as_str(), "InvalidAnnotation");
    assert_eq!(
        skipped[0].message,
        "annotation `sluice.dev/backend-protocol`: `SPDY` is not HTTP, HTTPS, H2C, GRPC or \
         GRPCS; the default is used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_to_an_endpoint_without_h2_fails_with_502_rather_than_downgrading() {
    let backend = ProtoBackend::start(Speaks::TlsH1).await;
    let manifests = [
        service_with("default", "h1only", &[backend.addr]),
        routed("a", "grpcs.test", "h1only", "GRPCS", &[]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = s.get("grpcs.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
}

/// The read timeout also bounds silence on an upgraded connection: a WebSocket whose endpoint
/// sends nothing for longer is closed (applications keep theirs open with pings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_silent_for_longer_than_the_read_timeout_is_closed() {
    let (backend, _task) = websocket_backend().await;
    let manifests = [
        service_with("default", "ws", &[backend]),
        routed(
            "a",
            "ws.test",
            "ws",
            "",
            &[("sluice.dev/read-timeout", "300ms")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut stream = websocket(s.addr, "ws.test").await;
    let quiet = Instant::now();
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(STEP, stream.read(&mut buf))
        .await
        .expect("the silent connection was not closed");
    let waited = quiet.elapsed();
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
}

/// The body limit is for request bodies: a gRPC stream (no default limit) and the bytes after a
/// WebSocket's 101 carry far more than `server.max_request_body_bytes`, while a gRPC route whose
/// Ingress sets `sluice.dev/proxy-body-size` is cut once its stream grows over it (the response
/// had started, so the stream is reset). Counting upgraded bytes, or giving GRPC routes the
/// default limit, makes the first two fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_websockets_are_not_held_to_the_default_body_limit() {
    let grpc = ProtoBackend::start(Speaks::H2c).await;
    let (ws, _task) = websocket_backend().await;
    let manifests = [
        service_with("default", "grpc", &[grpc.addr]),
        routed("free", "grpc.test", "grpc", "GRPC", &[]),
        routed(
            "capped",
            "capped.test",
            "grpc",
            "GRPC",
            &[("sluice.dev/proxy-body-size", "1k")],
        ),
        service_with_app_protocol("ws", "kubernetes.io/ws", ws),
        routed("ws", "ws.test", "ws", "", &[]),
    ]
    .concat();
    let settings =
        test_settings("").replace("[server]\n", "[server]\nmax_request_body_bytes = 1024\n");
    let s = Sluice::start_with(&manifests, &settings).await;
    let big = "m".repeat(600);

    let mut client = h2_client(s.addr, None).await;
    let mut call = Call::start(&mut client, "http", "grpc.test", "Bidi").await;
    for _ in 0..4 {
        call.send(&big).await;
        assert_eq!(call.next().await.unwrap(), Some(format!("echo:{big}")));
    }
    call.close();
    assert_eq!(call.next().await.unwrap(), None);
    assert_eq!(call.status().as_deref(), Some("0"));

    let mut stream = websocket(s.addr, "ws.test").await;
    for _ in 0..4 {
        stream.write_all(big.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut stream, big.len()).await, big);
    }

    let mut call = Call::start(&mut client, "http", "capped.test", "Bidi").await;
    call.send(&big).await;
    assert_eq!(call.next().await.unwrap(), Some(format!("echo:{big}")));
    call.send(&big).await;
    let end = call.next().await;
    assert!(
        end.is_err(),
        "the stream over 1 KiB was not cut: {end:?}, trailers {:?}",
        call.trailers
    );
}
