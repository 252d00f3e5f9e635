//! The job runner: runs Force Rotate and Synchronize jobs in the background.
//!
//! Jobs live in the store; this only decides when a node runs them. A job is
//! submitted when it is created or retried, and the rotator submits every
//! job the store holds as queued or running at each tick (`crate::rotator`),
//! so one a stopped process left behind is resumed after its last committed step.
//!
//! At most `job_concurrency` jobs run at once; more wait for a permit. A job
//! runs in at most one task of this process at a time: submitting a job that
//! is already in hand only asks that task for one more pass when it ends (a
//! retry that lands while the failed run is still winding down).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use keyhold_core::CoreError;
use keyhold_core::cloud::CloudConnector;
use keyhold_core::cluster::Lease;
use keyhold_core::job::JobStatus;
use keyhold_core::ports::{JobHooks, NoHooks};
use keyhold_core::service::{JobRuntime, Keyhold};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument;

/// The first and the longest wait before a job that the store or keystore
/// failed under runs again.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a shutdown waits for running jobs to finish before it stops
/// them where they are (which is safe: they resume at the next start).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Gives each run of a job the hooks it reports its step boundaries to.
/// Production has none; test builds may pause there (`crash-points`).
pub trait JobHooksFactory: Send + Sync {
    fn for_job(&self, job_id: uuid::Uuid) -> Arc<dyn JobHooks>;
}

/// The production choice: nothing happens at step boundaries.
#[derive(Debug, Default)]
pub struct NoJobHooks;

impl JobHooksFactory for NoJobHooks {
    fn for_job(&self, _: uuid::Uuid) -> Arc<dyn JobHooks> {
        Arc::new(NoHooks)
    }
}

/// What the runner drives; the real one is keyhold-core's `run_job`.
#[async_trait]
trait Execute: Send + Sync + 'static {
    /// Runs the job to its end (or to the failure it records), its commits
    /// fenced by `lease` when the node runs in a cluster.
    async fn run(&self, id: uuid::Uuid, lease: Option<Lease>) -> Result<JobStatus, CoreError>;
}

struct KeyholdJobs {
    keyhold: Keyhold,
    connector: Arc<dyn CloudConnector>,
    hooks: Arc<dyn JobHooksFactory>,
}

#[async_trait]
impl Execute for KeyholdJobs {
    async fn run(&self, id: uuid::Uuid, lease: Option<Lease>) -> Result<JobStatus, CoreError> {
        let hooks = self.hooks.for_job(id);
        let runtime = JobRuntime {
            connector: self.connector.as_ref(),
            hooks: hooks.as_ref(),
            fence: lease.as_ref(),
        };
        let job = self.keyhold.run_job(id, &runtime).await?;
        if let Some(error) = &job.error {
            // The reason is in the job and the audit log too; the log line
            // lets operators alert on failed jobs without polling the API.
            tracing::warn!(job = %id, kind = job.kind.label(), target = %job.kind.target(), %error, "job failed");
        }
        Ok(job.status)
    }
}

/// A job in hand: waiting for a permit, or running.
struct Slot {
    /// Submitted again while in hand: run it once more before letting go.
    again: bool,
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<uuid::Uuid, Slot>,
    /// Shutting down: nothing new starts.
    closed: bool,
    /// Whether this node executes jobs, and under which lease.
    mode: Mode,
}

/// Who runs jobs: every node alone, or in a cluster only the rotator.
#[derive(Clone, Debug, Default)]
enum Mode {
    /// No cluster rules (a runner of its own, in tests).
    #[default]
    Alone,
    /// The rotator, fencing every commit with its lease.
    Rotator(Lease),
    /// Another node rotates: jobs submitted here wait in the store for it.
    Standby,
}

