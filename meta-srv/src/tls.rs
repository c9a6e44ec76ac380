//! TLS for every socket the metasrv owns, and the node identity a client certificate
//! carries.
//!
//! One certificate and key (`tls_cert`, `tls_key`) serve both the gRPC port and the admin
//! HTTP. A CA bundle (`tls_ca`) turns on mutual TLS for gRPC: every client must present a
//! certificate that CA signed, and a heartbeat stream may speak only for the node its
//! certificate names (see [`NodeIdentity`]). Members also verify each other with that CA
//! when a follower forwards an admin request to the leader. etcd has its own files
//! (`etcd_tls_*`), since an etcd cluster usually has its own CA.
//!
//! Everything is rustls with the ring provider, through the crates that already speak it:
//! tonic's TLS for gRPC (server and etcd client), tokio-rustls for the admin HTTP listener,
//! hyper-rustls for the forwarder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use handlers::NodeKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::error::{InvalidConfigSnafu, Result};

/// How long a client may take to finish a TLS handshake before it is dropped, so a
/// silent client cannot hold a handshake slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM files for one TLS role. Empty paths mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: String,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// CA bundle (PEM) that peers' certificates must chain to.
    pub ca: String,
}

fn config_error(reason: String) -> crate::Error {
    InvalidConfigSnafu { reason }.build()
}

fn read(what: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| config_error(format!("cannot read {what} {path}: {e}")))
}

