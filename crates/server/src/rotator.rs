//! Which node rotates, and the scheduler it then runs.
//!
//! Every node runs this loop, one tick at a time: it writes its row in the
//! node table, and takes or renews the rotator lease when the configuration
//! allows it (`automatic`, or this node named). The lease holder runs the
//! schedule and executes jobs, fenced by the lease's token; the others
//! serve the API, and the jobs they accept wait in the store for the rotator.
//! A rotator that stops renewing (killed, cut off) loses the lease when it
//! expires, and another node takes it with a higher token, resuming the
//! jobs that were running.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyhold_core::audit::{AuditRecord, SYSTEM_USER};
use keyhold_core::clock::Timestamp;
use keyhold_core::cluster::{LEASE_TTL, Lease, NodeRecord, NodeRole, ROTATOR_LEASE, RotatorChoice};
use keyhold_core::names::NodeId;
use keyhold_core::service::Keyhold;
use keyhold_core::{CoreError, CoreResult};

use crate::jobs::JobRunner;

/// What this node knows of its role, for `/readyz` and `keyhold config show`.
#[derive(Clone, Debug)]
pub struct RotatorStatus {
    pub node: NodeId,
    pub role: NodeRole,
    pub designated: RotatorChoice,
    /// The lease as last read: who rotates, with which token, until when.
    pub lease: Option<Lease>,
    /// Why nothing rotates (or why this node does not), when that is worth saying.
    pub note: Option<String>,
    /// The last tick that failed, and why (the database away, say).
    pub error: Option<String>,
    /// This node's last pass over the schedule, as the rotator.
    pub last_pass: Option<PassFigures>,
    /// This node's last look for groups whose drift check is due, as the rotator.
    pub last_drift_pass: Option<DriftPassFigures>,
    /// This node's last look for a due backup or audit archive, as the rotator.
    pub last_housekeeping: Option<Timestamp>,
}

/// What one look for due drift checks did. Its failure (the database away)
/// is kept here and logged; it never holds back a rotation, and the next
/// pass tries again.
#[derive(Clone, Debug)]
pub struct DriftPassFigures {
    pub at: Timestamp,
    /// Checks queued (and handed to the runner).
    pub queued: usize,
    /// The runner had enough in hand already: due checks wait for a later pass.
    pub held_back: bool,
    /// Why the pass failed.
    pub error: Option<String>,
}

/// How often the rotator looks for groups whose drift check is due: the
/// checks' interval is hours, so a minute late is on time, and the look
/// (the groups with their last checks) is not repeated at every tick.
const DRIFT_PASS_EVERY: chrono::Duration = chrono::Duration::minutes(1);
/// Most drift checks one pass queues: a store of 10,000 groups checked
/// daily needs about 7 a minute, so the schedule keeps up, in small batches.
const DRIFT_CHECKS_PER_PASS: usize = 50;
/// Jobs in this node's hands beyond which a pass queues no drift check, so
/// checks waiting for the runner never crowd out rotations (each check
/// reads AWS, paced under its quotas).
const DRIFT_BACKLOG: usize = 100;

/// Whether a drift pass is due at `now` after one at `last`. A clock set
/// back (a correction) starts passes again at once rather than after the
/// time it went back.
fn drift_pass_due(last: Option<Timestamp>, now: Timestamp) -> bool {
    last.is_none_or(|at| now < at || now - at >= DRIFT_PASS_EVERY)
}

/// How many drift checks a pass may queue with `in_hand` jobs in the runner.
fn drift_room(in_hand: usize) -> usize {
    DRIFT_CHECKS_PER_PASS.min(DRIFT_BACKLOG.saturating_sub(in_hand))
}

/// What one pass over the schedule did and how long it took: the figure an
/// operator watches as groups multiply (the pass reads the due groups and
/// commits each one's job).
#[derive(Clone, Debug)]
pub struct PassFigures {
    pub at: Timestamp,
    pub took: Duration,
    /// Scheduled rotations started (at most `DUE_PER_PASS` a pass).
    pub started: usize,
    pub deferred: usize,
    /// Failed scheduled rotations taken up again.
    pub retried: usize,
}

/// Shared between the loop and the HTTP handlers.
#[derive(Clone)]
pub struct Rotator {
    keyhold: Keyhold,
    runner: JobRunner,
    tick: Duration,
    started_at: Timestamp,
    status: Arc<Mutex<RotatorStatus>>,
    /// Scheduled backups and archives (set once at start-up).
    backups: Arc<std::sync::OnceLock<Arc<crate::backup::Backups>>>,
}

