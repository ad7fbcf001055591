//! Resolving `sluice.dev/mirror-target` to the pool that receives the copies.

use crate::build::PoolKey;
use crate::finding::Reason;
use crate::model::{BackendInput, IngressInput, PortRef};
use crate::rules::{Filter, MIRROR_TARGET};
use crate::targets::TargetType;

use super::Builder;

impl Builder<'_> {
    /// Fills in the pool of each mirror filter of `ingress` (pod endpoints of the Service port)
    /// and adds its endpoints to the snapshot. One that cannot be resolved is reported, and that
    /// Ingress's requests are served without mirroring: a mirror never affects the client.
    pub(super) fn resolve_mirrors(&mut self, ingress: &IngressInput, filters: &mut [Filter]) {
        for f in filters {
            let Filter::Mirror {
                service,
                port,
                pool,
            } = f
            else {
                continue;
            };
            *pool = self.side_pool(
                ingress,
                &ingress.namespace,
                service,
                port,
                &format!("annotation `{MIRROR_TARGET}`"),
                "requests are not mirrored",
            );
        }
    }

    /// The pool of a Service port a filter sends requests to besides the route's backend (a
    /// mirror, an auth service): pod endpoints, added to the snapshot. `None` when it cannot be
    /// resolved, reported on `ingress` as `{what}: {why}; {then}`.
    pub(super) fn side_pool(
        &mut self,
        ingress: &IngressInput,
        namespace: &str,
        service: &str,
        port: &PortRef,
        what: &str,
        then: &str,
    ) -> Option<PoolKey> {
        let backend = BackendInput::Service {
            name: service.to_string(),
            port: port.clone(),
        };
        self.target_type = TargetType::Ip;
        match self.resolve_target_in(namespace, &backend) {
            Ok(key) => {
                if !self.snapshot.endpoints.contains_key(&key) {
                    let eps = self.endpoints_of(&key);
                    self.snapshot.endpoints.insert(key.clone(), eps);
                }
                Some(key)
            }
            Err((reason, message)) => {
                let reason = match reason {
                    Reason::UnsupportedBackend => Reason::InvalidAnnotation,
                    r => r,
                };
                self.skip(ingress, reason, format!("{what}: {message}; {then}"));
                None
            }
        }
    }
}
