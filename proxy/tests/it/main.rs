//! Integration tests: sluice in-process on loopback port 0, real HTTP/1.1 and h2c clients, real
//! loopback backends that say who answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod access;
mod balancing;
mod basic_auth;
mod binary;
mod connections;
mod cors;
mod ext_auth;
mod failures;
mod fake_apiserver_selftest;
mod headers;
mod health;
mod instance;
mod kube;
mod kube_resilience;
mod limits;
mod live;
mod observe;
mod pipeline;
mod protocols;
mod proxy_protocol;
mod requests;
mod resilience;
mod routing;
mod rules;
mod tenancy;
mod tls;
