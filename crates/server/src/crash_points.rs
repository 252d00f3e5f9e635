//! Crash points for resume tests (cargo feature `crash-points`, never in a
//! release build).
//!
//! `KEYHOLD_PAUSE_AT=<step>:<before|after>` names a step boundary, with the
//! step as `Step::as_str` spells it (`create_kms_key`, `move_alias`, …):
//! `before` is after the step's outside effect (the AWS call, the key
//! generation) and before its commit; `after` is just after the commit.
//! `KEYHOLD_PAUSE_FILE=<path>` is the file announcing the pause.
//!
//! The first job to reach the point writes its id into the file and then
//! blocks its thread for good, so the test can `kill -9` the process with
//! the job stopped exactly there. The file is created only if it does not
//! exist yet, and only a job that creates it pauses: a server restarted with
//! the same settings and the file still present runs through.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyhold_core::job::{Step, SyncOptions};
use keyhold_core::ports::JobHooks;

use crate::jobs::JobHooksFactory;

pub const PAUSE_AT_ENV: &str = "KEYHOLD_PAUSE_AT";
pub const PAUSE_FILE_ENV: &str = "KEYHOLD_PAUSE_FILE";

/// Where to pause, and the file that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseAt {
    step: Step,
    /// `after` (the step's commit is done) rather than `before`.
    committed: bool,
    file: PathBuf,
}

/// Every step a job can have, in the order they run.
fn all_steps() -> Vec<Step> {
    let all = SyncOptions {
        update_policy: true,
        import_material: true,
        delete_material: true,
    };
    let mut steps = Step::ROTATE.to_vec();
    for step in Step::synchronize(all) {
        if !steps.contains(&step) {
            steps.push(step);
        }
    }
    steps
}

impl PauseAt {
    /// The pause point the environment asks for, if any. A malformed one is an
    /// error rather than ignored: a test that meant to pause would otherwise
    /// run through and fail somewhere less telling.
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::parse(
            std::env::var(PAUSE_AT_ENV).ok().as_deref(),
            std::env::var_os(PAUSE_FILE_ENV),
        )
    }

    fn parse(at: Option<&str>, file: Option<OsString>) -> Result<Option<Self>, String> {
        let Some(at) = at.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let names = || {
            all_steps()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (step, when) = at.split_once(':').ok_or_else(|| {
            format!(
                "{PAUSE_AT_ENV}={at}: expected <step>:<before|after>, with a step among {}",
                names()
            )
        })?;
        let step = all_steps()
            .into_iter()
            .find(|s| s.as_str() == step)
            .ok_or_else(|| {
                format!(
                    "{PAUSE_AT_ENV}={at}: '{step}' is not a step; the steps are {}",
                    names()
                )
            })?;
        let committed = match when {
            "before" => false,
            "after" => true,
            other => {
                return Err(format!(
                    "{PAUSE_AT_ENV}={at}: '{other}' must be 'before' (the commit) or 'after'"
                ));
            }
        };
        let file = file
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("{PAUSE_AT_ENV} is set, so {PAUSE_FILE_ENV} must name the file announcing the pause"))?;
        Ok(Some(Self {
            step,
            committed,
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

impl JobHooksFactory for PauseAt {
    fn for_job(&self, job_id: uuid::Uuid) -> Arc<dyn JobHooks> {
        Arc::new(PauseHook {
            at: self.clone(),
            job_id,
        })
    }
}

struct PauseHook {
    at: PauseAt,
    job_id: uuid::Uuid,
}

impl JobHooks for PauseHook {
    fn reached(&self, step: Step, committed: bool) {
        if step != self.at.step || committed != self.at.committed || !self.at.announce(self.job_id)
        {
            return;
        }
        tracing::warn!(
            job = %self.job_id,
            step = step.as_str(),
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
    use super::*;

    fn file() -> Option<OsString> {
        Some(OsString::from("/tmp/paused"))
    }

    #[test]
    fn reads_step_and_side() {
        let at = PauseAt::parse(Some("create_kms_key:before"), file())
            .unwrap()
            .unwrap();
        assert_eq!(
            at,
            PauseAt {
                step: Step::CreateKmsKey,
                committed: false,
                file: "/tmp/paused".into()
            }
        );
        let at = PauseAt::parse(Some("delete_material:after"), file())
            .unwrap()
            .unwrap();
        assert_eq!((at.step, at.committed), (Step::DeleteMaterial, true));
        for step in all_steps() {
            assert!(
                PauseAt::parse(Some(&format!("{}:after", step.as_str())), file())
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(all_steps().len(), 8);
    }

    #[test]
    fn unset_means_no_pause_and_mistakes_are_refused() {
        assert_eq!(PauseAt::parse(None, file()), Ok(None));
        assert_eq!(PauseAt::parse(Some(""), None), Ok(None));
        for bad in ["create_kms_key", "create_key:before", "move_alias:during"] {
            assert!(PauseAt::parse(Some(bad), file()).is_err(), "{bad}");
        }
        assert!(
            PauseAt::parse(Some("move_alias:after"), None)
                .unwrap_err()
                .contains(PAUSE_FILE_ENV)
        );
    }

    #[test]
    fn only_the_first_job_to_arrive_announces() {
        let dir = tempfile::tempdir().unwrap();
        let at = PauseAt {
            step: Step::MoveAlias,
            committed: true,
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
    fn other_points_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let at = PauseAt {
            step: Step::MoveAlias,
            committed: true,
            file: dir.path().join("paused"),
        };
        let hook = at.for_job(uuid::Uuid::new_v4());
        hook.reached(Step::MoveAlias, false);
        hook.reached(Step::ImportMaterial, true);
        assert!(!at.file.exists());
    }
}
