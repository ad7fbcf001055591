//! The large cluster of the scale bench (`wrk/scale.sh`): `n` apps, each one Ingress (host
//! `h<i>.scale.test`, three Prefix paths to its own Service), one Service and one EndpointSlice
//! of three loopback endpoints, plus the IngressClass they use.
//!
//! Objects are JSON values, so the same object goes to the files source as YAML and to the fake
//! API server as JSON. The files hold a few apps each ([`file_name`]), so a change rewrites one
//! small file: not one file per object, because the files source's scan compares every file
//! with every other (`Folder::scan` in proxy/src/files.rs), which at 30 000 files keeps a core
//! busy between changes.
//! Endpoint addresses are `127.0.0.1`-`127.0.0.3` on one of the backend ports given; apps are
//! spread over [`NAMESPACES`] namespaces (app `i` in `i % NAMESPACES`), and the apps of one
//! namespace take the ports in turn, so a request can tell which of a namespace's Services
//! served it.
//!
//! Two changes the bench makes, each visible to a request:
//! - an **endpoint change** ([`slice`] with `moved`): the third endpoint moves from `127.0.0.3`
//!   to [`MOVED_ADDRESS`]; applied once a request to `h<i>` is answered from that address;
//! - an **Ingress edit** ([`ingress`] with `edited`): a fourth path [`EDIT_PATH`] leads to the
//!   Service of the next app in the same namespace ([`edit_target`]); applied once a request for
//!   that path is
//!   answered from that Service's port.

use serde_json::{json, Value};

/// The IngressClass every generated Ingress names.
pub const CLASS: &str = "sluice";
/// The controller of that class: sluice's default `controller.name`.
pub const CONTROLLER: &str = "sluice.dev/ingress-controller";
/// Namespaces the apps are spread over.
pub const NAMESPACES: usize = 16;
/// The addresses of an app's three endpoints before any change.
pub const ADDRESSES: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Where an endpoint change moves the third endpoint.
pub const MOVED_ADDRESS: &str = "127.0.0.4";
/// The path an Ingress edit adds.
pub const EDIT_PATH: &str = "/edit";

/// The host of app `i`.
pub fn host(i: usize) -> String {
    format!("h{i}.scale.test")
}

/// The namespace of app `i`.
pub fn namespace(i: usize) -> String {
    format!("scale-{}", i % NAMESPACES)
}

/// The name of app `i`'s Ingress, Service (and its EndpointSlice's prefix).
pub fn name(i: usize) -> String {
    format!("app-{i}")
}

/// The backend port app `i`'s endpoints listen on: the apps of one namespace take the ports in
/// turn.
pub fn port(i: usize, ports: &[u16]) -> u16 {
    ports[(i / NAMESPACES) % ports.len().max(1)]
}

/// The app whose Service an edit of app `i`'s Ingress adds a path to: the next (or, at the end,
/// the previous) app of the same namespace, as an Ingress reaches only Services of its own
/// namespace. Its endpoints answer from another port when there are two backend ports or more
/// and more than [`NAMESPACES`] apps.
pub fn edit_target(i: usize, n: usize) -> usize {
    if i + NAMESPACES < n {
        i + NAMESPACES
    } else {
        i.saturating_sub(NAMESPACES)
    }
}

fn prefix(path: &str, service: &str) -> Value {
    json!({
        "path": path,
        "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"name": "http"}}},
    })
}

/// App `i`'s Ingress; `edited` adds [`EDIT_PATH`] to the Service of `edit_target(i, n)`.
pub fn ingress(i: usize, n: usize, edited: bool) -> Value {
    let own = name(i);
    let mut paths = vec![
        prefix("/", &own),
        prefix("/api", &own),
        prefix("/static", &own),
    ];
    if edited {
        paths.push(prefix(EDIT_PATH, &name(edit_target(i, n))));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": own, "namespace": namespace(i)},
        "spec": {
            "ingressClassName": CLASS,
            "rules": [{"host": host(i), "http": {"paths": paths}}],
        },
    })
}

/// App `i`'s Service: one port `http` (80).
pub fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name(i), "namespace": namespace(i)},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

/// App `i`'s EndpointSlice: three ready endpoints on its backend port; `moved` puts the third
/// on [`MOVED_ADDRESS`].
pub fn slice(i: usize, ports: &[u16], moved: bool) -> Value {
    let mut addresses = ADDRESSES;
    if moved {
        addresses[2] = MOVED_ADDRESS;
    }
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{}-x7k2q", name(i)),
            "namespace": namespace(i),
            "labels": {"kubernetes.io/service-name": name(i)},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port(i, ports), "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// The IngressClass served by sluice's default settings.
pub fn class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": CLASS},
        "spec": {"controller": CONTROLLER},
    })
}

/// The file that holds app `i`'s objects when each file holds `per_file` apps.
pub fn file_name(i: usize, per_file: usize) -> String {
    format!("apps-{:05}.yaml", i / per_file.max(1))
}

/// The objects of app `i` in a cluster of `n`, as generated.
pub fn app(i: usize, n: usize, ports: &[u16]) -> [Value; 3] {
    [ingress(i, n, false), service(i), slice(i, ports, false)]
}

