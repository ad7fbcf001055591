//! `server.proxy_protocol`: the client address a load balancer states in a PROXY protocol header,
//! on plain and TLS listeners, over real loopback sockets.

use std::net::{IpAddr, SocketAddr};

use crate::support::pki::*;
use crate::support::*;
use crate::tls::{https, secure_test_host, tls_settings};

/// The v2 signature every binary header starts with.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 header, written byte by byte as the specification lays it out: the
/// PROXY command for `source` (to `dest`) with a TLV the proxy ignores, or LOCAL without
/// addresses when `source` is `None`.
fn v2(source: Option<SocketAddr>, dest: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    match source {
        None => h.extend_from_slice(&[0x20, 0x00]),
        Some(src) => {
            match (src.ip(), dest.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h.extend_from_slice(&[0x21, 0x11]);
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    h.extend_from_slice(&[0x21, 0x21]);
                    body.extend_from_slice(&to_v6(s).octets());
                    body.extend_from_slice(&to_v6(d).octets());
                }
            }
            body.extend_from_slice(&src.port().to_be_bytes());
            body.extend_from_slice(&dest.port().to_be_bytes());
            // PP2_TYPE_NOOP with 3 bytes of padding.
            body.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
        }
    }
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Test settings with `server.proxy_protocol` on, believing the peers in `trusted`.
fn with_proxy_protocol(settings: &str, trusted: &str) -> String {
    settings.replacen(
        "[server]\n",
        &format!("[server]\nproxy_protocol = true\nproxy_protocol_trusted = [{trusted}]\n"),
        1,
    )
}

async fn one_route(settings: &str, annotations: &[(&str, &str)]) -> (Backend, Sluice) {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        annotate(
            &ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
            annotations,
        ),
    ]
    .concat();
    let s = Sluice::start_with(&manifests, settings).await;
    (a, s)
}

#[tokio::test]
async fn a_v1_header_on_a_plain_listener_names_the_client_for_every_request_of_the_connection() {
    let settings = with_proxy_protocol(&test_settings(""), "\"127.0.0.0/8\"");
    let (_a, s) = one_route(&settings, &[]).await;
    let header = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 40000 {}\r\n",
        s.addr.port()
    );
    let mut conn = H1::connect_with(s.addr, header.as_bytes()).await;
    for _ in 0..2 {
        let r = conn.get("x", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.upstream_header("x-real-ip"), ["203.0.113.7"]);
        assert_eq!(r.upstream_header("x-forwarded-for"), ["203.0.113.7"]);
    }
    // An IPv6 client, and the access log naming it.
    let header = format!("PROXY TCP6 2001:db8::7 ::1 40000 {}\r\n", s.addr.port());
    let r = H1::connect_with(s.addr, header.as_bytes())
        .await
        .get("x", "/")
        .await
        .unwrap();
    assert_eq!(r.upstream_header("x-real-ip"), ["2001:db8::7"]);
    let log = s.access_log.clone();
    let clients = eventually(STEP, "three access-log lines", || {
        let lines = log.lines();
        async move { (lines.len() >= 3).then_some(lines) }
    })
    .await
    .iter()
    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["client"].clone())
    .collect::<Vec<_>>();
    assert_eq!(clients, ["203.0.113.7", "203.0.113.7", "2001:db8::7"]);
}

