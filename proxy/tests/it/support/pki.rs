//! Test certificates, generated when a test runs: CAs, RSA and ECDSA server certificates (valid,
//! expired, not yet valid), client certificates, and TLS clients that report what they got.
//!
//! Keys are generated once per test binary and shared, since certificates, not keys, are what
//! the tests compare.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::{read_reply, Reply, STEP};

/// The key kinds tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Rsa2048,
    P256,
    P384,
}

fn key(kind: Key) -> PKey<Private> {
    static RSA: OnceLock<PKey<Private>> = OnceLock::new();
    static P256: OnceLock<PKey<Private>> = OnceLock::new();
    static P384: OnceLock<PKey<Private>> = OnceLock::new();
    let ec = |nid| {
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap())
            .unwrap()
    };
    match kind {
        Key::Rsa2048 => RSA
            .get_or_init(|| PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap())
            .clone(),
        Key::P256 => P256.get_or_init(|| ec(Nid::X9_62_PRIME256V1)).clone(),
        Key::P384 => P384.get_or_init(|| ec(Nid::SECP384R1)).clone(),
    }
}

fn serial() -> openssl::asn1::Asn1Integer {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    BigNum::from_u32(NEXT.fetch_add(1, Ordering::Relaxed))
        .unwrap()
        .to_asn1_integer()
        .unwrap()
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
    /// Intermediates between it and its CA (sent along with it).
    pub chain: Vec<X509>,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        let mut out = String::from_utf8(self.cert.to_pem().unwrap()).unwrap();
        for c in &self.chain {
            out.push_str(&String::from_utf8(c.to_pem().unwrap()).unwrap());
        }
        out
    }

    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().unwrap()).unwrap()
    }

    pub fn common_name(&self) -> String {
        common_name(&self.cert)
    }
}

/// The CN of a certificate.
pub fn common_name(cert: &openssl::x509::X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// What a leaf certificate should be.
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub dns: &'a [&'a str],
    pub key: Key,
    pub digest: MessageDigest,
    /// Validity, in days from now.
    pub from_days: i32,
    pub to_days: i32,
    pub client: bool,
}

impl<'a> Leaf<'a> {
    /// A server certificate for `dns`, valid from yesterday for 90 days, RSA, SHA-256.
    pub fn server(cn: &'a str, dns: &'a [&'a str]) -> Leaf<'a> {
        Leaf {
            cn,
            dns,
            key: Key::Rsa2048,
            digest: MessageDigest::sha256(),
            from_days: -1,
            to_days: 90,
            client: false,
        }
    }

    /// A client certificate.
    pub fn client(cn: &'a str) -> Leaf<'a> {
        Leaf {
            client: true,
            ..Leaf::server(cn, &[])
        }
    }

    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    pub fn digest(mut self, digest: MessageDigest) -> Self {
        self.digest = digest;
        self
    }

    pub fn valid_days(mut self, from: i32, to: i32) -> Self {
        self.from_days = from;
        self.to_days = to;
        self
    }
}

fn days(d: i32) -> Asn1Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + i64::from(d) * 86_400;
    Asn1Time::from_unix(secs).unwrap()
}

/// A certificate authority (possibly an intermediate under another).
pub struct Ca {
    pub issued: Issued,
}

impl Ca {
    /// A self-signed root CA.
    pub fn root(cn: &str) -> Ca {
        let key = key(Key::Rsa2048);
        let name = {
            let mut b = X509NameBuilder::new().unwrap();
            b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
            b.build()
        };
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(-1)).unwrap();
        b.set_not_after(&days(365)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            issued: Issued {
                cert: b.build(),
                key,
                chain: Vec::new(),
            },
        }
    }

    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.issued.cert.to_pem().unwrap()).unwrap()
    }

    /// An intermediate CA under this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let leaf = Leaf {
            key: Key::P256,
            ..Leaf::server(cn, &[])
        };
        let mut issued = self.sign(&leaf, true);
        issued.chain.clear();
        Ca { issued }
    }

    /// Issues a leaf; its chain holds this CA when this CA is an intermediate.
    pub fn issue(&self, leaf: &Leaf<'_>) -> Issued {
        self.sign(leaf, false)
    }

    fn sign(&self, leaf: &Leaf<'_>, ca: bool) -> Issued {
        let key = key(leaf.key);
        let name = {
            let mut b = X509NameBuilder::new().unwrap();
            b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "sluice tests")
                .unwrap();
            b.append_entry_by_nid(Nid::COMMONNAME, leaf.cn).unwrap();
            b.build()
        };
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(self.issued.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(leaf.from_days)).unwrap();
        b.set_not_after(&days(leaf.to_days)).unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
                .unwrap();
        } else {
            let mut eku = ExtendedKeyUsage::new();
            if leaf.client {
                eku.client_auth();
            } else {
                eku.server_auth();
            }
            b.append_extension(eku.build().unwrap()).unwrap();
            if !leaf.dns.is_empty() {
                let mut san = SubjectAlternativeName::new();
                for d in leaf.dns {
                    san.dns(d);
                }
                let ext = san
                    .build(&b.x509v3_context(Some(&self.issued.cert), None))
                    .unwrap();
                b.append_extension(ext).unwrap();
            }
        }
        b.sign(&self.issued.key, leaf.digest).unwrap();
        let mut chain = Vec::new();
        if self.issued.cert.issuer_name_hash() != self.issued.cert.subject_name_hash() {
            chain.push(self.issued.cert.clone());
        }
        Issued {
            cert: b.build(),
            key,
            chain,
        }
    }
}

