//! The demo engine's data API (axum) and the node's status view.
//!
//! - `PUT /regions/{id}/rows/{key}` (body: the value): refused with 409 and
//!   `"code": "lease_expired"` or `"code": "follower"` when the region is readonly;
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
use crate::heartbeat::StatusCell;
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

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            Error::RegionNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::LeaseExpired { .. } => (StatusCode::CONFLICT, "lease_expired"),
            Error::RegionFollower { .. } => (StatusCode::CONFLICT, "follower"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        (
            status,
            Json(json!({ "error": self.0.to_string(), "code": code })),
        )
            .into_response()
    }
}

async fn write(
    State(s): State<HttpState>,
    Path((id, key)): Path<(u64, String)>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.write(id, &key, &body).map_err(ApiError)?;
    Ok(Json(json!({ "ok": true })))
}

async fn read(
    State(s): State<HttpState>,
    Path((id, key)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    Ok(match s.engine.read(id, &key).map_err(ApiError)? {
        Some(value) => Json(json!({ "value": value })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no row {key:?} in region {id}"), "code": "no_row" })),
        )
            .into_response(),
    })
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
            let writable = r.role == RegionRole::Leader && leases.is_live(r.region_id);
            json!({
                "region_id": r.region_id,
                "role": r.role.label(),
                "writable": writable,
                "lease_left_ms": left,
                "rows": r.rows,
            })
        })
        .collect();
    Json(json!({ "node_id": s.node_id, "heartbeat": s.status.get(), "regions": regions }))
}
