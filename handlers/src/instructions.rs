//! [`InstructionSender`]: the port through which a handler sends instructions to nodes.
//!
//! A handler answers the node whose heartbeat it handles through the accumulator (its
//! `mailbox_message` rides on the response). To reach *other* nodes (close a region on
//! a node that reported it twice, ask a frontend to refresh), it uses this port: the
//! metasrv's mailbox, behind a narrow trait so handlers stay testable without a server.
//! [`Context::mailbox`](crate::Context::mailbox) holds it; it is `None` where no
//! mailbox exists (the in-memory context of unit tests and examples).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common_proto::{Instruction, InstructionReply};

use crate::{NodeKey, Result};

/// Sends instructions down nodes' heartbeat streams.
#[async_trait]
pub trait InstructionSender: Send + Sync + Debug {
    /// Sends without waiting for a reply; fails at once if the node is not connected.
    fn send_oneway(&self, node: NodeKey, instruction: &Instruction) -> Result<()>;

    /// Sends and waits up to `timeout` for the node's reply.
    async fn instruct(
        &self,
        node: NodeKey,
        instruction: &Instruction,
        timeout: Duration,
    ) -> Result<InstructionReply>;
}

/// Shared sender handle.
pub type InstructionSenderRef = Arc<dyn InstructionSender>;