impl Rotator {
    pub fn new(keyhold: Keyhold, runner: JobRunner, node: NodeId, tick: Duration) -> Self {
        let started_at = keyhold.now();
        Self {
            keyhold,
            runner,
            tick,
            started_at,
            status: Arc::new(Mutex::new(RotatorStatus {
                node,
                role: NodeRole::Standby,
                designated: RotatorChoice::Automatic,
                lease: None,
                note: Some("starting: the first tick has not run yet".into()),
                error: None,
                last_pass: None,
                last_drift_pass: None,
                last_housekeeping: None,
            })),
            backups: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Hands the rotator the backups it schedules (start-up, once).
    pub fn set_backups(&self, backups: Arc<crate::backup::Backups>) {
        let _ = self.backups.set(backups);
    }

    pub fn status(&self) -> RotatorStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RotatorStatus> {
        // Plain data, consistent after every assignment.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self) -> NodeId {
        self.lock().node.clone()
    }

    /// Ticks until the task is aborted (shutdown).
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let rotator = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(rotator.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(error) = rotator.tick_once().await {
                    tracing::warn!(%error, "rotator tick failed; trying again next tick");
                    rotator.lock().error = Some(error.to_string());
                }
            }
        })
    }

    /// Gives the lease up on a clean shutdown, so another node takes over at once.
    pub async fn step_down(&self) {
        self.runner.stand_by();
        let node = self.node();
        if let Err(error) = self
            .keyhold
            .store()
            .release_lease(ROTATOR_LEASE, &node)
            .await
        {
            tracing::warn!(%error, "could not release the rotator lease; it expires by itself");
        }
    }

    /// One tick: heartbeat, lease, and (as the rotator) the schedule and the
    /// jobs waiting in the store.
    pub async fn tick_once(&self) -> CoreResult<()> {
        let store = self.keyhold.store();
        let node = self.node();
        let now = self.keyhold.now();
        let settings = store.get_settings().await?;
        let designated = settings.designated_rotator;
        let lease = if designated.allows(&node) {
            store
                .acquire_lease(ROTATOR_LEASE, &node, now, now + LEASE_TTL)
                .await?
        } else {
            // Named away from this node: let go now rather than at expiry.
            store.release_lease(ROTATOR_LEASE, &node).await?;
            None
        };
        let role = if lease.is_some() {
            NodeRole::Rotator
        } else {
            NodeRole::Standby
        };
        store
            .heartbeat(&NodeRecord {
                id: node.clone(),
                started_at: self.started_at,
                last_seen: now,
                role,
            })
            .await?;
        let was = self.lock().role;
        let current = match &lease {
            Some(lease) => Some(lease.clone()),
            None => store.get_lease(ROTATOR_LEASE).await?,
        };
        let note = match &lease {
            Some(lease) => {
                self.runner.lead(lease.clone());
                if was != NodeRole::Rotator {
                    tracing::info!(%node, token = lease.token, "this node is the rotator");
                }
                self.rotate(lease).await?;
                None
            }
            None => {
                self.runner.stand_by();
                if was == NodeRole::Rotator {
                    tracing::warn!(%node, "this node is no longer the rotator");
                }
                self.standby_note(&node, &designated, current.as_ref(), now)
                    .await?
            }
        };
        let previous_note = {
            let mut status = self.lock();
            let previous = status.note.clone();
            status.role = role;
            status.designated = designated;
            status.lease = current;
            status.note = note.clone();
            status.error = None;
            previous
        };
        // Said once when it starts, not at every tick.
        if let Some(note) = note
            && previous_note.as_ref() != Some(&note)
            && note.starts_with("nothing rotates")
        {
            tracing::warn!("{note}");
            self.audit(note).await?;
        }
        Ok(())
    }

    /// The rotator's part: start what is due, and take up every job waiting
    /// in the store (accepted by any node, or left by a rotator that died).
    async fn rotate(&self, lease: &Lease) -> CoreResult<()> {
        let at = self.keyhold.now();
        // A duration to report, not a time the schedule depends on.
        let began = std::time::Instant::now();
        let pass = self.keyhold.run_schedule(Some(lease)).await?;
        self.lock().last_pass = Some(PassFigures {
            at,
            took: began.elapsed(),
            started: pass.started.len(),
            deferred: pass.deferred.len(),
            retried: pass.retried.len(),
        });
        for (group, reason) in &pass.deferred {
            tracing::info!(%group, %reason, "scheduled rotation deferred");
        }
        // After the rotations, so a due rotation is queued before checks.
        self.drift_pass().await;
        self.housekeeping_pass().await;
        for job in self.keyhold.unfinished_jobs().await? {
            self.runner.submit(job.id);
        }
        Ok(())
    }

    /// Queues the drift checks that are due (at most once a minute), and
    /// hands them to the runner. Never fails: a failure is logged and kept
    /// in the status, and the next pass tries again.
    async fn drift_pass(&self) {
        let at = self.keyhold.now();
        let last = self.lock().last_drift_pass.as_ref().map(|p| p.at);
        if !drift_pass_due(last, at) {
            return;
        }
        let room = drift_room(self.runner.in_hand());
        let figures = if room == 0 {
            DriftPassFigures {
                at,
                queued: 0,
                held_back: true,
                error: None,
            }
        } else {
            match self.keyhold.queue_due_drift_checks(room).await {
                Ok(jobs) => {
                    for job in &jobs {
                        self.runner.submit(job.id);
                    }
                    if !jobs.is_empty() {
                        tracing::info!(checks = jobs.len(), "scheduled drift checks queued");
                    }
                    DriftPassFigures {
                        at,
                        queued: jobs.len(),
                        held_back: false,
                        error: None,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduled drift checks could not be queued; the next pass tries again");
                    DriftPassFigures {
                        at,
                        queued: 0,
                        held_back: false,
                        error: Some(error.to_string()),
                    }
                }
            }
        };
        self.lock().last_drift_pass = Some(figures);
    }

    /// Scheduled backups, backup retention and audit archiving, at most
    /// once a minute by the Clock. Never fails: failures are logged.
    async fn housekeeping_pass(&self) {
        let at = self.keyhold.now();
        let last = self.lock().last_housekeeping;
        if !drift_pass_due(last, at) {
            return;
        }
        self.lock().last_housekeeping = Some(at);
        let Some(backups) = self.backups.get() else {
            return;
        };
        backups.schedule_pass().await;
        crate::backup::archive::scheduled_pass(backups).await;
    }

    /// Why this node does not rotate, and whether anybody does.
    async fn standby_note(
        &self,
        node: &NodeId,
        designated: &RotatorChoice,
        lease: Option<&Lease>,
        now: Timestamp,
    ) -> CoreResult<Option<String>> {
        if let Some(lease) = lease.filter(|l| l.expires_at >= now) {
            return Ok(Some(format!(
                "node {} rotates (designated: {designated})",
                lease.holder
            )));
        }
        let RotatorChoice::Node(named) = designated else {
            return Ok(Some(
                "no node holds the rotator lease yet; one takes it at its next tick".to_owned(),
            ));
        };
        let seen = self
            .keyhold
            .store()
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| &n.id == named);
        Ok(Some(match seen {
            Some(n) if n.is_alive(now) => {
                format!("node {named} is designated to rotate; this node {node} serves the API")
            }
            Some(n) => format!(
                "nothing rotates: the designated rotator {named} has not been seen since {}; start it, or set the designated rotator to automatic",
                n.last_seen.to_rfc3339()
            ),
            None => format!(
                "nothing rotates: the designated rotator {named} has never joined; start it, or set the designated rotator to automatic"
            ),
        }))
    }

    async fn audit(&self, summary: String) -> CoreResult<()> {
        let record = AuditRecord::new(self.keyhold.now(), SYSTEM_USER, summary);
        self.keyhold
            .store()
            .append_audit(&record)
            .await
            .map_err(CoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn drift_passes_run_once_a_minute() {
        assert!(drift_pass_due(None, at(0)));
        assert!(!drift_pass_due(Some(at(0)), at(0)));
        assert!(!drift_pass_due(Some(at(0)), at(59)));
        assert!(drift_pass_due(Some(at(0)), at(60)));
        assert!(drift_pass_due(Some(at(0)), at(3600)));
        // The clock set back: the next tick looks again.
        assert!(drift_pass_due(Some(at(600)), at(0)));
    }

    #[test]
    fn drift_checks_leave_room_for_rotations() {
        assert_eq!(drift_room(0), DRIFT_CHECKS_PER_PASS);
        assert_eq!(drift_room(DRIFT_BACKLOG - 10), 10);
        assert_eq!(drift_room(DRIFT_BACKLOG), 0);
        assert_eq!(drift_room(DRIFT_BACKLOG * 3), 0);
    }
}
