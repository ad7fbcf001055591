//! Authentication of requests on a route, applied before anything is forwarded.
//!
//! - [`basic`]: `sluice.dev/auth-type: basic`, users from an htpasswd Secret.

pub mod basic;
