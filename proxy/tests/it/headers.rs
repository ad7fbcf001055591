//! What the backend receives: forwarding headers added, the client's Host kept, hop-by-hop
//! headers removed.

use crate::support::*;

async fn one_backend() -> (Backend, Sluice) {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    (a, s)
}

#[tokio::test]
async fn forwarding_headers_describe_the_client_and_the_original_request() {
    let (_a, s) = one_backend().await;
    let r = s.get("App.Test:8443", "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("host"), vec!["App.Test:8443"]);
    assert_eq!(r.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.upstream_header("x-forwarded-host"), vec!["App.Test:8443"]);
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        vec![s.addr.port().to_string()]
    );
}

#[tokio::test]
async fn a_clients_own_forwarding_headers_are_replaced_by_what_sluice_saw() {
    let (_a, s) = one_backend().await;
    let mut req = request("x", "/");
    let h = req.headers_mut();
    h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    h.insert("x-real-ip", "198.51.100.1".parse().unwrap());
    h.insert("x-forwarded-proto", "https".parse().unwrap());
    h.insert("x-forwarded-port", "1".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        vec![s.addr.port().to_string()]
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_a, s) = one_backend().await;
    let mut req = request("x", "/");
    let h = req.headers_mut();
    h.insert("connection", "keep-alive, x-hop".parse().unwrap());
    h.insert("x-hop", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("proxy-connection", "keep-alive".parse().unwrap());
    h.insert("te", "trailers".parse().unwrap());
    h.insert("x-end-to-end", "kept".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    for hop in ["x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            r.upstream_header(hop).is_empty(),
            "{hop} was forwarded: {}",
            r.body
        );
    }
    assert_eq!(r.upstream_header("x-end-to-end"), vec!["kept"]);
}

/// A backend that answers every request with an empty 200 and hands over the request head
/// exactly as it arrived on the wire (hyper, which the other backends use, lower-cases names).
async fn raw_backend() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // At most 100 requests per connection, each head read within STEP.
                for _ in 0..100 {
                    let Ok(Some(head)) = tokio::time::timeout(STEP, read_head(&mut stream)).await
                    else {
                        return;
                    };
                    let _ = tx.send(head);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if tokio::io::AsyncWriteExt::write_all(&mut stream, reply)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx, task)
}

/// Reads one message head (up to and including the blank line), at most 64 KiB.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

#[tokio::test]
async fn header_names_reach_the_backend_in_the_case_the_client_sent_them() {
    let (backend, mut heads, _task) = raw_backend().await;
    let manifests = [
        service_with("default", "raw", &[backend]),
        ingress("default", "raw", None, &[("/", "Prefix", "raw")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut client = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let sent = [
        // Mixed case, as browsers and curl write names.
        vec![
            "Host: case.test",
            "User-Agent: t",
            "X-Custom-THING: 1",
            "x-lower: 2",
        ],
        // A lower-case name that Pingora would otherwise write in title case.
        vec!["host: case.test", "x-lower: 2"],
        // Names as Pingora writes them anyway.
        vec!["Host: case.test", "x-lower: 2", "accept: */*"],
        // A repeated header whose last value is named in another case.
        vec!["Host: case.test", "x-lower: 2", "x-twice: 1", "X-Twice: 2"],
    ];
    // Each set of names with an origin-form and an absolute-form target; both reach the
    // backend in origin form (the authority is the routed host, sent as `Host`), the names as
    // sent.
    let targets = ["/x?q=1", "http://case.test/x?q=1"];
    for (lines, target) in sent.iter().flat_map(|l| targets.map(|t| (l, t))) {
        let request = format!("GET {target} HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
            .await
            .unwrap();
        let answer = tokio::time::timeout(STEP, read_head(&mut client))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let head = tokio::time::timeout(STEP, heads.recv())
            .await
            .unwrap()
            .unwrap();
        let upstream: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(upstream[0], "GET /x?q=1 HTTP/1.1", "{head}");
        for line in lines {
            assert!(upstream.contains(line), "{line:?} not in {head}");
        }
        for added in ["x-forwarded-for: 127.0.0.1", "x-real-ip: 127.0.0.1"] {
            assert!(upstream.contains(&added), "{added:?} not in {head}");
        }
        assert!(
            upstream.iter().any(|l| l.starts_with("x-request-id: ")),
            "{head}"
        );
    }
}
