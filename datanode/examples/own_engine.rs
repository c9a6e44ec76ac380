//! A datanode with its own storage engine: the heartbeat task, the RegionAliveKeeper and
//! the instruction handling come from the library; the engine only keeps its regions
//! and checks the lease on every write.
//!
//! Run against a metasrv on the default address: `cargo run -p datanode --example own_engine`

use std::collections::HashMap;
use std::sync::Arc;

use datanode::{
    async_trait, Error, HeartbeatBuilder, RegionEngine, RegionInfo, RegionLeases, RegionRole,
};
use parking_lot::Mutex;

/// Regions as lists of rows, in memory.
#[derive(Debug)]
struct VecEngine {
    regions: Mutex<HashMap<u64, (RegionRole, Vec<String>)>>,
    leases: Arc<RegionLeases>,
}

impl VecEngine {
    /// The write path: a leader's write, inside its lease (checked again before the ack).
    fn write(&self, region_id: u64, row: String) -> datanode::Result<()> {
        let ticket = self.leases.begin_write(region_id)?;
        let mut regions = self.regions.lock();
        match regions.get_mut(&region_id) {
            Some((RegionRole::Leader, rows)) => rows.push(row),
            _ => return Err(Error::engine(format!("region {region_id} is not led here"))),
        }
        ticket.confirm()
    }

    fn info(region_id: u64, role: RegionRole, rows: &[String]) -> RegionInfo {
        let (rows, bytes) = (rows.len() as u64, rows.iter().map(|r| r.len() as u64).sum());
        RegionInfo {
            region_id,
            role,
            rows,
            bytes,
            reads: 0,
            writes: rows,
            shared_storage: false,
        }
    }
}

#[async_trait]
impl RegionEngine for VecEngine {
    fn regions(&self) -> Vec<RegionInfo> {
        let regions = self.regions.lock();
        regions
            .iter()
            .map(|(id, (role, rows))| Self::info(*id, *role, rows))
            .collect()
    }

    fn region(&self, region_id: u64) -> Option<RegionInfo> {
        let regions = self.regions.lock();
        regions
            .get(&region_id)
            .map(|(role, rows)| Self::info(region_id, *role, rows))
    }

    async fn open_region(&self, region_id: u64, role: RegionRole) -> datanode::Result<()> {
        let mut regions = self.regions.lock();
        regions
            .entry(region_id)
            .or_insert_with(|| (role, Vec::new()))
            .0 = role;
        Ok(())
    }

    async fn close_region(&self, region_id: u64) -> datanode::Result<bool> {
        let mut regions = self.regions.lock();
        Ok(regions.remove(&region_id).is_some())
    }

    fn set_role(&self, region_id: u64, role: RegionRole) -> datanode::Result<()> {
        let mut regions = self.regions.lock();
        let region = regions
            .get_mut(&region_id)
            .ok_or(Error::RegionNotFound { region_id })?;
        region.0 = role;
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
    engine.open_region(1, RegionRole::Leader).await?; // a route to node 7 must name it
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
