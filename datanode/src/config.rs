//! [`DatanodeOptions`]: the datanode's settings, from TOML or flags.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{InvalidConfigSnafu, Result, StorageSnafu};

/// The datanode's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatanodeOptions {
    /// This node's id (1 or more).
    pub node_id: u64,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// Every metasrv's gRPC address; discovery asks them all.
    pub metasrv_addrs: Vec<String>,
    /// The data API listen address.
    pub data_addr: String,
    /// The address advertised to the metasrv (empty: the bound data address).
    pub advertise_addr: String,
    /// Where regions are persisted (empty: memory only).
    pub data_dir: String,
    /// Where region data lives when it is shared by every datanode (standing in for
    /// object storage); empty: regions are local to `data_dir` and cannot fail over.
    /// Needs `data_dir` for the node's own manifest.
    pub shared_dir: String,
    /// The heartbeat interval until the metasrv's handshake sets it.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Timeout of discovery and connect calls.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Taken off every region lease, for clock-rate drift and scheduling slack (see
    /// `datanode::lease`). Must be shorter than the metasrv's region lease, or no region
    /// is ever writable.
    #[serde(with = "humantime_serde")]
    pub lease_margin: Duration,
    /// Labels sent to the metasrv in every heartbeat (as `label.<key>` extensions, beside
    /// `version`), for handlers that place or gate by them.
    pub labels: std::collections::BTreeMap<String, String>,
    /// CA bundle (PEM) the metasrv's certificate chains to. Set (or `tls_cert`): the
    /// metasrvs are dialled over TLS.
    pub tls_ca: String,
    /// This node's certificate (PEM), for a metasrv that requires mutual TLS: it must name
    /// the node (`datanode-<node_id>` as a DNS subjectAltName).
    pub tls_cert: String,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: String,
    /// Verify the metasrv's certificate against this name instead of the dialled host.
    pub tls_server_name: String,
}

impl Default for DatanodeOptions {
    fn default() -> Self {
        Self {
            node_id: 0,
            cluster_id: 1,
            metasrv_addrs: vec!["127.0.0.1:3002".into()],
            data_addr: "127.0.0.1:5000".into(),
            advertise_addr: String::new(),
            data_dir: String::new(),
            shared_dir: String::new(),
            heartbeat_interval: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(1),
            lease_margin: crate::lease::DEFAULT_LEASE_MARGIN,
            labels: Default::default(),
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_server_name: String::new(),
        }
    }
}

impl DatanodeOptions {
    /// The heartbeat extensions these options ask for: `version`, and each label as
    /// `label.<key>`.
    pub fn extensions(&self) -> std::collections::HashMap<String, String> {
        let mut ext = crate::heartbeat::default_extensions();
        for (k, v) in &self.labels {
            ext.insert(format!("label.{k}"), v.clone());
        }
        ext
    }

    /// The TLS files, for [`crate::HeartbeatBuilder::tls`].
    pub fn tls(&self) -> crate::tls::ClientTlsFiles {
        crate::tls::ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }

    /// Reads a TOML file; missing keys take defaults, unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).context(StorageSnafu { path: &display })?;
        toml::from_str(&text).map_err(|e| crate::Error::InvalidConfig {
            reason: format!("{display}: {e}"),
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: &str| InvalidConfigSnafu { reason }.fail();
        if self.node_id == 0 {
            return fail("node_id must be 1 or more (0 is reserved)");
        }
        if self.metasrv_addrs.is_empty() {
            return fail("metasrv_addrs must name at least one metasrv");
        }
        if !self.shared_dir.is_empty() && self.data_dir.is_empty() {
            return fail("shared_dir needs a data_dir for the node's own manifest");
        }
        if self.advertise_addr.is_empty()
            && self
                .data_addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
        {
            return fail(
                "data_addr binds every interface, so the node would advertise an address the \
                 metasrv cannot dial: set advertise_addr (--advertise-addr)",
            );
        }
        if self.heartbeat_interval.is_zero() || self.rpc_timeout.is_zero() {
            return fail("heartbeat_interval and rpc_timeout must be greater than 0");
        }
        let tls = self.tls();
        if tls.enabled() {
            tls.load(self.node_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_parses_validates_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/datanode.example.toml");
        let sample = DatanodeOptions::from_file(&path).expect("the sample parses");
        sample.validate().expect("the sample is valid");
        let defaults = DatanodeOptions {
            node_id: 1,
            ..DatanodeOptions::default()
        };
        assert_eq!(sample, defaults, "the sample shows the defaults (node 1)");
        let text = std::fs::read_to_string(&path).expect("read");
        let written: toml::Table = toml::from_str(&text).expect("toml");
        let every: toml::Table = toml::Table::try_from(defaults).expect("table");
        for key in every.keys() {
            assert!(written.contains_key(key), "the sample documents {key}");
        }
    }

    #[test]
    fn an_unspecified_data_address_needs_an_advertised_one() {
        let o = DatanodeOptions {
            node_id: 1,
            data_addr: "0.0.0.0:5000".into(),
            ..DatanodeOptions::default()
        };
        let err = o.validate().expect_err("refused").to_string();
        assert!(err.contains("advertise_addr"), "{err}");
        DatanodeOptions {
            advertise_addr: "10.0.0.5:5000".into(),
            ..o
        }
        .validate()
        .expect("with an advertised address");
    }
}
