//! Builders of model inputs for tests: one place that knows how to write an Ingress, a Service,
//! an EndpointSlice or a Secret as the sources would translate it, so that each test says only
//! what matters to it.
//!
//! Compiled for this crate's unit tests and, behind the `fixtures` feature, for its integration
//! tests and any other crate's tests (the crate's dev-dependency on itself turns the feature on).
//!
//! ```ignore
//! let site = ingress("web", "site")
//!     .created(1)
//!     .host("a.test")
//!     .path("/", "Prefix", backend("app", 80))
//!     .tls(&["a.test"], Some("site-tls"))
//!     .annotation("sluice.dev/client-auth", "verify")
//!     .build();
//! let app = service("web", "app").port("http", 80).build();
//! let pods = slice("web", "app").port("http", 8080).endpoint("10.0.0.1", None).build();
//! ```

use crate::build::ClassPolicy;
use crate::model::{
    BackendInput, EndpointInput, EndpointSliceInput, IngressInput, PathInput, PortRef, RuleInput,
    SecretInput, ServiceInput, ServicePortInput, SlicePortInput, TlsInput, TLS_SECRET_TYPE,
};

/// The IngressClass name the builders give and [`class_policy`] serves.
pub const CLASS: &str = "sluice";

/// The class policy of a sluice that serves the [`CLASS`] class and no class-less Ingress.
pub fn class_policy() -> ClassPolicy {
    ClassPolicy {
        controller: "sluice.dev/ingress-controller".into(),
        class_name: CLASS.into(),
        serve_classless: false,
    }
}

/// A backend to port `port` (a number) of Service `service`.
pub fn backend(service: &str, port: i32) -> BackendInput {
    BackendInput::Service {
        name: service.into(),
        port: PortRef::Number(port),
    }
}

/// A backend to the port named `port` of Service `service`.
pub fn named_backend(service: &str, port: &str) -> BackendInput {
    BackendInput::Service {
        name: service.into(),
        port: PortRef::Name(port.into()),
    }
}

/// One rule path: `path` of type `path_type` (`Prefix`, `Exact`, ...) to `backend`.
pub fn path(path: &str, path_type: &str, backend: BackendInput) -> PathInput {
    PathInput {
        path: Some(path.into()),
        path_type: Some(path_type.into()),
        backend,
    }
}

/// An Ingress `namespace/name` of class [`CLASS`], with no rules, TLS or annotations yet.
pub fn ingress(namespace: &str, name: &str) -> IngressBuilder {
    IngressBuilder(IngressInput {
        namespace: namespace.into(),
        name: name.into(),
        class_name: Some(CLASS.into()),
        ..Default::default()
    })
}

/// An Ingress being written; [`IngressBuilder::build`] gives it.
#[derive(Debug, Clone)]
pub struct IngressBuilder(IngressInput);

impl IngressBuilder {
    /// `spec.ingressClassName` (`None`: none, as before IngressClasses).
    pub fn class(mut self, class: Option<&str>) -> Self {
        self.0.class_name = class.map(str::to_string);
        self
    }

    /// `metadata.creationTimestamp`, in Unix seconds.
    pub fn created(mut self, unix_secs: i64) -> Self {
        self.0.created = Some(unix_secs);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.annotations.insert(key.into(), value.into());
        self
    }

    pub fn annotations(self, pairs: &[(&str, &str)]) -> Self {
        pairs
            .iter()
            .fold(self, |b, (key, value)| b.annotation(key, value))
    }

    /// Starts a rule for `host`; the paths that follow go to it.
    pub fn host(self, host: &str) -> Self {
        self.rule(Some(host))
    }

    /// Starts a rule for `host`, or for every host when `None`; the paths that follow go to it.
    pub fn rule(mut self, host: Option<&str>) -> Self {
        self.0.rules.push(RuleInput {
            host: host.map(str::to_string),
            paths: Vec::new(),
        });
        self
    }

    /// Adds a path to the last rule (to a new host-less rule when there is none).
    pub fn path(self, p: &str, path_type: &str, backend: BackendInput) -> Self {
        self.paths([path(p, path_type, backend)])
    }

