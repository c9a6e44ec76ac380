//! One measured run, and its row in the table or in JSON.

use std::time::{Duration, Instant};

use crate::target::Target;
use crate::Load;
use serde_json::{json, Value};
use tests::bench::{cpu_seconds, run_load, status_kb, LoadResult, LoadSpec};

pub(crate) struct Measured {
    pub(crate) result: LoadResult,
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_kb: u64,
    pub(crate) rss_kb: u64,
}

pub(crate) async fn measure(target: &Target, spec: &LoadSpec) -> Measured {
    let cpu0 = target.pid.map_or(0.0, cpu_seconds);
    let t0 = Instant::now();
    let result = run_load(&target.grpc, spec).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = target.pid.map_or(0.0, cpu_seconds) - cpu0;
    // CPU over the whole run, scaled to the measured window.
    let cpu_s = cpu * spec.duration.as_secs_f64() / wall.max(1e-9);
    let (peak_rss_kb, rss_kb) = target
        .pid
        .map_or((0, 0), |p| (status_kb(p, "VmHWM"), status_kb(p, "VmRSS")));
    Measured {
        result,
        cpu_s,
        peak_rss_kb,
        rss_kb,
    }
}

pub(crate) fn row(
    json_out: bool,
    mode: &str,
    target: &str,
    load: &Load,
    m: &Measured,
    extra: Value,
) -> Value {
    let r = &m.result;
    let mut v = json!({
        "mode": mode,
        "target": target,
        "nodes": load.nodes,
        "regions": load.regions,
        "connections": load.connections,
        "seconds": load.seconds,
        "heartbeats_per_s": r.rate().round(),
        "leases_per_s": (r.granted as f64 / r.elapsed.as_secs_f64()).round(),
        "p50_ms": r.quantile_ms(0.50),
        "p99_ms": r.quantile_ms(0.99),
        "p999_ms": r.quantile_ms(0.999),
        "missed": r.missed,
        "errors": r.errors,
        "server_cpu_s": (m.cpu_s * 100.0).round() / 100.0,
        "server_cpu_pct": (m.cpu_s / r.elapsed.as_secs_f64() * 100.0).round(),
        "server_peak_rss_mb": m.peak_rss_kb / 1024,
        "server_rss_mb": m.rss_kb / 1024,
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    if json_out {
        println!("{v}");
    } else {
        println!(
            "{:<10} {:<9} {:>6}x{:<4} {:>11} {:>12} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>6} {:>7.1}% {:>8} MB",
            mode, target, load.nodes, load.regions,
            v["heartbeats_per_s"], v["leases_per_s"],
            r.quantile_ms(0.50), r.quantile_ms(0.99), r.quantile_ms(0.999),
            r.missed, r.errors, m.cpu_s / r.elapsed.as_secs_f64() * 100.0, m.peak_rss_kb / 1024
        );
    }
    v
}

/// Prints one result: `json` as a line of JSON with `--json`, else the text `text` makes.
pub(crate) fn emit(json_out: bool, json: &Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{json}");
    } else {
        println!("{}", text());
    }
}

pub(crate) fn header(json_out: bool) {
    if !json_out {
        println!(
            "{:<10} {:<9} {:>11} {:>11} {:>12} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>11}",
            "mode",
            "target",
            "nodes x R",
            "hb/s",
            "leases/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "missed",
            "errors",
            "srv CPU",
            "peak RSS"
        );
    }
}

pub(crate) fn spec(load: &Load, open_loop: bool) -> LoadSpec {
    LoadSpec {
        nodes: load.nodes,
        regions: load.regions,
        connections: load.connections,
        duration: Duration::from_secs(load.seconds),
        warmup: Duration::from_secs(load.warmup),
        interval: open_loop.then_some(load.interval),
    }
}
