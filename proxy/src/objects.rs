//! The Kubernetes objects a source has seen, and their translation into model inputs.
//!
//! Both sources (the folder of manifests and the API server) translate each object once, when
//! it arrives, into the [`crate::store::Store`] the sync path publishes from. The
//! translation is pure and keeps only what routing reads.

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_config::model::*;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation that makes an IngressClass the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// One object of a kind sluice reads.
#[derive(Debug, Clone)]
pub enum Object {
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Secret(Box<Secret>),
    /// Cluster-scoped: its key has an empty namespace.
    Node(Box<Node>),
}

impl Object {
    /// The kind name, as in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
            Object::Node(_) => "Node",
        }
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }

    /// `namespace/name` (cluster-scoped kinds have an empty namespace).
    pub fn key(&self) -> ObjectRef {
        let m = self.metadata();
        ObjectRef::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

fn name_of(m: &ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_else(|| "default".to_string()),
        m.name.clone().unwrap_or_default(),
    )
}

fn backend_input(b: &IngressBackend) -> BackendInput {
    if let Some(svc) = &b.service {
        let port = svc.port.as_ref().and_then(|p| match (&p.name, p.number) {
            (Some(name), _) if !name.is_empty() => Some(PortRef::Name(name.clone())),
            (_, Some(n)) => Some(PortRef::Number(n)),
            _ => None,
        });
        return match port {
            Some(port) => BackendInput::Service {
                name: svc.name.clone(),
                port,
            },
            None => BackendInput::Unsupported(format!("service `{}` without a port", svc.name)),
        };
    }
    match &b.resource {
        Some(r) => BackendInput::Unsupported(format!("resource {}/{}", r.kind, r.name)),
        None => BackendInput::Unsupported("with neither service nor resource".to_string()),
    }
}

