//! Crash points for the kill -9 tests (cargo feature `crash-points`, never in
//! a release build).
//!
//! [`CRASH_POINTS`] is the table of every boundary a job crosses: both sides
//! of every commit a rotation, a synchronization, a drift check or a
//! reconciliation makes to the store. The steps that commit with the step
//! before them (`Step::commits_with_the_step_before`: a rotation's alias,
//! disable and activation commit with its import), and the marks before
//! CreateKey and an in-place import with GenerateKey, have no row of their
//! own; such a step or mark commits alone only off these runs' paths (a
//! step after the import failed and then ran alone, a rotation in place
//! that goes on with a new KMS key, a job an earlier release started), and
//! the core's tests resume it. A repair's commit is named `repair`
//! whichever repair of the plan it is; the table's reconciliation has one. The
//! resume tests iterate it, and a trace of an undisturbed run is checked
//! against it, so a commit added to a job without a row here fails a test.
//!
//! `KEYHOLD_PAUSE_AT=<commit>:<before|after>` names one point, with the
//! commit as `Checkpoint::as_str` spells it (`start`, `generate_key`,
//! `create_kms_key`, `import_material`, …): `before` is after the outside effect
//! the commit records (the AWS call, the key generation) and before the
//! commit; `after` is just after it. `KEYHOLD_PAUSE_FILE=<path>` is the file
//! announcing the pause. `KEYHOLD_CRASH_TRACE=<path>` appends every point
//! any job reaches to that file, as `<job id> <point>`.
//!
//! [`APPROVAL_POINTS`] are the boundaries an approved request crosses
//! outside any job: `approval_approved:after`, the vote that completed its
//! quorum committed and the request not yet run. They take the same
//! variables; the request's id goes into the pause file.
//!
//! The first job to reach the pause point writes its id into the file and
//! then blocks its thread for good, so the test can `kill -9` the process
//! with the job stopped exactly there. The file is created only if it does
//! not exist yet, and only a job that creates it pauses: a server restarted
//! with the same settings and the file still present runs through.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyhold_core::job::{Checkpoint, Step};
use keyhold_core::ports::JobHooks;

use crate::jobs::JobHooksFactory;

pub const PAUSE_AT_ENV: &str = "KEYHOLD_PAUSE_AT";
pub const PAUSE_FILE_ENV: &str = "KEYHOLD_PAUSE_FILE";
pub const TRACE_ENV: &str = "KEYHOLD_CRASH_TRACE";

/// The job that crosses a crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashJob {
    Rotate,
    /// A rotation in place (`new_material`): new material into the group's
    /// KMS key, then `RotateKeyOnDemand`.
    RotateInPlace,
    /// A synchronization with every option on (delete, import, policy).
    Synchronize,
    /// A drift check that finds the group's alias deleted behind keyhold's back.
    CheckDrift,
    /// A reconciliation of that finding: its one repair (the alias pointed
    /// back), then the recheck.
    Reconcile,
}

/// One side of one commit of one kind of job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    pub job: CrashJob,
    pub at: Checkpoint,
    /// After the commit rather than before it.
    pub committed: bool,
}

impl CrashPoint {
    /// `<commit>:<before|after>`, as `KEYHOLD_PAUSE_AT` takes it.
    pub fn name(&self) -> String {
        format!(
            "{}:{}",
            self.at.as_str(),
            if self.committed { "after" } else { "before" }
        )
    }
}

const fn point(job: CrashJob, at: Checkpoint, committed: bool) -> CrashPoint {
    CrashPoint { job, at, committed }
}

/// Every crash point, in the order a job crosses them.
pub const CRASH_POINTS: [CrashPoint; 34] = {
    use Checkpoint::{Start, Step as S};
    use CrashJob::{CheckDrift, Reconcile, Rotate, RotateInPlace, Synchronize};
    [
        point(Rotate, Start, false),
        point(Rotate, Start, true),
        point(Rotate, S(Step::GenerateKey), false),
        point(Rotate, S(Step::GenerateKey), true),
        point(Rotate, S(Step::CreateKmsKey), false),
        point(Rotate, S(Step::CreateKmsKey), true),
        point(Rotate, S(Step::ImportMaterial), false),
        point(Rotate, S(Step::ImportMaterial), true),
        point(RotateInPlace, Start, false),
        point(RotateInPlace, Start, true),
        point(RotateInPlace, S(Step::GenerateKey), false),
        point(RotateInPlace, S(Step::GenerateKey), true),
        point(RotateInPlace, S(Step::ImportNewMaterial), false),
        point(RotateInPlace, S(Step::ImportNewMaterial), true),
        point(RotateInPlace, S(Step::MakeMaterialCurrent), false),
        point(RotateInPlace, S(Step::MakeMaterialCurrent), true),
        point(Synchronize, Start, false),
        point(Synchronize, Start, true),
        point(Synchronize, S(Step::DeleteMaterial), false),
        point(Synchronize, S(Step::DeleteMaterial), true),
        point(Synchronize, S(Step::ImportMaterial), false),
        point(Synchronize, S(Step::ImportMaterial), true),
        point(Synchronize, S(Step::UpdatePolicy), false),
        point(Synchronize, S(Step::UpdatePolicy), true),
        point(CheckDrift, Start, false),
        point(CheckDrift, Start, true),
        point(CheckDrift, S(Step::CheckDrift), false),
        point(CheckDrift, S(Step::CheckDrift), true),
        point(Reconcile, Start, false),
        point(Reconcile, Start, true),
        point(Reconcile, S(Step::Repair(0)), false),
        point(Reconcile, S(Step::Repair(0)), true),
        point(Reconcile, S(Step::Recheck), false),
        point(Reconcile, S(Step::Recheck), true),
    ]
};

