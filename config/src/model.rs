//! Ingress-shaped inputs of snapshot building.
//!
//! These mirror the parts of `networking.k8s.io/v1` Ingress, IngressClass, `v1` Service, Secret
//! and Node, and `discovery.k8s.io/v1` EndpointSlice that routing and TLS need, and nothing else. Both sources (the
//! folder of manifests and the API server) translate Kubernetes objects into these, so one pure
//! function ([`crate::build::build`]) turns either into routes.

use std::collections::BTreeMap;

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port named by an Ingress backend: `port.number` or `port.name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => write!(f, "{s}"),
        }
    }
}

/// `spec.rules[].http.paths[].backend` or `spec.defaultBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendInput {
    /// A Service in the Ingress's namespace.
    Service { name: String, port: PortRef },
    /// `backend.resource` (or a Service backend without a port): not supported by sluice.
    Unsupported(String),
}

/// One `spec.rules[].http.paths[]` entry, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInput {
    pub path: Option<String>,
    /// `Exact`, `Prefix` or `ImplementationSpecific`; anything else is skipped.
    pub path_type: Option<String>,
    pub backend: BackendInput,
}

/// One `spec.rules[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleInput {
    pub host: Option<String>,
    pub paths: Vec<PathInput>,
}

/// One `spec.tls[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsInput {
    pub hosts: Vec<String>,
    pub secret_name: Option<String>,
}

/// An Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressInput {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` as Unix seconds; `None` (as in hand-written manifests) sorts
    /// after every Ingress that has one.
    pub created: Option<i64>,
    pub class_name: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub default_backend: Option<BackendInput>,
    pub rules: Vec<RuleInput>,
    pub tls: Vec<TlsInput>,
}

impl IngressInput {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(&self.namespace, &self.name)
    }
}

/// An IngressClass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressClassInput {
    pub name: String,
    pub controller: String,
    /// The `ingressclass.kubernetes.io/is-default-class: "true"` annotation.
    pub is_default: bool,
}

/// One `spec.ports[]` entry of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePortInput {
    /// Empty when the Service has a single unnamed port.
    pub name: String,
    pub port: i32,
    pub node_port: Option<i32>,
    pub app_protocol: Option<String>,
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInput {
    pub namespace: String,
    pub name: String,
    /// `spec.type`: `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    pub type_: String,
    pub ports: Vec<ServicePortInput>,
    /// The `sluice.dev/` keys of `metadata.annotations`: the `sluice.dev/health-check*` ones set
    /// its active health checks ([`crate::health`]).
    pub annotations: BTreeMap<String, String>,
}

/// One `ports[]` entry of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlicePortInput {
    /// Matches the Service port of the same name (empty for a single unnamed port).
    pub name: String,
    pub port: Option<i32>,
}

/// One `endpoints[]` entry of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointInput {
    pub addresses: Vec<String>,
    /// `conditions.ready`; `None` counts as ready, as the API documents.
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
}

/// An EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSliceInput {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    /// `IPv4`, `IPv6` or `FQDN` (FQDN slices are ignored).
    pub address_type: String,
    pub ports: Vec<SlicePortInput>,
    pub endpoints: Vec<EndpointInput>,
}

/// The `type` of Secrets that hold a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A Secret, without its data: which keys it has, not what they hold. The certificate material
/// stays in the proxy, which parses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretInput {
    pub namespace: String,
    pub name: String,
    /// `type`, such as `kubernetes.io/tls` or `Opaque`.
    pub type_: String,
    /// The keys present in `data` (and `stringData`), with a non-empty value.
    pub keys: std::collections::BTreeSet<String>,
}

impl SecretInput {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(&self.namespace, &self.name)
    }
}

/// A Node, as `instance` targets need it ([`crate::targets`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInput {
    pub name: String,
    /// `status.addresses` of type `InternalIP`, in order, as written.
    pub internal_ips: Vec<String>,
    /// The `Ready` condition is `True` (unknown or absent counts as not ready).
    pub ready: bool,
    /// `spec.unschedulable` (a cordoned Node).
    pub unschedulable: bool,
    pub labels: BTreeMap<String, String>,
}

/// Everything snapshot building reads, by kind.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub ingresses: Vec<IngressInput>,
    pub classes: Vec<IngressClassInput>,
    pub services: Vec<ServiceInput>,
    pub slices: Vec<EndpointSliceInput>,
    pub secrets: Vec<SecretInput>,
    pub nodes: Vec<NodeInput>,
}

impl Inputs {
    /// The same inputs, borrowed.
    pub fn refs(&self) -> InputRefs<'_> {
        InputRefs {
            ingresses: self.ingresses.iter().collect(),
            classes: self.classes.iter().collect(),
            services: self.services.iter().collect(),
            slices: self.slices.iter().collect(),
            secrets: self.secrets.iter().collect(),
            nodes: self.nodes.iter().collect(),
        }
    }
}

/// Everything snapshot building reads, borrowed: from an [`Inputs`], or from the copies a
/// source shares between its store and a build, so a build copies no object.
#[derive(Debug, Clone, Default)]
pub struct InputRefs<'a> {
    pub ingresses: Vec<&'a IngressInput>,
    pub classes: Vec<&'a IngressClassInput>,
    pub services: Vec<&'a ServiceInput>,
    pub slices: Vec<&'a EndpointSliceInput>,
    pub secrets: Vec<&'a SecretInput>,
    pub nodes: Vec<&'a NodeInput>,
}
