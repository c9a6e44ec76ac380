//! [`MetasrvOptions`]: every setting, from TOML or flags, and the lease rules checked at
//! start.
//!
//! Timings derive from one heartbeat interval. The rules refused at start:
//! - `region_lease > 2 × heartbeat_interval`: a lease must survive one lost heartbeat;
//! - `region_lease` is whole seconds (the wire carries `lease_seconds`);
//! - `node_lease > heartbeat_interval`: otherwise healthy nodes flap;
//! - `failover_wait ≥ region_lease + lease_drift_margin` (unset, it is that sum): S1, the old owner's
//!   lease must have surely expired before a region is granted elsewhere. A datanode's
//!   deadline is anchored at its own send time, before our grant, and shortened by its own
//!   margin; the drift margin covers the clocks running at slightly different rates;
//! - `meta_lease ≥ 1 s` (etcd TTLs are whole seconds) and `meta_lease > 2 ×
//!   lease_drift_margin`: the leader acts only until each keep-alive's send time + TTL −
//!   margin, and must be left time to lead;
//! - the advertised address (`server_addr`, else `bind_addr`) is not unspecified
//!   (`0.0.0.0`): datanodes and peers dial it;
//! - on an etcd cluster (more than one `store_addrs` entry), the leadership must outlast
//!   one etcd raft election: `meta_lease − lease_drift_margin − meta_lease / 5 ≥ 2 ×
//!   etcd_election_timeout`. A leader's deadline is at least that far ahead when a
//!   keep-alive goes out (one goes every fifth of the lease), and etcd elects a new raft
//!   leader within 1–2 election timeouts (randomized), during which no keep-alive is
//!   acknowledged. With etcd's default 1 s, a 5 s meta lease leaves 3.5 s ≥ 2 s; a 3 s
//!   one leaves 1.9 s and is refused. This is the floor for one uncontested election: a
//!   split vote adds a round, and a loaded etcd commits the new term's first entry (which
//!   lease renewals wait for) late, so a leader that must survive losing the raft leader
//!   on a busy machine wants more (`tests/tests/etcd_members.rs` uses 8 s).
//! - TLS files (`tls_*`, `etcd_tls_*`) exist and parse, a certificate comes with its key,
//!   and an etcd cluster with TLS has `tls_ca`, so members can verify each other.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{InvalidConfigSnafu, ParseConfigSnafu, ReadConfigSnafu, Result};

/// What `--print-config` shows instead of the admin token; refused as a token, so a
/// printed config saved and reused cannot run with a guessable one.
pub const PRINTED_TOKEN: &str = "<set, not shown>";

/// Which KV backend holds routes and registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded in-memory backend; one metasrv, always leader.
    #[default]
    Memory,
    /// etcd, with leader election.
    Etcd,
}

