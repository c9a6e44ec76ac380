//! Typed errors for the pipeline, its builder and its ports.
//!
//! One small enum for the crate. Each variant names the step that failed and keeps its
//! source, so a log line says which handler, key or name was involved.

use snafu::Snafu;

/// A boxed error from a port implementation (etcd, a custom store), kept as the source.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from building a handler group, running handlers, or using a port.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub))]
pub enum Error {
    /// A builder operation named a handler the group does not have.
    #[snafu(display("cannot {op}: no handler named {name:?} in the group (have: {known})"))]
    UnknownHandler {
        /// The builder operation (`insert_before`, `replace`, …).
        op: &'static str,
        /// The name that was not found.
        name: String,
        /// The names the group has, comma separated, to make the fix obvious.
        known: String,
    },
    /// Two handlers would share a name; names must be unique so they can be addressed.
    #[snafu(display("duplicate handler name {name:?}: handler names must be unique"))]
    DuplicateHandler {
        /// The clashing name.
        name: String,
    },
    /// A handler returned an empty name.
    #[snafu(display("handler names must not be empty"))]
    EmptyHandlerName,
    /// The request is malformed; `reason` names the field.
    #[snafu(display("invalid heartbeat request: {reason}"))]
    InvalidRequest {
        /// What is wrong, e.g. "missing header".
        reason: String,
    },
    /// A KV backend operation failed.
    #[snafu(display("{backend} KV backend failed to {op} key {key:?}: {source}"))]
    Kv {
        /// The backend name (`memory`, `etcd`).
        backend: &'static str,
        /// The operation.
        op: &'static str,
        /// The key (lossy UTF-8) or prefix.
        key: String,
        /// The backend's error.
        source: BoxedError,
    },
    /// A stored value could not be decoded.
    #[snafu(display("corrupt value at key {key:?}: {source}"))]
    CorruptValue {
        /// The key whose value was bad.
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// Encoding a value for storage failed.
    #[snafu(display("failed to encode value for key {key:?}: {source}"))]
    EncodeValue {
        /// The key being written.
        key: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A compare-and-put found another writer's value: someone else acted meanwhile.
    #[snafu(display("the value at key {key:?} changed while {what}"))]
    Conflict {
        /// The key that changed.
        key: String,
        /// What was being done.
        what: String,
    },
    /// A route change that breaks the epoch rule (see `route`): a caller's mistake,
    /// refused before anything is written.
    #[snafu(display("invalid change to the route of region {region_id}: {reason}"))]
    InvalidRouteChange {
        /// The region.
        region_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A custom (operator) handler failed for its own reason.
    #[snafu(display("{message}"))]
    Custom {
        /// What went wrong, in the handler's words.
        message: String,
    },
}

impl Error {
    /// Shorthand for operators' handlers: `return Err(Error::custom("quota store down"))`.
    pub fn custom(message: impl Into<String>) -> Self {
        Error::Custom {
            message: message.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