/// The points an approved request crosses, by name (see the module header).
pub const APPROVAL_POINTS: [&str; 1] = ["approval_approved:after"];

/// The points armed in this process, for the code outside jobs that
/// crosses [`APPROVAL_POINTS`] (jobs get theirs through [`JobHooksFactory`]).
static ARMED: std::sync::OnceLock<CrashPoints> = std::sync::OnceLock::new();

/// Called where an approved request crosses `point`: pauses for good when
/// that is the armed point and no one paused yet.
pub fn approval_reached(point: &str, request: uuid::Uuid) {
    let Some(points) = ARMED.get() else {
        return;
    };
    let Some(pause) = &points.pause else {
        return;
    };
    if pause.approval.as_deref() != Some(point) || !pause.announce(request) {
        return;
    }
    tracing::warn!(%request, point, "paused at the approval's crash point; waiting to be killed");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// What the environment arms: a pause point, a trace, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashPoints {
    pause: Option<PauseAt>,
    trace: Option<PathBuf>,
}

/// Where to pause, and the file that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseAt {
    at: Checkpoint,
    committed: bool,
    /// An approval point instead of a job's ([`APPROVAL_POINTS`]).
    approval: Option<String>,
    file: PathBuf,
}

impl CrashPoints {
    /// What the environment asks for, if anything. A malformed pause point is
    /// an error rather than ignored: a test that meant to pause would
    /// otherwise run through and fail somewhere less telling.
    pub fn from_env() -> Result<Option<Self>, String> {
        let pause = PauseAt::parse(
            std::env::var(PAUSE_AT_ENV).ok().as_deref(),
            std::env::var_os(PAUSE_FILE_ENV),
        )?;
        let trace = std::env::var_os(TRACE_ENV)
            .filter(|t| !t.is_empty())
            .map(PathBuf::from);
        let points = (pause.is_some() || trace.is_some()).then_some(Self { pause, trace });
        if let Some(points) = &points {
            // The first armed server of the process wins (tests start one).
            let _ = ARMED.set(points.clone());
        }
        Ok(points)
    }
}

impl PauseAt {
    fn parse(at: Option<&str>, file: Option<OsString>) -> Result<Option<Self>, String> {
        let Some(at) = at.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let file = file
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("{PAUSE_AT_ENV} is set, so {PAUSE_FILE_ENV} must name the file announcing the pause"))?;
        if APPROVAL_POINTS.contains(&at) {
            return Ok(Some(Self {
                at: Checkpoint::Start,
                committed: false,
                approval: Some(at.to_owned()),
                file,
            }));
        }
        let point = CRASH_POINTS
            .iter()
            .find(|p| p.name() == at)
            .ok_or_else(|| {
                let mut names: Vec<String> = Vec::new();
                for name in CRASH_POINTS.iter().map(CrashPoint::name) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                names.extend(APPROVAL_POINTS.iter().map(|p| (*p).to_owned()));
                format!(
                    "{PAUSE_AT_ENV}={at} is not a crash point; the points are {}",
                    names.join(", ")
                )
            })?;
        Ok(Some(Self {
            at: point.at,
            committed: point.committed,
            approval: None,
            file,
        }))
    }

    /// Writes the job id into the pause file if no one has yet. The file
    /// appears whole (written aside, then linked into place) so a test that
    /// sees it can read the id at once.
    fn announce(&self, job_id: uuid::Uuid) -> bool {
        let aside = self
            .file
            .with_extension(format!("{}.tmp", std::process::id()));
        let written = std::fs::File::create(&aside).and_then(|mut f| {
            writeln!(f, "{job_id}")?;
            f.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&aside, &self.file));
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                tracing::error!(file = %self.file.display(), error = %e, "cannot write the pause file; not pausing");
                false
            }
        }
    }
}

impl JobHooksFactory for CrashPoints {
    fn for_job(&self, job_id: uuid::Uuid) -> Arc<dyn JobHooks> {
        Arc::new(CrashHook {
            points: self.clone(),
            job_id,
        })
    }
}

