//! `sluice.dev/limit-*` at request time: the route's [`Limiter`] admits the request's client,
//! or the request is answered with `server.limit_status` (429 by default, with `Retry-After`
//! when a rate refused it, and the route's CORS headers). This runs in `request_filter`, after the access checks and a
//! preflight's answer, before any upstream connection. An admitted request under
//! `limit-connections` keeps its [`Slot`] on its context until the request ends.
//!
//! The check allocates nothing: one hash, one short lock per rate, and for a connection limit
//! one map update (an insert only for a client without a request in flight).

use std::net::IpAddr;
use std::time::Instant;

use pingora_http::RequestHeader;

use super::{cors, Refusal};
use crate::limiter::{LimitReason, Limiter, Slot};
use crate::route::Filter;

/// Admits a request of `client` at `now` under the route's limits, or says why not with the
/// refusal to answer (`status` is `server.limit_status`).
pub(super) fn admit(
    filters: &[Filter],
    req: &RequestHeader,
    client: Option<IpAddr>,
    now: Instant,
    status: u16,
) -> Result<Option<Slot>, (Refusal, LimitReason)> {
    let Some(limiter) = filters.iter().find_map(|f| match f {
        Filter::Limits(l) => Some(l),
        _ => None,
    }) else {
        return Ok(None);
    };
    Limiter::admit(limiter, client, now).map_err(|refused| {
        // Whole seconds, rounded up: a client that waits that long is admitted.
        let retry_after = refused.retry_after.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
        });
        (
            Refusal::Limited {
                status,
                retry_after,
                cors: cors::answer(filters, req),
            },
            refused.reason,
        )
    })
}
