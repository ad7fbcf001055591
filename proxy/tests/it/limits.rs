//! Rate and connection limits per client address (`sluice.dev/limit-*`), over real loopback
//! sockets: clients tell apart by their own source address (127.0.0.x) or, behind a trusted
//! proxy, by `X-Forwarded-For`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cors::{annotated_route, api_route, reported, request_as};
use crate::support::*;

/// A keepalive connection from the loopback address `from`.
async fn client(from: &str, to: SocketAddr) -> H1 {
    H1::connect_from(from.parse().unwrap(), to).await
}

/// A GET for `host` on `c`.
async fn get_on(c: &mut H1, host: &str) -> Reply {
    c.get(host, "/").await.unwrap()
}

/// The `sluice_requests_limited_total` sample of the Ingress named `ingress` for `reason`.
async fn limited(s: &Sluice, ingress: &str, reason: &str) -> f64 {
    let text = scrape(s).await;
    let prefix = format!(
        "sluice_requests_limited_total{{ingress=\"{ingress}\",namespace=\"default\",reason=\"{reason}\",service=\"svc-a\"}} "
    );
    sample(&text, &prefix).unwrap_or(0.0)
}

#[tokio::test]
async fn a_client_at_twice_the_rate_gets_about_half_refused_while_another_is_unaffected() {
    // 20 per second with a burst of 20 (the multiplier at 1), so a short window shows the rate.
    let (a, s) = api_route(&[
        ("sluice.dev/limit-rps", "20"),
        ("sluice.dev/limit-burst-multiplier", "1"),
    ])
    .await;
    let mut fast = client("127.0.0.2", s.addr).await;
    let mut calm = client("127.0.0.3", s.addr).await;
    let first = Instant::now();
    // The burst: requests at once until the first refusal, which says to come back in 1 s.
    let (mut admitted, mut refused) = (0u32, 0u32);
    for _ in 0..40 {
        let r = get_on(&mut fast, "api.test").await;
        if r.status == 429 {
            assert_eq!(r.headers["retry-after"], "1");
            assert!(r.body.contains("limits"), "{}", r.body);
            refused += 1;
            break;
        }
        assert_eq!(r.status, 200);
        admitted += 1;
    }
    assert!(admitted >= 20, "the whole burst is admitted: {admitted}");
    // Then a window at 40 per second (twice the rate), the calm client at 5 per second.
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let window = Instant::now();
    let (mut in_window, mut refused_in_window) = (0u32, 0u32);
    for i in 0..40 {
        tick.tick().await;
        match get_on(&mut fast, "api.test").await.status {
            200 => in_window += 1,
            429 => refused_in_window += 1,
            other => panic!("status {other}"),
        }
        if i % 8 == 0 {
            assert_eq!(
                get_on(&mut calm, "api.test").await.status,
                200,
                "the calm client"
            );
        }
    }
    let (total, window) = (
        first.elapsed().as_secs_f64(),
        window.elapsed().as_secs_f64(),
    );
    // The burst, then one request per 50 ms since the first, however long the run took on a
    // loaded machine.
    let expected = 20.0 + 20.0 * total;
    let got = admitted + in_window;
    assert!(
        (f64::from(got) - expected).abs() <= 3.0,
        "{got} admitted in {total:.2}s, expected {expected:.1}"
    );
    // A window of about a second at twice the rate: about half refused.
    if window < 1.25 {
        assert!(
            (12..=28).contains(&refused_in_window),
            "{refused_in_window} of 40 refused in {window:.2}s"
        );
    }
    refused += refused_in_window;
    assert_eq!(a.hits(), (got + 5) as usize);
    assert_eq!(limited(&s, "api.test", "rate").await, f64::from(refused));
    // The refusals are the route's 4xx answers too (counted as each request ends).
    let four = "sluice_requests_total{ingress=\"api.test\",method=\"GET\",namespace=\"default\",service=\"svc-a\",status_class=\"4xx\"} ";
    let s = &s;
    eventually(STEP, "the refusals among the route's requests", || async move {
        (sample(&scrape(s).await, four) == Some(f64::from(refused))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_connection_limit_counts_requests_in_flight_and_frees_them_however_they_end() {
    let (a, s) = api_route(&[("sluice.dev/limit-connections", "2")]).await;
    // Long enough that the two stay in flight while the test sends its other requests.
    a.set_delay(Duration::from_millis(800));
    let addr = s.addr;
    let slow = || {
        tokio::spawn(async move { get_on(&mut client("127.0.0.1", addr).await, "api.test").await })
    };
    let in_flight = |n: usize| {
        let arrivals = a.arrivals.clone();
        eventually(STEP, "requests at the backend", move || {
            let now = arrivals.load(std::sync::atomic::Ordering::SeqCst);
            async move { (now >= n).then_some(()) }
        })
    };
    let (one, two) = (slow(), slow());
    in_flight(2).await;
    // A third from the same client is refused at once; another client is not.
    let r = get_on(&mut client("127.0.0.1", addr).await, "api.test").await;
    assert_eq!(r.status, 429);
    assert!(!r.headers.contains_key("retry-after"));
    let other = get_on(&mut client("127.0.0.2", addr).await, "api.test").await;
    assert_eq!(other.status, 200);
    assert_eq!(one.await.unwrap().status, 200);
    assert_eq!(two.await.unwrap().status, 200);
    // Both ended: the client has its two places again.
    assert_eq!(limited(&s, "api.test", "connections").await, 1.0);
    let (one, two) = (slow(), slow());
    in_flight(5).await;
    // Clients that leave mid-request free their places too (once sluice sees them gone).
    one.abort();
    two.abort();
    let _ = (one.await, two.await);
    a.set_delay(Duration::ZERO);
    eventually(STEP, "the aborted requests' places", || async move {
        let r = get_on(&mut client("127.0.0.1", addr).await, "api.test").await;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_that_fails_upstream_frees_its_place() {
    let dead = dead_addr().await;
    let manifests = [
        service_with("default", "svc-a", &[dead]),
        annotate(
            &ingress(
                "default",
                "api",
                Some("api.test"),
                &[("/", "Prefix", "svc-a")],
            ),
            &[("sluice.dev/limit-connections", "1")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    // Each 502 ends its request; were its place kept, the second would get 429.
    for _ in 0..3 {
        let r = get_on(&mut client("127.0.0.1", s.addr).await, "api.test").await;
        assert_eq!(r.status, 502, "{}", r.body);
    }
}

#[tokio::test]
async fn allowlisted_clients_are_exempt_and_the_limit_status_can_be_503() {
    let a = Backend::start("a").await;
    let manifests = annotated_route(
        &a,
        "api.test",
        &[
            ("sluice.dev/limit-rpm", "1"),
            ("sluice.dev/limit-burst-multiplier", "2"),
            ("sluice.dev/limit-allowlist", "10.0.0.0/8, ::1"),
        ],
    );
    // Loopback stands for a trusted proxy naming the client in X-Forwarded-For.
    let settings = settings_with_server("trusted_proxies = [\"127.0.0.0/8\"]\nlimit_status = 503");
    let s = Sluice::start_with(&manifests, &settings).await;
    let mut proxy = client("127.0.0.1", s.addr).await;
    let mut from = async |client: &str| {
        let req = request_as("GET", "api.test", &[("x-forwarded-for", client)]);
        proxy.send(req).await.unwrap()
    };
    // 1 per minute, bursts of 2: the third request of a client is refused, until the minute
    // one request takes up of the budget has passed.
    assert_eq!(from("203.0.113.7").await.status, 200);
    assert_eq!(from("203.0.113.7").await.status, 200);
    let r = from("203.0.113.7").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("limits"), "{}", r.body);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
    // Another client behind the same proxy has its own budget; allowlisted ones have none.
    assert_eq!(from("203.0.113.8").await.status, 200);
    for client in ["10.1.2.3", "::1", "10.1.2.3", "::1", "10.9.9.9"] {
        assert_eq!(from(client).await.status, 200, "{client}");
    }
    assert_eq!(a.hits(), 8);
}

#[tokio::test]
async fn a_preflight_is_answered_before_the_rate_limit_counts_it_and_a_refusal_carries_cors() {
    let (a, s) = api_route(&[
        ("sluice.dev/enable-cors", "true"),
        ("sluice.dev/cors-allow-origin", "https://app.test"),
        ("sluice.dev/limit-rpm", "1"),
        ("sluice.dev/limit-burst-multiplier", "1"),
    ])
    .await;
    let mut c = client("127.0.0.1", s.addr).await;
    let preflight = [
        ("origin", "https://app.test"),
        ("access-control-request-method", "POST"),
    ];
    let mut send = async |method, headers: &[(&str, &str)]| {
        c.send(request_as(method, "api.test", headers))
            .await
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send("OPTIONS", &preflight).await.status, 204);
    }
    // The one request of the minute is still there for the call itself.
    assert_eq!(send("GET", &preflight[..1]).await.status, 200);
    // The page that sent the next one can read why it was refused.
    let r = send("GET", &preflight[..1]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["access-control-allow-origin"], "https://app.test");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["vary"], "Origin");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn an_ingress_edit_that_keeps_the_limits_keeps_what_they_counted() {
    let a = Backend::start("a").await;
    let limited = |extra: &[(&str, &str)]| {
        let mut annotations = vec![
            ("sluice.dev/limit-rpm", "1"),
            ("sluice.dev/limit-burst-multiplier", "1"),
        ];
        annotations.extend_from_slice(extra);
        annotated_route(&a, "api.test", &annotations)
    };
    let s = Sluice::start(&limited(&[])).await;
    let mut c = client("127.0.0.1", s.addr).await;
    assert_eq!(get_on(&mut c, "api.test").await.status, 200);
    assert_eq!(get_on(&mut c, "api.test").await.status, 429);
    // Another annotation of the Ingress changes (its route is rebuilt), and a marker Ingress
    // shows when the edit is live.
    let marker = ingress(
        "default",
        "marker",
        Some("marker.test"),
        &[("/", "Prefix", "svc-a")],
    );
    let edited = limited(&[("sluice.dev/response-headers", "X-Edited: 1")]) + &marker;
    s.write_manifest("routes.yaml", &edited);
    let addr = s.addr;
    eventually(STEP, "the edit to be live", || async move {
        (get(addr, "marker.test", "/").await.status == 200).then_some(())
    })
    .await;
    // The client's minute is not over: a fresh limiter would have admitted it. (Counting in
    // a limiter per route build makes this fail.)
    assert_eq!(get_on(&mut c, "api.test").await.status, 429);
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn an_invalid_limit_fails_the_route_closed_and_is_reported() {
    let (a, s) = api_route(&[("sluice.dev/limit-rps", "ten")]).await;
    assert_eq!(s.get("api.test", "/").await.status, 503);
    assert_eq!(a.hits(), 0);
    let message = reported(&s, "limit-rps");
    assert!(message.contains("`ten`"), "{message}");
}