#[tokio::test]
async fn a_v2_header_names_the_client_before_tls_and_local_keeps_the_peer() {
    let a = Backend::start("a").await;
    let manifests = secure_test_host(&a);
    let settings = with_proxy_protocol(&tls_settings(""), "\"127.0.0.1\", \"::1\"");
    let s = Sluice::start_with(&manifests, &settings).await;
    let dest = https(&s);
    for (source, want) in [
        (Some("[2001:db8::7]:40000".parse().unwrap()), "2001:db8::7"),
        (Some("198.51.100.9:40000".parse().unwrap()), "198.51.100.9"),
        // LOCAL: the load balancer's own connection; the peer is the client.
        (None, "127.0.0.1"),
    ] {
        let opts = ClientTls::sni("secure.test").preface(&v2(source, dest));
        let (r, _) = https_get(dest, &opts, "secure.test", "/")
            .await
            .unwrap_or_else(|e| panic!("{source:?}: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.upstream_header("x-real-ip"), [want]);
        assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
    }
    // The plain listener expects the header as well: v2 before HTTP/1.1 there too.
    let header = v2(Some("198.51.100.9:40000".parse().unwrap()), s.addr);
    let r = H1::connect_with(s.addr, &header)
        .await
        .get("secure.test", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 308, "plain HTTP to a TLS host is redirected");
}

#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed_before_http() {
    let settings = with_proxy_protocol(&test_settings(""), "\"127.0.0.0/8\"");
    let (a, s) = one_route(&settings, &[]).await;
    // No header: the request itself is not a header.
    assert!(H1::connect(s.addr).await.get("x", "/").await.is_err());
    // A broken one.
    let bad = b"PROXY TCP4 203.0.113.7 not-an-address 1 2\r\n";
    assert!(H1::connect_with(s.addr, bad)
        .await
        .get("x", "/")
        .await
        .is_err());
    // A TLS ClientHello where the header should be fails the same way.
    let opts = ClientTls::sni("x");
    assert!(tls_connect(s.addr, &opts).await.is_err());
    assert_eq!(a.hits(), 0);
    let metrics = scrape(&s).await;
    let refused = sample(
        &metrics,
        "sluice_proxy_protocol_refused_total{reason=\"invalid_header\"}",
    );
    assert_eq!(refused, Some(3.0), "{metrics}");
    // The header may arrive in pieces within the deadline.
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n";
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(&header[..9]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tcp.write_all(&header[9..]).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("203.0.113.7"), "{response}");
}

#[tokio::test]
async fn a_header_from_a_peer_outside_the_trusted_list_is_never_believed() {
    let settings = with_proxy_protocol(&test_settings(""), "\"10.0.0.0/8\"");
    let (a, s) = one_route(&settings, &[]).await;
    let header = format!("PROXY TCP4 10.1.1.1 127.0.0.1 40000 {}\r\n", s.addr.port());
    let r = H1::connect_with(s.addr, header.as_bytes())
        .await
        .get("x", "/")
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(a.hits(), 0);
    let metrics = scrape(&s).await;
    assert_eq!(
        sample(
            &metrics,
            "sluice_proxy_protocol_refused_total{reason=\"untrusted_peer\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn source_ranges_and_trusted_proxies_start_from_the_address_the_header_names() {
    // The load balancer sends PROXY protocol; behind it, a trusted L7 proxy in 10.0.0.0/8
    // adds X-Forwarded-For.
    let settings = with_proxy_protocol(
        &settings_with_server("trusted_proxies = [\"10.0.0.0/8\"]"),
        "\"127.0.0.0/8\"",
    );
    let (_a, s) = one_route(
        &settings,
        &[("sluice.dev/allowlist-source-range", "203.0.113.0/24")],
    )
    .await;
    let from = |source: &'static str, xff: Option<&'static str>| {
        let addr = s.addr;
        async move {
            let header = format!("PROXY TCP4 {source} 127.0.0.1 40000 {}\r\n", addr.port());
            let mut req = request("x", "/");
            if let Some(xff) = xff {
                req.headers_mut()
                    .insert("x-forwarded-for", xff.parse().unwrap());
            }
            H1::connect_with(addr, header.as_bytes())
                .await
                .send(req)
                .await
                .unwrap()
        }
    };
    let r = from("203.0.113.7", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-real-ip"), ["203.0.113.7"]);
    assert_eq!(from("198.51.100.1", None).await.status, 403);
    // The stated peer is a trusted proxy: the client is what its X-Forwarded-For names.
    let r = from("10.1.1.1", Some("203.0.113.9")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-real-ip"), ["203.0.113.9"]);
    assert_eq!(
        r.upstream_header("x-forwarded-for"),
        ["203.0.113.9, 10.1.1.1"]
    );
    // An untrusted stated peer's X-Forwarded-For is replaced, not believed.
    let r = from("203.0.113.7", Some("10.9.9.9")).await;
    assert_eq!(r.upstream_header("x-forwarded-for"), ["203.0.113.7"]);
}
