//! This node's place in a cluster: its id and the scheduler's pace. Rules:
//! the id is stable across restarts (the host name by default); the tick
//! stays well under the rotator lease's life.

use std::time::Duration;

use keyhold_core::names::NodeId;

use super::layering::settings_area;
use super::{ConfigError, in_range};

const DEFAULT_SCHEDULER_TICK_MS: u64 = 2000;

settings_area! {
    /// The node in its cluster.
    pub struct ClusterArgs {
        /// This node's id in a cluster (letters, digits, '.', '_', '-'); stable
        /// across restarts [default: the host name].
        #[arg(long, env = "KEYHOLD_NODE_ID", value_name = "ID")]
        pub node_id: Option<String>,
        /// Milliseconds between scheduler ticks (heartbeat, rotator lease,
        /// due rotations): 50 to 5000 [default: 2000].
        #[arg(long, env = "KEYHOLD_SCHEDULER_TICK_MS", value_name = "MS")]
        pub scheduler_tick_ms: Option<u64>,
    }
}

/// The validated node id and scheduler tick.
#[derive(Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub scheduler_tick: Duration,
}

impl ClusterArgs {
    pub fn resolve(self) -> Result<ClusterConfig, ConfigError> {
        let node_id = match self.node_id {
            Some(raw) => NodeId::parse(&raw).map_err(|e| {
                ConfigError(format!(
                    "node_id: {} (set --node-id or KEYHOLD_NODE_ID)",
                    e.message
                ))
            })?,
            None => default_node_id()?,
        };
        let scheduler_tick = Duration::from_millis(in_range(
            "scheduler_tick_ms",
            self.scheduler_tick_ms,
            DEFAULT_SCHEDULER_TICK_MS,
            50..=5000,
            "milliseconds between scheduler ticks",
        )?);
        Ok(ClusterConfig {
            node_id,
            scheduler_tick,
        })
    }
}

/// The host name when it makes a valid node id, else `keyhold`.
fn default_node_id() -> Result<NodeId, ConfigError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|name| NodeId::parse(name.trim()).ok())
        .map_or_else(|| NodeId::parse("keyhold"), Ok)
        .map_err(|e| ConfigError(format!("node_id: {}", e.message)))
}