/// The metasrv's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetasrvOptions {
    /// The cluster this metasrv serves; heartbeats for another cluster are refused.
    pub cluster_id: u64,
    /// gRPC listen address.
    pub bind_addr: String,
    /// The address advertised to others (AskLeader, the leader key). Empty: `bind_addr`.
    pub server_addr: String,
    /// Admin HTTP listen address. Empty: no admin HTTP.
    pub http_addr: String,
    /// Bearer token every mutating admin request (POST, PUT, DELETE) must carry
    /// (`Authorization: Bearer <token>`). Empty: none, which is refused on a non-loopback
    /// `http_addr` unless `insecure`. Prefer the `METASRV_ADMIN_TOKEN` variable to a file.
    pub admin_token: String,
    /// Allow a non-loopback admin HTTP without a token (a trusted network only).
    pub insecure: bool,
    /// TLS certificate chain (PEM) for the gRPC port and the admin HTTP. Empty: plaintext.
    pub tls_cert: String,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: String,
    /// CA bundle (PEM). Set: every gRPC client must present a certificate it signed
    /// (mutual TLS), a heartbeat may speak only for the node its certificate names, and
    /// members verify each other's admin HTTP with it when forwarding.
    pub tls_ca: String,
    /// CA bundle (PEM) that etcd's server certificates chain to. Set (or
    /// `etcd_tls_cert`): etcd is dialled over TLS.
    pub etcd_tls_ca: String,
    /// Client certificate (PEM) presented to etcd (`--client-cert-auth`).
    pub etcd_tls_cert: String,
    /// The private key (PEM) of `etcd_tls_cert`.
    pub etcd_tls_key: String,
    /// KV backend.
    pub backend: BackendKind,
    /// Standalone only: a directory where the memory backend keeps a snapshot, so a
    /// restart keeps region routes. Empty: nothing is persisted.
    pub data_dir: String,
    /// etcd endpoints, for `backend = "etcd"`.
    pub store_addrs: Vec<String>,
    /// Key prefix in etcd, so several clusters can share one etcd.
    pub store_key_prefix: String,
    /// How often nodes heartbeat (sent to them in the handshake).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a node is marked expired.
    #[serde(with = "humantime_serde")]
    pub node_lease: Duration,
    /// How long a region lease lasts from the node's send time.
    #[serde(with = "humantime_serde")]
    pub region_lease: Duration,
    /// The shortest a region waits, from its old owner's last grant, before it is
    /// granted elsewhere without the owner's consent (failover, or a move whose
    /// downgrade went unanswered). Unset: `region_lease + lease_drift_margin`, the safe
    /// floor. Set higher to wait longer; a wait also honours any longer lease an earlier
    /// leader recorded, so it is never shorter than what was granted.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub failover_wait: Option<Duration>,
    /// The election lease in etcd.
    #[serde(with = "humantime_serde")]
    pub meta_lease: Duration,
    /// Safety margin for clock-rate drift and scheduling: failover waits this long past
    /// the old owner's region lease, and the leader stops acting this long before its
    /// etcd lease could expire.
    #[serde(with = "humantime_serde")]
    pub lease_drift_margin: Duration,
    /// The etcd cluster's raft election timeout (etcd's `--election-timeout`, default
    /// 1 s); checked against the meta lease when several etcd endpoints are given.
    #[serde(with = "humantime_serde")]
    pub etcd_election_timeout: Duration,
    /// Whether a failed datanode's regions fail over automatically (on shared storage
    /// only). On by default: leases fail closed and every move waits out the old owner's
    /// lease, so a failover is safe; maintenance mode pauses it for planned work.
    pub region_failover: bool,
    /// Default mailbox reply timeout for admin operations.
    #[serde(with = "humantime_serde")]
    pub mailbox_timeout: Duration,
    /// Largest accepted gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// Mark a node's stats for flushing every this many heartbeats.
    pub stats_flush_every: usize,
    /// How often the marked stats are written to the KV, in one batch.
    #[serde(with = "humantime_serde")]
    pub stats_flush_interval: Duration,
    /// How many recent stats per node the leader keeps in memory (each holds one
    /// summary per region, so this is a large part of the per-node memory). The
    /// built-in handlers and the admin API read only the latest; raise it for a handler
    /// of your own that reads a node's recent history.
    pub stats_keep: usize,
}

impl Default for MetasrvOptions {
    fn default() -> Self {
        Self {
            cluster_id: 1,
            bind_addr: "127.0.0.1:3002".into(),
            server_addr: String::new(),
            http_addr: "127.0.0.1:4000".into(),
            backend: BackendKind::Memory,
            data_dir: String::new(),
            store_addrs: vec!["127.0.0.1:2379".into()],
            store_key_prefix: "/metasrv".into(),
            heartbeat_interval: Duration::from_secs(3),
            node_lease: Duration::from_secs(10),
            region_lease: Duration::from_secs(10),
            failover_wait: None,
            meta_lease: Duration::from_secs(5),
            lease_drift_margin: Duration::from_millis(500),
            etcd_election_timeout: Duration::from_secs(1),
            region_failover: true,
            mailbox_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            admin_token: String::new(),
            insecure: false,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            etcd_tls_ca: String::new(),
            etcd_tls_cert: String::new(),
            etcd_tls_key: String::new(),
            stats_flush_every: 10,
            stats_flush_interval: Duration::from_secs(1),
            stats_keep: 1,
        }
    }
}

