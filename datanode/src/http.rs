//! The demo engine's data API (axum) and the node's status view.
//!
//! - `PUT /regions/{id}/rows/{key}` (body: the value). Refusals are JSON with a
//!   machine-readable `code` (see [`refusal`]): 421 `moved` when the region is led
//!   elsewhere now (with the `owner` and its `epoch` when the metasrv named them), 409
//!   `lease_expired` or `follower` when it is readonly here, 404 `not_found`, 503
//!   `unavailable` when its storage could not be read;
//! - `GET /regions/{id}/rows/{key}`: reads work whether or not the region is writable;
//! - `GET /status`: heartbeat state and every region's role, writability and lease left;
//! - `GET /metrics`: Prometheus metrics (regions by state, lease expiries, heartbeat
//!   round trips, reconnects, leader switches);
//! - `GET /health`: the process is up; `GET /ready`: connected to a leader, and every
//!   region it leads holds a live lease (503 with the reasons otherwise).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common_proto::v1::RegionRole;
use serde_json::json;

use crate::alive_keeper::RegionAliveKeeper;
use crate::engine::RegionEngine as _;
use crate::status::StatusCell;
use crate::{Error, MemoryRegionEngine};

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// This node's id.
    pub node_id: u64,
    /// The engine.
    pub engine: Arc<MemoryRegionEngine>,
    /// The keeper, for lease deadlines.
    pub keeper: Arc<RegionAliveKeeper>,
    /// The heartbeat task's status.
    pub status: Arc<StatusCell>,
}

/// Builds the router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/regions/{id}/rows/{key}", get(read).put(write))
        .with_state(state)
}

/// The answer to a refused request about `region_id`: a status, and JSON with the
/// error, a machine-readable `code`, this node's region epoch, and, when the region is led
/// elsewhere now and the metasrv said by whom, the `owner` (`node_id`, `addr`, `epoch`),
/// so a client can retry there at once.
///
/// | status | code | meaning |
/// |---|---|---|
/// | 421 | `moved` | led elsewhere now (or the storage was taken over under a newer epoch) |
/// | 409 | `lease_expired` | readonly here: no live lease (yet), owner unknown |
/// | 409 | `follower` | a follower here, owner unknown |
/// | 404 | `not_found` | not open here, owner unknown |
/// | 503 | `unavailable` | its storage could not be read here |
pub fn refusal(s: &HttpState, region_id: u64, err: &Error) -> Response {
    let owner = s.keeper.owner_of(region_id);
    let (status, code) = match (err, &owner) {
        (Error::Unavailable { .. }, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (Error::Fenced { .. }, _)
        | (
            Error::RegionNotFound { .. }
            | Error::LeaseExpired { .. }
            | Error::RegionFollower { .. },
            Some(_),
        ) => (StatusCode::MISDIRECTED_REQUEST, "moved"),
        (Error::RegionNotFound { .. }, None) => (StatusCode::NOT_FOUND, "not_found"),
        (Error::LeaseExpired { .. }, None) => (StatusCode::CONFLICT, "lease_expired"),
        (Error::RegionFollower { .. }, None) => (StatusCode::CONFLICT, "follower"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let mut body = json!({
        "error": err.to_string(),
        "code": code,
        "region_id": region_id,
        "epoch": s.keeper.leases().region_epoch(region_id),
    });
    if let Some(o) = owner {
        body["owner"] = json!({ "node_id": o.node_id, "addr": o.addr, "epoch": o.epoch });
    }
    (status, Json(body)).into_response()
}

async fn write(
    State(s): State<HttpState>,
    Path((id, key)): Path<(u64, String)>,
    body: String,
) -> Response {
    match s.engine.write(id, &key, &body) {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(err) => refusal(&s, id, &err),
    }
}

async fn read(State(s): State<HttpState>, Path((id, key)): Path<(u64, String)>) -> Response {
    match s.engine.read(id, &key) {
        Ok(Some(value)) => Json(json!({ "value": value })).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no row {key:?} in region {id}"), "code": "no_row" })),
        )
            .into_response(),
        Err(err) => refusal(&s, id, &err),
    }
}

/// Readiness: connected to a metasrv leader, and every region this node leads holds a
/// live lease. 503 with the reasons otherwise. (`/health` only says the process is up.)
async fn ready(State(s): State<HttpState>) -> (StatusCode, Json<serde_json::Value>) {
    let hb = s.status.get();
    let mut reasons = Vec::new();
    if !hb.connected {
        reasons.push("not connected to a metasrv leader".to_string());
    }
    let leases = s.keeper.leases();
    let lapsed: Vec<u64> = s
        .engine
        .regions()
        .into_iter()
        .filter(|r| r.role == RegionRole::Leader && !leases.is_live(r.region_id))
        .map(|r| r.region_id)
        .collect();
    if !lapsed.is_empty() {
        reasons.push(format!("regions without a live lease: {lapsed:?}"));
    }
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "ready": reasons.is_empty(), "leader": hb.leader, "reasons": reasons })),
    )
}

/// Prometheus text format (see [`crate::metrics`]).
async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.keeper, &*s.engine, &s.status),
    )
}

async fn status(State(s): State<HttpState>) -> Json<serde_json::Value> {
    let now = tokio::time::Instant::now();
    let regions: Vec<_> = s
        .engine
        .regions()
        .into_iter()
        .map(|r| {
            let leases = s.keeper.leases();
            let left = leases
                .deadline(r.region_id)
                .map(|d| d.saturating_duration_since(now).as_millis() as u64);
            let writable = r.role == RegionRole::Leader
                && r.unavailable.is_none()
                && leases.is_live(r.region_id);
            json!({
                "region_id": r.region_id,
                "role": r.role.label(),
                "epoch": leases.region_epoch(r.region_id).unwrap_or(r.epoch),
                "writable": writable,
                "lease_left_ms": left,
                "rows": r.rows,
                "unavailable": r.unavailable,
                "stale_rows_ignored": s.engine.stale_rows(r.region_id),
            })
        })
        .collect();
    Json(json!({ "node_id": s.node_id, "heartbeat": s.status.get(), "regions": regions }))
}