impl TlsFiles {
    /// Whether this side serves (or dials) TLS at all.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.ca.is_empty()
    }

    /// For the start log: `off`, `tls` (server or CA only) or `mutual` (both sides
    /// present certificates).
    pub fn mode(&self) -> &'static str {
        match (self.cert.is_empty(), self.ca.is_empty()) {
            (true, true) => "off",
            (false, false) => "mutual",
            _ => "tls",
        }
    }

    /// Checks that the files exist and parse, so a typo fails at start, not at the first
    /// connection. `server`: this side presents a certificate, so cert and key are needed.
    pub fn validate(&self, what: &str, server: bool) -> Result<()> {
        if self.cert.is_empty() != self.key.is_empty() {
            return Err(config_error(format!(
                "{what}: a certificate needs its key and a key its certificate (cert={:?}, key={:?})",
                self.cert, self.key
            )));
        }
        if server && self.cert.is_empty() && !self.ca.is_empty() {
            return Err(config_error(format!(
                "{what}: a CA without a certificate and key cannot serve TLS"
            )));
        }
        if !self.cert.is_empty() {
            self.certs()?;
            self.private_key()?;
        }
        if !self.ca.is_empty() {
            self.roots()?;
        }
        Ok(())
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        let pem = read("certificate", &self.cert)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| config_error(format!("certificate {}: {e}", self.cert)))?;
        if certs.is_empty() {
            return Err(config_error(format!(
                "certificate {}: no PEM certificate in the file",
                self.cert
            )));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        let pem = read("private key", &self.key)?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| config_error(format!("private key {}: {e}", self.key)))
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        let pem = read("CA bundle", &self.ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| config_error(format!("CA bundle {}: {e}", self.ca)))?;
            roots
                .add(cert)
                .map_err(|e| config_error(format!("CA bundle {}: {e}", self.ca)))?;
        }
        if roots.is_empty() {
            return Err(config_error(format!(
                "CA bundle {}: no PEM certificate in the file",
                self.ca
            )));
        }
        Ok(roots)
    }

    /// tonic's server config: our identity, and with a CA, client certificates required.
    pub fn grpc_server(&self) -> Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(
            read("certificate", &self.cert)?,
            read("private key", &self.key)?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if !self.ca.is_empty() {
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(read(
                    "CA bundle",
                    &self.ca,
                )?))
                .client_auth_optional(false);
        }
        Ok(config)
    }

    /// tonic's client config, for dialling etcd: the CA to trust, and our certificate if
    /// the server asks for one.
    pub fn grpc_client(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let mut config = tonic::transport::ClientTlsConfig::new();
        if !self.ca.is_empty() {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(
                "CA bundle",
                &self.ca,
            )?));
        }
        if !self.cert.is_empty() {
            config = config.identity(tonic::transport::Identity::from_pem(
                read("certificate", &self.cert)?,
                read("private key", &self.key)?,
            ));
        }
        Ok(config)
    }

    /// The admin HTTP's server config (server authentication only: the admin API
    /// authenticates callers by bearer token).
    pub fn http_server(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(self.certs()?, self.private_key()?)
            .map_err(|e| {
                config_error(format!(
                    "certificate {} and key {}: {e}",
                    self.cert, self.key
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The forwarder's client config: trusts the CA, presents our certificate.
    pub fn http_client(&self) -> Result<rustls::ClientConfig> {
        let roots = if self.ca.is_empty() {
            rustls::RootCertStore::empty()
        } else {
            self.roots()?
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        if self.cert.is_empty() {
            Ok(builder.with_no_client_auth())
        } else {
            builder
                .with_client_auth_cert(self.certs()?, self.private_key()?)
                .map_err(|e| config_error(format!("certificate {}: {e}", self.cert)))
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Who a client certificate says its holder is: the `(role, node id)` pairs it may
/// heartbeat as.
///
/// A certificate names a node in its subjectAltName, either way:
/// - a DNS name whose first label is `<role>-<node_id>`: `datanode-7`,
///   `datanode-7.dn.example.internal`;
/// - a URI whose path ends in `/<role>/<node_id>`: `spiffe://example/datanode/7`.
///
/// The chain was verified against `tls_ca` by the handshake; this only maps the verified
/// names to node keys. A certificate naming no node (an operator's, a member's) may call
/// `AskLeader` but cannot heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    names: Vec<String>,
}

impl NodeIdentity {
    /// Reads the names from the leaf certificate; an unparsable one names nothing.
    pub fn from_certs(certs: &[CertificateDer<'_>]) -> Self {
        let Some(leaf) = certs.first() else {
            return Self::default();
        };
        match webpki::EndEntityCert::try_from(leaf) {
            Ok(cert) => Self {
                names: cert
                    .valid_dns_names()
                    .chain(cert.valid_uri_names())
                    .map(str::to_owned)
                    .collect(),
            },
            Err(err) => {
                warn!(error = %err, "cannot parse a verified client certificate");
                Self::default()
            }
        }
    }

    /// Whether the certificate names this node.
    pub fn permits(&self, key: NodeKey) -> bool {
        let label = format!("{}-{}", key.role.label(), key.node_id);
        let suffix = format!("/{}/{}", key.role.label(), key.node_id);
        self.names.iter().any(|name| {
            name.split('.')
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case(&label))
                || (name.contains("://") && name.trim_end_matches('/').ends_with(&suffix))
        })
    }

    /// The names, for the refusal message.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// The admin HTTP's listener under TLS: accepts TCP, runs each handshake in its own task
/// (under [`HANDSHAKE_TIMEOUT`]), and hands axum only finished TLS streams, so one slow
/// or broken client holds up nobody.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _accept: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %err, "admin HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let ready = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            debug!(%peer, error = %err, "admin HTTP TLS handshake failed")
                        }
                        Err(_) => debug!(%peer, "admin HTTP TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            ready,
            _accept: accept,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it never does while we hold the receiver): serve
            // nothing more; graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common_proto::v1::Role;

    fn cert_with(names: Vec<rcgen::SanType>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names;
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn dns(name: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(name.try_into().expect("dns name"))
    }

    #[test]
    fn a_dns_name_names_the_node_by_its_first_label() {
        let id = NodeIdentity::from_certs(&[cert_with(vec![dns("datanode-7.dn.example")])]);
        assert!(id.permits(NodeKey::datanode(7)));
        assert!(!id.permits(NodeKey::datanode(70)), "no prefix match");
        assert!(!id.permits(NodeKey::datanode(8)));
        assert!(!id.permits(NodeKey {
            role: Role::Frontend,
            node_id: 7
        }));
    }

    #[test]
    fn a_uri_names_the_node_by_its_path() {
        let uri = rcgen::SanType::URI("spiffe://example/datanode/7".try_into().expect("uri"));
        let id = NodeIdentity::from_certs(&[cert_with(vec![uri])]);
        assert!(id.permits(NodeKey::datanode(7)));
        assert!(!id.permits(NodeKey::datanode(17)));
    }

    #[test]
    fn a_certificate_naming_no_node_permits_nothing() {
        let id = NodeIdentity::from_certs(&[cert_with(vec![dns("metactl.example")])]);
        assert!(!id.permits(NodeKey::datanode(1)));
        assert!(!NodeIdentity::from_certs(&[]).permits(NodeKey::datanode(1)));
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert!(!NodeIdentity::from_certs(&[garbage]).permits(NodeKey::datanode(1)));
    }

    #[test]
    fn bad_files_are_refused_at_validation_with_their_path() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a pem").expect("write");
        let junk = junk.display().to_string();
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk.clone(),
            ca: String::new(),
        };
        let err = files.validate("tls", true).expect_err("junk").to_string();
        assert!(err.contains(&junk), "{err}");
        let half = TlsFiles {
            cert: junk.clone(),
            ..Default::default()
        };
        assert!(half
            .validate("tls", true)
            .expect_err("no key")
            .to_string()
            .contains("key"));
        let ca_only = TlsFiles {
            ca: junk,
            ..Default::default()
        };
        assert!(ca_only.validate("tls", true).is_err());
        let missing = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: String::new(),
        };
        assert!(missing
            .validate("tls", true)
            .expect_err("missing")
            .to_string()
            .contains("/nonexistent/cert.pem"));
    }
}
