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

/// The error and every source under it, joined: TLS failures hide their reason (an
/// unknown issuer, a name mismatch) a few sources down, under "transport error".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A hint for a TLS failure an operator can act on, from an error chain's text.
pub fn tls_hint(chain: &str) -> Option<&'static str> {
    let c = chain.to_ascii_lowercase();
    if c.contains("unknownissuer") || c.contains("unknown issuer") {
        Some("the peer's certificate is not signed by the CA given (tls_ca)")
    } else if c.contains("notvalidforname") || c.contains("not valid for name") {
        Some("the peer's certificate does not carry the host dialled: add it to the certificate, or set tls_server_name")
    } else if c.contains("certificaterequired") || c.contains("certificate required") {
        Some("the peer requires a client certificate (tls_cert, tls_key)")
    } else if c.contains("frame_size_error")
        || c.contains("frame with invalid size")
        || c.contains("http/0.9")
        || c.contains("corrupt message")
        || c.contains("invalidcontenttype")
    {
        Some("TLS on one side only: is the peer serving TLS (then set tls_ca), or plaintext?")
    } else {
        None
    }
}

/// The error chain with a TLS hint appended when one applies: what a log line or a
/// start-up error should say about a failed connection.
pub fn explain(err: &(dyn std::error::Error + 'static)) -> String {
    let chain = error_chain(err);
    match tls_hint(&chain) {
        Some(hint) => format!("{chain} (hint: {hint})"),
        None => chain,
    }
}
