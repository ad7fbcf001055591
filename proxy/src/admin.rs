//! The admin listener: `/healthz` (the process is up), `/readyz` (a first snapshot is live) and
//! `/metrics` (Prometheus text format).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::state::State;

/// Answers the admin endpoints.
pub struct Admin {
    state: Arc<State>,
}

impl Admin {
    pub fn new(state: Arc<State>) -> Admin {
        Admin { state }
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let mut resp = Response::new(body.as_bytes().to_vec());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/metrics" => {
                self.state.refresh_pool_gauges();
                let body = self.state.metrics().render();
                let mut resp = Response::new(body);
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                let len = resp.body().len();
                resp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
                resp
            }
            "/readyz" if self.state.is_ready() => plain(StatusCode::OK, "ready\n"),
            "/readyz" => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting for the first complete sync\n",
            ),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
