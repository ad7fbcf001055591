//! `instance` targets: routes that dial a Service's NodePort on the cluster's Nodes instead of
//! its pods.
//!
//! Two Nodes live on loopback, node A at 127.0.0.1 and node B at 127.0.0.2, each with a real
//! backend listening on the same port P, which is the Service's nodePort: what kube-proxy would
//! forward on a real Node, a backend answers here, naming its Node. Every test runs on both
//! sources; Node changes are written to the folder or applied to the fake API server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::*;

/// A Node as the tests describe it.
#[derive(Clone)]
struct Node {
    name: &'static str,
    ip: &'static str,
    ready: bool,
    unschedulable: bool,
    labels: &'static str,
}

impl Node {
    fn new(name: &'static str, ip: &'static str) -> Node {
        Node {
            name,
            ip,
            ready: true,
            unschedulable: false,
            labels: "",
        }
    }

    fn manifest(&self) -> String {
        let status = if self.ready { "True" } else { "False" };
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}, labels: {{{}}}}}\n\
             spec: {{unschedulable: {}}}\n\
             status:\n  addresses:\n  - {{type: Hostname, address: {}}}\n  - {{type: InternalIP, address: \"{}\"}}\n\
             \x20 conditions:\n  - {{type: MemoryPressure, status: \"False\"}}\n  - {{type: Ready, status: \"{status}\"}}\n---\n",
            self.name, self.labels, self.unschedulable, self.name, self.ip
        )
    }
}

/// Two backends on the same port P, one on 127.0.0.1 (node A) and one on 127.0.0.2 (node B).
async fn node_backends() -> (Backend, Backend, u16) {
    // Port 0 on 127.0.0.1 picks P; P may be taken on 127.0.0.2, so try a bounded number of times.
    for _ in 0..20 {
        let a = Backend::start("node-a").await;
        let port = a.addr.port();
        let b_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
        if let Ok(b) = Backend::start_at("node-b", b_addr).await {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2 after 20 tries");
}

/// A NodePort Service `name` (port 80 named `http`, nodePort `node_port`).
fn node_port_service(name: &str, node_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: NodePort\n  ports:\n  - {{name: http, port: 80, nodePort: {node_port}}}\n---\n"
    )
}

/// An Ingress with `paths`, in instance mode, with `annotations` besides.
fn instance_ingress(name: &str, paths: &[PathRule<'_>], annotations: &[(&str, &str)]) -> String {
    let mut all = vec![("sluice.dev/target-type", "instance")];
    all.extend_from_slice(annotations);
    annotate(&ingress("default", name, None, paths), &all)
}

/// Makes `routes` and `nodes` everything sluice sees, through the source the test runs on:
/// the folder's one manifest is rewritten, or the API server gets the objects applied and the
/// Nodes not listed deleted.
fn publish(s: &Sluice, routes: &str, nodes: &[Node]) {
    let node_text: String = nodes.iter().map(Node::manifest).collect();
    match &s.api {
        None => s.write_manifest("routes.yaml", &format!("{routes}{node_text}")),
        Some(api) => {
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&format!("{routes}{node_text}")).unwrap();
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                api.apply(doc);
            }
            for old in api.list("Node") {
                let name = old["metadata"]["name"].as_str().unwrap_or("").to_string();
                if !nodes.iter().any(|n| n.name == name) {
                    api.delete("v1", "Node", "", &name);
                }
            }
        }
    }
}

/// Starts sluice on `routes` and `nodes`.
async fn start(routes: &str, nodes: &[Node]) -> Sluice {
    let text: String = nodes.iter().map(Node::manifest).collect();
    Sluice::start(&format!("{routes}{text}")).await
}

/// Which backend answered each of `n` GETs for `path` on one keepalive connection.
async fn answers(s: &Sluice, path: &str, n: usize) -> Vec<String> {
    let mut conn = H1::connect(s.addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = conn.get("x", path).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        out.push(r.backend());
    }
    out
}

