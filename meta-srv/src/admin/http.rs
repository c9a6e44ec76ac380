//! The admin HTTP API (axum): health, leader, nodes, regions. Followers forward to the
//! leader (see [`forward`]); mutating requests need the admin token when one is set
//! (see `auth`).
//!
//! Every error is JSON `{"error": "..."}` with a status code that fits it, so scripts and
//! operators get the same message the logs have.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use handlers::{LeadershipView as _, NodeKey, RegionRouteStore as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod auth;
mod failover;
pub mod forward;

use crate::admin::region::{CreateRegion, RegionAdmin};
use crate::cluster::FailoverMode;
use crate::election::ElectionRef;
use crate::error::Error;
use crate::failover::supervisor::RegionSupervisor;
use crate::leader::gate::LeaderGate;
use crate::maintenance::Maintenance;
use crate::procedure::migration::Migrations;
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;
use crate::MetasrvOptions;

/// What the admin API uses: a narrow handle over the server's parts (built by
/// [`crate::Metasrv::admin_state`]), not the server itself.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub(crate) options: Arc<MetasrvOptions>,
    /// For the readiness probe's read.
    pub(crate) kv: handlers::KvBackendRef,
    /// The leader's clock (region lease states are judged on it).
    pub(crate) clock: handlers::ClockRef,
    pub(crate) routes: Arc<handlers::KvRegionRouteStore>,
    pub(crate) election: ElectionRef,
    /// Leadership (its deadline), the gate that opens once a term's state is loaded, and
    /// the grant log.
    pub(crate) gate: Arc<LeaderGate>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) pushers: Arc<Pushers>,
    pub(crate) cluster: crate::cluster::Cluster,
    pub(crate) group: Arc<handlers::HandlerGroup>,
    pub(crate) admin: RegionAdmin,
    pub(crate) migrations: Arc<Migrations>,
    pub(crate) maintenance: Arc<Maintenance>,
    pub(crate) supervisor: Arc<RegionSupervisor>,
    /// Followers forward admin requests to the leader with it.
    pub(crate) forwarder: forward::ForwardClient,
    /// Whether the KV backend's writes fail.
    pub(crate) kv_health: Arc<crate::kv_health::WatchedKv>,
}

/// Builds the admin router.
pub fn router(srv: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/leader", get(leader))
        .route("/leader/history", get(leader_history))
        .route("/leader/resign", post(resign))
        .route("/cluster", get(cluster))
        .route("/nodes", get(nodes))
        .route("/regions", get(list_regions).post(create_region))
        .route("/regions/{id}", delete(drop_region))
        .route("/regions/{id}/migrate", post(failover::migrate))
        .route(
            "/nodes/{id}/drain",
            post(failover::drain).delete(failover::undrain),
        )
        .route(
            "/maintenance",
            get(failover::get_maintenance).post(failover::set_maintenance),
        )
        .route("/procedures", get(failover::procedures))
        .route(
            "/routes",
            post(import_routes).layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024)),
        )
        .route("/nodes/{id}/instructions", post(send_instruction))
        .route("/handlers", get(handler_timings))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError(StatusCode::NOT_FOUND, format!("no such endpoint: {uri}"))
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {uri}"),
                )
            },
        )
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            srv.clone(),
            forward::layer,
        ))
        // Outermost: a request without the admin token is refused before it is forwarded.
        .layer(axum::middleware::from_fn_with_state(
            srv.clone(),
            auth::layer,
        ))
        .with_state(srv)
}

/// An admin error, rendered as JSON.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A JSON body, or a 400 naming `what` was wrong with it (413 when it is too large, as
/// for every endpoint's body limit).
fn json_body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| {
        let code = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, format!("invalid {what}: {}", e.body_text()))
    })
}

/// The most of a plain-text error body [`json_errors`] reads.
const ERROR_TEXT_LIMIT: usize = 64 * 1024;

/// Every error answer is JSON `{"error": ...}`: rewrites the plain-text ones that axum's
/// own extractors and limits produce (a body over the limit, a path that is not UTF-8)
/// so clients parse one shape. Our handlers' errors are JSON already and pass through.
async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, ERROR_TEXT_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let text = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut out = ApiError(status, text).into_response();
    // Keep what the error said besides its body (`WWW-Authenticate`, `Allow`).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// The longest a request may ask to wait (`wait_ms`, `timeout_ms`): an hour. More is
