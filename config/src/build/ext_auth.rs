//! Resolving the in-cluster Service of `sluice.dev/auth-url` to the pool its subrequests go to.

use crate::model::IngressInput;
use crate::rules::ext_auth::AUTH_URL;
use crate::rules::Filter;

use super::Builder;

impl Builder<'_> {
    /// Fills in the pool of an external auth whose URL names a Service
    /// (`<service>.<namespace>.svc`): pod endpoints of that Service port, added to the snapshot.
    /// One that cannot be resolved is reported and its pool stays unset: the Ingress's routes
    /// then answer 503, never unauthenticated.
    pub(super) fn resolve_ext_auth(&mut self, ingress: &IngressInput, filters: &mut [Filter]) {
        for f in filters {
            let Filter::ExtAuth(auth) = f else {
                continue;
            };
            let Some(service) = auth.service.as_mut() else {
                continue;
            };
            service.pool = self.side_pool(
                ingress,
                &service.namespace,
                &service.name,
                &service.port,
                &format!("annotation `{AUTH_URL}`"),
                "the Ingress's routes answer 503",
            );
        }
    }
}