/// Translates an Ingress.
pub fn ingress_input(i: &Ingress) -> IngressInput {
    let (namespace, name) = name_of(&i.metadata);
    let spec = i.spec.clone().unwrap_or_default();
    IngressInput {
        namespace,
        name,
        created: i
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        class_name: spec.ingress_class_name.clone(),
        annotations: i.metadata.annotations.clone().unwrap_or_default(),
        default_backend: spec.default_backend.as_ref().map(backend_input),
        rules: spec
            .rules
            .unwrap_or_default()
            .iter()
            .map(|r| RuleInput {
                host: r.host.clone(),
                paths: r
                    .http
                    .as_ref()
                    .map(|h| {
                        h.paths
                            .iter()
                            .map(|p| PathInput {
                                path: p.path.clone(),
                                path_type: Some(p.path_type.clone()),
                                backend: backend_input(&p.backend),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        tls: spec
            .tls
            .unwrap_or_default()
            .into_iter()
            .map(|t| TlsInput {
                hosts: t.hosts.unwrap_or_default(),
                secret_name: t.secret_name,
            })
            .collect(),
    }
}

/// Translates a Secret: its type and which keys hold something, never the values.
pub fn secret_input(s: &Secret) -> SecretInput {
    let (namespace, name) = name_of(&s.metadata);
    let mut keys = std::collections::BTreeSet::new();
    for (k, v) in s.data.iter().flatten() {
        if !v.0.is_empty() {
            keys.insert(k.clone());
        }
    }
    for (k, v) in s.string_data.iter().flatten() {
        if !v.is_empty() {
            keys.insert(k.clone());
        }
    }
    SecretInput {
        namespace,
        name,
        type_: s.type_.clone().unwrap_or_else(|| "Opaque".to_string()),
        keys,
    }
}

/// Translates an IngressClass.
pub fn class_input(c: &IngressClass) -> IngressClassInput {
    IngressClassInput {
        name: c.metadata.name.clone().unwrap_or_default(),
        controller: c
            .spec
            .as_ref()
            .and_then(|s| s.controller.clone())
            .unwrap_or_default(),
        is_default: c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true"),
    }
}

/// Translates a Service.
pub fn service_input(s: &Service) -> ServiceInput {
    let (namespace, name) = name_of(&s.metadata);
    let spec = s.spec.clone().unwrap_or_default();
    ServiceInput {
        namespace,
        name,
        type_: spec.type_.unwrap_or_else(|| "ClusterIP".to_string()),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| ServicePortInput {
                name: p.name.unwrap_or_default(),
                port: p.port,
                node_port: p.node_port,
                app_protocol: p.app_protocol,
            })
            .collect(),
        // Only sluice's own keys: a Service's other annotations (kubectl's last-applied
        // configuration among them) are large and never read.
        annotations: s
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("sluice.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Translates an EndpointSlice.
pub fn slice_input(s: &EndpointSlice) -> EndpointSliceInput {
    let (namespace, name) = name_of(&s.metadata);
    EndpointSliceInput {
        namespace,
        name,
        service: s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
            .unwrap_or_default(),
        address_type: s.address_type.clone(),
        ports: s
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| SlicePortInput {
                name: p.name.clone().unwrap_or_default(),
                port: p.port,
            })
            .collect(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                EndpointInput {
                    addresses: e.addresses.clone(),
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                    node_name: e.node_name.clone(),
                }
            })
            .collect(),
    }
}

/// Translates a Node: its `InternalIP` addresses, readiness, schedulability and labels.
pub fn node_input(n: &Node) -> NodeInput {
    let status = n.status.as_ref();
    NodeInput {
        name: n.metadata.name.clone().unwrap_or_default(),
        internal_ips: status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .collect(),
        // Only `True` is ready: `False` and `Unknown` (a kubelet that stopped reporting) are not.
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        labels: n.metadata.labels.clone().unwrap_or_default(),
    }
}

/// Parses one manifest document (already decoded to JSON) into an object sluice reads.
/// `Ok(None)` for kinds sluice ignores; `Err` names what is wrong.
pub fn parse_document(doc: serde_json::Value) -> Result<Option<Object>, String> {
    let api_version = doc
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let kind = doc
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    fn de<T: serde::de::DeserializeOwned>(doc: serde_json::Value, what: &str) -> Result<T, String> {
        serde_json::from_value(doc).map_err(|e| format!("{what}: {e}"))
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Box::new(de(doc, "Ingress")?)),
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(Box::new(de(doc, "IngressClass")?))
        }
        ("v1", "Service") => Object::Service(Box::new(de(doc, "Service")?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Box::new(de(doc, "EndpointSlice")?))
        }
        ("v1", "Secret") => Object::Secret(Box::new(de(doc, "Secret")?)),
        ("v1", "Node") => Object::Node(Box::new(de(doc, "Node")?)),
        ("", _) | (_, "") => return Err("a document without apiVersion or kind".to_string()),
        _ => return Ok(None),
    };
    if object.key().name.is_empty() {
        return Err(format!("{} without metadata.name", object.kind()));
    }
    Ok(Some(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::SecretData;
    use serde_json::json;

    #[test]
    fn an_ingress_translates_with_named_and_numbered_ports() {
        let doc = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2024-01-02T03:04:05Z",
                         "annotations": {"kubernetes.io/ingress.class": "sluice"}},
            "spec": {
                "ingressClassName": "sluice",
                "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "tls": [{"hosts": ["a.test"], "secretName": "a-tls"}],
                "rules": [{"host": "a.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"path": "/r", "pathType": "Exact", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
                ]}}]
            }
        });
        let Some(Object::Ingress(ing)) = parse_document(doc).unwrap() else {
            panic!("not an ingress")
        };
        let input = ingress_input(&ing);
        assert_eq!(
            (input.namespace.as_str(), input.name.as_str()),
            ("shop", "web")
        );
        assert_eq!(input.created, Some(1704164645));
        assert_eq!(input.class_name.as_deref(), Some("sluice"));
        assert_eq!(
            input.default_backend,
            Some(BackendInput::Service {
                name: "fallback".into(),
                port: PortRef::Number(80)
            })
        );
        assert_eq!(input.rules[0].host.as_deref(), Some("a.test"));
        assert_eq!(
            input.rules[0].paths[0].backend,
            BackendInput::Service {
                name: "web".into(),
                port: PortRef::Name("http".into())
            }
        );
        assert!(matches!(
            input.rules[0].paths[1].backend,
            BackendInput::Unsupported(_)
        ));
        assert_eq!(input.tls[0].secret_name.as_deref(), Some("a-tls"));
    }

    #[test]
    fn a_service_translates_with_its_own_annotations_only() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                "sluice.dev/health-check": "http",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"
            }},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        });
        let Some(Object::Service(svc)) = parse_document(doc).unwrap() else {
            panic!("not a service")
        };
        let input = service_input(&svc);
        assert_eq!(
            input.annotations.into_iter().collect::<Vec<_>>(),
            vec![("sluice.dev/health-check".to_string(), "http".to_string())]
        );
    }

    #[test]
    fn a_slice_translates_with_its_service_label_and_conditions() {
        let doc = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.1.1.1"], "conditions": {"ready": false, "terminating": true}},
                          {"addresses": ["10.1.1.2"]}]
        });
        let Some(Object::EndpointSlice(s)) = parse_document(doc).unwrap() else {
            panic!("not a slice")
        };
        let input = slice_input(&s);
        assert_eq!(input.service, "web");
        assert_eq!(input.ports[0].port, Some(8080));
        assert_eq!(input.endpoints[0].ready, Some(false));
        assert_eq!(input.endpoints[0].terminating, Some(true));
        assert_eq!(input.endpoints[1].ready, None);
    }

    #[test]
    fn unknown_kinds_are_ignored_and_broken_documents_are_explained() {
        assert!(
            parse_document(json!({"apiVersion": "apps/v1", "kind": "Deployment"}))
                .unwrap()
                .is_none()
        );
        let err = parse_document(json!({"kind": "Ingress"})).unwrap_err();
        assert!(err.contains("apiVersion"), "{err}");
        let err = parse_document(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "x"}, "spec": {"rules": "not a list"}}),
        )
        .unwrap_err();
        assert!(err.starts_with("Ingress:"), "{err}");
        let err = parse_document(json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}))
            .unwrap_err();
        assert!(err.contains("metadata.name"), "{err}");
    }

    #[test]
    fn a_secret_translates_to_its_type_and_keys_and_keeps_only_tls_material() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "site-tls", "namespace": "shop"},
            "type": "kubernetes.io/tls",
            // base64 of "crt" and "key"; stringData as hand-written manifests have it.
            "data": {"tls.crt": "Y3J0", "tls.key": "a2V5", "empty": ""},
            "stringData": {"ca.crt": "ca"}
        });
        let Some(Object::Secret(s)) = parse_document(doc).unwrap() else {
            panic!("not a secret")
        };
        let input = secret_input(&s);
        assert_eq!(input.type_, "kubernetes.io/tls");
        let keys: Vec<_> = input.keys.iter().map(String::as_str).collect();
        assert_eq!(keys, vec!["ca.crt", "tls.crt", "tls.key"]);
        let data = SecretData::from_secret(&s);
        assert_eq!(data.tls_crt.as_deref(), Some(&b"crt"[..]));
        assert_eq!(data.tls_key.as_deref(), Some(&b"key"[..]));
        assert_eq!(data.ca_crt.as_deref(), Some(&b"ca"[..]));
    }

    #[test]
    fn a_node_translates_to_its_internal_ips_readiness_schedulability_and_labels() {
        let node = |status: &str, unschedulable: Option<bool>| {
            let doc = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": {"pool": "edge"}},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "addresses": [{"type": "Hostname", "address": "n1"},
                                  {"type": "InternalIP", "address": "10.0.0.1"},
                                  {"type": "ExternalIP", "address": "203.0.113.1"},
                                  {"type": "InternalIP", "address": "fd00::1"}],
                    "conditions": [{"type": "MemoryPressure", "status": "False"},
                                   {"type": "Ready", "status": status}]}});
            match parse_document(doc).unwrap() {
                Some(Object::Node(n)) => {
                    assert_eq!(Object::Node(n.clone()).key(), ObjectRef::new("", "n1"));
                    node_input(&n)
                }
                _ => panic!("not a node"),
            }
        };
        let n = node("True", None);
        assert_eq!(n.name, "n1");
        assert_eq!(n.internal_ips, vec!["10.0.0.1", "fd00::1"]);
        assert!(n.ready);
        assert!(!n.unschedulable);
        assert_eq!(n.labels.get("pool").map(String::as_str), Some("edge"));
        assert!(!node("False", None).ready);
        assert!(!node("Unknown", None).ready);
        assert!(node("True", Some(true)).unschedulable);
        assert!(!node("True", Some(false)).unschedulable);
        // A Node without status (as a hand-written manifest may be) is not ready.
        let bare = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}});
        let Some(Object::Node(b)) = parse_document(bare).unwrap() else {
            panic!("not a node")
        };
        assert!(!node_input(&b).ready);
        assert!(node_input(&b).internal_ips.is_empty());
    }

    #[test]
    fn an_ingress_class_is_default_only_with_the_exact_annotation_value() {
        let class = |v: &str| {
            let doc = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "c", "annotations": {DEFAULT_CLASS_ANNOTATION: v}},
                "spec": {"controller": "sluice.dev/ingress-controller"}});
            match parse_document(doc).unwrap() {
                Some(Object::IngressClass(c)) => class_input(&c),
                _ => panic!("not a class"),
            }
        };
        assert!(class("true").is_default);
        assert!(!class("yes").is_default);
        assert_eq!(class("true").controller, "sluice.dev/ingress-controller");
    }
}