/// surely a typo, and an unbounded value would overflow the deadline it sets.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A query string, or a JSON 400 naming what is wrong with it (axum's own rejection is
/// plain text, and every admin error is `{"error": ...}`).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

/// The query parameter `name` in milliseconds, `default` when absent; a JSON 400 above
/// [`MAX_WAIT`].
fn millis(
    name: &str,
    value: Option<u64>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    let Some(ms) = value else {
        return Ok(default);
    };
    let d = std::time::Duration::from_millis(ms);
    if d > MAX_WAIT {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{name}={ms} is more than the {} ms a request may wait",
                MAX_WAIT.as_millis()
            ),
        ));
    }
    Ok(d)
}

/// A path id, or a JSON 400 naming the bad segment.
fn path_id(
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<u64, ApiError> {
    id.map(|Path(v)| v).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid id in the path: {}", e.body_text()),
        )
    })
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Error::RegionExists { .. }
            | Error::NodeNotAlive { .. }
            | Error::NodeDrained { .. }
            | Error::RegionMigrating { .. } => StatusCode::CONFLICT,
            Error::RegionNotFound { .. } => StatusCode::NOT_FOUND,
            Error::NotLeader { .. } | Error::NoAliveDatanode | Error::Election { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::MailboxTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::InstructionFailed { .. }
            | Error::BadReply { .. }
            | Error::ChannelClosed { .. }
            | Error::PushFailed { .. }
            | Error::PusherNotFound { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, err.to_string())
    }
}

