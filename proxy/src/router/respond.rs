//! The answers sluice gives by itself, and the one place that turns a decision or an error
//! into a status.
//!
//! Every request sluice does not proxy ends in a [`Refusal`], which knows its status
//! ([`Refusal::status`]) and its short plain-text body ([`Refusal::body`]):
//! - `request_filter` refuses before anything is forwarded (a bad host or path, a head or body
//!   over its limit, the TLS rules, no route, no ready endpoint) and writes the answer with
//!   [`respond`], keeping the connection unless the request's framing is in doubt;
//! - an error that ends a proxied request maps to a refusal through [`status_for`] (an upstream
//!   timeout 504, any other upstream failure 502, a client silent past its body timeout 408),
//!   and `fail_to_proxy` writes it;
//! - a client that left before any response head was sent is [`Refusal::ClientClosed`]: logged
//!   and counted as 499 (nginx's "client closed request"), never written.
//!
//! The errors sluice raises inside the proxy phases carry their refusal's status as Pingora's
//! `ErrorType::HTTPStatus` ([`Refusal::raise`]); [`status_for`] reads it back.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora_error::{Error, ErrorSource, ErrorType, ImmutStr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::cors::CorsAnswer;

/// Why sluice answers a request itself instead of proxying it, and so with what status and
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: no host where one is required, two that disagree, or one that is not a name.
    BadHost,
    /// 400: the path climbs above the root.
    BadPath,
    /// 400: a request Pingora could not read as HTTP.
    BadRequest,
    /// 401: the route asks for credentials the request did not carry.
    Unauthorized,
    /// 401 with this `WWW-Authenticate` challenge: the route's basic auth refused the request's
    /// credentials (or it had none).
    Challenge { www_authenticate: HeaderValue },
    /// 401: the route's auth service refused the request; its `WWW-Authenticate` values are
    /// passed on.
    AuthChallenge { challenges: Vec<http::HeaderValue> },
    /// 403: the host requires a client certificate and the request came over plain HTTP with no
    /// HTTPS listener to redirect it to.
    ClientCertificateRequired,
    /// 403: an access rule of the route denies the client.
    Denied,
    /// 404: no route for this host and path.
    NoRoute,
    /// 408: the client was silent between two body reads past its body timeout.
    ClientTimeout,
    /// 413: the request body is over the route's limit.
    BodyTooLarge,
    /// 421: over TLS, the host and the connection's server name differ on a name with client
    /// authentication.
    Misdirected,
    /// 429: the client is over the route's rate limit.
    TooManyRequests,
    /// 431: the request head is over the configured size.
    HeadTooLarge,
    /// 499: the client left before any response head was sent. Logged and counted, never
    /// written.
    ClientClosed,
    /// 500: sluice failed in a way no other refusal names.
    Internal,
    /// 502: connecting to or reading from the endpoints failed.
    UpstreamFailed,
    /// 503: the route's backend could not be resolved, or its pool has no ready endpoint.
    NoEndpoint,
    /// 503: a policy annotation of the route's Ingress is invalid (the route fails closed).
    InvalidRoute,
    /// 504: the endpoint timed out.
    UpstreamTimeout,
    /// 308 to the https URL of a plain-HTTP request to a host with TLS.
    HttpsRequired { location: String },
    /// A redirect a route asks for.
    Redirect {
        status: RedirectStatus,
        location: String,
    },
    /// 429 or 503 (`server.limit_status`): the client is over a `sluice.dev/limit-*` of the
    /// route; `retry_after` in seconds, for a rate; the route's CORS headers when it has CORS.
    Limited {
        status: u16,
        retry_after: Option<u32>,
        cors: Option<CorsAnswer>,
    },
    /// 204: a CORS preflight from an origin the route's policy admits, answered by sluice
    /// (see `cors`).
    Preflight(CorsAnswer),
}

/// The status of a [`Refusal::Redirect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectStatus {
    /// 301.
    MovedPermanently,
    /// 302.
    Found,
    /// 303.
    SeeOther,
    /// 307.
    TemporaryRedirect,
    /// 308.
    PermanentRedirect,
}

impl RedirectStatus {
    /// The status code.
    pub const fn code(self) -> u16 {
        match self {
            RedirectStatus::MovedPermanently => 301,
            RedirectStatus::Found => 302,
            RedirectStatus::SeeOther => 303,
            RedirectStatus::TemporaryRedirect => 307,
            RedirectStatus::PermanentRedirect => 308,
        }
    }
}

