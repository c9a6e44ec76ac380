//! Followers forward: every admin request that needs the leader's state is sent on to the
//! leader's admin HTTP, so any member gives the leader's answer (an operator, a script or
//! a load balancer need not find the leader first).
//!
//! - Answered by the member itself, always: `/health`, `/ready`, `/metrics`, `/leader`
//!   and `/leader/history`. They describe this process.
//! - `?local=true` answers any request from the member itself, for debugging what a
//!   follower holds.
//! - The leader (its gate open) answers itself. A member elected a moment ago waits, up
//!   to 2 s, for its state to load first.
//! - A follower forwards to the leader it has observed (every member watches the
//!   election), asking etcd only when it has observed none, and finds the leader's admin
//!   address in the members' records (cached per leader, so an etcd election in progress
//!   does not stop forwarding). It forwards method, path, query, headers and body; the
//!   leader's reply comes back as it is.
//! - No leader known, a leader without admin HTTP, or a leader that cannot be reached:
//!   503 (502 for a failed connection) with the reason in JSON. A forwarded request that
//!   reaches a member which is no longer leading is refused (503), never forwarded again,
//!   so a stale view can never loop.
//!
//! Every reply carries `x-metasrv-answered-by` (the advertised gRPC address of the member
//! whose state answered), and forwarded ones `x-metasrv-forwarded-by` too. An error this
//! member is sure reached no leader (no leader known, the leader's address unknown or
//! refusing connections, a forwarded request refused by a non-leader) carries
//! `x-metasrv-not-applied: true`: a client may send it again elsewhere. Any other error
//! of a forwarded request (the leader changed while it waited, its reply was lost) may
//! have been applied, and a non-idempotent request must not be repeated blindly. The one
//! exception is a resign: its leader going away while it waited is its success (200).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use handlers::LeadershipView as _;

use super::{AdminState, ApiError};

/// The member whose state answered a request.
pub const ANSWERED_BY: HeaderName = HeaderName::from_static("x-metasrv-answered-by");
/// The member that forwarded a request to the leader.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-metasrv-forwarded-by");
/// On an error reply: the request surely reached no leader, so it was not applied.
pub const NOT_APPLIED: HeaderName = HeaderName::from_static("x-metasrv-not-applied");

/// Paths every member answers about itself.
const LOCAL_PATHS: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/leader",
    "/leader/history",
];

/// How long a forwarded request may take (migrations wait up to their `wait_ms`).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// What followers forward with: an HTTP client (connections reused, HTTPS when TLS is
/// on) and the admin address of each leader seen.
#[derive(Clone, Debug)]
pub(crate) struct ForwardClient {
    http: Client<HttpsConnector<HttpConnector>, Body>,
    /// `http` or `https`: every member of a cluster serves its admin HTTP the same way.
    scheme: &'static str,
    /// Member gRPC address → its admin HTTP address.
    admin_addrs: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, String>>>,
}

/// A client for forwarding, with `TCP_NODELAY` like every other socket here. Under TLS it
/// verifies the leader against `tls_ca` and presents this member's certificate.
pub(crate) fn client(tls: &crate::tls::TlsFiles) -> crate::Result<ForwardClient> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.http_client()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(ForwardClient {
        http: Client::builder(TokioExecutor::new()).build(https),
        scheme: if tls.enabled() { "https" } else { "http" },
        admin_addrs: Default::default(),
    })
}

fn wants_local(uri: &Uri) -> bool {
    LOCAL_PATHS.contains(&uri.path())
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.eq_ignore_ascii_case("local=true") || kv == "local=1")
        })
}

fn stamp(mut resp: Response, header: HeaderName, who: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(who) {
        resp.headers_mut().insert(header, v);
    }
    resp
}

/// The middleware: answer here, or forward to the leader.
pub(super) async fn layer(State(srv): State<AdminState>, req: Request, next: Next) -> Response {
    let me = srv.options.advertised_addr().to_string();
    if wants_local(req.uri()) {
        return stamp(next.run(req).await, ANSWERED_BY, &me);
    }
    if srv.election.leadership().is_leader() && !srv.gate.is_leader() {
        srv.gate.wait_open(Duration::from_secs(2)).await;
    }
    if srv.gate.is_leader() {
        return stamp(next.run(req).await, ANSWERED_BY, &me);
    }
    let resp = if let Some(from) = req.headers().get(&FORWARDED_BY) {
        let from = String::from_utf8_lossy(from.as_bytes()).into_owned();
        not_applied(unavailable(format!(
            "{from} forwarded this request here, but this member ({me}) is not the leader \
             (any more); ask again"
        )))
    } else {
        match leader_http(&srv).await {
            Ok(target) => forward(&srv, req, &me, &target).await,
            Err(resp) => not_applied(resp),
        }
    };
    // An error this member made up itself (no leader, leader unreachable) names it.
    if resp.headers().contains_key(&ANSWERED_BY) {
        resp
    } else {
        stamp(resp, ANSWERED_BY, &me)
    }
}

