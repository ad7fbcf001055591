//! What a finished handshake tells the request path: the server name and, on hosts that ask for
//! client certificates, the certificate and its verification result as upstream headers.
//!
//! | header | value |
//! |---|---|
//! | `X-Client-Cert` | the client certificate as URL-encoded PEM; in `passthrough`, the whole chain the client sent; not sent for a certificate that failed verification |
//! | `X-Client-Cert-Verified` | `SUCCESS`, `NONE` (no certificate) or `FAILED:<reason>`; not sent in `passthrough`, where nothing is verified |
//! | `X-Client-Cert-Subject` | the certificate's subject, RFC 4514 style (`CN=client,O=Example`); not sent for a certificate that failed verification |
//!
//! The values are computed once per connection, when the handshake completes. The router removes
//! these headers from every request before adding its own, so a client can never set them.

use http::header::HeaderName;
use openssl::nid::Nid;
use openssl::ssl::{NameType, SslRef};
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult};
use sluice_config::tls::ClientAuthMode;

use super::certs::VerifyError;
use super::store::HostEntry;

/// The upstream header carrying the client certificate.
pub static CLIENT_CERT_HEADER: HeaderName = HeaderName::from_static("x-client-cert");
/// The upstream header carrying the verification result.
pub static CLIENT_CERT_VERIFIED_HEADER: HeaderName =
    HeaderName::from_static("x-client-cert-verified");
/// The upstream header carrying the certificate's subject.
pub static CLIENT_CERT_SUBJECT_HEADER: HeaderName =
    HeaderName::from_static("x-client-cert-subject");
/// Every client-certificate header, as removed from client requests.
pub static CLIENT_CERT_HEADERS: [&HeaderName; 3] = [
    &CLIENT_CERT_HEADER,
    &CLIENT_CERT_VERIFIED_HEADER,
    &CLIENT_CERT_SUBJECT_HEADER,
];