impl RedirectStatus {
    /// The redirect of a status code, `None` for one that is not 301, 302, 303, 307 or 308.
    pub const fn from_code(code: u16) -> Option<RedirectStatus> {
        match code {
            301 => Some(RedirectStatus::MovedPermanently),
            302 => Some(RedirectStatus::Found),
            303 => Some(RedirectStatus::SeeOther),
            307 => Some(RedirectStatus::TemporaryRedirect),
            308 => Some(RedirectStatus::PermanentRedirect),
            _ => None,
        }
    }
}

impl Refusal {
    /// The status this refusal answers with (or, for [`Refusal::ClientClosed`], logs).
    pub const fn status(&self) -> u16 {
        match self {
            Refusal::BadHost | Refusal::BadPath | Refusal::BadRequest => 400,
            Refusal::Unauthorized | Refusal::Challenge { .. } | Refusal::AuthChallenge { .. } => {
                401
            }
            Refusal::ClientCertificateRequired | Refusal::Denied => 403,
            Refusal::NoRoute => 404,
            Refusal::ClientTimeout => 408,
            Refusal::BodyTooLarge => 413,
            Refusal::Misdirected => 421,
            Refusal::TooManyRequests => 429,
            Refusal::HeadTooLarge => 431,
            Refusal::ClientClosed => CLIENT_CLOSED_REQUEST,
            Refusal::Internal => 500,
            Refusal::UpstreamFailed => 502,
            Refusal::NoEndpoint | Refusal::InvalidRoute => 503,
            Refusal::UpstreamTimeout => 504,
            Refusal::HttpsRequired { .. } => 308,
            Refusal::Redirect { status, .. } => status.code(),
            Refusal::Limited { status, .. } => *status,
            Refusal::Preflight(_) => 204,
        }
    }

    /// The short plain-text body of the answer: the status and its reason, then what sluice
    /// found when that says more.
    pub fn body(&self) -> &'static str {
        match self {
            // One body for the three, as before they had a variant each.
            Refusal::BadHost | Refusal::BadPath | Refusal::BadRequest => "400 Bad Request\n",
            Refusal::Unauthorized => "401 Unauthorized\n",
            Refusal::Challenge { .. } => {
                "401 Unauthorized: this route requires a user and password\n"
            }
            Refusal::AuthChallenge { .. } => {
                "401 Unauthorized: the route's auth service refused the request\n"
            }
            Refusal::ClientCertificateRequired => {
                "403 Forbidden: this host requires a client certificate over https\n"
            }
            Refusal::Denied => "403 Forbidden: denied by an access rule of this route\n",
            Refusal::NoRoute => "404 Not Found: no route for this host and path\n",
            Refusal::ClientTimeout => "408 Request Timeout\n",
            Refusal::BodyTooLarge => "413 Content Too Large\n",
            Refusal::Misdirected => {
                "421 Misdirected Request: this host requires its own TLS connection\n"
            }
            Refusal::TooManyRequests => "429 Too Many Requests\n",
            Refusal::HeadTooLarge => "431 Request Header Fields Too Large\n",
            Refusal::ClientClosed => "499 Client Closed Request\n",
            Refusal::Internal => "500 Internal Server Error\n",
            Refusal::UpstreamFailed => "502 Bad Gateway\n",
            Refusal::NoEndpoint => "503 Service Unavailable: no ready endpoint for this route\n",
            Refusal::InvalidRoute => {
                "503 Service Unavailable: this route's configuration is invalid\n"
            }
            Refusal::UpstreamTimeout => "504 Gateway Timeout\n",
            Refusal::HttpsRequired { .. } => "308 Permanent Redirect: use https\n",
            Refusal::Redirect { status, .. } => match status {
                RedirectStatus::MovedPermanently => "301 Moved Permanently\n",
                RedirectStatus::Found => "302 Found\n",
                RedirectStatus::SeeOther => "303 See Other\n",
                RedirectStatus::TemporaryRedirect => "307 Temporary Redirect\n",
                RedirectStatus::PermanentRedirect => "308 Permanent Redirect\n",
            },
            Refusal::Limited { status: 503, .. } => {
                "503 Service Unavailable: over this route's limits\n"
            }
            Refusal::Limited { .. } => "429 Too Many Requests: over this route's limits\n",
            Refusal::Preflight(_) => "",
        }
    }

    /// Where a redirect sends the client.
    pub fn location(&self) -> Option<&str> {
        match self {
            Refusal::HttpsRequired { location } | Refusal::Redirect { location, .. } => {
                Some(location)
            }
            _ => None,
        }
    }

    /// Whether the answer is written to the client: every refusal but a client abort.
    pub fn is_sent(&self) -> bool {
        *self != Refusal::ClientClosed
    }

    /// The refusal an error raised with `ErrorType::HTTPStatus(code)` stands for: the one
    /// refusal of that status that carries nothing more (a status shared by several names the
    /// general one, `BadRequest` for 400 and `Denied` for 403). `None` for a redirect or an
    /// unknown status.
    pub fn from_status(code: u16) -> Option<Refusal> {
        Some(match code {
            400 => Refusal::BadRequest,
            401 => Refusal::Unauthorized,
            403 => Refusal::Denied,
            404 => Refusal::NoRoute,
            408 => Refusal::ClientTimeout,
            413 => Refusal::BodyTooLarge,
            421 => Refusal::Misdirected,
            429 => Refusal::TooManyRequests,
            431 => Refusal::HeadTooLarge,
            499 => Refusal::ClientClosed,
            500 => Refusal::Internal,
            502 => Refusal::UpstreamFailed,
            503 => Refusal::NoEndpoint,
            504 => Refusal::UpstreamTimeout,
            _ => return None,
        })
    }

    /// Ends a proxy phase with this refusal: an error of its status, which [`status_for`] maps
    /// back to it ([`Refusal::from_status`]), explained by `why` in the log. Only for refusals
    /// that carry nothing more: a redirect is answered with [`respond`], never raised.
    pub fn raise<T>(&self, why: impl Into<ImmutStr>) -> Result<T> {
        Error::e_explain(ErrorType::HTTPStatus(self.status()), why)
    }

    /// The response head of the answer, `None` for one never written (a client abort).
    pub fn head(&self) -> Result<Option<Box<ResponseHeader>>> {
        if !self.is_sent() {
            return Ok(None);
        }
        let mut resp = ResponseHeader::build(self.status(), Some(4))?;
        match self {
            Refusal::Preflight(cors) => {
                // No body, so no Content-Length or Content-Type.
                cors.preflight_head(&mut resp)?;
                return Ok(Some(Box::new(resp)));
            }
            Refusal::Limited {
                retry_after, cors, ..
            } => {
                if let Some(secs) = retry_after {
                    resp.insert_header(header::RETRY_AFTER, *secs)?;
                }
                if let Some(cors) = cors {
                    cors.actual_head(&mut resp)?;
                }
            }
            _ => {}
        }
        if let Some(location) = self.location() {
            resp.insert_header(header::LOCATION, location)?;
        }
        if let Refusal::Challenge { www_authenticate } = self {
            resp.insert_header(header::WWW_AUTHENTICATE, www_authenticate.clone())?;
        }
        if let Refusal::AuthChallenge { challenges } = self {
            for challenge in challenges {
                resp.append_header(header::WWW_AUTHENTICATE, challenge.clone())?;
            }
        }
        resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(header::CONTENT_LENGTH, self.body().len())?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        Ok(Some(Box::new(resp)))
    }
}

