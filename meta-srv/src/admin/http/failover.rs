//! Admin endpoints for moving regions: migrate, drain, maintenance, procedures.
//!
//! - `POST /regions/{id}/migrate` (`{"to": node_id}`, or `{}` or no body to let the
//!   selector pick),
//!   `?wait_ms=` (default 30000): starts the migration procedure and waits for it. 200
//!   with the final state when it finished, 202 with the state while it still runs, 409
//!   when it cannot start (already migrating, a bad target, local-only storage).
//! - `POST /nodes/{id}/drain`, `?wait_ms=`: drains the node (it takes no new regions
//!   until `DELETE /nodes/{id}/drain`; see [`crate::maintenance`]), then migrates every
//!   region it leads away. 200 when all moved, 202 while some still move (or rolled
//!   back: the supervisor retries them while the node stays drained), 409 (with the
//!   list) when some cannot start, 404 for a node this leader does not know.
//! - `DELETE /nodes/{id}/drain`: returns the node to service; moves nothing back.
//! - `GET /maintenance` (`enabled`, `drained_nodes`), `POST /maintenance`
//!   (`{"enabled": bool}`): pauses automatic failover, persisted across leader changes.
//! - `GET /procedures`: migrations in flight and recently finished.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use handlers::LeadershipView as _;
use handlers::RegionRouteStore as _;
use serde::Deserialize;
use serde_json::json;

use super::{json_body, millis, path_id, query, AdminState, ApiError};
use crate::procedure::drain::{self, DrainError, DrainOutcome};
use crate::procedure::migration::{MigrationError, MigrationReason, Step};

impl From<MigrationError> for ApiError {
    fn from(err: MigrationError) -> Self {
        let code = match &err {
            MigrationError::NoRoute { .. } => StatusCode::NOT_FOUND,
            MigrationError::AlreadyMigrating { .. }
            | MigrationError::RouteChanged { .. }
            | MigrationError::NoTarget { .. }
            | MigrationError::BadTarget { .. }
            | MigrationError::LocalOnly { .. } => StatusCode::CONFLICT,
            MigrationError::RolledBack { .. } => StatusCode::BAD_GATEWAY,
            MigrationError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, err.to_string())
    }
}

/// `?wait_ms=`: how long to wait for the procedure to finish.
/// Unknown parameters are refused, so a typo (`?wait=0`) is not silently a 30 s wait.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    wait_ms: Option<u64>,
    /// Read by the forwarder (answer on this member); accepted here.
    #[serde(rename = "local")]
    _local: Option<String>,
}

impl WaitQuery {
    /// The wait asked for, checked before anything starts: a bad `wait_ms` must not be
    /// found only after a migration began.
    fn within(q: Result<Query<Self>, QueryRejection>) -> Result<Duration, ApiError> {
        millis("wait_ms", query(q)?.wait_ms, Duration::from_secs(30))
    }
}

/// Body of `POST /regions/{id}/migrate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MigrateRequest {
    /// The target datanode; the selector picks when absent.
    to: Option<u64>,
}

fn ensure_leader(srv: &AdminState) -> Result<(), ApiError> {
    if srv.gate.is_leader() {
        Ok(())
    } else {
        Err(crate::Error::NotLeader {
            leader: srv.gate.leader_addr(),
        }
        .into())
    }
}

pub(super) async fn migrate(
    State(srv): State<AdminState>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = path_id(id)?;
    let within = WaitQuery::within(q)?;
    // An empty body means `{}`: let the selector pick.
    let req: MigrateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MigrateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })?
    };
    ensure_leader(&srv)?;
    let started = match srv
        .migrations
        .start(id, req.to, MigrationReason::Manual)
        .await
    {
        Ok(started) => started,
        // A repeat of a running move (the same target, or none named) joins it, so a
        // retried request neither starts a second move nor fails: migrate is idempotent.
        Err(MigrationError::AlreadyMigrating { to, .. }) if req.to.is_none_or(|t| t == to) => {
            match srv.migrations.in_flight(id).await {
                Some(running) => running,
                // It finished in between: its outcome is in the history.
                None => srv.migrations.last_finished(id).ok_or_else(|| {
                    ApiError(
                        StatusCode::CONFLICT,
                        format!("region {id}'s migration to node {to} ended meanwhile; ask again"),
                    )
                })?,
            }
        }
        Err(err) => return Err(err.into()),
    };
    match srv.migrations.wait(id, within).await {
        // Dropped while it moved: the region is gone, as for a migrate of an unknown one.
        Some(done)
            if done.step == Step::RolledBack && matches!(srv.routes.get(id).await, Ok(None)) =>
        {
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "migration of region {id} ended: {}",
                    done.last_error.unwrap_or_default()
                ),
            ))
        }
        Some(done) if done.step == Step::RolledBack => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!(
                "migration of region {id} rolled back: {}",
                done.last_error.unwrap_or_default()
            ),
        )),
        Some(done) => Ok((StatusCode::OK, Json(json!(done)))),
        None => Ok((StatusCode::ACCEPTED, Json(json!(started)))),
    }
}

pub(super) async fn drain(
    State(srv): State<AdminState>,
    node_id: Result<Path<u64>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let node_id = path_id(node_id)?;
    let within = WaitQuery::within(q)?;
    ensure_leader(&srv)?;
    let report = drain::drain(
        &srv.cluster,
        &srv.maintenance,
        &srv.migrations,
        node_id,
        within,
    )
    .await
    .map_err(|err| match err {
        DrainError::UnknownNode { .. } => ApiError(StatusCode::NOT_FOUND, err.to_string()),
        DrainError::Mark { source, .. } => source.into(),
    })?;
    // 200: all moved; 202: some still moving, or rolled back (the supervisor retries
    // them while the node stays drained); 409: some could not start at all.
    let code = match report.outcome() {
        DrainOutcome::Moved => StatusCode::OK,
        DrainOutcome::Moving => StatusCode::ACCEPTED,
        DrainOutcome::Refused => StatusCode::CONFLICT,
    };
    Ok((
        code,
        Json(
            json!({ "node_id": node_id, "drained": true, "finished": report.finished, "running": report.running, "refused": report.refused }),
        ),
    ))
}

/// `DELETE /nodes/{id}/drain`: returns a drained datanode to service, so it may take new
/// regions again. Moves nothing back. Any id is accepted, so a drain of a node that is
/// gone for good can be lifted too.
pub(super) async fn undrain(
    State(srv): State<AdminState>,
    node_id: Result<Path<u64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node_id = path_id(node_id)?;
    ensure_leader(&srv)?;
    let was_drained = srv.maintenance.set_drained(node_id, false).await?;
    Ok(Json(
        json!({ "node_id": node_id, "drained": false, "was_drained": was_drained }),
    ))
}

/// Body of `POST /maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaintenanceRequest {
    enabled: bool,
}

pub(super) async fn get_maintenance(State(srv): State<AdminState>) -> Json<serde_json::Value> {
    Json(
        json!({ "enabled": srv.maintenance.is_enabled(), "drained_nodes": srv.maintenance.drained() }),
    )
}

pub(super) async fn set_maintenance(
    State(srv): State<AdminState>,
    body: Result<Json<MaintenanceRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = json_body(body, "request body")?;
    ensure_leader(&srv)?;
    srv.maintenance.set(req.enabled).await?;
    Ok(Json(json!({ "enabled": req.enabled })))
}

pub(super) async fn procedures(State(srv): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!({
        "running": srv.migrations.persisted().await,
        "finished": srv.migrations.history(),
        "failed_nodes": srv.supervisor.failed_nodes(),
    }))
}