/// A `kubernetes.io/tls` Secret manifest; `ca` adds a `ca.crt`.
pub fn tls_secret(ns: &str, name: &str, issued: Option<&Issued>, ca: Option<&str>) -> String {
    let b64 = |s: &str| openssl::base64::encode_block(s.as_bytes());
    let mut data = String::new();
    match issued {
        Some(i) => {
            data.push_str(&format!("  tls.crt: {}\n", b64(&i.cert_pem())));
            data.push_str(&format!("  tls.key: {}\n", b64(&i.key_pem())));
        }
        // A CA-only Secret of the TLS type: the keys exist, empty.
        None => data.push_str("  tls.crt: \"\"\n  tls.key: \"\"\n"),
    }
    if let Some(ca) = ca {
        data.push_str(&format!("  ca.crt: {}\n", b64(ca)));
    }
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         type: kubernetes.io/tls\ndata:\n{data}---\n"
    )
}

/// How a test TLS client connects.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The SNI; `None` sends none.
    pub sni: Option<String>,
    /// `h2` or `http/1.1`; default `http/1.1`.
    pub alpn_h2: bool,
    /// Signature algorithms offered, OpenSSL syntax (`RSA-PSS+SHA256:ECDSA+SHA256`).
    pub sigalgs: Option<String>,
    /// TLS 1.2 only, with these cipher suites.
    pub tls12_ciphers: Option<String>,
    pub client_cert: Option<Issued>,
    /// Bytes sent on the TCP connection before the handshake (a PROXY protocol header).
    pub preface: Vec<u8>,
}

impl ClientTls {
    pub fn sni(name: &str) -> ClientTls {
        ClientTls {
            sni: Some(name.to_string()),
            ..Default::default()
        }
    }

    pub fn h2(mut self) -> Self {
        self.alpn_h2 = true;
        self
    }

    pub fn sigalgs(mut self, s: &str) -> Self {
        self.sigalgs = Some(s.to_string());
        self
    }

    pub fn tls12(mut self, ciphers: &str) -> Self {
        self.tls12_ciphers = Some(ciphers.to_string());
        self
    }

    pub fn cert(mut self, c: &Issued) -> Self {
        self.client_cert = Some(c.clone());
        self
    }

    pub fn preface(mut self, bytes: &[u8]) -> Self {
        self.preface = bytes.to_vec();
        self
    }
}

/// What the server presented.
#[derive(Debug, Clone)]
pub struct Served {
    pub cn: String,
    /// `RSA` or `EC`.
    pub key: &'static str,
    pub alpn: Option<String>,
}

