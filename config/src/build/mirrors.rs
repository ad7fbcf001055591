//! Resolving `sluice.dev/mirror-target` to the pool that receives the copies.

use crate::finding::Reason;
use crate::model::{BackendInput, IngressInput};
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
            let backend = BackendInput::Service {
                name: service.clone(),
                port: port.clone(),
            };
            self.target_type = TargetType::Ip;
            match self.resolve_target(ingress, &backend) {
                Ok(key) => {
                    if !self.snapshot.endpoints.contains_key(&key) {
                        let eps = self.endpoints_of(&key);
                        self.snapshot.endpoints.insert(key.clone(), eps);
                    }
                    *pool = Some(key);
                }
                Err((reason, message)) => {
                    let message = format!(
                        "annotation `{MIRROR_TARGET}`: {message}; requests are not mirrored"
                    );
                    let reason = match reason {
                        Reason::UnsupportedBackend => Reason::InvalidAnnotation,
                        r => r,
                    };
                    self.skip(ingress, reason, message);
                }
            }
        }
    }
}
