//! Test helpers: certificates generated at test time with rcgen (nothing committed, nothing
//! expires), web-config files in a temporary directory, a TLS echo server driven by a
//! [`TlsAcceptorCache`], and a rustls client that reports what the handshake saw.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::TlsAcceptorCache;

/// Every async test finishes within this, or fails.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server sends after a successful handshake.
const GREETING: &[u8] = b"hello over tls\n";

/// Runs `fut` under [`TEST_TIMEOUT`].
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("the test did not finish within its timeout")
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// An issued certificate with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key generation");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` / 127.0.0.1 with the given common name.
    pub fn server(&self, common_name: &str) -> Leaf {
        self.issue(
            common_name,
            vec![
                SanType::DnsName("localhost".try_into().expect("valid DNS name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
        )
    }

    pub fn issue(&self, common_name: &str, sans: Vec<SanType>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key generation");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a test file");
    path
}

/// A bcrypt hash of `password` at the lowest cost, so tests stay fast.
pub fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt hashing")
}

/// Accepts TLS connections with `cache` until the runtime ends; each successful handshake
/// gets [`GREETING`] and a clean close.
pub async fn spawn_tls_server(cache: Arc<TlsAcceptorCache>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = cache.acceptor();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(GREETING).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// How a client connects.
pub struct Client<'a> {
    pub trust: &'a Ca,
    pub identity: Option<&'a Leaf>,
    pub versions: &'static [&'static SupportedProtocolVersion],
}

impl<'a> Client<'a> {
    pub fn trusting(ca: &'a Ca) -> Client<'a> {
        Client {
            trust: ca,
            identity: None,
            versions: rustls::DEFAULT_VERSIONS,
        }
    }

    pub fn with_identity(mut self, leaf: &'a Leaf) -> Client<'a> {
        self.identity = Some(leaf);
        self
    }

    /// Handshakes with `addr` and reads the greeting; returns the server's certificate.
    /// A refused client certificate shows up as an error here even under TLS 1.3, where the
    /// client's side of the handshake completes before the server has checked it.
    pub async fn connect(&self, addr: SocketAddr) -> Result<CertificateDer<'static>, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.trust.issuer.der().clone())
            .expect("the test CA is valid");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(self.versions)
                .expect("valid versions")
                .with_root_certificates(roots);
        let config = match self.identity {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key())
                .expect("valid client identity"),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").expect("valid name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no server certificate")?;
        let mut greeting = Vec::new();
        tls.read_to_end(&mut greeting)
            .await
            .map_err(|e| format!("after the handshake: {e}"))?;
        if greeting != GREETING {
            return Err(format!("unexpected greeting {greeting:?}"));
        }
        Ok(server_cert)
    }
}
