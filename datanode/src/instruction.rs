//! Instruction handlers: what a datanode does with each mailbox instruction.
//!
//! Every handler is idempotent (a redelivered instruction gives the same result) and
//! answers with an [`InstructionReply`]; a message that is not a valid instruction gets an
//! `Error` reply, never a panic.
//! - `OpenRegion`: open in the given role under the route's region epoch, **readonly**
//!   until a lease arrives.
//! - `CloseRegion`: close and stop tracking its lease; closing an absent region is ok.
//! - `DowngradeRegion`: leader → readonly follower: revoke the lease (fenced, so a late
//!   grant cannot revive it), flush, then hand over the role, so another node can take
//!   over without losing acknowledged writes.
//! - `UpgradeRegion`: follower → leader under the epoch naming this node; writable once
//!   the leader lease arrives, and its first write fences the old owner's storage. A
//!   region not open here is opened as the leader: the metasrv upgrades only after the
//!   route names this node, so the upgrade is the authority whatever happened to the
//!   follower copy.

use std::sync::Arc;

use common_proto::instruction::OpenRole;
use common_proto::v1::{MailboxMessage, RegionRole};
use common_proto::{Instruction, InstructionReply, JsonPayload, RegionReply, ReplyError};
use tracing::{info, warn};

use crate::alive_keeper::RegionAliveKeeper;
use crate::engine::RegionEngineRef;
use crate::Result;

/// Runs instructions against the engine and the keeper.
#[derive(Debug, Clone)]
pub struct InstructionHandler {
    engine: RegionEngineRef,
    keeper: Arc<RegionAliveKeeper>,
}

fn reply(region_id: u64, result: Result<()>) -> RegionReply {
    match result {
        Ok(()) => RegionReply {
            region_id,
            ok: true,
            error: None,
        },
        Err(err) => RegionReply {
            region_id,
            ok: false,
            error: Some(err.to_string()),
        },
    }
}

impl InstructionHandler {
    /// A handler over `engine` and `keeper`.
    pub fn new(engine: RegionEngineRef, keeper: Arc<RegionAliveKeeper>) -> Self {
        Self { engine, keeper }
    }

    /// Decodes and runs one mailbox message; always returns a reply.
    pub async fn handle_message(&self, msg: &MailboxMessage) -> InstructionReply {
        match Instruction::from_mailbox_message(msg) {
            Ok(ins) => self.handle(ins).await,
            Err(err) => {
                warn!(id = msg.id, subject = msg.subject, error = %err, "invalid instruction");
                InstructionReply::Error(ReplyError {
                    message: err.to_string(),
                })
            }
        }
    }

    /// Runs one instruction.
    pub async fn handle(&self, ins: Instruction) -> InstructionReply {
        let region_id = ins.region_id();
        info!(
            region_id,
            instruction = ins.subject(),
            "handling instruction"
        );
        match ins {
            Instruction::OpenRegion { role, epoch, .. } => {
                let role = match role {
                    OpenRole::Leader => RegionRole::Leader,
                    OpenRole::Follower => RegionRole::Follower,
                };
                InstructionReply::OpenRegion(reply(
                    region_id,
                    self.open(region_id, role, epoch).await,
                ))
            }
            Instruction::CloseRegion(_) => {
                let res = self.keeper.close(region_id).await.map(|_| ());
                InstructionReply::CloseRegion(reply(region_id, res))
            }
            Instruction::DowngradeRegion(_) => {
                let res = self.downgrade(region_id).await;
                InstructionReply::DowngradeRegion(reply(region_id, res))
            }
            Instruction::UpgradeRegion { epoch, .. } => {
                let res = if self.engine.region(region_id).is_none() && self.engine.shared_storage()
                {
                    // Not open here, on shared storage: this node restarted without it,
                    // or was told to close its follower copy while a move resumed after a
                    // metasrv restart lagged the route. The metasrv upgrades only after
                    // the switch, so the route names this node the leader under `epoch`:
                    // it is opened so.
                    warn!(
                        region_id,
                        epoch, "upgrade of a region not open here; opening it as the leader"
                    );
                    self.open(region_id, RegionRole::Leader, epoch).await
                } else {
                    self.keeper.upgrade(region_id, epoch)
                };
                InstructionReply::UpgradeRegion(reply(region_id, res))
            }
        }
    }

    /// Opens a region the metasrv's lease names this node the leader of, though it is not
    /// open here (see `RegionAliveKeeper::on_lease`). Only on shared storage: a region on
    /// this node's own disk that is not open here has no data to open, and opening it
    /// would serve an empty region.
    pub async fn open_granted(&self, region_id: u64, epoch: u64) {
        if !self.engine.shared_storage() {
            warn!(
                region_id,
                epoch, "the metasrv routes this region here as the leader, but it is not open here and not on shared storage"
            );
            return;
        }
        info!(
            region_id,
            epoch, "opening a region the metasrv routes here as the leader"
        );
        if let Err(err) = self.open(region_id, RegionRole::Leader, epoch).await {
            warn!(region_id, epoch, error = %err, "cannot open a region routed here");
        }
    }

