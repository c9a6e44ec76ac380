//! The admin token: every mutating request (POST, PUT, PATCH, DELETE) must carry
//! `Authorization: Bearer <admin_token>` when one is configured; reads stay open, so
//! probes, dashboards and scrapers need no secret. A refusal is 401 with
//! `WWW-Authenticate: Bearer` and a JSON reason.
//!
//! This layer runs before forwarding: a follower refuses a request without the token
//! itself, and forwards the header with the rest, so the leader checks it again.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AdminState, ApiError};

/// Equal without an early exit, so the comparison time says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware.
pub(super) async fn layer(State(srv): State<AdminState>, req: Request, next: Next) -> Response {
    let token = &srv.options.admin_token;
    if token.is_empty() || !mutating(req.method()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 7235).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    match presented {
        Some(p) if same(p.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        other => {
            let reason = if other.is_some() {
                "the admin token does not match"
            } else {
                "this request changes the cluster and needs the admin token: Authorization: Bearer <token> (metactl --token, or METACTL_TOKEN)"
            };
            let mut resp = ApiError(StatusCode::UNAUTHORIZED, reason.into()).into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_identical_token_matches_and_only_writes_need_one() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cret2"));
        assert!(!same(b"", b"x"));
        assert!(mutating(&Method::POST) && mutating(&Method::DELETE) && mutating(&Method::PUT));
        assert!(!mutating(&Method::GET) && !mutating(&Method::HEAD));
    }
}
