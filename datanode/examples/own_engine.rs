//! A datanode with its own storage engine: the heartbeat task, the RegionAliveKeeper and
//! the instruction handling come from the library; the engine only keeps its regions,
//! checks the lease on every write, and stamps each row with the region epoch of its
//! ticket, refusing a row under an epoch older than the newest it has seen (the fencing
//! rule in `datanode::engine`; real storage applies it where the data lives).
//!
//! Run against a metasrv on the default address: `cargo run -p datanode --example own_engine`

use std::collections::HashMap;
use std::sync::Arc;

use datanode::{
    async_trait, Error, HeartbeatBuilder, RegionEngine, RegionInfo, RegionLeases, RegionRole,
};
use parking_lot::Mutex;

/// One region: its role, the newest region epoch seen, and rows stamped with theirs.
#[derive(Debug)]
struct Region {
    role: RegionRole,
    epoch: u64,
    rows: Vec<(u64, String)>,
}

/// Regions as lists of rows, in memory.
#[derive(Debug)]
struct VecEngine {
    regions: Mutex<HashMap<u64, Region>>,
    leases: Arc<RegionLeases>,
}

impl VecEngine {
    /// The write path: a leader's write, inside its lease (checked again before the ack),
    /// stamped with the ticket's region epoch and refused under an older one.
    fn write(&self, region_id: u64, row: String) -> datanode::Result<()> {
        let ticket = self.leases.begin_write(region_id)?;
        let epoch = ticket.region_epoch();
        let mut regions = self.regions.lock();
        match regions.get_mut(&region_id) {
            Some(r) if r.role == RegionRole::Leader && epoch >= r.epoch => {
                r.epoch = epoch;
                r.rows.push((epoch, row));
            }
            _ => return Err(Error::engine(format!("region {region_id} is not led here"))),
        }
        ticket.confirm()
    }

    fn info(region_id: u64, r: &Region) -> RegionInfo {
        let rows = r.rows.len() as u64;
        RegionInfo {
            region_id,
            role: r.role,
            rows,
            bytes: r.rows.iter().map(|(_, row)| row.len() as u64).sum(),
            reads: 0,
            writes: rows,
            shared_storage: false,
            epoch: r.epoch,
            unavailable: None,
        }
    }
}

#[async_trait]
impl RegionEngine for VecEngine {
    fn regions(&self) -> Vec<RegionInfo> {
        let regions = self.regions.lock();
        regions.iter().map(|(id, r)| Self::info(*id, r)).collect()
    }

    fn region(&self, region_id: u64) -> Option<RegionInfo> {
        let regions = self.regions.lock();
        regions.get(&region_id).map(|r| Self::info(region_id, r))
    }

    async fn open_region(
        &self,
        region_id: u64,
        role: RegionRole,
        epoch: u64,
    ) -> datanode::Result<()> {
        let mut regions = self.regions.lock();
        let r = regions.entry(region_id).or_insert_with(|| Region {
            role,
            epoch,
            rows: Vec::new(),
        });
        r.role = role;
        r.epoch = r.epoch.max(epoch);
        Ok(())
    }

    async fn close_region(&self, region_id: u64) -> datanode::Result<bool> {
        let mut regions = self.regions.lock();
        Ok(regions.remove(&region_id).is_some())
    }

    fn set_role(&self, region_id: u64, role: RegionRole, epoch: u64) -> datanode::Result<()> {
        let mut regions = self.regions.lock();
        let region = regions
            .get_mut(&region_id)
            .ok_or(Error::RegionNotFound { region_id })?;
        region.role = role;
        region.epoch = region.epoch.max(epoch);
        Ok(())
    }

    async fn flush(&self, _region_id: u64) -> datanode::Result<()> {
        Ok(()) // nothing to make durable in memory
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let leases = RegionLeases::new(datanode::DEFAULT_LEASE_MARGIN);
    let engine = Arc::new(VecEngine {
        regions: Mutex::default(),
        leases: leases.clone(),
    });
    engine.open_region(1, RegionRole::Leader, 1).await?; // a route to node 7 must name it
    let heartbeat = HeartbeatBuilder::new(7, vec!["127.0.0.1:3002".into()])
        .advertise_addr("127.0.0.1:4007")
        .start(engine.clone(), leases)?;
    // Refused until the metasrv grants region 1 a lease, accepted while it holds one.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => match engine.write(1, "hello".into()) {
                Ok(()) => println!("written"),
                Err(e) => println!("refused: {e}"),
            },
        }
    }
    heartbeat.stop();
    Ok(())
}