impl MetasrvOptions {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).context(ReadConfigSnafu { path: &display })?;
        toml::from_str(&text).context(ParseConfigSnafu { path: display })
    }

    /// The advertised address.
    pub fn advertised_addr(&self) -> &str {
        if self.server_addr.is_empty() {
            &self.bind_addr
        } else {
            &self.server_addr
        }
    }

    /// The admin HTTP address other members forward to (`None`: HTTP off). An
    /// unspecified host (`0.0.0.0`, `[::]`) is replaced by the advertised gRPC host, since
    /// no peer can dial it.
    pub fn advertised_http_addr(&self) -> Option<String> {
        if self.http_addr.is_empty() {
            return None;
        }
        let Ok(http) = self.http_addr.parse::<std::net::SocketAddr>() else {
            return Some(self.http_addr.clone());
        };
        if !http.ip().is_unspecified() {
            return Some(self.http_addr.clone());
        }
        let advertised = self.advertised_addr();
        let host = advertised
            .rsplit_once(':')
            .map_or(advertised, |(host, _)| host);
        Some(format!("{host}:{}", http.port()))
    }

    /// The gRPC and admin HTTP TLS files.
    pub fn tls(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
        }
    }

    /// The etcd client's TLS files.
    pub fn etcd_tls(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.etcd_tls_cert.clone(),
            key: self.etcd_tls_key.clone(),
            ca: self.etcd_tls_ca.clone(),
        }
    }

    /// How often the sweeper checks node leases: often enough that expiry lags by at most
    /// a quarter of the lease.
    pub fn sweep_interval(&self) -> Duration {
        (self.node_lease / 4).max(Duration::from_millis(10))
    }

    /// The failover wait in force: the configured one, or `region_lease +
    /// lease_drift_margin`.
    pub fn effective_failover_wait(&self) -> Duration {
        self.failover_wait
            .unwrap_or(self.region_lease + self.lease_drift_margin)
    }

    /// The lease waits of this member (see [`LeaseWait`](crate::leader::lease_bound::LeaseWait)).
    pub fn lease_wait(&self) -> crate::leader::lease_bound::LeaseWait {
        crate::leader::lease_bound::LeaseWait {
            own: self.region_lease,
            margin: self.lease_drift_margin,
            failover_wait: self.effective_failover_wait(),
        }
    }

    /// Checks the lease rules; the message names the rule and the values.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| InvalidConfigSnafu { reason }.fail();
        if self.heartbeat_interval.is_zero() {
            return fail("heartbeat_interval must be greater than 0".into());
        }
        if self.region_lease <= self.heartbeat_interval * 2 {
            return fail(format!(
                "region_lease ({:?}) must exceed 2 × heartbeat_interval ({:?}), so one lost heartbeat does not expire a lease",
                self.region_lease, self.heartbeat_interval
            ));
        }
        if self.region_lease.subsec_nanos() != 0 {
            return fail(format!(
                "region_lease ({:?}) must be a whole number of seconds",
                self.region_lease
            ));
        }
        if self.node_lease <= self.heartbeat_interval {
            return fail(format!(
                "node_lease ({:?}) must exceed heartbeat_interval ({:?})",
                self.node_lease, self.heartbeat_interval
            ));
        }
        if self.effective_failover_wait() < self.region_lease + self.lease_drift_margin {
            return fail(format!(
                "failover_wait ({:?}) must be at least region_lease ({:?}) + lease_drift_margin ({:?}): a region may move only after the old owner's lease has surely expired",
                self.effective_failover_wait(), self.region_lease, self.lease_drift_margin
            ));
        }
        if self.meta_lease < Duration::from_secs(1) || self.meta_lease.subsec_nanos() != 0 {
            return fail(format!(
                "meta_lease ({:?}) must be a whole number of seconds, at least 1 s (etcd lease TTLs are whole seconds)",
                self.meta_lease
            ));
        }
        if self.meta_lease <= self.lease_drift_margin * 2 {
            return fail(format!(
                "meta_lease ({:?}) must exceed 2 × lease_drift_margin ({:?}): the leader stops acting a margin before its etcd lease could expire",
                self.meta_lease, self.lease_drift_margin
            ));
        }
        if self.cluster_id == 0 {
            return fail("cluster_id 0 is reserved".into());
        }
        if self.max_message_bytes < 1024 {
            return fail(format!(
                "max_message_bytes ({}) is too small",
                self.max_message_bytes
            ));
        }
        let advertised = self.advertised_addr();
        if advertised
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified())
        {
            return fail(format!(
                "this metasrv would advertise {advertised}, which no datanode or peer can dial: \
                 it binds every interface; set server_addr (--server-addr) to the address they \
                 should use"
            ));
        }
        if !self.admin_token.is_empty() && self.admin_token.trim() != self.admin_token {
            return fail(
                "admin_token has leading or trailing whitespace, which no client sends back: \
                 remove it"
                    .into(),
            );
        }
        let open_admin = self
            .http_addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if open_admin && self.admin_token.is_empty() && !self.insecure {
            return fail(format!(
                "the admin HTTP on {} is reachable from other hosts and has no token, so anyone \
                 who reaches it could move or drop regions: set admin_token \
                 (METASRV_ADMIN_TOKEN), or pass --insecure on a trusted network",
                self.http_addr
            ));
        }
        if self.backend == BackendKind::Etcd && self.store_addrs.is_empty() {
            return fail("backend etcd needs at least one store_addrs entry".into());
        }
        if self.admin_token == PRINTED_TOKEN {
            return fail(format!(
                "admin_token is {PRINTED_TOKEN:?}, the placeholder --print-config prints in its \
                 place: set the real token (METASRV_ADMIN_TOKEN), or remove the line"
            ));
        }
        let tls = self.tls();
        tls.validate("tls_cert/tls_key/tls_ca", true)?;
        if self.backend != BackendKind::Etcd && self.etcd_tls().enabled() {
            return fail(
                "etcd_tls_* are set but backend is not etcd: nothing would use them (a config \
                 meant for another member?); remove them or set backend = \"etcd\""
                    .into(),
            );
        }
        self.etcd_tls()
            .validate("etcd_tls_cert/etcd_tls_key/etcd_tls_ca", false)?;
        if tls.enabled()
            && self.backend == BackendKind::Etcd
            && !self.http_addr.is_empty()
            && tls.ca.is_empty()
        {
            return fail(
                "with TLS on an etcd cluster, followers forward admin requests to the leader \
                 over TLS and must verify its certificate: set tls_ca to the members' CA"
                    .into(),
            );
        }
        if self.backend == BackendKind::Etcd && self.store_addrs.len() > 1 {
            let slack = self
                .meta_lease
                .saturating_sub(self.lease_drift_margin + self.meta_lease / 5);
            if slack < self.etcd_election_timeout * 2 {
                return fail(format!(
                    "meta_lease ({:?}) cannot outlast one etcd leader election: a leader's deadline can be as close as meta_lease − lease_drift_margin ({:?}) − meta_lease/5 = {slack:?} when etcd stops answering, and etcd may take 2 × etcd_election_timeout ({:?}) = {:?} to elect a new raft leader; raise meta_lease (or lower etcd_election_timeout if your etcd runs with a shorter --election-timeout)",
                    self.meta_lease,
                    self.lease_drift_margin,
                    self.etcd_election_timeout,
                    self.etcd_election_timeout * 2
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        MetasrvOptions::default().validate().expect("defaults pass");
    }

    #[test]
    fn lease_rules_are_refused_with_a_clear_message() {
        let bad = |f: fn(&mut MetasrvOptions)| {
            let mut o = MetasrvOptions::default();
            f(&mut o);
            o.validate().expect_err("must be refused").to_string()
        };
        assert!(bad(|o| o.region_lease = Duration::from_secs(6))
            .contains("must exceed 2 × heartbeat_interval"));
        assert!(bad(|o| o.failover_wait = Some(Duration::from_secs(5))).contains("failover_wait"));
        assert!(
            bad(|o| o.failover_wait = Some(Duration::from_millis(10_400)))
                .contains("lease_drift_margin"),
            "the drift margin counts in the failover wait"
        );
        assert!(bad(|o| o.meta_lease = Duration::from_millis(1_500)).contains("whole number"));
        assert!(bad(|o| {
            o.lease_drift_margin = Duration::from_millis(2_500);
            o.failover_wait = Some(Duration::from_secs(20));
        })
        .contains("2 × lease_drift_margin"));
        assert!(bad(|o| o.node_lease = Duration::from_secs(3)).contains("node_lease"));
        assert!(bad(|o| o.region_lease = Duration::from_millis(10_500)).contains("whole number"));
        assert!(bad(|o| o.heartbeat_interval = Duration::ZERO).contains("greater than 0"));
    }

    #[test]
    fn on_an_etcd_cluster_the_meta_lease_must_outlast_one_etcd_election() {
        let etcd = |meta_lease: u64, endpoints: usize| {
            let mut o = MetasrvOptions {
                backend: BackendKind::Etcd,
                meta_lease: Duration::from_secs(meta_lease),
                store_addrs: (0..endpoints)
                    .map(|i| format!("127.0.0.1:{}", 2379 + i))
                    .collect(),
                ..MetasrvOptions::default()
            };
            o.validate().map_err(|e| e.to_string())?;
            o.etcd_election_timeout = Duration::from_millis(500);
            o.validate().map_err(|e| e.to_string())
        };
        let refused = etcd(3, 3).expect_err("3 s cannot outlast a 1 s etcd election");
        assert!(
            refused.contains("cannot outlast one etcd leader election"),
            "{refused}"
        );
        assert!(etcd(4, 3).is_ok(), "4 s leaves 2.7 s ≥ 2 s");
        assert!(etcd(5, 3).is_ok(), "the default");
        assert!(
            etcd(3, 1).is_ok(),
            "one endpoint: no etcd cluster to reason about"
        );
    }

    #[test]
    fn the_printed_token_placeholder_and_unused_etcd_tls_are_refused() {
        let printed = MetasrvOptions {
            admin_token: PRINTED_TOKEN.into(),
            ..MetasrvOptions::default()
        };
        let err = printed.validate().expect_err("placeholder").to_string();
        assert!(err.contains("placeholder"), "{err}");
        let unused = MetasrvOptions {
            etcd_tls_ca: "/some/ca.pem".into(),
            ..MetasrvOptions::default()
        };
        let err = unused.validate().expect_err("memory backend").to_string();
        assert!(err.contains("backend is not etcd"), "{err}");
    }

    #[test]
    fn tls_on_an_etcd_cluster_needs_the_members_ca() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        let o = MetasrvOptions {
            backend: BackendKind::Etcd,
            tls_cert: cert_path.display().to_string(),
            tls_key: key_path.display().to_string(),
            ..MetasrvOptions::default()
        };
        let err = o.validate().expect_err("no CA").to_string();
        assert!(err.contains("tls_ca"), "{err}");
        MetasrvOptions {
            tls_ca: cert_path.display().to_string(),
            ..o.clone()
        }
        .validate()
        .expect("with the CA");
        MetasrvOptions {
            backend: BackendKind::Memory,
            ..o
        }
        .validate()
        .expect("standalone: server TLS alone is fine");
    }

    #[test]
    fn the_sample_config_parses_validates_and_documents_every_key_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/metasrv.example.toml");
        let sample = MetasrvOptions::from_file(&path).expect("the sample parses");
        sample.validate().expect("the sample is valid");
        assert_eq!(
            sample,
            MetasrvOptions::default(),
            "the sample shows the defaults"
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let written: toml::Table = toml::from_str(&text).expect("toml");
        let every: toml::Table = toml::Table::try_from(MetasrvOptions::default()).expect("table");
        for key in every.keys() {
            assert!(written.contains_key(key), "the sample documents {key}");
        }
    }

    #[test]
    fn toml_takes_human_durations_and_refuses_unknown_keys() {
        let o: MetasrvOptions =
            toml::from_str("heartbeat_interval = \"1s\"\nregion_lease = \"5s\"").expect("parse");
        assert_eq!(o.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(o.region_lease, Duration::from_secs(5));
        assert_eq!(
            o.node_lease,
            Duration::from_secs(10),
            "unset keys keep defaults"
        );
        assert!(toml::from_str::<MetasrvOptions>("heartbeat_intervl = \"1s\"").is_err());
    }
}
