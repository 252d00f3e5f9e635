//! A keyhold cluster: several nodes on one database, one of which (the
//! rotator) runs scheduled rotations and executes jobs. Which one is an
//! administrator's choice (*HSM Protected Key Options*): a fixed node, or
//! `automatic`, where the nodes elect one through a lease in the database.
//!
//! The lease carries a fencing token that grows with every change of
//! holder; every job commit names the token it runs under, and the store
//! refuses a commit whose token is no longer current, so a rotator that was
//! paused past its lease cannot write after another took over.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::InvalidInput;
use crate::names::NodeId;

/// The lease the rotator holds.
pub const ROTATOR_LEASE: &str = "rotator";

/// How long a lease lasts unless renewed. Nodes renew at every scheduler
/// tick, which must be well under this.
pub const LEASE_TTL: chrono::Duration = chrono::Duration::seconds(15);

/// Which node rotates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RotatorChoice {
    /// The nodes elect one through the lease.
    #[default]
    Automatic,
    /// Only this node rotates, even while it is down.
    Node(NodeId),
}

impl RotatorChoice {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.eq_ignore_ascii_case("automatic") {
            return Ok(Self::Automatic);
        }
        NodeId::parse(raw).map(Self::Node).map_err(|e| {
            InvalidInput::new(
                "designated_rotator",
                format!("{}; or 'automatic' to let the nodes elect one", e.message),
            )
        })
    }

    /// Whether `node` may hold the rotator lease under this choice.
    pub fn allows(&self, node: &NodeId) -> bool {
        match self {
            Self::Automatic => true,
            Self::Node(designated) => designated == node,
        }
    }
}

impl std::fmt::Display for RotatorChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Automatic => f.write_str("automatic"),
            Self::Node(node) => write!(f, "{node}"),
        }
    }
}

impl TryFrom<String> for RotatorChoice {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<RotatorChoice> for String {
    fn from(choice: RotatorChoice) -> Self {
        choice.to_string()
    }
}

/// What a node does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// Holds the rotator lease: runs the schedule and executes jobs.
    Rotator,
    /// Serves the API; jobs it accepts are executed by the rotator.
    Standby,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotator => "rotator",
            Self::Standby => "standby",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "rotator" => Some(Self::Rotator),
            "standby" => Some(Self::Standby),
            _ => None,
        }
    }
}

/// A node as the database knows it: each node writes its own row at every tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub started_at: Timestamp,
    pub last_seen: Timestamp,
    pub role: NodeRole,
}

impl NodeRecord {
    /// A node not seen for two lease periods is taken to be down.
    pub fn is_alive(&self, now: Timestamp) -> bool {
        now - self.last_seen <= LEASE_TTL * 2
    }
}

/// A lease as held in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: NodeId,
    /// Grows by one with every change of holder.
    pub token: i64,
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn automatic_or_a_node() {
        assert_eq!(
            RotatorChoice::parse("automatic").unwrap(),
            RotatorChoice::Automatic
        );
        assert_eq!(
            RotatorChoice::parse("Automatic").unwrap(),
            RotatorChoice::Automatic
        );
        let b = RotatorChoice::parse("node-b").unwrap();
        assert_eq!(b.to_string(), "node-b");
        assert!(b.allows(&NodeId::parse("node-b").unwrap()));
        assert!(!b.allows(&NodeId::parse("node-a").unwrap()));
        assert!(RotatorChoice::Automatic.allows(&NodeId::parse("node-a").unwrap()));
        let err = RotatorChoice::parse("node b").unwrap_err();
        assert_eq!(err.field, "designated_rotator");
        assert!(err.message.contains("'automatic'"), "{}", err.message);
    }

    #[test]
    fn nodes_unseen_for_two_lease_periods_are_down() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-29T09:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let node = NodeRecord {
            id: NodeId::parse("node-a").unwrap(),
            started_at: t0,
            last_seen: t0,
            role: NodeRole::Standby,
        };
        assert!(node.is_alive(t0 + LEASE_TTL * 2));
        assert!(!node.is_alive(t0 + LEASE_TTL * 2 + chrono::Duration::seconds(1)));
    }

    proptest! {
        #[test]
        fn choices_round_trip_through_text(raw in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
            let choice = RotatorChoice::parse(&raw).unwrap();
            let again = RotatorChoice::parse(&choice.to_string()).unwrap();
            prop_assert_eq!(choice, again);
        }
    }
}