    /// Adds paths to the last rule (to a new host-less rule when there is none).
    pub fn paths(mut self, paths: impl IntoIterator<Item = PathInput>) -> Self {
        if self.0.rules.is_empty() {
            self = self.rule(None);
        }
        if let Some(rule) = self.0.rules.last_mut() {
            rule.paths.extend(paths);
        }
        self
    }

    /// `spec.defaultBackend`.
    pub fn default_backend(mut self, backend: BackendInput) -> Self {
        self.0.default_backend = Some(backend);
        self
    }

    /// Adds a `spec.tls` entry for `hosts` with the certificate of Secret `secret`.
    pub fn tls(mut self, hosts: &[&str], secret: Option<&str>) -> Self {
        self.0.tls.push(TlsInput {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            secret_name: secret.map(str::to_string),
        });
        self
    }

    pub fn build(self) -> IngressInput {
        self.0
    }
}

impl From<IngressBuilder> for IngressInput {
    fn from(b: IngressBuilder) -> IngressInput {
        b.build()
    }
}

/// A `ClusterIP` Service `namespace/name` with no ports yet.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(ServiceInput {
        namespace: namespace.into(),
        name: name.into(),
        type_: "ClusterIP".into(),
        ..Default::default()
    })
}

/// A Service being written; [`ServiceBuilder::build`] gives it.
#[derive(Debug, Clone)]
pub struct ServiceBuilder(ServiceInput);

impl ServiceBuilder {
    /// `spec.type`: `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    pub fn type_(mut self, type_: &str) -> Self {
        self.0.type_ = type_.into();
        self
    }

    /// Adds port `port` named `name` (empty: a single unnamed port).
    pub fn port(mut self, name: &str, port: i32) -> Self {
        self.0.ports.push(ServicePortInput {
            name: name.into(),
            port,
            ..Default::default()
        });
        self
    }

    /// The `nodePort` of the last port added.
    pub fn node_port(mut self, node_port: Option<i32>) -> Self {
        if let Some(p) = self.0.ports.last_mut() {
            p.node_port = node_port;
        }
        self
    }

    /// The `appProtocol` of the last port added.
    pub fn app_protocol(mut self, protocol: Option<&str>) -> Self {
        if let Some(p) = self.0.ports.last_mut() {
            p.app_protocol = protocol.map(str::to_string);
        }
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.annotations.insert(key.into(), value.into());
        self
    }

    pub fn build(self) -> ServiceInput {
        self.0
    }
}

/// An IPv4 EndpointSlice `{service}-abc` of Service `namespace/service`, with no ports or
/// endpoints yet.
pub fn slice(namespace: &str, service: &str) -> SliceBuilder {
    SliceBuilder(EndpointSliceInput {
        namespace: namespace.into(),
        name: format!("{service}-abc"),
        service: service.into(),
        address_type: "IPv4".into(),
        ..Default::default()
    })
}

/// An EndpointSlice being written; [`SliceBuilder::build`] gives it.
#[derive(Debug, Clone)]
pub struct SliceBuilder(EndpointSliceInput);

impl SliceBuilder {
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = name.into();
        self
    }

    /// Adds port `port` named `name` (matching the Service port of that name).
    pub fn port(mut self, name: &str, port: i32) -> Self {
        self.0.ports.push(SlicePortInput {
            name: name.into(),
            port: Some(port),
        });
        self
    }

    /// Adds an endpoint at `address` whose `conditions.ready` is `ready` (`None` counts as ready).
    pub fn endpoint(mut self, address: &str, ready: Option<bool>) -> Self {
        self.0.endpoints.push(EndpointInput {
            addresses: vec![address.into()],
            ready,
            ..Default::default()
        });
        self
    }

    pub fn build(self) -> EndpointSliceInput {
        self.0
    }
}

/// A `kubernetes.io/tls` Secret `namespace/name` whose data has `keys`.
pub fn secret(namespace: &str, name: &str, keys: &[&str]) -> SecretInput {
    SecretInput {
        namespace: namespace.into(),
        name: name.into(),
        type_: TLS_SECRET_TYPE.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}
