//! What clients that give up and Ingresses that come and go cost: nothing that outlives them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;

/// The JSON access-log lines whose status is `status`.
fn log_lines_with_status(s: &Sluice, status: u16) -> usize {
    s.access_log
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status"] == status)
        .count()
}

/// 20 clients that give up after 0.5 s on backends that answer after 2 s: each request reaches
/// one backend once. The abort is the client's doing: no retry on the other endpoints, no
/// ejection, no 5xx, and each is logged and counted as 499. (Letting `error_while_proxy` retry
/// errors whatever their source makes this fail with up to 60 backend requests.)
async fn aborted_clients_are_not_retried_and_do_not_count_against_endpoints() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    for b in &backends {
        b.set_delay(Duration::from_secs(2));
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let manifests = [
        service_with("shop", "api", &addrs),
        ingress("shop", "web", Some("shop.test"), &[("/", "Prefix", "api")]),
    ]
    .concat();
    // One failure ejects, so a single request counted against an endpoint shows.
    let s = Sluice::start_with(&manifests, &test_settings("eject_consecutive_failures = 1")).await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let addr = s.addr;
        clients.spawn(async move {
            let mut conn = H1::connect(addr).await;
            let r = tokio::time::timeout(Duration::from_millis(500), conn.get("shop.test", "/"));
            assert!(r.await.is_err(), "the backend answered within 0.5 s");
            // Dropping the connection is the client giving up.
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    // Every request is logged once it ends; a retry would have been sent before that.
    eventually(STEP, "20 requests logged as 499", || async {
        (log_lines_with_status(&s, 499) == 20).then_some(())
    })
    .await;
    let arrivals: usize = backends
        .iter()
        .map(|b| b.arrivals.load(Ordering::SeqCst))
        .sum();
    assert_eq!(arrivals, 20, "backend requests for 20 aborted requests");
    let text = scrape(&s).await;
    let route = "ingress=\"web\",method=\"GET\",namespace=\"shop\",service=\"api\"";
    assert_eq!(
        sample(
            &text,
            &format!("sluice_requests_total{{{route},status_class=\"4xx\"}}")
        ),
        Some(20.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_requests_total{{{route},status_class=\"5xx\"}}")
        ),
        None
    );
    assert_eq!(
        sample(
            &text,
            "sluice_upstream_retries_total{ingress=\"web\",namespace=\"shop\",service=\"api\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_pool_endpoints{namespace=\"shop\",port=\"80\",service=\"api\",state=\"ready\"}"
        ),
        Some(3.0),
        "an aborted request ejected an endpoint"
    );
    // The endpoints still serve whoever waits for them.
    for b in &backends {
        b.set_delay(Duration::ZERO);
    }
    assert_eq!(s.get("shop.test", "/").await.status, 200);
}

crate::through_both_sources!(aborted_clients_are_not_retried_and_do_not_count_against_endpoints,);

/// Ingresses added and removed under fresh names (as preview environments do) leave no metric
/// series behind: `/metrics` lists only the Ingresses alive and its size stays where one round
/// puts it. (Dropping the `retire` call in `state::route_metrics` makes this fail: every name
/// ever seen stays listed and the text grows each round.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_series_of_removed_ingresses_are_freed() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("preview", "api", &[a.addr]),
        ingress(
            "preview",
            "web",
            Some("web.test"),
            &[("/", "Prefix", "api")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let baseline = scrape(&s).await;
    const ROUNDS: usize = 8;
    const ALIVE: usize = 25;
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        let churn: String = (0..ALIVE)
            .map(|i| {
                let name = format!("pr-{round:02}-{i:02}");
                ingress(
                    "preview",
                    &name,
                    Some(&format!("{name}.test")),
                    &[("/", "Prefix", "api")],
                )
            })
            .collect();
        s.write_manifest("churn.yaml", &churn);
        let first = format!("ingress=\"pr-{round:02}-00\"");
        let previous = format!("ingress=\"pr-{:02}-", round.wrapping_sub(1));
        // A request on one route of the round creates its request counters too. The round is
        // live once that route answers (its series may be listed a moment before the swap).
        let host = format!("pr-{round:02}-00.test");
        eventually(STEP, &format!("round {round} published"), || async {
            let text = scrape(&s).await;
            let published = text.contains(&first) && !text.contains(&previous);
            (published && s.get(&host, "/").await.status == 200).then_some(())
        })
        .await;
        let text = eventually(STEP, "the request counted", || async {
            let text = scrape(&s).await;
            text.contains(&format!("sluice_requests_total{{{first}"))
                .then_some(text)
        })
        .await;
        let live = text
            .matches("sluice_request_duration_seconds_count{")
            .count();
        // The 25 of this round, preview/web, and unrouted requests.
        assert!(live <= ALIVE + 2, "round {round}: {live} route series");
        sizes.push(text.len());
        drop(text);
    }
    // Equal name lengths each round: the text stays the size one round gives it.
    let (first, last) = (sizes[0], sizes[ROUNDS - 1]);
    assert!(
        last <= first + first / 20,
        "/metrics grew from {first} to {last} bytes over {ROUNDS} rounds: {sizes:?}"
    );
    // Removing the last round's Ingresses brings the text back near where it started.
    s.write_manifest("churn.yaml", "");
    let text = eventually(STEP, "the churn removed", || async {
        let text = scrape(&s).await;
        (!text.contains("ingress=\"pr-")).then_some(text)
    })
    .await;
    assert!(
        text.len() <= baseline.len() + baseline.len() / 10,
        "/metrics is {} bytes after the churn, {} before",
        text.len(),
        baseline.len()
    );
}
