//! The [`HeartbeatAccumulator`]: what the handlers build up, and the single place it
//! becomes a [`HeartbeatResponse`].

use std::collections::HashMap;
use std::sync::Arc;

use common_proto::v1::{
    Error as ProtoError, ErrorCode, HandlerFailure, HeartbeatConfig, HeartbeatResponse,
    MailboxMessage, RegionLease, ResponseHeader,
};
use common_proto::PROTOCOL_VERSION;

use crate::Stat;

/// The response under construction, shared by every handler of one heartbeat.
#[derive(Debug, Default)]
pub struct HeartbeatAccumulator {
    /// The cluster id echoed in the response header.
    pub cluster_id: u64,
    /// A request-level error (e.g. NOT_LEADER); the first one set wins.
    pub error: Option<ProtoError>,
    /// Handlers that failed while the chain went on.
    pub failures: Vec<HandlerFailure>,
    /// The stat this heartbeat contributes to the stats store: set by CollectStats, read
    /// by PersistStats; a handler between them may replace or drop it.
    pub stat: Option<Arc<Stat>>,
    /// The region leases granted, set by RegionLease.
    pub region_lease: Option<RegionLease>,
    /// An instruction for the node, if one is waiting.
    pub mailbox_message: Option<MailboxMessage>,
    /// Handshake-only timing config, set on a stream's first response.
    pub heartbeat_config: Option<HeartbeatConfig>,
    /// Free-form tags for operators' handlers.
    pub extensions: HashMap<String, String>,
}

impl HeartbeatAccumulator {
    /// An empty accumulator for a request from `cluster_id`.
    pub fn new(cluster_id: u64) -> Self {
        Self {
            cluster_id,
            ..Default::default()
        }
    }

    /// Sets the request-level error unless one is already set: the first cause is the
    /// one worth reporting.
    pub fn set_error(&mut self, code: ErrorCode, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(ProtoError {
                code: code as i32,
                message: message.into(),
            });
        }
    }

    /// The request-level error code, if any.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code())
    }

    /// Records a handler failure for the response header.
    pub fn record_failure(&mut self, handler: &str, message: String) {
        self.failures.push(HandlerFailure {
            handler: handler.to_string(),
            message,
        });
    }

    /// Turns the accumulator into the response. The only conversion, so every response
    /// carries the same header rules.
    pub fn into_response(self) -> HeartbeatResponse {
        HeartbeatResponse {
            header: Some(ResponseHeader {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: self.cluster_id,
                error: self.error,
                handler_failures: self.failures,
            }),
            region_lease: self.region_lease,
            mailbox_message: self.mailbox_message,
            heartbeat_config: self.heartbeat_config,
            extensions: self.extensions,
        }
    }
}
