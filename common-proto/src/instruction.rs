//! Typed mailbox payloads: what the metasrv asks a node to do, and what the node answers.
//!
//! Instructions are a closed set, so they are an enum rather than trait objects. Every
//! instruction is idempotent on the datanode: a redelivered one gives the same result.
//! Replies echo the mailbox message id (in the [`MailboxMessage`] envelope), which is how
//! the metasrv matches them to the waiting sender.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{DecodePayloadSnafu, EncodePayloadSnafu, Result};
use crate::v1::MailboxMessage;

/// Names one region on one node; the payload of most instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionIdent {
    /// The region (shard) id.
    pub region_id: u64,
}

/// The role an `OpenRegion` asks for. A string enum rather than the proto enum so the JSON
/// stays readable (`"leader"`), and so there is no "unspecified" to mis-handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenRole {
    /// Open to take writes once a leader lease arrives.
    Leader,
    /// Open read-only, following a leader elsewhere.
    Follower,
}

/// What the metasrv asks a node to do with a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Instruction {
    /// Open (or create) the region. It stays readonly until a lease arrives.
    OpenRegion {
        /// The region to open.
        region_id: u64,
        /// The role to open it in.
        role: OpenRole,
        /// The route's region epoch (see `handlers::route`); 0 from a metasrv that
        /// predates epochs.
        #[serde(default)]
        epoch: u64,
    },
    /// Close the region and forget its lease.
    CloseRegion(RegionIdent),
    /// Leader → readonly follower, after a flush, so another node can take over.
    DowngradeRegion(RegionIdent),
    /// Follower → leader; writes start once the leader lease arrives, under `epoch`.
    UpgradeRegion {
        /// The region.
        region_id: u64,
        /// The route's region epoch that names this node leader.
        #[serde(default)]
        epoch: u64,
    },
}

impl Instruction {
    /// The mailbox subject, so operators can read what a message is without parsing it.
    pub fn subject(&self) -> &'static str {
        match self {
            Instruction::OpenRegion { .. } => "open_region",
            Instruction::CloseRegion(_) => "close_region",
            Instruction::DowngradeRegion(_) => "downgrade_region",
            Instruction::UpgradeRegion { .. } => "upgrade_region",
        }
    }

    /// The region the instruction is about.
    pub fn region_id(&self) -> u64 {
        match self {
            Instruction::OpenRegion { region_id, .. }
            | Instruction::UpgradeRegion { region_id, .. } => *region_id,
            Instruction::CloseRegion(r) | Instruction::DowngradeRegion(r) => r.region_id,
        }
    }
}

/// The outcome of one region instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionReply {
    /// The region the instruction was about.
    pub region_id: u64,
    /// Whether the node now is in the requested state.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A reply to a message the node could not understand at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// What was wrong with the message.
    pub message: String,
}

/// What a node answers to an [`Instruction`], one variant per instruction kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InstructionReply {
    /// Answer to `OpenRegion`.
    OpenRegion(RegionReply),
    /// Answer to `CloseRegion`.
    CloseRegion(RegionReply),
    /// Answer to `DowngradeRegion`.
    DowngradeRegion(RegionReply),
    /// Answer to `UpgradeRegion`.
    UpgradeRegion(RegionReply),
    /// The message was not a valid instruction (bad JSON, unknown type).
    Error(ReplyError),
}

impl InstructionReply {
    /// Whether the instruction succeeded.
    pub fn is_ok(&self) -> bool {
        self.failure().is_none()
    }

    /// Why the instruction failed, or `None` if it succeeded.
    pub fn failure(&self) -> Option<String> {
        match self {
            InstructionReply::OpenRegion(r)
            | InstructionReply::CloseRegion(r)
            | InstructionReply::DowngradeRegion(r)
            | InstructionReply::UpgradeRegion(r) => match (r.ok, &r.error) {
                (true, _) => None,
                (false, Some(e)) => Some(e.clone()),
                (false, None) => Some("no reason given".to_string()),
            },
            InstructionReply::Error(e) => Some(e.message.clone()),
        }
    }

    /// The mailbox subject for the reply envelope.
    pub fn subject(&self) -> &'static str {
        match self {
            InstructionReply::OpenRegion(_) => "open_region_reply",
            InstructionReply::CloseRegion(_) => "close_region_reply",
            InstructionReply::DowngradeRegion(_) => "downgrade_region_reply",
            InstructionReply::UpgradeRegion(_) => "upgrade_region_reply",
            InstructionReply::Error(_) => "error_reply",
        }
    }
}

/// JSON encoding shared by both payload types, so the envelope rules live in one place.
pub trait JsonPayload: Serialize + DeserializeOwned {
    /// Names the payload type in error messages.
    const KIND: &'static str;

    /// The mailbox subject for this payload.
    fn payload_subject(&self) -> &'static str;

