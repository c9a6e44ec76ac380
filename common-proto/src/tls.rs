//! The TLS conventions both sides of the protocol share: how a client certificate names
//! a node, and loading PEM files with the checks a start-up should make (a key that
//! belongs to its certificate, a CA file that holds certificates).
//!
//! **A certificate names a node** in its subjectAltName, either way:
//! - a DNS name whose first label is `<role>-<node_id>`: `datanode-7`,
//!   `datanode-7.dn.example.internal`;
//! - a URI whose path ends in `/<role>/<node_id>`: `spiffe://example/datanode/7`.
//!
//! The metasrv, under mutual TLS, lets a heartbeat stream speak only for a node its
//! client certificate names; the datanode checks its own certificate against the same
//! rule at start, so a wrong certificate fails the start instead of every heartbeat.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::v1::Role;

/// The rustls provider everything here uses (ring), passed explicitly so no process-wide
/// default has to be installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Who a certificate says its holder is: the names in its subjectAltName.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    names: Vec<String>,
}

impl NodeIdentity {
    /// Reads the DNS and URI names of the leaf (first) certificate; an unparsable one
    /// names nothing.
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
            Err(_) => Self::default(),
        }
    }

    /// Whether the certificate names node `node_id` of `role`.
    pub fn permits(&self, role: Role, node_id: u64) -> bool {
        let label = format!("{}-{node_id}", role.label());
        let suffix = format!("/{}/{node_id}", role.label());
        self.names.iter().any(|name| {
            name.split('.')
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case(&label))
                || (name.contains("://") && name.trim_end_matches('/').ends_with(&suffix))
        })
    }

    /// The names read, for messages.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// What a certificate must carry to speak for a node, for messages.
pub fn expected_names(role: Role, node_id: u64) -> String {
    let r = role.label();
    format!(
        "a DNS name {r}-{node_id} (or {r}-{node_id}.<domain>), or a URI ending in /{r}/{node_id}"
    )
}

/// Parses a PEM certificate chain and its key, and checks that the key belongs to the
/// certificate. `Err` names what is wrong, for a start-up error.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
    })?;
    rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider())
        .map_err(|e| format!("the key does not belong to the certificate (or is unusable): {e}"))?;
    Ok((certs, key))
}

/// Parses a PEM CA bundle into a root store. `Err` names what is wrong.
pub fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no PEM certificate".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(id.permits(Role::Datanode, 7));
        assert!(!id.permits(Role::Datanode, 70), "no prefix match");
        assert!(!id.permits(Role::Datanode, 8));
        assert!(!id.permits(Role::Frontend, 7));
        let upper = NodeIdentity::from_certs(&[cert_with(vec![dns("DATANODE-7")])]);
        assert!(
            upper.permits(Role::Datanode, 7),
            "DNS names are case-insensitive"
        );
    }

    #[test]
    fn a_uri_names_the_node_by_its_path() {
        let uri = rcgen::SanType::URI("spiffe://example/datanode/7".try_into().expect("uri"));
        let id = NodeIdentity::from_certs(&[cert_with(vec![uri])]);
        assert!(id.permits(Role::Datanode, 7));
        assert!(!id.permits(Role::Datanode, 17));
        let slash = rcgen::SanType::URI("spiffe://example/datanode/7/".try_into().expect("uri"));
        assert!(NodeIdentity::from_certs(&[cert_with(vec![slash])]).permits(Role::Datanode, 7));
        // A DNS-looking path inside a URI is not a DNS name.
        let host = rcgen::SanType::URI("spiffe://datanode-7/x".try_into().expect("uri"));
        assert!(!NodeIdentity::from_certs(&[cert_with(vec![host])]).permits(Role::Datanode, 7));
    }

    #[test]
    fn a_certificate_naming_no_node_permits_nothing() {
        let id = NodeIdentity::from_certs(&[cert_with(vec![dns("metactl.example")])]);
        assert!(!id.permits(Role::Datanode, 1));
        assert_eq!(id.names(), ["metactl.example"]);
        assert!(!NodeIdentity::from_certs(&[]).permits(Role::Datanode, 1));
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert!(!NodeIdentity::from_certs(&[garbage]).permits(Role::Datanode, 1));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let key = rcgen::KeyPair::generate().expect("key");
        let other = rcgen::KeyPair::generate().expect("other");
        let cert = rcgen::CertificateParams::new(vec!["a".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pem = cert.pem();
        certified_key(pem.as_bytes(), key.serialize_pem().as_bytes()).expect("its own key");
        let err = certified_key(pem.as_bytes(), other.serialize_pem().as_bytes())
            .expect_err("another key");
        assert!(err.contains("does not belong"), "{err}");
        assert!(certified_key(b"junk", b"junk").is_err());
        assert!(roots(b"junk").is_err());
        roots(pem.as_bytes()).expect("a certificate is a root");
    }

    #[test]
    fn hints_name_the_setting_to_fix() {
        use crate::error::tls_hint as hint;
        assert!(
            hint("invalid peer certificate: UnknownIssuer").is_some_and(|h| h.contains("tls_ca"))
        );
        assert!(hint("NotValidForName").is_some_and(|h| h.contains("tls_server_name")));
        assert!(hint("connection refused").is_none());
    }
}
