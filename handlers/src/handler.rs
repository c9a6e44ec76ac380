//! The [`HeartbeatHandler`] trait: one step of the heartbeat pipeline.

use async_trait::async_trait;
use common_proto::v1::Role;

use crate::{Context, Heartbeat, HeartbeatAccumulator, Result};

/// What the group does after a handler returns `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleControl {
    /// Run the next handler.
    Continue,
    /// Stop here: the accumulator is the response. CheckLeader uses this on a follower so
    /// that nothing after it can grant or record a lease.
    Done,
}

/// What the group does when a handler returns `Err`.
///
/// Either way the error is recorded in the response header (`handler_failures`), counted
/// in the handler's timing, and logged with the handler's name. The policy only decides
/// whether the rest of the chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Go on with the next handler. The default: a failing metrics, persistence or
    /// operator handler must never cost a node its lease.
    Continue,
    /// Stop the chain. For handlers whose failure makes every later step meaningless,
    /// such as a gate that could not decide whether to admit a node: granting a lease to a
    /// node nobody admitted would be wrong.
    Stop,
}

/// One step of the heartbeat pipeline.
///
/// # Contract
/// - `name` is explicit and unique within a group; the builder addresses handlers by it
///   (GreptimeDB derives names from `type_name`, which breaks on renames and lets the
///   first of two equal types win).
/// - `is_acceptable` filters by the sender's role; a handler that does not accept the
///   role is skipped, and not timed.
/// - `handle` reads the [`Heartbeat`] (already validated: the sender's key, its regions
///   and extensions are typed) and writes into the accumulator. Hold no lock across an
///   await, and keep it cheap: it runs for every heartbeat of every node.
///
/// # Errors
/// Returning `Err` records a failure in the response header and logs it; whether later
/// handlers still run is this handler's [`ErrorPolicy`] (default [`ErrorPolicy::Continue`]).
/// To refuse a request deliberately, set an error on the accumulator and return
/// `Ok(HandleControl::Done)` instead.
#[async_trait]
pub trait HeartbeatHandler: Send + Sync + 'static {
    /// The handler's unique name, e.g. `keep_lease`.
    fn name(&self) -> &str;

    /// Whether this handler runs for heartbeats from `role`.
    fn is_acceptable(&self, role: Role) -> bool;

    /// What a failure of this handler does to the rest of the chain.
    fn error_policy(&self) -> ErrorPolicy {
        ErrorPolicy::Continue
    }

    /// Processes one heartbeat.
    async fn handle(
        &self,
        hb: &Heartbeat,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl>;
}
