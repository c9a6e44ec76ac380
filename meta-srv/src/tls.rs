//! TLS for every socket the metasrv owns.
//!
//! One certificate and key (`tls_cert`, `tls_key`) serve both the gRPC port and the admin
//! HTTP. A CA bundle (`tls_ca`) turns on mutual TLS for gRPC: every client must present a
//! certificate that CA signed, and a heartbeat stream may speak only for the node its
//! certificate names ([`common_proto::tls::NodeIdentity`]). Members also verify each
//! other with that CA when a follower forwards an admin request to the leader, and present
//! their own certificate as the client one. etcd has its own files (`etcd_tls_*`), since
//! an etcd cluster usually has its own CA.
//!
//! Both listeners accept through one [`TlsIncoming`]: each handshake runs in its own task
//! under [`HANDSHAKE_TIMEOUT`], a failure is logged with its reason and counted
//! (`metasrv_tls_handshake_failures_total`), and the server sees only finished TLS
//! streams, so a slow or broken client holds up nobody. tonic reads the client
//! certificate from those streams for [`tonic::Request::peer_certs`].
//!
//! Everything is rustls with the ring provider. Every file is read and checked (PEM,
//! a key that belongs to its certificate) by [`TlsFiles::validate`] before anything
//! starts, so `check-config` catches what the start would trip on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common_proto::error::tls_hint as hint;
use common_proto::tls::{certified_key, provider, roots};
use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::error::{InvalidConfigSnafu, Result};

/// How long a client may take to finish a TLS handshake before it is dropped, so a
/// silent client cannot hold a handshake slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM files for one TLS role. Empty paths mean "not set"; relative paths are relative
/// to the working directory.
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

    /// Checks that the files exist, parse, and fit together, so a typo or a wrong key
    /// fails the start (and `check-config`), not the first connection. `server`: this
    /// side serves, so it needs a certificate and key; otherwise it dials and needs a CA.
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
        if !server && !self.cert.is_empty() && self.ca.is_empty() {
            return Err(config_error(format!(
                "{what}: a client certificate without the CA to verify the server: set the CA \
                 (there are no built-in roots)"
            )));
        }
        if !self.cert.is_empty() {
            self.certified()?;
        }
        if !self.ca.is_empty() {
            self.roots()?;
        }
        Ok(())
    }

    fn certified(
        &self,
    ) -> Result<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )> {
        certified_key(
            &read("certificate", &self.cert)?,
            &read("private key", &self.key)?,
        )
        .map_err(|e| {
            config_error(format!(
                "certificate {} and key {}: {e}",
                self.cert, self.key
            ))
        })
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        roots(&read("CA bundle", &self.ca)?)
            .map_err(|e| config_error(format!("CA bundle {}: {e}", self.ca)))
    }

    fn server(&self, alpn: &[&[u8]], client_auth: bool) -> Result<Arc<rustls::ServerConfig>> {
        let (certs, key) = self.certified()?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS: {e}")))?;
        let builder = if client_auth && !self.ca.is_empty() {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(self.roots()?),
                provider(),
            )
            .build()
            .map_err(|e| config_error(format!("CA bundle {}: {e}", self.ca)))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_error(format!("certificate {}: {e}", self.cert)))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The gRPC server's config: HTTP/2, and with a CA, client certificates required.
    pub fn grpc_server(&self) -> Result<Arc<rustls::ServerConfig>> {
        self.server(&[b"h2"], true)
    }

    /// The admin HTTP's server config (server authentication only: the admin API
    /// authenticates callers by bearer token).
    pub fn http_server(&self) -> Result<Arc<rustls::ServerConfig>> {
        self.server(&[b"h2", b"http/1.1"], false)
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
            let (certs, key) = self.certified()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| config_error(format!("certificate {}: {e}", self.cert)))
        }
    }
}

/// A TLS listener: accepts TCP, runs each handshake in its own task, and yields only
/// finished TLS streams. Failed handshakes are logged (with a hint when the reason is a
/// common misconfiguration) and counted under `listener`.
#[derive(Debug)]
pub struct TlsIncoming {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Wraps a bound listener; `listener` names it in logs and metrics (`grpc`, `admin`).
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        listener: &'static str,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let failures = crate::metrics::METRICS
            .tls_handshake_failures
            .with_label_values(&[listener]);
        let accept = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(listener, error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let ready = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                            return;
                        }
                        Ok(Err(err)) => common_proto::error::error_chain(&err),
                        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                    failures.inc();
                    warn!(listener, %peer, error = %why, hint = hint(&why).unwrap_or(""), "TLS handshake failed; connection dropped");
                });
            }
        });
        Ok(Self {
            local,
            ready,
            accept,
        })
    }

    /// The finished streams, as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(
        self,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        futures::stream::unfold(self, |mut me| async move {
            let (tls, _) = me.ready.recv().await?;
            Some((Ok(tls), me))
        })
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl axum::serve::Listener for TlsIncoming {
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

    fn write_pair(dir: &std::path::Path, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c.display().to_string(), k.display().to_string())
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

    #[test]
    fn a_key_of_another_certificate_and_a_client_without_a_ca_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (a_cert, a_key) = write_pair(dir.path(), "a");
        let (_, b_key) = write_pair(dir.path(), "b");
        let good = TlsFiles {
            cert: a_cert.clone(),
            key: a_key,
            ca: a_cert.clone(),
        };
        good.validate("tls", true).expect("a matching pair");
        good.validate("etcd", false).expect("a client with its CA");
        let crossed = TlsFiles {
            key: b_key,
            ..good.clone()
        };
        let err = crossed
            .validate("tls", true)
            .expect_err("crossed")
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        let blind = TlsFiles {
            ca: String::new(),
            ..good
        };
        let err = blind
            .validate("etcd", false)
            .expect_err("no CA")
            .to_string();
        assert!(err.contains("CA"), "{err}");
    }
}
