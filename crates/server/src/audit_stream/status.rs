//! What each stream is doing now, for the officers and auditors who must
//! know their SIEM receives the log (`GET /api/v1/audit/streams`, the Audit
//! Logs screen, `keyhold audit streams`). The streamers write it; readers
//! take a copy. It lives in this node's memory: each node reports its own
//! streamers (of a cluster, one node delivers to a syslog receiver, the
//! others stand by).

use std::sync::{Arc, Mutex, PoisonError};

use keyhold_core::clock::Timestamp;

/// What a streamer is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Not through its first pass yet.
    Starting,
    /// Delivering, or caught up and waiting for new entries.
    Delivering,
    /// Another node of the cluster holds this receiver's lease.
    Standby,
    /// The last delivery failed; it is tried again after a back-off.
    Retrying,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Delivering => "delivering",
            Self::Standby => "standby",
            Self::Retrying => "retrying",
        }
    }
}

/// One sink's status.
#[derive(Clone, Debug)]
pub struct StreamStatus {
    /// `syslog` or `file`.
    pub kind: &'static str,
    /// The receiver's URL or the file's path.
    pub destination: String,
    pub state: StreamState,
    /// The seq of the last entry delivered, as this streamer knows it.
    pub cursor: Option<i64>,
    /// Entries committed but not delivered yet, at the last pass.
    pub lag: Option<i64>,
    pub last_delivered_at: Option<Timestamp>,
    /// Why the last delivery failed, while it is being retried.
    pub last_error: Option<String>,
    pub failures: u64,
}

/// The statuses of this node's streamers, one slot each.
#[derive(Debug, Default)]
pub struct StreamBoard {
    slots: Mutex<Vec<StreamStatus>>,
}

impl StreamBoard {
    /// A slot for a new streamer; its index is the streamer's handle.
    pub(super) fn add(self: &Arc<Self>, kind: &'static str, destination: String) -> StreamSlot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.push(StreamStatus {
            kind,
            destination,
            state: StreamState::Starting,
            cursor: None,
            lag: None,
            last_delivered_at: None,
            last_error: None,
            failures: 0,
        });
        StreamSlot {
            board: Arc::clone(self),
            index: slots.len() - 1,
        }
    }

    /// A copy of every stream's status, in the order configured.
    pub fn snapshot(&self) -> Vec<StreamStatus> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A streamer's own slot on the board.
pub(super) struct StreamSlot {
    board: Arc<StreamBoard>,
    index: usize,
}

impl StreamSlot {
    pub(super) fn update(&self, change: impl FnOnce(&mut StreamStatus)) {
        let mut slots = self
            .board
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = slots.get_mut(self.index) {
            change(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_streamer_writes_its_own_slot() {
        let board = Arc::new(StreamBoard::default());
        let syslog = board.add("syslog", "tls://siem.example:6514".into());
        let file = board.add("file", "/var/log/keyhold/audit.jsonl".into());
        syslog.update(|s| {
            s.state = StreamState::Retrying;
            s.last_error = Some("connection refused".into());
            s.failures += 1;
        });
        file.update(|s| {
            s.state = StreamState::Delivering;
            s.cursor = Some(42);
        });
        let seen = board.snapshot();
        assert_eq!(seen[0].state, StreamState::Retrying);
        assert_eq!(seen[0].failures, 1);
        assert_eq!(seen[0].cursor, None);
        assert_eq!(seen[1].state, StreamState::Delivering);
        assert_eq!(seen[1].cursor, Some(42));
        assert_eq!(seen[1].last_error, None);
    }
}