struct Inner {
    executor: Arc<dyn Execute>,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// Signalled whenever a job leaves the map (shutdown waits on it).
    released: Notify,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the map consistent, so a panic
        // elsewhere while it was held does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, id: uuid::Uuid, state: &mut State) {
        state.jobs.remove(&id);
        self.released.notify_waiters();
    }

    async fn drive(self: Arc<Self>, id: uuid::Uuid) {
        let mut guard = Release {
            inner: &self,
            id,
            armed: true,
        };
        // A closed semaphore means shutdown: the job stays queued in the store.
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let mut backoff = RETRY_FIRST;
        loop {
            let lease = match self.state().mode.clone() {
                Mode::Alone => None,
                Mode::Rotator(lease) => Some(lease),
                // Stepped down while the job waited: the new rotator takes it.
                Mode::Standby => break,
            };
            // The span puts the job id on every log line the run causes (the
            // AWS adapter's included).
            match self
                .executor
                .run(id, lease)
                .instrument(tracing::info_span!("job", job = %id))
                .await
            {
                Ok(status) => tracing::info!(job = %id, status = status.as_str(), "job run ended"),
                // The database or the keystore is away: the job is still
                // unfinished in the store, so run it again once they may be back.
                Err(error) if is_outage(&error) => {
                    tracing::warn!(job = %id, %error, retry_in_s = backoff.as_secs(), "job waits for the database or keystore");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
                Err(error) => {
                    tracing::error!(job = %id, %error, "job stopped before finishing; it resumes at the next start")
                }
            }
            let mut state = self.state();
            let closed = state.closed;
            match state.jobs.get_mut(&id) {
                Some(slot) if slot.again && !closed => slot.again = false,
                _ => {
                    // Released under the same lock that submit() checks, so a
                    // submission either sees the job in hand (and sets again,
                    // seen above) or finds it gone and starts a new task.
                    self.release(id, &mut state);
                    guard.armed = false;
                    return;
                }
            }
        }
    }
}

/// Failures that pass by themselves (the store or keystore unreachable, the
/// database unable to record changes while its storage is full), as opposed
/// to a job that cannot go on (its row gone or unreadable).
fn is_outage(error: &CoreError) -> bool {
    use keyhold_core::{KeystoreError, StoreError};
    matches!(
        error,
        CoreError::Store(
            StoreError::Unavailable(_) | StoreError::CannotWrite { .. } | StoreError::AuditSeal(_)
        ) | CoreError::Keystore(KeystoreError::Unavailable(_))
    )
}

/// Takes a job out of the map when its task ends abnormally (aborted at
/// shutdown, or a panic), so it can be submitted again.
struct Release<'a> {
    inner: &'a Inner,
    id: uuid::Uuid,
    armed: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.inner.state();
            self.inner.release(self.id, &mut state);
        }
    }
}

/// Cheap to clone; all clones drive the same jobs.
#[derive(Clone)]
pub struct JobRunner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state();
        f.debug_struct("JobRunner")
            .field("in_hand", &state.jobs.len())
            .field("free_permits", &self.inner.permits.available_permits())
            .field("closed", &state.closed)
            .finish()
    }
}

impl JobRunner {
    pub fn new(
        keyhold: Keyhold,
        connector: Arc<dyn CloudConnector>,
        hooks: Arc<dyn JobHooksFactory>,
        concurrency: usize,
    ) -> Self {
        let runner = Self::with_executor(
            Arc::new(KeyholdJobs {
                keyhold,
                connector,
                hooks,
            }),
            concurrency,
        );
        // Nothing runs until the rotator task says this node holds the lease.
        runner.inner.state().mode = Mode::Standby;
        runner
    }

    /// This node holds (or renewed) the rotator lease: jobs run here, fenced by it.
    pub fn lead(&self, lease: Lease) {
        self.inner.state().mode = Mode::Rotator(lease);
    }

    /// Another node rotates: nothing new starts here, and jobs in hand stop
    /// at their next pass (their commits would be refused by the fence anyway).
    pub fn stand_by(&self) {
        self.inner.state().mode = Mode::Standby;
    }

