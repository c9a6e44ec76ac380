//! TLS to the metasrv, from PEM files.
//!
//! The datanode dials; it verifies the metasrv's certificate against `ca`, and presents
//! `cert` when the metasrv requires mutual TLS. Under mutual TLS the metasrv lets a stream
//! speak only for the node its certificate names: a subjectAltName DNS name whose first
//! label is `datanode-<node_id>` (`datanode-7`, `datanode-7.dn.example`), or a URI ending
//! in `/datanode/<node_id>`. The files are read once, at start, so a typo fails the start
//! rather than every reconnect.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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

    /// Loads the files into tonic's client config.
    pub fn load(&self) -> Result<ClientTlsConfig> {
        if self.cert.is_empty() != self.key.is_empty() {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "a TLS certificate needs its key and a key its certificate (cert={:?}, key={:?})",
                    self.cert, self.key
                ),
            });
        }
        let mut config = ClientTlsConfig::new();
        if !self.ca.is_empty() {
            config = config.ca_certificate(Certificate::from_pem(read("CA bundle", &self.ca)?));
        }
        if !self.cert.is_empty() {
            config = config.identity(Identity::from_pem(
                read("certificate", &self.cert)?,
                read("private key", &self.key)?,
            ));
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

    #[test]
    fn missing_or_unpaired_files_are_refused_with_their_path() {
        let missing = ClientTlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            ..Default::default()
        };
        let err = missing.load().expect_err("missing").to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let unpaired = ClientTlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            ..Default::default()
        };
        assert!(unpaired
            .load()
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
        assert!(junk.load().expect_err("junk").to_string().contains("PEM"));
        assert!(!ClientTlsFiles::default().enabled());
    }
}