/// The status sluice logs and counts for a request whose client left before any response head
/// was sent ([`Refusal::ClientClosed`]); it is never sent. (A literal: a refusal may carry a
/// header value, which a constant cannot drop.)
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Answers a request without proxying it, keeping the connection open for the next one unless
/// the caller dropped keep-alive. Writes nothing for a client abort.
pub async fn respond(session: &mut Session, refusal: Refusal) -> Result<bool> {
    let Some(head) = refusal.head()? else {
        return Ok(true);
    };
    if refusal.body().is_empty() {
        session.write_response_header(head, true).await?;
        return Ok(true);
    }
    session.write_response_header(head, false).await?;
    session
        .write_response_body(Some(Bytes::from_static(refusal.body().as_bytes())), true)
        .await?;
    Ok(true)
}

/// The refusal for an error that ended a proxied request: the one it was raised with
/// ([`Refusal::raise`]), else by where it came from. An upstream timeout is 504 and any other
/// upstream or internal failure 502; on the client's side, a closed connection or a failed read
/// or write is a client abort, a timeout between body reads 408, and anything else 400.
pub fn status_for(e: &Error) -> Refusal {
    match e.etype() {
        // Only sluice raises status errors, each from a refusal.
        ErrorType::HTTPStatus(code) => Refusal::from_status(*code).unwrap_or(Refusal::Internal),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            Refusal::UpstreamTimeout
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Refusal::UpstreamFailed,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    Refusal::ClientClosed
                }
                // A client silent between two body reads past `client_body_timeout`.
                ErrorType::ReadTimedout => Refusal::ClientTimeout,
                _ => Refusal::BadRequest,
            },
            ErrorSource::Internal | ErrorSource::Unset => Refusal::UpstreamFailed,
        },
    }
}