struct CrashHook {
    points: CrashPoints,
    job_id: uuid::Uuid,
}

impl CrashHook {
    /// One line per point, written with a single append so the lines of
    /// concurrent jobs do not interleave.
    fn trace(&self, at: Checkpoint, committed: bool) {
        let Some(path) = &self.points.trace else {
            return;
        };
        let side = if committed { "after" } else { "before" };
        let line = format!("{} {}:{side}\n", self.job_id, at.as_str());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "cannot append to the crash point trace");
        }
    }
}

impl JobHooks for CrashHook {
    fn reached(&self, at: Checkpoint, committed: bool) {
        self.trace(at, committed);
        let Some(pause) = &self.points.pause else {
            return;
        };
        if pause.approval.is_some()
            || at != pause.at
            || committed != pause.committed
            || !pause.announce(self.job_id)
        {
            return;
        }
        tracing::warn!(
            job = %self.job_id,
            at = at.as_str(),
            when = if committed { "after" } else { "before" },
            "paused at the crash point; waiting to be killed"
        );
        // Blocks this worker thread, and with it the job, until the process
        // is killed: nothing after this point of the job may run.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn file() -> Option<OsString> {
        Some(OsString::from("/tmp/paused"))
    }

    #[test]
    fn reads_commit_and_side() {
        let at = PauseAt::parse(Some("create_kms_key:before"), file())
            .unwrap()
            .unwrap();
        assert_eq!(
            at,
            PauseAt {
                at: Checkpoint::Step(Step::CreateKmsKey),
                committed: false,
                approval: None,
                file: "/tmp/paused".into()
            }
        );
        let at = PauseAt::parse(Some(APPROVAL_POINTS[0]), file())
            .unwrap()
            .unwrap();
        assert_eq!(at.approval.as_deref(), Some("approval_approved:after"));
        let at = PauseAt::parse(Some("import_material:after"), file())
            .unwrap()
            .unwrap();
        assert_eq!(
            (at.at, at.committed),
            (Checkpoint::Step(Step::ImportMaterial), true)
        );
        // Committed with the import: no crash point of its own.
        assert!(PauseAt::parse(Some("move_alias:before"), file()).is_err());
        for point in CRASH_POINTS {
            let at = PauseAt::parse(Some(&point.name()), file())
                .unwrap()
                .unwrap();
            assert_eq!((at.at, at.committed), (point.at, point.committed));
        }
    }

    #[test]
    fn the_table_has_both_sides_of_every_commit_once() {
        let unique: HashSet<_> = CRASH_POINTS.iter().collect();
        assert_eq!(unique.len(), CRASH_POINTS.len());
        for point in CRASH_POINTS {
            let other = CrashPoint {
                committed: !point.committed,
                ..point
            };
            assert!(unique.contains(&other), "{point:?} without its other side");
        }
    }

    #[test]
    fn unset_means_no_pause_and_mistakes_are_refused() {
        assert_eq!(PauseAt::parse(None, file()), Ok(None));
        assert_eq!(PauseAt::parse(Some(""), None), Ok(None));
        for bad in ["create_kms_key", "create_key:before", "move_alias:during"] {
            let refused = PauseAt::parse(Some(bad), file()).unwrap_err();
            assert!(refused.contains("recheck:after"), "{refused}");
        }
        assert!(
            PauseAt::parse(Some("import_material:after"), None)
                .unwrap_err()
                .contains(PAUSE_FILE_ENV)
        );
    }

    #[test]
    fn only_the_first_job_to_arrive_announces() {
        let dir = tempfile::tempdir().unwrap();
        let at = PauseAt {
            at: Checkpoint::Step(Step::MoveAlias),
            committed: true,
            approval: None,
            file: dir.path().join("paused"),
        };
        let id = uuid::Uuid::new_v4();
        assert!(at.announce(id));
        assert_eq!(
            std::fs::read_to_string(&at.file).unwrap().trim(),
            id.to_string()
        );
        assert!(!at.announce(uuid::Uuid::new_v4()));
        assert_eq!(
            std::fs::read_to_string(&at.file).unwrap().trim(),
            id.to_string()
        );
        // Nothing left aside.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn other_points_pass_through_and_every_point_is_traced() {
        let dir = tempfile::tempdir().unwrap();
        let points = CrashPoints {
            pause: Some(PauseAt {
                at: Checkpoint::Step(Step::MoveAlias),
                committed: true,
                approval: None,
                file: dir.path().join("paused"),
            }),
            trace: Some(dir.path().join("trace")),
        };
        let id = uuid::Uuid::new_v4();
        let hook = points.for_job(id);
        hook.reached(Checkpoint::Step(Step::MoveAlias), false);
        hook.reached(Checkpoint::Start, true);
        assert!(!dir.path().join("paused").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("trace")).unwrap(),
            format!("{id} move_alias:before\n{id} start:after\n")
        );
    }
}