/// Prometheus text format.
async fn metrics(State(srv): State<AdminState>) -> impl IntoResponse {
    let m = &crate::metrics::METRICS;
    m.pushers.set(srv.pushers.len() as i64);
    m.mailbox_pending.set(srv.mailbox.pending_len() as i64);
    let leading = srv.gate.is_leader().then(|| {
        srv.gate
            .deadline()
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(leading),
    )
}

/// Readiness: the member can do its job. A leader is known, the KV backend answers
/// within a timeout, and, if elected, the leader state is loaded (the gate is open).
/// 503 with every reason otherwise. (`/health` only says the process is up.)
async fn ready(State(srv): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
    // Under a probe's usual 1 s timeout, so a probe sees the 503 and its reasons rather
    // than a timeout of its own; the two checks run at once.
    const WITHIN: std::time::Duration = std::time::Duration::from_millis(800);
    let mut reasons = Vec::new();
    let (leader, kv, writes) = tokio::join!(
        tokio::time::timeout(WITHIN, srv.election.leader_addr()),
        tokio::time::timeout(WITHIN, srv.kv.get(b"__meta/ready")),
        tokio::time::timeout(WITHIN, srv.kv_health.probe()),
    );
    let leader = match leader {
        Ok(Ok(Some(addr))) => Some(addr),
        Ok(Ok(None)) => {
            reasons.push("no leader is known".to_string());
            None
        }
        Ok(Err(err)) => {
            reasons.push(format!("cannot learn the leader: {err}"));
            None
        }
        Err(_) => {
            reasons.push(format!("the election did not answer within {WITHIN:?}"));
            None
        }
    };
    match kv {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => reasons.push(format!("the KV backend fails: {err}")),
        Err(_) => reasons.push(format!("the KV backend did not answer within {WITHIN:?}")),
    }
    match writes {
        Ok(None) => {}
        Ok(Some(err)) => reasons.push(format!("the KV backend refuses writes: {err}")),
        Err(_) => reasons.push(format!(
            "the KV backend refused a write, and a retry did not answer within {WITHIN:?}"
        )),
    }
    if srv.election.leadership().is_leader() && !srv.gate.is_leader() {
        reasons.push("elected, but the leader state is not loaded yet".into());
    }
    let body = json!({
        "ready": reasons.is_empty(),
        "leader": leader,
        "is_leader": srv.gate.is_leader(),
        "reasons": reasons,
    });
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn leader(State(srv): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let leader = srv.election.leader().await?;
    Ok(Json(json!({
        "is_leader": srv.gate.is_leader(),
        "elected": srv.election.leadership().is_leader(),
        "leader_addr": leader.as_ref().map(|l| &l.addr),
        "term": leader.as_ref().map(|l| l.term),
        "self_addr": srv.options.advertised_addr(),
        "store": srv.election.store_view(),
    })))
}

/// One node as `/nodes` shows it.
#[derive(Debug, Serialize)]
struct NodeView {
    node_id: u64,
    role: &'static str,
    addr: String,
    node_epoch: u64,
    lease_age_ms: u64,
    alive: bool,
    connected: bool,
    region_count: usize,
    /// Milliseconds since this leader last granted the node region leases.
    granted_ms_ago: Option<u64>,
    /// A drained datanode takes no new regions (`POST`/`DELETE /nodes/{id}/drain`).
    drained: bool,
}

async fn nodes(State(srv): State<AdminState>) -> Json<Vec<NodeView>> {
    let now = srv.clock.now();
    let views = srv
        .cluster
        .nodes()
        .into_iter()
        .map(|n| NodeView {
            alive: n.alive(),
            connected: n.connected,
            drained: n.drained,
            node_id: n.lease.key.node_id,
            role: n.lease.key.role.label(),
            lease_age_ms: now.saturating_duration_since(n.lease.last_seen).as_millis() as u64,
            region_count: n.lease.region_count,
            granted_ms_ago: n
                .lease
                .last_granted
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            node_epoch: n.lease.node_epoch,
            addr: n.lease.addr,
        })
        .collect();
    Json(views)
}

/// One region as `/regions` shows it.
#[derive(Debug, Serialize)]
struct RegionView {
    region_id: u64,
    leader: Option<u64>,
    followers: Vec<u64>,
    /// The region epoch: grows each time the writable owner changes.
    epoch: u64,
    /// `granted`: the leader reported it and holds a live lease; `pending`: routed but not
    /// yet reported; `expired`: the leader's lease lapsed; `unassigned`: no leader.
    lease_state: &'static str,
    /// `available`, `migrating` (to `migrating_to`), or `unavailable` (its node failed and
    /// it cannot move; `reason` says why).
    availability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    migrating_to: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn list_regions(State(srv): State<AdminState>) -> Result<Json<Vec<RegionView>>, ApiError> {
    let routes = srv
        .routes
        .list()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let migrating = crate::procedure::migration::targets(&srv.migrations.persisted().await);
    let mut unavailable = srv.supervisor.unavailable();
    let failover = if srv.maintenance.is_enabled() {
        FailoverMode::Maintenance
    } else if !srv.options.region_failover {
        FailoverMode::Off
    } else {
        FailoverMode::On
    };
    let now = srv.clock.now();
    Ok(Json(
        routes
            .into_iter()
            .map(|r| {
                let health = srv.cluster.region_health(
                    now,
                    r.region_id,
                    r.leader,
                    migrating.get(&r.region_id).copied(),
                    unavailable.remove(&r.region_id),
                    failover,
                    srv.options.region_lease,
                );
                RegionView {
                    lease_state: health.lease_state.label(),
                    availability: health.availability(),
                    migrating_to: health.migrating_to,
                    reason: health.reason,
                    region_id: r.region_id,
                    leader: r.leader,
                    followers: r.followers,
                    epoch: r.epoch,
                }
            })
            .collect(),
    ))
}

async fn create_region(
    State(srv): State<AdminState>,
    body: Result<Json<CreateRegion>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req = json_body(body, "request body")?;
    let route = srv.admin.create_region(req).await?;
    Ok((StatusCode::CREATED, Json(json!(route))))
}

async fn drop_region(
    State(srv): State<AdminState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let region_id = path_id(id)?;
    let route = srv.admin.drop_region(region_id).await?;
    Ok(Json(json!({ "dropped": route })))
}

async fn handler_timings(State(srv): State<AdminState>) -> Json<serde_json::Value> {
    let timings: Vec<_> = srv
        .group
        .timings()
        .into_iter()
        .map(|t| json!({ "name": t.name, "calls": t.calls, "errors": t.errors, "refusals": t.refusals, "total_nanos": t.total_nanos }))
        .collect();
    Json(json!(timings))
}

/// Query of `POST /nodes/{id}/instructions`; unknown parameters are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstructionQuery {
    /// Reply timeout in milliseconds (default: the configured mailbox timeout).
    timeout_ms: Option<u64>,
    /// Read by the forwarder (answer on this member); accepted here.
    #[serde(rename = "local")]
    _local: Option<String>,
}

/// Sends any instruction to a datanode and returns its reply: the operator's tool for
/// open, close, downgrade and upgrade by hand.
async fn send_instruction(
    State(srv): State<AdminState>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    q: Result<Query<InstructionQuery>, QueryRejection>,
    body: Result<Json<common_proto::Instruction>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = path_id(id)?;
    let q = query(q)?;
    let timeout = millis("timeout_ms", q.timeout_ms, srv.options.mailbox_timeout)?;
    let ins = json_body(body, "instruction")?;
    // A node that is not connected to the leader is not found (502 is for a node that
    // answered badly): the mailbox's "no pusher" says it in its own terms.
    let rx = srv
        .mailbox
        .send(NodeKey::datanode(id), &ins, timeout)
        .map_err(|e| match e {
            Error::PusherNotFound { .. } if srv.gate.is_leader() => ApiError(
                StatusCode::NOT_FOUND,
                format!("datanode {id} is not connected to the leader"),
            ),
            e => e.into(),
        })?;
    let reply = rx.await?;
    Ok(Json(json!({ "ok": reply.is_ok(), "reply": reply })))
}

/// This metasrv's leadership terms and when it granted leases in each.
async fn leader_history(State(srv): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!(srv.gate.grants.terms()))
}

/// Gives up leadership now (for maintenance); this metasrv campaigns again later.
/// Refused (409) on a standalone metasrv: no other member could ever take over, so
/// resigning would leave it with no leader and every region readonly. (On etcd, members
/// that resigned a moment ago campaign again within a meta lease.)
async fn resign(State(srv): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    if !srv.election.can_hand_over() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "no other member could take over from {}: a standalone metasrv always leads; \
                 resigning would leave it with no leader and every region readonly",
                srv.options.advertised_addr()
            ),
        ));
    }
    let was_leader = srv.election.leadership().is_leader();
    srv.election.resign().await?;
    Ok(Json(json!({ "resigned": was_leader })))
}