    /// Serializes to JSON.
    fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).context(EncodePayloadSnafu { kind: Self::KIND })
    }

    /// Parses from JSON; the subject only labels the error.
    fn from_json(json: &str, subject: &str) -> Result<Self> {
        serde_json::from_str(json).context(DecodePayloadSnafu {
            kind: Self::KIND,
            subject,
        })
    }

    /// Parses the payload of a mailbox message.
    fn from_mailbox_message(msg: &MailboxMessage) -> Result<Self> {
        Self::from_json(&msg.json, &msg.subject)
    }

    /// Wraps the payload in a mailbox envelope. `id` is 0 for one-way messages; a reply
    /// carries the id of the message it answers.
    fn to_mailbox_message(&self, id: u64, from: &str, to: &str) -> Result<MailboxMessage> {
        Ok(MailboxMessage {
            id,
            subject: self.payload_subject().to_string(),
            from: from.to_string(),
            to: to.to_string(),
            timestamp_millis: crate::unix_millis() as i64,
            json: self.to_json()?,
        })
    }
}

impl JsonPayload for Instruction {
    const KIND: &'static str = "instruction";
    fn payload_subject(&self) -> &'static str {
        self.subject()
    }
}

impl JsonPayload for InstructionReply {
    const KIND: &'static str = "instruction reply";
    fn payload_subject(&self) -> &'static str {
        self.subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_instructions() -> Vec<Instruction> {
        vec![
            Instruction::OpenRegion {
                region_id: 1,
                role: OpenRole::Leader,
                epoch: 4,
            },
            Instruction::OpenRegion {
                region_id: 2,
                role: OpenRole::Follower,
                epoch: 0,
            },
            Instruction::CloseRegion(RegionIdent { region_id: 3 }),
            Instruction::DowngradeRegion(RegionIdent { region_id: 4 }),
            Instruction::UpgradeRegion {
                region_id: 5,
                epoch: 6,
            },
        ]
    }

    #[test]
    fn every_instruction_round_trips_through_a_mailbox_message() {
        for ins in all_instructions() {
            let msg = ins
                .to_mailbox_message(17, "metasrv", "datanode-1")
                .expect("encode");
            assert_eq!(msg.id, 17);
            assert_eq!(msg.subject, ins.subject());
            let back = Instruction::from_mailbox_message(&msg).expect("decode");
            assert_eq!(back, ins);
        }
    }

    #[test]
    fn instruction_json_is_tagged_and_readable() {
        let json = Instruction::OpenRegion {
            region_id: 9,
            role: OpenRole::Leader,
            epoch: 2,
        }
        .to_json()
        .expect("encode");
        assert_eq!(
            json,
            r#"{"type":"open_region","region_id":9,"role":"leader","epoch":2}"#
        );
        // From a metasrv that predates epochs: epoch 0.
        let old = Instruction::from_json(r#"{"type":"upgrade_region","region_id":9}"#, "x")
            .expect("decode");
        assert_eq!(
            old,
            Instruction::UpgradeRegion {
                region_id: 9,
                epoch: 0
            }
        );
    }

    #[test]
    fn every_reply_round_trips() {
        let r = RegionReply {
            region_id: 1,
            ok: false,
            error: Some("no such region".into()),
        };
        let replies = vec![
            InstructionReply::OpenRegion(r.clone()),
            InstructionReply::CloseRegion(r.clone()),
            InstructionReply::DowngradeRegion(r.clone()),
            InstructionReply::UpgradeRegion(RegionReply {
                ok: true,
                error: None,
                ..r
            }),
            InstructionReply::Error(ReplyError {
                message: "bad json".into(),
            }),
        ];
        for reply in replies {
            let msg = reply
                .to_mailbox_message(5, "datanode-1", "metasrv")
                .expect("encode");
            assert_eq!(
                InstructionReply::from_mailbox_message(&msg).expect("decode"),
                reply
            );
        }
    }

    #[test]
    fn failure_names_the_reason_and_is_none_on_success() {
        let ok = RegionReply {
            region_id: 1,
            ok: true,
            error: None,
        };
        let failed = RegionReply {
            region_id: 1,
            ok: false,
            error: Some("no such region".into()),
        };
        let silent = RegionReply {
            region_id: 1,
            ok: false,
            error: None,
        };
        assert_eq!(InstructionReply::UpgradeRegion(ok).failure(), None);
        assert_eq!(
            InstructionReply::OpenRegion(failed).failure().as_deref(),
            Some("no such region")
        );
        assert_eq!(
            InstructionReply::CloseRegion(silent).failure().as_deref(),
            Some("no reason given")
        );
        let bad = InstructionReply::Error(ReplyError {
            message: "bad json".into(),
        });
        assert_eq!(bad.failure().as_deref(), Some("bad json"));
        assert!(!bad.is_ok());
    }

    #[test]
    fn invalid_json_is_a_typed_error_naming_the_subject() {
        let err = Instruction::from_json("{not json", "open_region").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("invalid instruction JSON"), "{text}");
        assert!(text.contains("open_region"), "{text}");
        let err = Instruction::from_json(r#"{"type":"format_disk"}"#, "x").unwrap_err();
        assert!(err.to_string().contains("format_disk"), "{err}");
    }
}
