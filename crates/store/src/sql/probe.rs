//! Whether the database records changes: what readiness learns from the
//! writes themselves, and the probe that tells when a database that refused
//! one records changes again.

use std::sync::{Mutex, PoisonError};

use keyhold_core::clock::Timestamp;
use keyhold_core::ports::WRITE_PROBE_INTERVAL;
use keyhold_core::{StoreError, WriteRefusal};

use super::Conn;
use crate::error::db;

/// Room for a large audit entry (one with a key policy's full text): a probe
/// that fits is a fair sign that a real change fits too.
const PROBE_BYTES: usize = 8 * 1024;

/// The outcome of the last write, kept for readiness.
#[derive(Debug, Default)]
pub(super) struct WriteHealth(Mutex<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    /// Why the last write was refused, while no write succeeded since.
    refused: Option<(WriteRefusal, String)>,
    /// When the last probe started, while refused.
    probed_at: Option<Timestamp>,
}

/// What [`WriteHealth::check`] tells its caller to do.
pub(super) enum Check {
    /// The last write succeeded (or none was refused yet).
    Writable,
    /// Refused, and probed less than an interval ago: this is why.
    Refused(StoreError),
    /// Refused, and a probe is due.
    Probe,
}

impl WriteHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the outcome of a write and passes it on. A refusal to record
    /// changes is kept. It is cleared by a write that `grew` the database (an
    /// audit entry appended, or the probe), not by the small updates in
    /// place (a session's last use, a heartbeat) that may still fit where
    /// no new entry does. Other failures (a duplicate name, a lost
    /// connection) say nothing about either.
    pub(super) fn note<T>(
        &self,
        outcome: Result<T, StoreError>,
        grew: bool,
    ) -> Result<T, StoreError> {
        match &outcome {
            Ok(_) if grew => {
                let mut state = self.state();
                if state.refused.take().is_some() {
                    state.probed_at = None;
                    tracing::warn!("the database records changes again");
                }
            }
            Ok(_) => {}
            Err(StoreError::CannotWrite { refusal, detail }) => {
                let mut state = self.state();
                if state.refused.is_none() {
                    tracing::error!(
                        refusal = %refusal,
                        error = %detail,
                        "the database cannot record changes: every change is refused, \
                         and /readyz reports not ready, until it can"
                    );
                }
                state.refused = Some((*refusal, detail.clone()));
            }
            Err(_) => {}
        }
        outcome
    }

    /// Whether writes work, by the last outcome; a probe is due (and counted
    /// as started at `now`) when the last write was refused and no probe ran
    /// in the last [`WRITE_PROBE_INTERVAL`].
    pub(super) fn check(&self, now: Timestamp) -> Check {
        let mut state = self.state();
        let Some((refusal, detail)) = &state.refused else {
            return Check::Writable;
        };
        match state.probed_at {
            Some(at) if now - at < WRITE_PROBE_INTERVAL && now >= at => {
                Check::Refused(StoreError::CannotWrite {
                    refusal: *refusal,
                    detail: detail.clone(),
                })
            }
            _ => {
                state.probed_at = Some(now);
                Check::Probe
            }
        }
    }
}

/// A change of the size of a large one, undone in the same transaction: it
/// allocates pages and is written to the database's log at commit like any
/// change, and leaves the table empty.
pub(super) async fn write(conn: &mut Conn) -> Result<(), StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO write_probe (id, padding) VALUES ($1, $2)")
        .bind(&id)
        .bind(vec![0_u8; PROBE_BYTES])
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM write_probe WHERE id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}