/// Waits until `backend` gets no more requests while the load succeeds 50 more times.
async fn wait_until_idle(load: &Load, backend: &Backend) {
    eventually(
        STEP,
        &format!("{} to get no more requests", backend.name),
        || async move {
            let before = backend.hits();
            load.wait_for_more(50).await;
            (backend.hits() == before).then_some(())
        },
    )
    .await;
}

/// Waits until `backend` gets requests again (while a [`Load`] runs).
async fn wait_until_busy(backend: &Backend) {
    let before = backend.hits();
    eventually(
        STEP,
        &format!("{} to get requests", backend.name),
        || async move { (backend.hits() > before).then_some(()) },
    )
    .await;
}

async fn requests_alternate_between_the_backends_on_both_nodes() {
    let (a, b, port) = node_backends().await;
    let pod = Backend::start("pod").await;
    let routes = [
        node_port_service("web", port),
        slice("default", "web", &[(pod.addr, Some(true))]),
        instance_ingress("nodes", &[("/", "Prefix", "web")], &[]),
        // The same Service port in ip mode: its own pool, of the pod.
        ingress("default", "pods", None, &[("/pods", "Prefix", "web")]),
    ]
    .concat();
    let s = start(
        &routes,
        &[Node::new("a", "127.0.0.1"), Node::new("b", "127.0.0.2")],
    )
    .await;
    let got = answers(&s, "/", 20).await;
    // Round robin over two Nodes: strictly alternating.
    assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");
    assert_eq!((a.hits(), b.hits()), (10, 10));
    assert_eq!(pod.hits(), 0, "instance mode never dials the pod");
    assert_eq!(answers(&s, "/pods", 4).await, vec!["pod"; 4]);
    // Two pools of one Service port, each with its own gauge. (Without the target type in
    // `PoolKey` both routes share the first route's pool, and `/pods` reaches the Nodes.)
    let metrics = get(s.admin, "admin", "/metrics").await.body;
    for (port, n) in [("80/instance", 2), ("80", 1)] {
        let series = format!(
            "sluice_pool_endpoints{{namespace=\"default\",port=\"{port}\",service=\"web\",state=\"ready\"}} {n}\n"
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}

async fn a_node_that_turns_not_ready_unschedulable_or_is_deleted_stops_getting_requests() {
    let (a, b, port) = node_backends().await;
    let routes = [
        node_port_service("web", port),
        instance_ingress("nodes", &[("/", "Prefix", "web")], &[]),
    ]
    .concat();
    let node_a = Node::new("a", "127.0.0.1");
    let node_b = Node::new("b", "127.0.0.2");
    let s = start(&routes, &[node_a.clone(), node_b.clone()]).await;
    let load = Load::start(s.addr, "x", 4);
    wait_until_busy(&a).await;
    wait_until_busy(&b).await;

    let not_ready = Node {
        ready: false,
        ..node_b.clone()
    };
    publish(&s, &routes, &[node_a.clone(), not_ready]);
    wait_until_idle(&load, &b).await;
    publish(&s, &routes, &[node_a.clone(), node_b.clone()]);
    wait_until_busy(&b).await;

    // (Dropping the `unschedulable` check in `node_targets` makes this wait time out.)
    let cordoned = Node {
        unschedulable: true,
        ..node_b.clone()
    };
    publish(&s, &routes, &[node_a.clone(), cordoned]);
    wait_until_idle(&load, &b).await;
    publish(&s, &routes, &[node_a.clone(), node_b.clone()]);
    wait_until_busy(&b).await;

    publish(&s, &routes, std::slice::from_ref(&node_a));
    wait_until_idle(&load, &b).await;

    let served = load.ok();
    let failures = load.stop().await;
    // Node A served throughout; no request failed while node B came and went.
    assert_no_failed_request(&failures);
    // Each of the three waits for node B to go idle saw at least 50 more successes.
    assert!(served >= 150, "{served}");
    assert!(a.hits() > b.hits(), "{} {}", a.hits(), b.hits());
}

async fn a_node_label_filter_keeps_traffic_on_matching_nodes() {
    let (a, b, port) = node_backends().await;
    let routes = [
        node_port_service("web", port),
        instance_ingress(
            "edge",
            &[("/", "Prefix", "web")],
            &[("sluice.dev/target-node-labels", "pool=edge,zone=a")],
        ),
    ]
    .concat();
    let node_a = Node {
        labels: "pool: edge, zone: a",
        ..Node::new("a", "127.0.0.1")
    };
    // Only one of the two labels matches: not a target.
    let node_b = Node {
        labels: "pool: edge, zone: b",
        ..Node::new("b", "127.0.0.2")
    };
    let s = start(&routes, &[node_a.clone(), node_b.clone()]).await;
    assert_eq!(answers(&s, "/", 10).await, vec!["node-a"; 10]);
    assert_eq!((a.hits(), b.hits()), (10, 0));

    // Relabelled to match: it joins the pool.
    let relabelled = Node {
        labels: "pool: edge, zone: a",
        ..node_b
    };
    publish(&s, &routes, &[node_a, relabelled]);
    s.wait_for_backend("x", "/", "node-b").await;
    let got = answers(&s, "/", 10).await;
    assert!(got.contains(&"node-a".to_string()), "{got:?}");
    assert!(got.contains(&"node-b".to_string()), "{got:?}");
}

async fn a_cluster_ip_service_in_instance_mode_answers_503_while_another_route_serves() {
    let (a, b, port) = node_backends().await;
    let pod = Backend::start("pod").await;
    let routes = [
        node_port_service("web", port),
        // A ClusterIP Service: it has pods, but no nodePort to reach them on a Node.
        service_with("default", "internal", &[pod.addr]),
        instance_ingress(
            "mixed",
            &[("/", "Prefix", "web"), ("/internal", "Prefix", "internal")],
            &[],
        ),
    ]
    .concat();
    let s = start(
        &routes,
        &[Node::new("a", "127.0.0.1"), Node::new("b", "127.0.0.2")],
    )
    .await;
    let r = s.get("x", "/internal").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(pod.hits(), 0);
    assert_eq!(answers(&s, "/", 4).await.len(), 4);
    assert_eq!(a.hits() + b.hits(), 4);

    if let Some(api) = &s.api {
        eventually(STEP, "a MissingNodePort Warning Event on mixed", || {
            let warned = api.list("Event").iter().any(|e| {
                (e["regarding"]["name"] == "mixed" || e["involvedObject"]["name"] == "mixed")
                    && e["type"] == "Warning"
                    && e["reason"] == "MissingNodePort"
            });
            async move { warned.then_some(()) }
        })
        .await;
    }
    // Making the Service a NodePort one on the backends' port resolves the route.
    publish(
        &s,
        &[
            node_port_service("web", port),
            node_port_service("internal", port),
            instance_ingress(
                "mixed",
                &[("/", "Prefix", "web"), ("/internal", "Prefix", "internal")],
                &[],
            ),
        ]
        .concat(),
        &[Node::new("a", "127.0.0.1"), Node::new("b", "127.0.0.2")],
    );
    let addr = s.addr;
    eventually(
        Duration::from_secs(10),
        "/internal to be served",
        || async move { (get(addr, "x", "/internal").await.status == 200).then_some(()) },
    )
    .await;
}

crate::through_both_sources!(
    requests_alternate_between_the_backends_on_both_nodes,
    a_node_that_turns_not_ready_unschedulable_or_is_deleted_stops_getting_requests,
    a_node_label_filter_keeps_traffic_on_matching_nodes,
    a_cluster_ip_service_in_instance_mode_answers_503_while_another_route_serves,
);