/// The TLS facts of one connection, attached by the handshake and read by every request on it.
#[derive(Debug, Clone, Default)]
pub struct ConnTls {
    /// The server name, lowercased, without a trailing dot. After a TLS 1.2 resumption, OpenSSL
    /// reports the name of the original handshake.
    pub sni: Option<String>,
    /// The client authentication applied to this connection (that of its server name).
    pub mode: ClientAuthMode,
    pub resumed: bool,
    /// `(header, value)` pairs for the upstream request.
    pub headers: Vec<(&'static HeaderName, String)>,
}

impl ConnTls {
    /// Reads a completed handshake. `entry` is the name's entry in the store the handshake used;
    /// `resumed_verdict` is the verification of a resumed session's certificate, done when the
    /// session was accepted (OpenSSL verifies nothing on resumption).
    pub fn from_handshake(
        ssl: &SslRef,
        entry: Option<&HostEntry>,
        resumed_verdict: Option<Result<(), VerifyError>>,
    ) -> ConnTls {
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        let resumed = ssl.session_reused();
        let Some(auth) = entry.and_then(|e| e.client_auth.as_ref()) else {
            return ConnTls {
                sni,
                mode: ClientAuthMode::Off,
                resumed,
                headers: Vec::new(),
            };
        };
        let leaf = ssl.peer_certificate();
        let verdict = (auth.mode != ClientAuthMode::Passthrough).then(|| match (&leaf, resumed) {
            (None, _) => "NONE".to_string(),
            (Some(_), true) => match resumed_verdict {
                Some(Ok(())) => "SUCCESS".to_string(),
                Some(Err(reason)) => format!("FAILED:{reason}"),
                None => "FAILED:not verified".to_string(),
            },
            (Some(_), false) => verdict(ssl.verify_result(), auth.ca.is_some()),
        });
        // A certificate that failed verification says nothing true about the client: its
        // subject and PEM are not forwarded (`optional` lets such a client through), only the
        // verdict. `passthrough` verifies nothing and forwards what was sent, as documented.
        let trusted = verdict.as_deref().is_none_or(|v| v == "SUCCESS");
        let mut headers = Vec::new();
        if let (Some(leaf), true) = (&leaf, trusted) {
            let mut pem = leaf.to_pem().unwrap_or_default();
            if auth.mode == ClientAuthMode::Passthrough {
                // A server's peer chain lists what follows the client's own certificate.
                for c in ssl.peer_cert_chain().into_iter().flatten() {
                    pem.extend_from_slice(&c.to_pem().unwrap_or_default());
                }
            }
            headers.push((&CLIENT_CERT_HEADER, url_encode(&pem)));
            headers.push((&CLIENT_CERT_SUBJECT_HEADER, subject(leaf.subject_name())));
        }
        if let Some(verdict) = verdict {
            if verdict == "SUCCESS" && !resumed {
                if let (Some(ca), Some(chain)) = (&auth.ca, ssl.peer_cert_chain()) {
                    ca.learn(chain);
                }
            }
            headers.push((&CLIENT_CERT_VERIFIED_HEADER, verdict));
        }
        ConnTls {
            sni,
            mode: auth.mode,
            resumed,
            headers,
        }
    }
}

fn verdict(result: X509VerifyResult, has_ca: bool) -> String {
    if !has_ca {
        return "FAILED:no trusted CA is configured".to_string();
    }
    if result == X509VerifyResult::OK {
        "SUCCESS".to_string()
    } else {
        format!("FAILED:{}", result.error_string())
    }
}

/// Re-verifies the certificate of a resumed session for `entry`, which asks for verification.
pub fn verify_resumed(ssl: &SslRef, entry: &HostEntry) -> Result<(), VerifyError> {
    let Some(auth) = &entry.client_auth else {
        return Ok(());
    };
    let Some(leaf) = ssl.peer_certificate() else {
        return Err(VerifyError::NoCertificate);
    };
    let Some(ca) = &auth.ca else {
        return Err(VerifyError::NoTrustedCa);
    };
    ca.verify(&leaf, auth.verify_depth)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3 / 2);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A distinguished name in RFC 4514 order (most specific first), with special characters and
/// anything outside printable ASCII escaped, so the value is always a valid header.
pub fn subject(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = Vec::new();
    for entry in name.entries() {
        let key = match entry.object().nid() {
            Nid::UNDEF => entry.object().to_string(),
            nid => nid.short_name().unwrap_or("UNKNOWN").to_string(),
        };
        let value = entry.data().to_string().unwrap_or_default();
        parts.push(format!("{key}={}", escape_dn_value(&value)));
    }
    parts.reverse();
    parts.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
        }
    }
    out
}

/// The subject of a certificate (for logs and tests).
pub fn subject_of(cert: &X509Ref) -> String {
    subject(cert.subject_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router strips these only when some request header starts with `x-client-cert`: a
    /// new header without that prefix would pass through forged. Renaming one fails this test.
    #[test]
    fn every_client_certificate_header_shares_the_prefix_the_router_looks_for() {
        for name in CLIENT_CERT_HEADERS {
            assert!(name.as_str().starts_with("x-client-cert"), "{name}");
        }
    }

    #[test]
    fn pem_is_url_encoded_with_only_unreserved_characters_left() {
        assert_eq!(
            url_encode(b"-----BEGIN CERTIFICATE-----\nab+/=\n"),
            "-----BEGIN%20CERTIFICATE-----%0Aab%2B%2F%3D%0A"
        );
    }

    #[test]
    fn a_subject_lists_the_most_specific_part_first_and_escapes_what_must_be() {
        let mut b = openssl::x509::X509NameBuilder::new().unwrap();
        b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Acme, Inc.")
            .unwrap();
        b.append_entry_by_nid(Nid::COMMONNAME, "client é\n")
            .unwrap();
        let name = b.build();
        assert_eq!(subject(&name), "CN=client \\C3\\A9\\0A,O=Acme\\, Inc.");
    }
}