/// A TLS connection to sluice, handshake done (in TLS 1.3 the server's verdict on a client
/// certificate arrives with the first read).
pub async fn tls_connect(
    addr: SocketAddr,
    opts: &ClientTls,
) -> Result<(SslStream<TcpStream>, Served), String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    if let Some(s) = &opts.sigalgs {
        b.set_sigalgs_list(s).map_err(|e| e.to_string())?;
    }
    if let Some(c) = &opts.tls12_ciphers {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_cipher_list(c).map_err(|e| e.to_string())?;
    }
    if let Some(c) = &opts.client_cert {
        b.set_certificate(&c.cert).unwrap();
        b.set_private_key(&c.key).unwrap();
        for i in &c.chain {
            b.add_extra_chain_cert(i.clone()).unwrap();
        }
    }
    let alpn: &[u8] = if opts.alpn_h2 {
        b"\x02h2\x08http/1.1"
    } else {
        b"\x08http/1.1"
    };
    b.set_alpn_protos(alpn).unwrap();
    let connector = b.build();
    let mut cfg = connector.configure().map_err(|e| e.to_string())?;
    cfg.set_verify_hostname(false);
    cfg.set_use_server_name_indication(opts.sni.is_some());
    let ssl = cfg
        .into_ssl(opts.sni.as_deref().unwrap_or("ignored.invalid"))
        .map_err(|e| e.to_string())?;
    let mut tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &opts.preface)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    tokio::time::timeout(STEP, Pin::new(&mut stream).connect())
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    let peer = stream
        .ssl()
        .peer_certificate()
        .ok_or("no server certificate")?;
    let key = match peer.public_key().map(|k| k.id()) {
        Ok(openssl::pkey::Id::EC) => "EC",
        Ok(openssl::pkey::Id::RSA) => "RSA",
        _ => "other",
    };
    let served = Served {
        cn: common_name(&peer),
        key,
        alpn: stream
            .ssl()
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    Ok((stream, served))
}

/// What a server presents for these client options, without sending a request.
pub async fn served(addr: SocketAddr, opts: &ClientTls) -> Served {
    tls_connect(addr, opts)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr} ({:?}): {e}", opts.sni))
        .1
}

/// One request over TLS (HTTP/1.1, or h2 when the client offered it and the server chose it).
/// `Err` when the handshake or the request failed.
pub async fn https_request(
    addr: SocketAddr,
    opts: &ClientTls,
    req: Request<Full<Bytes>>,
) -> Result<(Reply, Served), String> {
    let (stream, served) = tls_connect(addr, opts).await?;
    let fut = async {
        if served.alpn.as_deref() == Some("h2") {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| e.to_string());
            let reply = match resp {
                Ok(r) => read_reply(r).await,
                Err(e) => Err(e),
            };
            conn.abort();
            reply
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| e.to_string());
            let reply = match resp {
                Ok(r) => read_reply(r).await,
                Err(e) => Err(e),
            };
            conn.abort();
            reply
        }
    };
    let reply = tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| "request timed out".to_string())??;
    Ok((reply, served))
}

/// GET `https://{host}{path}` with `opts` (the Host header, or `:authority` in h2, is `host`).
pub async fn https_get(
    addr: SocketAddr,
    opts: &ClientTls,
    host: &str,
    path: &str,
) -> Result<(Reply, Served), String> {
    let req = if opts.alpn_h2 {
        Request::builder()
            .uri(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    } else {
        super::request(host, path)
    };
    https_request(addr, opts, req).await
}

/// Runs `openssl s_client` (the only client here that can resume a TLS session without unsafe
/// code) and returns its output; `request` is written to the connection. Bounded by [`STEP`].
pub async fn s_client(addr: SocketAddr, args: &[&str], request: &str) -> String {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        // Read until the server closes (the request says `Connection: close`), not until stdin
        // ends: that keeps TLS 1.3 tickets and the response in the output.
        .arg("-ign_eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command runs (install the `openssl` package)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request.as_bytes());
    }
    // The output is a few kilobytes, well within a pipe's buffer: polling for the exit first
    // cannot block the child.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("openssl s_client timed out");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    out
}