/// The metasrv candidates and which one leads.
async fn cluster(State(srv): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let members = srv.election.members().await?;
    let leader = srv.election.leader().await?;
    let list: Vec<_> = members
        .iter()
        .map(|m| {
            let leads = leader.as_ref().is_some_and(|l| l.addr == m.addr);
            json!({
                "addr": m.addr,
                "http_addr": m.http_addr,
                "leader": leads,
                "version": m.version,
                "timings": m.timings,
            })
        })
        .collect();
    Ok(Json(json!({
        "leader": leader.as_ref().map(|l| &l.addr),
        "term": leader.as_ref().map(|l| l.term),
        "members": list,
        "members_with_other_timings": leader
            .as_ref()
            .map(|l| crate::timings::differing(&members, &l.addr).into_iter().map(|m| m.addr.clone()).collect::<Vec<_>>())
            .unwrap_or_default(),
        "maintenance": srv.maintenance.is_enabled(),
        "drained_nodes": srv.maintenance.drained(),
        "region_failover": srv.options.region_failover,
    })))
}

/// Imports routes in bulk, without instructing any node: for restoring a backup, or for
/// setting up a benchmark. Nodes pick their leases up on their next heartbeat.
async fn import_routes(
    State(srv): State<AdminState>,
    body: Result<Json<Vec<handlers::RegionRoute>>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let routes = json_body(body, "routes")?;
    if !srv.gate.is_leader() {
        return Err(Error::NotLeader {
            leader: srv.gate.leader_addr(),
        }
        .into());
    }
    // The same rule the heartbeat path applies: node 0 is reserved, so a route naming
    // it could never be granted.
    if let Some(bad) = routes
        .iter()
        .find(|r| r.leader == Some(0) || r.followers.contains(&0))
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "route for region {} names node 0, which is reserved; node ids start at 1",
                bad.region_id
            ),
        ));
    }
    // S1: a leader changes only through a move, which fences the route and waits out
    // (or downgrades) the old owner; a grant names the route's leader, and the node it
    // names opens the region and writes. An import that named another leader would hand
    // the region over with the old owner's lease still live.
    for route in &routes {
        let current = srv
            .routes
            .get(route.region_id)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Some(current) = current.filter(|c| c.leader != route.leader) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "region {} is led by {:?}; an import cannot name another leader ({:?}): \
                     move it with POST /regions/{}/migrate, which waits out the old owner",
                    route.region_id, current.leader, route.leader, route.region_id
                ),
            ));
        }
    }
    let n = srv
        .routes
        .put_many(routes)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "imported": n })))
}
