//! Throwaway certificates for TLS tests: a CA, and leaf certificates it signs, written as
//! PEM files under a test's directory (rcgen).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate's path, as a flag value.
    pub fn cert(&self) -> String {
        self.cert.display().to_string()
    }

    /// The key's path, as a flag value.
    pub fn key(&self) -> String {
        self.key.display().to_string()
    }
}

/// A test certificate authority writing its files under one directory.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM), the trust anchor peers are given.
    pub ca: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate at `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
            .expect("self-signed CA");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, issuer.pem()).expect("write CA");
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer,
            ca,
        }
    }

    /// The CA file's path, as a flag value.
    pub fn ca(&self) -> String {
        self.ca.display().to_string()
    }

    /// Issues a certificate for `sans` (IP addresses, DNS names, or `uri:` URIs), usable
    /// as server and client, written as `<ca>-<file>.pem` and `<ca>-<file>.key`.
    pub fn issue(&self, file: &str, sans: &[&str]) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        for san in sans {
            let san = match san.strip_prefix("uri:") {
                Some(uri) => SanType::URI((*uri).try_into().expect("uri")),
                None => match san.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*san).try_into().expect("dns name")),
                },
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