/// Whether two objects are the same object (kind, namespace and name).
pub fn same_object(a: &Value, b: &Value) -> bool {
    let id = |v: &Value| {
        (
            v.get("kind").cloned(),
            v.pointer("/metadata/namespace").cloned(),
            v.pointer("/metadata/name").cloned(),
        )
    };
    id(a) == id(b)
}

/// Objects as one multi-document YAML file.
pub fn to_yaml_documents(objects: &[Value]) -> String {
    objects
        .iter()
        .map(to_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The API path of a namespaced object (`metadata.namespace`, `metadata.name`), for a PATCH
/// to the fake API server.
pub fn api_path(object: &Value) -> Option<String> {
    let meta = object.get("metadata")?;
    let ns = meta.get("namespace")?.as_str()?;
    let name = meta.get("name")?.as_str()?;
    let (prefix, plural) = match object.get("kind")?.as_str()? {
        "Ingress" => ("/apis/networking.k8s.io/v1", "ingresses"),
        "Service" => ("/api/v1", "services"),
        "EndpointSlice" => ("/apis/discovery.k8s.io/v1", "endpointslices"),
        _ => return None,
    };
    Some(format!("{prefix}/namespaces/{ns}/{plural}/{name}"))
}

/// `value` as a block-style YAML document, as people write manifests (strings double-quoted,
/// which YAML reads as JSON reads them).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        write_block(value, 0, &mut out);
    } else {
        out.push_str(&scalar(value));
        out.push('\n');
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(m) if m.is_empty() => "{}".to_string(),
        Value::Array(a) if a.is_empty() => "[]".to_string(),
        // Plain JSON for scalars: a JSON string is a valid YAML double-quoted scalar.
        other => other.to_string(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Writes a non-empty map or list at `indent`, each entry on its own line.
fn write_block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(&pad);
                write_entry(k, v, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    // A map in a list: its first key on the dash's line, the rest under it.
                    Value::Object(map) if !map.is_empty() => {
                        for (n, (k, v)) in map.iter().enumerate() {
                            if n > 0 {
                                out.push_str(&pad);
                                out.push_str("  ");
                            }
                            write_entry(k, v, indent + 2, out);
                        }
                    }
                    Value::Array(_) if is_block(item) => {
                        out.push('\n');
                        write_block(item, indent + 2, out);
                    }
                    other => {
                        out.push_str(&scalar(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// Writes `key: value` (the line's indentation already written), nesting blocks under it.
fn write_entry(key: &str, value: &Value, indent: usize, out: &mut String) {
    out.push_str(key);
    if is_block(value) {
        out.push_str(":\n");
        write_block(value, indent + 2, out);
    } else {
        out.push_str(": ");
        out.push_str(&scalar(value));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_generated_object_reads_back_from_its_yaml_unchanged() {
        let ports = [9001, 9002];
        for object in [
            ingress(3, 40, false),
            ingress(39, 40, true),
            service(3),
            slice(3, &ports, false),
            slice(4, &ports, true),
            class(),
            json!([]),
            json!({"a": {}, "b": [], "c": [[1, 2], [], {"d": null}], "e": "x: \"y\""}),
        ] {
            assert_eq!(parse(&to_yaml(&object)), object);
        }
    }

    #[test]
    fn a_file_of_several_apps_reads_back_as_its_objects() {
        let objects: Vec<Value> = (0..3).flat_map(|i| app(i, 40, &[1, 2])).collect();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&to_yaml_documents(&objects))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(docs, objects);
        assert!(same_object(&slice(2, &[1], false), &slice(2, &[9], true)));
        assert!(!same_object(&slice(2, &[1], false), &slice(3, &[1], false)));
        assert_eq!(file_name(49, 25), "apps-00001.yaml");
    }

    #[test]
    fn changes_are_visible_to_a_request() {
        let ports = [9001, 9002];
        let moved = slice(5, &ports, true);
        assert_eq!(moved["endpoints"][2]["addresses"][0], MOVED_ADDRESS);
        assert_eq!(
            slice(5, &ports, false)["endpoints"][2]["addresses"][0],
            ADDRESSES[2]
        );
        // The edit leads to a Service of the same namespace whose endpoints answer from
        // another port.
        for (i, n) in [(0, 40), (5, 40), (39, 40), (20, 21)] {
            let j = edit_target(i, n);
            assert_eq!(namespace(i), namespace(j), "{i} -> {j}");
            assert_ne!(port(i, &ports), port(j, &ports), "{i} -> {j}");
            let paths = &ingress(i, n, true)["spec"]["rules"][0]["http"]["paths"];
            assert_eq!(paths[3]["path"], EDIT_PATH);
            assert_eq!(paths[3]["backend"]["service"]["name"], name(j).as_str());
        }
    }

    #[test]
    fn api_paths_name_the_object_resource() {
        assert_eq!(
            api_path(&slice(17, &[1], false)).as_deref(),
            Some("/apis/discovery.k8s.io/v1/namespaces/scale-1/endpointslices/app-17-x7k2q")
        );
        assert_eq!(
            api_path(&ingress(2, 3, false)).as_deref(),
            Some("/apis/networking.k8s.io/v1/namespaces/scale-2/ingresses/app-2")
        );
        assert_eq!(api_path(&class()), None);
    }
}
