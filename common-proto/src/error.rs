//! Errors from encoding and decoding mailbox payloads.

use snafu::Snafu;

/// Why a mailbox payload could not be encoded or decoded.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The payload is not valid JSON for the expected type; the subject says which
    /// message it was, so the log line points at the sender.
    #[snafu(display("invalid {kind} JSON in mailbox message (subject {subject:?}): {source}"))]
    DecodePayload {
        /// `instruction` or `instruction reply`.
        kind: &'static str,
        /// The mailbox message subject.
        subject: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Serializing a payload failed (only possible for non-string map keys and the like).
    #[snafu(display("failed to encode {kind} as JSON: {source}"))]
    EncodePayload {
        /// `instruction` or `instruction reply`.
        kind: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
