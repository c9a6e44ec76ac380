//! TLS to the metasrv, from PEM files.
//!
//! The datanode dials; it verifies the metasrv's certificate against `ca`, and presents
//! `cert` when the metasrv requires mutual TLS. Under mutual TLS the metasrv lets a stream
//! speak only for the node its certificate names: a subjectAltName DNS name whose first
//! label is `datanode-<node_id>` (`datanode-7`, `datanode-7.dn.example`), or a URI ending
//! in `/datanode/<node_id>`. The files are read and checked once, at start (PEM, a key
//! that belongs to its certificate, a certificate that names this node), so a mistake
//! fails the start rather than every reconnect.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use common_proto::v1::Role;

use crate::error::{Error, Result};

/// PEM file paths; empty means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA bundle the metasrv's certificate chains to.
    pub ca: String,
    /// This node's certificate chain, for mutual TLS.
    pub cert: String,
    /// The private key of `cert`.
    pub key: String,
    /// The name to verify the metasrv's certificate against (default: the host of the
    /// address dialled, which must then be in the certificate, IP addresses included).
    pub server_name: String,
}

fn read(what: &str, path: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::InvalidConfig {
        reason: format!("cannot read the TLS {what} {path}: {e}"),
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(Error::InvalidConfig {
            reason: format!("the TLS {what} {path} holds no PEM block"),
        });
    }
    Ok(bytes)
}

impl ClientTlsFiles {
    /// Whether TLS is on: a CA or a certificate is given.
    pub fn enabled(&self) -> bool {
        !self.ca.is_empty() || !self.cert.is_empty()
    }

    /// Loads and checks the files for node `node_id`, into tonic's client config.
    pub fn load(&self, node_id: u64) -> Result<ClientTlsConfig> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        if self.cert.is_empty() != self.key.is_empty() {
            return Err(invalid(format!(
                "a TLS certificate needs its key and a key its certificate (cert={:?}, key={:?})",
                self.cert, self.key
            )));
        }
        if self.ca.is_empty() {
            return Err(invalid(
                "TLS needs tls_ca, the CA of the metasrv's certificate (there are no built-in roots)"
                    .into(),
            ));
        }
        let ca = read("CA bundle", &self.ca)?;
        common_proto::tls::roots(&ca)
            .map_err(|e| invalid(format!("TLS CA bundle {}: {e}", self.ca)))?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if !self.cert.is_empty() {
            let (cert, key) = (
                read("certificate", &self.cert)?,
                read("private key", &self.key)?,
            );
            let (chain, _) = common_proto::tls::certified_key(&cert, &key).map_err(|e| {
                invalid(format!(
                    "TLS certificate {} and key {}: {e}",
                    self.cert, self.key
                ))
            })?;
            let identity = common_proto::tls::NodeIdentity::from_certs(&chain);
            if !identity.permits(Role::Datanode, node_id) {
                return Err(invalid(format!(
                    "the TLS certificate {} names {:?}, not datanode {node_id}: a metasrv with \
                     mutual TLS refuses every heartbeat from it (it must carry {})",
                    self.cert,
                    identity.names(),
                    common_proto::tls::expected_names(Role::Datanode, node_id)
                )));
            }
            config = config.identity(Identity::from_pem(cert, key));
        }
        if !self.server_name.is_empty() {
            config = config.domain_name(self.server_name.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA-less self-signed certificate for `names`, as (cert, key) paths.
    fn pair(dir: &std::path::Path, file: &str, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c.display().to_string(), k.display().to_string())
    }

    #[test]
    fn missing_unpaired_or_junk_files_are_refused_with_their_path() {
        let missing = ClientTlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            ..Default::default()
        };
        let err = missing.load(1).expect_err("missing").to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let unpaired = ClientTlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/cert.pem".into(),
            ..Default::default()
        };
        assert!(unpaired
            .load(1)
            .expect_err("unpaired")
            .to_string()
            .contains("key"));
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").expect("write");
        let junk = ClientTlsFiles {
            ca: junk.display().to_string(),
            ..Default::default()
        };
        assert!(junk.load(1).expect_err("junk").to_string().contains("PEM"));
        assert!(!ClientTlsFiles::default().enabled());
    }

    #[test]
    fn the_certificate_must_name_this_node_with_its_own_key_and_a_ca_is_required() {
        let dir = tempfile::tempdir().expect("dir");
        let (ca, _) = pair(dir.path(), "ca", &["metasrv"]);
        let (cert, key) = pair(dir.path(), "dn1", &["datanode-1"]);
        let (_, other_key) = pair(dir.path(), "dn2", &["datanode-2"]);
        let good = ClientTlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server_name: String::new(),
        };
        good.load(1).expect("node 1's certificate for node 1");
        let err = good.load(2).expect_err("for node 2").to_string();
        assert!(
            err.contains("not datanode 2") && err.contains("datanode-1"),
            "{err}"
        );
        let crossed = ClientTlsFiles {
            key: other_key,
            ..good.clone()
        };
        let err = crossed.load(1).expect_err("crossed").to_string();
        assert!(err.contains("does not belong"), "{err}");
        let blind = ClientTlsFiles {
            ca: String::new(),
            ..good
        };
        assert!(blind
            .load(1)
            .expect_err("no CA")
            .to_string()
            .contains("tls_ca"));
    }
}