    fn with_executor(executor: Arc<dyn Execute>, concurrency: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor,
                permits: Arc::new(Semaphore::new(concurrency.max(1))),
                state: Mutex::new(State::default()),
                released: Notify::new(),
            }),
        }
    }

    /// Runs the job in the background, unless this process already has it in
    /// hand. Must be called within the tokio runtime.
    pub fn submit(&self, id: uuid::Uuid) {
        let mut state = self.inner.state();
        if state.closed {
            tracing::debug!(job = %id, "shutting down: the job starts at the next start");
            return;
        }
        if matches!(state.mode, Mode::Standby) {
            tracing::debug!(job = %id, "not the rotator: the job waits in the store for it");
            return;
        }
        if let Some(slot) = state.jobs.get_mut(&id) {
            slot.again = true;
            return;
        }
        state.jobs.insert(
            id,
            Slot {
                again: false,
                abort: None,
            },
        );
        // Still under the lock: the task cannot release the slot before its
        // abort handle is in it.
        let task = tokio::spawn(self.inner.clone().drive(id));
        if let Some(slot) = state.jobs.get_mut(&id) {
            slot.abort = Some(task.abort_handle());
        }
    }

    /// Jobs in hand (waiting for a permit or running).
    pub fn in_hand(&self) -> usize {
        self.inner.state().jobs.len()
    }

    /// Stops taking jobs, waits up to `grace` for the running ones, then stops
    /// the rest where they are. Jobs are built to survive that: each resumes
    /// after its last committed step at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut state = self.inner.state();
            state.closed = true;
        }
        // Jobs still waiting for a permit give up at once.
        self.inner.permits.close();
        if !self.wait_idle(grace).await {
            let aborted: Vec<AbortHandle> = self
                .inner
                .state()
                .jobs
                .values()
                .filter_map(|slot| slot.abort.clone())
                .collect();
            tracing::warn!(
                jobs = aborted.len(),
                "stopping jobs still running at shutdown; they resume at the next start"
            );
            for task in aborted {
                task.abort();
            }
            // An aborted task ends at its next await point; give it a moment.
            self.wait_idle(Duration::from_secs(1)).await;
        }
    }

    /// Stops everything at once, as a crash would: no new job starts and the
    /// running ones stop where they are (they resume on the next rotator).
    pub fn halt(&self) {
        let mut state = self.inner.state();
        state.closed = true;
        for slot in state.jobs.values() {
            if let Some(task) = &slot.abort {
                task.abort();
            }
        }
        drop(state);
        self.inner.permits.close();
    }

    /// Whether no job was in hand by the deadline.
    async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release in between is not missed.
            released.as_mut().enable();
            if self.inner.state().jobs.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.inner.state().jobs.is_empty();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore as Gate;

    /// Runs "jobs" that wait on a gate the test opens, and counts them.
    struct Fake {
        gate: Gate,
        runs: Mutex<Vec<uuid::Uuid>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        /// Runs that end in an outage (keystore away) before one succeeds.
        outages: AtomicUsize,
        /// Every run ends in a failure that does not pass (a corrupt row).
        broken: bool,
    }

    impl Fake {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                gate: Gate::new(0),
                runs: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_at_once: AtomicUsize::new(0),
                outages: AtomicUsize::new(0),
                broken: false,
            })
        }
        fn runs(&self) -> Vec<uuid::Uuid> {
            self.runs.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Execute for Fake {
        async fn run(&self, id: uuid::Uuid, _: Option<Lease>) -> Result<JobStatus, CoreError> {
            self.runs.lock().unwrap().push(id);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.broken {
                Err(CoreError::Store(keyhold_core::StoreError::Corrupt(
                    "unreadable".into(),
                )))
            } else if self
                .outages
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                Err(CoreError::Keystore(
                    keyhold_core::KeystoreError::Unavailable("token removed".into()),
                ))
            } else {
                Ok(JobStatus::Succeeded)
            }
        }
    }

    /// Lets the spawned tasks run until they all wait on something.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    async fn until_idle(runner: &JobRunner) {
        assert!(
            runner.wait_idle(Duration::from_secs(5)).await,
            "jobs still in hand"
        );
    }

    #[tokio::test]
    async fn runs_each_submitted_job_once_within_the_concurrency() {
        let fake = Fake::new();
        let runner = JobRunner::with_executor(fake.clone(), 2);
        let ids: Vec<_> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
        for id in &ids {
            runner.submit(*id);
            runner.submit(*id); // a duplicate submission while waiting is absorbed
        }
        settle().await;
        assert_eq!(fake.running.load(Ordering::SeqCst), 2);
        fake.gate.add_permits(100);
        until_idle(&runner).await;
        let runs = fake.runs();
        // Each job ran, and at most twice (the duplicate asks for one more
        // pass, which the core answers at once for a finished job).
        for id in &ids {
            let n = runs.iter().filter(|r| *r == id).count();
            assert!((1..=2).contains(&n), "{n} runs of {id}");
        }
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_job_in_hand_is_not_run_twice_at_once() {
        let fake = Fake::new();
        let runner = JobRunner::with_executor(fake.clone(), 8);
        let id = uuid::Uuid::new_v4();
        runner.submit(id);
        settle().await;
        runner.submit(id);
        runner.submit(id);
        settle().await;
        assert_eq!(fake.running.load(Ordering::SeqCst), 1);
        assert_eq!(runner.in_hand(), 1);
        // The resubmission (say, a retry) gets one more pass, after the first.
        fake.gate.add_permits(100);
        until_idle(&runner).await;
        assert_eq!(fake.runs(), vec![id, id]);
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
        // Once let go, the job can be submitted afresh.
        runner.submit(id);
        until_idle(&runner).await;
        assert_eq!(fake.runs().len(), 3);
    }

    #[tokio::test]
    async fn a_job_that_cannot_go_on_is_logged_and_let_go() {
        let fake = Arc::new(Fake {
            broken: true,
            ..Arc::into_inner(Fake::new()).unwrap()
        });
        fake.gate.add_permits(100);
        let runner = JobRunner::with_executor(fake.clone(), 8);
        let id = uuid::Uuid::new_v4();
        runner.submit(id);
        until_idle(&runner).await;
        assert_eq!(fake.runs(), vec![id]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_keystore_outage_is_waited_out_and_the_job_runs_again() {
        let fake = Fake::new();
        fake.outages.store(3, Ordering::SeqCst);
        fake.gate.add_permits(100);
        let runner = JobRunner::with_executor(fake.clone(), 8);
        let id = uuid::Uuid::new_v4();
        runner.submit(id);
        settle().await;
        assert_eq!(fake.runs(), vec![id]);
        assert_eq!(runner.in_hand(), 1, "the job is kept, not let go");
        // Waits of 2, 4 and 8 seconds (paused time moves on by itself).
        assert!(runner.wait_idle(Duration::from_secs(60)).await);
        assert_eq!(fake.runs(), vec![id; 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_running_jobs_then_stops_the_rest() {
        let fake = Fake::new();
        let runner = JobRunner::with_executor(fake.clone(), 1);
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        runner.submit(a);
        runner.submit(b); // waits for the only permit
        settle().await;
        assert_eq!(runner.in_hand(), 2);
        let started = tokio::time::Instant::now();
        runner.shutdown(Duration::from_secs(10)).await;
        // b gave up its wait at once; a never finished and was stopped after the grace.
        assert_eq!(runner.in_hand(), 0);
        assert!(tokio::time::Instant::now() - started >= Duration::from_secs(10));
        assert_eq!(fake.runs(), vec![a]);
        // Nothing starts after shutdown.
        runner.submit(uuid::Uuid::new_v4());
        assert_eq!(runner.in_hand(), 0);
    }

    #[tokio::test]
    async fn shutdown_returns_as_soon_as_jobs_finish() {
        let fake = Fake::new();
        let runner = JobRunner::with_executor(fake.clone(), 4);
        runner.submit(uuid::Uuid::new_v4());
        settle().await;
        fake.gate.add_permits(1);
        tokio::time::timeout(
            Duration::from_secs(5),
            runner.shutdown(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert_eq!(runner.in_hand(), 0);
    }
}
