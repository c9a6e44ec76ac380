//! Prometheus metrics of a datanode, served at `GET /metrics` on its HTTP.
//!
//! Everything but the round-trip histogram is read at scrape time from the state the
//! node already keeps (the keeper's deadlines, the heartbeat status), so a scrape shows
//! the truth at that instant and the heartbeat path pays nothing for it. A fresh registry
//! per scrape keeps several nodes in one process (tests, embedders) apart.
//!
//! - `datanode_regions{state}`: `writable` (leader with a live lease) and `readonly`;
//! - `datanode_lease_expiries_total`: leases that ran out while live;
//! - `datanode_seconds_since_last_grant`: since the last response that granted a leader
//!   lease (absent before the first);
//! - `datanode_heartbeat_rtt_seconds`: request sent to its response;
//! - `datanode_heartbeats_sent_total`, `datanode_reconnects_total`,
//!   `datanode_leader_switches_total`, `datanode_connected`.

use prometheus::{Encoder, Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use common_proto::v1::RegionRole;

use crate::alive_keeper::RegionAliveKeeper;
use crate::engine::RegionEngine;
use crate::status::StatusCell;

fn add<T: prometheus::core::Collector + 'static>(r: &Registry, metric: T) {
    // Each family is added once to a fresh registry; a clash is a bug in this file.
    let _ = r.register(Box::new(metric));
}

fn counter(r: &Registry, name: &str, help: &str, value: u64) {
    if let Ok(c) = IntCounter::new(name, help) {
        c.inc_by(value);
        add(r, c);
    }
}

fn int_gauge(r: &Registry, name: &str, help: &str, value: i64) {
    if let Ok(g) = IntGauge::new(name, help) {
        g.set(value);
        add(r, g);
    }
}

/// Renders the node's metrics now, in the Prometheus text format.
pub fn render(
    keeper: &RegionAliveKeeper,
    engine: &dyn RegionEngine,
    status: &StatusCell,
) -> String {
    let r = Registry::new();
    let leases = keeper.leases();
    let (mut writable, mut readonly) = (0i64, 0i64);
    for region in engine.regions() {
        if region.role == RegionRole::Leader && leases.is_live(region.region_id) {
            writable += 1;
        } else {
            readonly += 1;
        }
    }
    if let Ok(regions) = IntGaugeVec::new(
        Opts::new("datanode_regions", "Regions on this node, by state."),
        &["state"],
    ) {
        regions.with_label_values(&["writable"]).set(writable);
        regions.with_label_values(&["readonly"]).set(readonly);
        add(&r, regions);
    }
    counter(
        &r,
        "datanode_lease_expiries_total",
        "Region leases that ran out while live (the region turned readonly).",
        keeper.lapsed(),
    );
    let hb = status.get();
    if let Some(ms) = hb.last_grant_ms_ago {
        if let Ok(g) = Gauge::new(
            "datanode_seconds_since_last_grant",
            "Seconds since the last heartbeat response that granted a leader lease.",
        ) {
            g.set(ms as f64 / 1000.0);
            add(&r, g);
        }
    }
    counter(
        &r,
        "datanode_heartbeats_sent_total",
        "Heartbeats sent.",
        hb.sent,
    );
    counter(
        &r,
        "datanode_reconnects_total",
        "Heartbeat sessions lost (each is followed by a new leader hunt).",
        hb.reconnects,
    );
    counter(
        &r,
        "datanode_leader_switches_total",
        "Sessions established with a different metasrv leader than the one before.",
        hb.leader_switches,
    );
    int_gauge(
        &r,
        "datanode_connected",
        "1 while a heartbeat stream to a leader is established.",
        i64::from(hb.connected),
    );
    add(&r, status.rtt().clone());
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
