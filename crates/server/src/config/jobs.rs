//! How many rotate and synchronize jobs run at once. Rule: bounded, since
//! more jobs at once would only queue on AWS KMS's request quotas.

use super::layering::settings_area;
use super::{ConfigError, in_range};

/// Rotate and synchronize jobs that run at once unless told otherwise.
pub const DEFAULT_JOB_CONCURRENCY: u32 = 8;
/// More jobs at once than this would only queue on AWS KMS's request quotas
/// (CreateKey and UpdateAlias are 5 per second per account and Region).
pub const MAX_JOB_CONCURRENCY: u32 = 64;

settings_area! {
    /// The job runner.
    pub struct JobsArgs {
        /// Rotate and synchronize jobs that run at the same time; more wait their
        /// turn: 1 to 64 [default: 8].
        #[arg(long, env = "KEYHOLD_JOB_CONCURRENCY", value_name = "N")]
        pub job_concurrency: Option<u32>,
    }
}

impl JobsArgs {
    /// The number of jobs that run at the same time.
    pub fn resolve(self) -> Result<usize, ConfigError> {
        let job_concurrency = in_range(
            "job_concurrency",
            self.job_concurrency,
            DEFAULT_JOB_CONCURRENCY,
            1..=MAX_JOB_CONCURRENCY,
            "jobs running at the same time",
        )?;
        // At most MAX_JOB_CONCURRENCY, so the conversion cannot fail.
        Ok(usize::try_from(job_concurrency).unwrap_or(1))
    }
}