/// Marks an error reply as surely not applied (see the module docs).
fn not_applied(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(NOT_APPLIED, HeaderValue::from_static("true"));
    resp
}

fn unavailable(reason: String) -> Response {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// The leader's admin address, or the 503 to answer with.
async fn leader_http(srv: &AdminState) -> Result<(String, String), Response> {
    let observed = srv.election.subscribe().borrow().leader_addr.clone();
    let leader = match observed {
        Some(addr) => addr,
        None => match srv.election.leader().await {
            Ok(Some(l)) => l.addr,
            Ok(None) => {
                return Err(unavailable(
                    "no leader is known: the election names none right now (an election may \
                     be under way); retry shortly, or add ?local=true for this member's own view"
                        .into(),
                ))
            }
            Err(err) => {
                return Err(unavailable(format!(
                    "cannot learn the leader to forward to: {err}"
                )))
            }
        },
    };
    if let Some(http) = srv.forwarder.admin_addrs.lock().get(&leader) {
        return Ok((leader, http.clone()));
    }
    let members =
        srv.election.members().await.map_err(|err| {
            unavailable(format!("cannot look up the leader's admin address: {err}"))
        })?;
    let mut known = srv.forwarder.admin_addrs.lock();
    for m in &members {
        if let Some(http) = &m.http_addr {
            known.insert(m.addr.clone(), http.clone());
        }
    }
    match members.into_iter().find(|m| m.addr == leader) {
        Some(m) => match m.http_addr {
            Some(http) => Ok((leader, http)),
            None => Err(unavailable(format!(
                "the leader {leader} serves no admin HTTP; ask it over gRPC, or add ?local=true"
            ))),
        },
        None => Err(unavailable(format!(
            "the leader {leader} has no member record yet; retry shortly"
        ))),
    }
}

async fn forward(
    srv: &AdminState,
    req: Request,
    me: &str,
    (leader, http): &(String, String),
) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let scheme = srv.forwarder.scheme;
    let uri = match format!("{scheme}://{http}{path}").parse::<Uri>() {
        Ok(u) => u,
        Err(e) => {
            return ApiError(
                StatusCode::BAD_GATEWAY,
                format!("the leader's admin address {http} is not usable: {e}"),
            )
            .into_response()
        }
    };
    parts.uri = uri;
    // The client may have spoken HTTP/2 (ALPN over TLS, h2c); the hop to the leader is
    // HTTP/1.1, so the request must say so or the client refuses to send it.
    parts.version = axum::http::Version::HTTP_11;
    parts.headers.remove(axum::http::header::HOST);
    if let Ok(v) = HeaderValue::from_str(me) {
        parts.headers.insert(FORWARDED_BY, v);
    }
    let outbound = Request::from_parts(parts, body);
    // A leader that stops answering (stalled, partitioned) is replaced within a meta
    // lease; the request then ends at once with the reason instead of waiting on it.
    let mut changes = srv.election.subscribe();
    let send = tokio::time::timeout(FORWARD_TIMEOUT, srv.forwarder.http.request(outbound));
    tokio::pin!(send);
    let mut watching = true;
    let sent = loop {
        tokio::select! {
            sent = &mut send => break sent,
            changed = changes.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let now = changes.borrow_and_update().leader_addr.clone();
                if now.as_deref() != Some(leader.as_str()) {
                    // The leader a resign reached went away: that is what a resign does.
                    if path.split('?').next() == Some("/leader/resign") {
                        return (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({
                                "resigned": true,
                                "leader": now,
                                "note": format!("the leader {leader} handed over while this resign was forwarded"),
                            })),
                        )
                            .into_response();
                    }
                    return unavailable(format!(
                        "the leader changed from {leader} to {} while this request waited on \
                         it (it may or may not have been applied there); ask again",
                        now.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
    };
    match sent {
        Ok(Ok(resp)) => {
            let mut resp = resp.map(Body::new);
            if !resp.headers().contains_key(&ANSWERED_BY) {
                resp = stamp(resp, ANSWERED_BY, leader);
            }
            stamp(resp, FORWARDED_BY, me)
        }
        Ok(Err(e)) => {
            let resp = ApiError(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the leader {leader} at {http}: {e}"),
            )
            .into_response();
            // Refused at connect: nothing was sent. Otherwise it may have been applied.
            if e.is_connect() {
                not_applied(resp)
            } else {
                resp
            }
        }
        Err(_) => ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the leader {leader} at {http} did not answer within {FORWARD_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_the_local_flag_stay_on_this_member() {
        let local = |s: &str| wants_local(&s.parse::<Uri>().expect("uri"));
        assert!(local("/health"));
        assert!(local("/leader"));
        assert!(local("/nodes?local=true"));
        assert!(local("/regions?x=1&local=1"));
        assert!(!local("/nodes"));
        assert!(!local("/nodes?local=false"));
        assert!(!local("/leader/resign"));
    }
}