    /// Opens a region in `role` under `epoch`, and tracks its lease.
    async fn open(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<()> {
        self.engine.open_region(region_id, role, epoch).await?;
        self.keeper.register(region_id);
        self.keeper.leases().raise_region_epoch(region_id, epoch);
        Ok(())
    }

    async fn downgrade(&self, region_id: u64) -> Result<()> {
        // Stop writes first, then flush what was acknowledged, then hand over the role.
        self.keeper.leases().revoke(region_id);
        self.engine.flush(region_id).await?;
        let epoch = self.keeper.leases().region_epoch(region_id).unwrap_or(0);
        self.engine.set_role(region_id, RegionRole::Follower, epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RegionEngine;
    use crate::MemoryRegionEngine;
    use common_proto::RegionIdent;

    fn setup() -> (Arc<MemoryRegionEngine>, InstructionHandler) {
        let leases = crate::RegionLeases::new(std::time::Duration::ZERO);
        let engine = Arc::new(MemoryRegionEngine::new(leases.clone()));
        let keeper = RegionAliveKeeper::new(engine.clone(), leases);
        (engine.clone(), InstructionHandler::new(engine, keeper))
    }

    /// An engine whose region logs are on shared storage under `dir`, and its handler.
    fn on_shared_storage(dir: &tempfile::TempDir) -> (Arc<MemoryRegionEngine>, InstructionHandler) {
        let leases = crate::RegionLeases::new(std::time::Duration::ZERO);
        let engine = Arc::new(
            MemoryRegionEngine::open_with(
                &dir.path().join("node"),
                Some(&dir.path().join("shared")),
                leases.clone(),
            )
            .expect("engine"),
        );
        let keeper = RegionAliveKeeper::new(engine.clone(), leases);
        (engine.clone(), InstructionHandler::new(engine, keeper))
    }

    #[tokio::test]
    async fn every_instruction_is_idempotent() {
        let (engine, h) = setup();
        let open = Instruction::OpenRegion {
            region_id: 1,
            role: OpenRole::Leader,
            epoch: 1,
        };
        for _ in 0..2 {
            assert!(h.handle(open.clone()).await.is_ok());
            let r = engine.region(1).expect("open");
            assert_eq!(r.role, RegionRole::Leader);
            assert!(engine.write(1, "k", "v").is_err(), "opened readonly");
        }
        for _ in 0..2 {
            assert!(h
                .handle(Instruction::DowngradeRegion(RegionIdent { region_id: 1 }))
                .await
                .is_ok());
            assert_eq!(engine.region(1).expect("open").role, RegionRole::Follower);
        }
        for _ in 0..2 {
            assert!(h
                .handle(Instruction::UpgradeRegion {
                    region_id: 1,
                    epoch: 2
                })
                .await
                .is_ok());
            assert_eq!(engine.region(1).expect("open").role, RegionRole::Leader);
        }
        for _ in 0..2 {
            assert!(h
                .handle(Instruction::CloseRegion(RegionIdent { region_id: 1 }))
                .await
                .is_ok());
            assert!(engine.region(1).is_none());
        }
        let upgrade = Instruction::UpgradeRegion {
            region_id: 1,
            epoch: 3,
        };
        let reply = h.handle(upgrade.clone()).await;
        assert!(
            !reply.is_ok(),
            "upgrading an absent region on local storage fails clearly"
        );
        // On shared storage it is opened as the leader: the route names this node (the
        // simulation found a move whose target had closed its copy).
        let dir = tempfile::tempdir().expect("dir");
        let (engine, h) = on_shared_storage(&dir);
        for _ in 0..2 {
            assert!(h.handle(upgrade.clone()).await.is_ok());
            let r = engine.region(1).expect("opened by the upgrade");
            assert_eq!((r.role, r.epoch), (RegionRole::Leader, 3));
            assert!(engine.write(1, "k", "v").is_err(), "opened readonly");
        }
    }

    #[tokio::test]
    async fn a_region_granted_as_leader_is_opened_only_on_shared_storage() {
        let (local, h) = setup();
        h.open_granted(1, 4).await;
        assert!(
            local.region(1).is_none(),
            "no data here to open: left closed"
        );
        let dir = tempfile::tempdir().expect("dir");
        let (shared, h) = on_shared_storage(&dir);
        let leases = h.keeper.leases().clone();
        h.open_granted(1, 4).await;
        let r = shared.region(1).expect("opened");
        assert_eq!((r.role, r.epoch), (RegionRole::Leader, 4));
        assert!(leases.is_tracked(1), "its lease is tracked");
        assert_eq!(leases.region_epoch(1), Some(4));
    }

    #[tokio::test]
    async fn invalid_json_or_an_unknown_instruction_gets_an_error_reply() {
        let (_, h) = setup();
        for json in ["{oops", r#"{"type":"format_disk","region_id":1}"#] {
            let msg = MailboxMessage {
                id: 3,
                subject: "x".into(),
                json: json.into(),
                ..Default::default()
            };
            match h.handle_message(&msg).await {
                InstructionReply::Error(e) => {
                    assert!(e.message.contains("invalid instruction JSON"), "{e:?}")
                }
                other => panic!("expected an error reply, got {other:?}"),
            }
        }
    }
}
