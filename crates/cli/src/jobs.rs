//! `keyhold job list | show | watch | retry | cancel`: *Logging and
//! Reporting → Jobs*, and following a job until it ends (`--wait` of
//! `group rotate`, `key sync` and `job retry`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use keyhold_api::{JobMessageView, JobView};
use reqwest::Method;

use crate::client::{Client, Context, segment};
use crate::error::{CliError, EXIT_FAILURE};
use crate::output::{self, OutputFormat, Table, Tabular};
use crate::poll::{self, Ended, RETRY_DELAYS, Seen};

/// How often a followed job is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// Exit status when Ctrl-C stops following a job (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Width of the progress bar, in characters between the brackets.
const BAR_WIDTH: usize = 20;

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// List jobs, newest first.
    List {
        /// How many jobs at most [server default: 100; at most 1000].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show a job with its messages.
    Show {
        /// The job's id.
        id: String,
    },
    /// Follow a job with a progress bar until it ends; exits 0 if it
    /// succeeded, 1 if it failed or was cancelled.
    Watch {
        /// The job's id.
        id: String,
    },
    /// Run a failed job again, resuming at the step that failed.
    Retry {
        /// The job's id.
        id: String,
        /// Follow the job until it ends (see `job watch`).
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a queued job, or a failed one that is not to be retried.
    Cancel {
        /// The job's id.
        id: String,
    },
}

impl Tabular for JobView {
    fn headers() -> &'static [&'static str] {
        &[
            "ID", "Job", "Summary", "Target", "Status", "Progress", "Users", "Started", "Finished",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.title.clone(),
            self.summary.clone(),
            self.target.clone(),
            self.status.clone(),
            fraction(self),
            self.users.clone(),
            output::opt_time(self.started_at.as_deref()),
            output::opt_time(self.finished_at.as_deref()),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let step = match (outcome(self), &self.current_step) {
            (Outcome::Succeeded, _) | (_, None) => String::new(),
            (_, Some(step)) => format!(" (step: {step})"),
        };
        vec![
            ("ID", self.id.clone()),
            ("Job", self.title.clone()),
            ("Summary", self.summary.clone()),
            ("Target", self.target.clone()),
            ("Key group", self.group.clone()),
            ("Status", self.status.clone()),
            ("Progress", format!("{}{step}", fraction(self))),
            ("Users", self.users.clone()),
            ("Attempts", self.attempts.to_string()),
            ("KMS key ID", output::or_dash(self.kms_key_id.as_deref())),
            (
                "Wrapping",
                output::or_dash(self.wrapping_algorithm.as_deref()),
            ),
            ("Created", output::time(&self.created_at)),
            ("Started", output::opt_time(self.started_at.as_deref())),
            ("Finished", output::opt_time(self.finished_at.as_deref())),
            ("Error", output::or_dash(self.error.as_deref())),
        ]
    }
}

/// `3/6`: steps done of the job's steps.
fn fraction(job: &JobView) -> String {
    format!(
        "{}/{}",
        job.steps_done.min(job.steps_total),
        job.steps_total
    )
}

/// Where a job stands, as far as following it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Queued or running.
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

pub fn outcome(job: &JobView) -> Outcome {
    match job.status.as_str() {
        "succeeded" => Outcome::Succeeded,
        "failed" => Outcome::Failed,
        "cancelled" => Outcome::Cancelled,
        "queued" | "running" => Outcome::Pending,
        // A status this client does not know: ended if the server says it finished.
        _ if job.finished_at.is_some() => Outcome::Failed,
        _ => Outcome::Pending,
    }
}

/// The exit status a job calls for once it has ended; `None` while it runs.
pub fn exit_code(outcome: Outcome) -> Option<u8> {
    match outcome {
        Outcome::Pending => None,
        Outcome::Succeeded => Some(0),
        Outcome::Failed | Outcome::Cancelled => Some(EXIT_FAILURE),
    }
}

/// `[##########----------] 3/6 import_material`: the bar, the steps done,
/// and the step running (or the status, when none is running).
pub fn progress_line(job: &JobView) -> String {
    let total = job.steps_total;
    let done = job.steps_done.min(total);
    let state = outcome(job);
    let filled = if total == 0 {
        if state == Outcome::Succeeded {
            BAR_WIDTH
        } else {
            0
        }
    } else {
        // At most eight steps: the product cannot overflow, total is not 0.
        (done as usize * BAR_WIDTH / total as usize).min(BAR_WIDTH)
    };
    let what = match (&job.current_step, state, job.status.as_str()) {
        (Some(step), Outcome::Pending, "running") => output::clean(step),
        _ => output::clean(&job.status),
    };
    format!(
        "[{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled)
    )
}

/// One job message for people: `2026-11-29 12:00:01  Created KMS key …`.
fn message_line(message: &JobMessageView) -> String {
    format!(
        "{}  {}\n",
        output::time(&message.time),
        output::clean(&message.text)
    )
}

/// The messages of `job` not shown yet; `shown` counts those already shown.
/// Messages come oldest first and only ever grow; should the list shrink,
/// nothing is shown again.
fn unseen<'a>(job: &'a JobView, shown: &mut usize) -> &'a [JobMessageView] {
    let all = job.messages.as_deref().unwrap_or_default();
    let new = all.get(*shown..).unwrap_or_default();
    *shown = (*shown).max(all.len());
    new
}

/// The short form of a job just started: what `group rotate` and `key sync` print.
fn started_fields(job: &JobView) -> String {
    output::render_fields(&[
        ("Job", job.title.clone()),
        ("Summary", job.summary.clone()),
        ("ID", job.id.clone()),
        ("Target", job.target.clone()),
        ("Status", job.status.clone()),
    ])
}

/// The last line for people once a job has ended.
pub fn summary(job: &JobView) -> String {
    let id = &job.id;
    let steps = fraction(job);
    match outcome(job) {
        Outcome::Succeeded => {
            let key = job
                .kms_key_id
                .as_deref()
                .map(|k| format!(" KMS key: {k}."))
                .unwrap_or_default();
            format!("Job {id} succeeded: {steps} steps done.{key}\n")
        }
        Outcome::Failed => format!("Job {id} failed after {steps} steps.\n"),
        Outcome::Cancelled => format!("Job {id} was cancelled after {steps} steps.\n"),
        Outcome::Pending => format!("Job {id} is {}: {steps} steps done.\n", job.status),
    }
}

/// Why an ended job did not succeed, for stderr.
pub fn failure(job: &JobView) -> String {
    let id = &job.id;
    let error = job
        .error
        .as_deref()
        .map(output::clean)
        .unwrap_or_else(|| "no reason given".to_owned());
    match outcome(job) {
        Outcome::Cancelled => match &job.error {
            Some(_) => format!(
                "job {id} ({}) was cancelled; it had failed: {error}",
                job.title
            ),
            None => format!("job {id} ({}) was cancelled", job.title),
        },
        _ => {
            let step = job
                .current_step
                .as_deref()
                .map(|s| format!(" at step {s}"))
                .unwrap_or_default();
            format!(
                "job {id} ({}) failed{step}: {error}. Once the cause is fixed, `keyhold job retry {id}` resumes it",
                job.title
            )
        }
    }
}

/// Prints an ended job (the summary for people, the object for scripts) and
/// turns its outcome into the exit status.
pub fn conclude(format: OutputFormat, job: &JobView) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => output::print_json(job)?,
        OutputFormat::Table => output::emit(&summary(job))?,
    }
    match exit_code(outcome(job)) {
        Some(0) => Ok(()),
        Some(code) => {
            eprintln!("error: {}", failure(job));
            Err(CliError::Reported(code).into())
        }
        None => Ok(()),
    }
}

/// Whether a failed poll is worth repeating: the server unreachable, failing
/// (5xx) or busy, or the connection dropped. Refusals (4xx) and answers this
/// client cannot read are not.
pub fn is_transient(error: &anyhow::Error) -> bool {
    for cause in error.chain() {
        if let Some(cli) = cause.downcast_ref::<CliError>() {
            return match cli {
                CliError::Unreachable { .. } => true,
                CliError::Api { status, .. } => {
                    status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                _ => false,
            };
        }
        if cause.is::<serde_json::Error>() {
            return false;
        }
    }
    true
}

/// A failed poll in a few words: the connection's own cause when the server
/// is unreachable (the full advice is for commands that never reached it).
fn short_cause(error: &anyhow::Error) -> String {
    let unreachable = error
        .chain()
        .find_map(|e| match e.downcast_ref::<CliError>() {
            Some(CliError::Unreachable { cause, .. }) => Some(cause.clone()),
            _ => None,
        });
    let text = match unreachable {
        Some(cause) => format!("the server is not reachable: {cause}"),
        None => format!("{error:#}"),
    };
    output::clean(&text)
}

/// How progress is shown while a job is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// No bar (`--wait`).
    Off,
    /// One line on stderr redrawn in place (stderr is a terminal).
    Live,
    /// A line on stderr each time the progress changes.
    Lines,
}

/// The state of the screen while following a job.
struct Follower {
    /// Print the job's messages on stdout as they arrive.
    messages: bool,
    bar: Bar,
    shown: usize,
    /// A live bar is drawn on stderr's current line.
    drawn: bool,
    last_line: String,
}

impl Follower {
    fn new(messages: bool, bar: Bar) -> Self {
        Self {
            messages,
            bar,
            shown: 0,
            drawn: false,
            last_line: String::new(),
        }
    }

    fn stderr(text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    }

    fn clear_bar(&mut self) {
        if self.drawn {
            Self::stderr("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn show(&mut self, job: &JobView) -> anyhow::Result<()> {
        let new = unseen(job, &mut self.shown);
        if self.messages && !new.is_empty() {
            self.clear_bar();
            let text: String = new.iter().map(message_line).collect();
            output::emit(&text)?;
        }
        let line = progress_line(job);
        match self.bar {
            Bar::Off => {}
            Bar::Live => {
                if !self.drawn || line != self.last_line {
                    Self::stderr(&format!("\r\x1b[2K{line}"));
                    self.drawn = true;
                }
            }
            Bar::Lines => {
                if line != self.last_line {
                    Self::stderr(&format!("{line}\n"));
                }
            }
        }
        self.last_line = line;
        Ok(())
    }

    fn warn(&mut self, text: &str) {
        self.clear_bar();
        Self::stderr(&format!("warning: {}\n", output::clean(text)));
    }

    /// Leaves a live bar as it is, on a line of its own.
    fn done(&mut self) {
        if self.drawn {
            Self::stderr("\n");
            self.drawn = false;
        }
    }
}

/// Polls a job until it ends, showing its progress as `follower` says.
/// Only the job's end bounds the wait; a few consecutive failed polls end it
/// with an error, Ctrl-C ends it quietly (the job goes on in the server).
async fn poll_until_done(
    client: &Client,
    id: &str,
    follower: &mut Follower,
) -> anyhow::Result<JobView> {
    let path = format!("/jobs/{}", segment(id));
    let ended = poll::until_done::<JobView>(client, &path, POLL_INTERVAL, |seen| match seen {
        Seen::Answer(job) => {
            follower.show(job)?;
            Ok(outcome(job) != Outcome::Pending)
        }
        Seen::Retrying {
            error,
            delay,
            attempt,
        } => {
            follower.warn(&format!(
                "cannot ask for job {id} ({}); trying again in {} s ({attempt} of {})",
                short_cause(error),
                delay.as_secs(),
                RETRY_DELAYS.len()
            ));
            Ok(false)
        }
    })
    .await;
    match ended {
        Ok(Ended::Done(job)) => {
            follower.done();
            Ok(job)
        }
        Ok(Ended::Interrupted) => Err(stopped(follower, id)),
        Ok(Ended::GaveUp(error)) => {
            follower.done();
            Err(anyhow::anyhow!(
                "gave up following job {id} after {} failed attempts to ask the server for it: {}. The job goes on in the server; follow it again with `keyhold job watch {id}`",
                RETRY_DELAYS.len() + 1,
                short_cause(&error)
            ))
        }
        Err(error) => {
            follower.done();
            Err(error)
        }
    }
}

/// Ctrl-C while following: say that the job goes on, and exit 130.
fn stopped(follower: &mut Follower, id: &str) -> anyhow::Error {
    follower.done();
    eprintln!(
        "Stopped following job {id}; it goes on in the server. Follow it again with `keyhold job watch {id}`."
    );
    CliError::Reported(EXIT_INTERRUPTED).into()
}

/// What `group rotate`, `key sync` and `job retry` do with the job they
/// started: print it, or (`--wait`) follow it to its end, printing its
/// messages for people and only the final job for scripts.
pub async fn started(
    ctx: &Context,
    client: &Client,
    job: JobView,
    wait: bool,
) -> anyhow::Result<()> {
    match (ctx.output, wait) {
        (OutputFormat::Json, false) => output::print_json(&job),
        (OutputFormat::Table, false) => output::emit(&format!(
            "{}Follow it with `keyhold job watch {}`.\n",
            started_fields(&job),
            job.id
        )),
        (format, true) => {
            let done = follow(ctx, client, &job).await?;
            conclude(format, &done)
        }
    }
}

/// `--wait` up to the job's end: prints the job just started and its
/// messages as they arrive (for people; nothing for scripts), and hands the
/// ended job back for the caller to conclude.
pub async fn follow(ctx: &Context, client: &Client, job: &JobView) -> anyhow::Result<JobView> {
    let people = ctx.output == OutputFormat::Table;
    if people {
        output::emit(&started_fields(job))?;
    }
    let mut follower = Follower::new(people, Bar::Off);
    poll_until_done(client, &job.id, &mut follower).await
}

/// Follows a job to its end printing nothing (several jobs waited for at
/// once, whose messages would interleave).
pub async fn follow_quietly(client: &Client, id: &str) -> anyhow::Result<JobView> {
    let mut follower = Follower::new(false, Bar::Off);
    poll_until_done(client, id, &mut follower).await
}

/// A job for people: its fields, then its messages with their times.
fn render_job(job: &JobView) -> String {
    let mut text = output::render_fields(&job.fields());
    let messages = job.messages.as_deref().unwrap_or_default();
    if !messages.is_empty() {
        let mut table = Table::new(&["Time", "Message"]);
        for m in messages {
            table.push(vec![output::time(&m.time), m.text.clone()]);
        }
        text.push_str("\nMessages:\n");
        text.push_str(&table.render());
    }
    text
}

pub async fn run(ctx: &Context, command: JobCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        JobCommand::List { limit } => {
            let jobs: Vec<JobView> = match limit {
                Some(limit) => client.get_query("/jobs", &[("limit", limit)]).await?,
                None => client.get("/jobs").await?,
            };
            output::print_list(ctx.output, &jobs)
        }
        JobCommand::Show { id } => {
            let job: JobView = client.get(&format!("/jobs/{}", segment(&id))).await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&job),
                OutputFormat::Table => output::emit(&render_job(&job)),
            }
        }
        JobCommand::Watch { id } => {
            let bar = if std::io::stderr().is_terminal() {
                Bar::Live
            } else {
                Bar::Lines
            };
            let mut follower = Follower::new(ctx.output == OutputFormat::Table, bar);
            let job = poll_until_done(&client, &id, &mut follower).await?;
            conclude(ctx.output, &job)
        }
        JobCommand::Retry { id, wait } => {
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/jobs/{}/retry", segment(&id)),
                    &serde_json::Map::new(),
                )
                .await?;
            started(ctx, &client, job, wait).await
        }
        JobCommand::Cancel { id } => {
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/jobs/{}/cancel", segment(&id)),
                    &serde_json::Map::new(),
                )
                .await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&job),
                OutputFormat::Table => output::emit(&started_fields(&job)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn job(status: &str, done: u32, total: u32, step: Option<&str>) -> JobView {
        JobView {
            id: "5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11".into(),
            kind: "rotate".into(),
            title: "Rotate HSM protected keys".into(),
            summary: "new key for key group ig-demo".into(),
            target: "ig-demo".into(),
            group: "ig-demo".into(),
            status: status.into(),
            users: "Admin1,Admin2".into(),
            steps_done: done,
            steps_total: total,
            current_step: step.map(Into::into),
            created_at: "2026-11-29T12:00:00Z".into(),
            started_at: Some("2026-11-29T12:00:01Z".into()),
            finished_at: None,
            error: None,
            attempts: 1,
            kms_key_id: None,
            wrapping_algorithm: None,
            messages: None,
        }
    }

    fn message(text: &str) -> JobMessageView {
        JobMessageView {
            time: "2026-11-29T12:00:02Z".into(),
            text: text.into(),
        }
    }

    #[test]
    fn job_rows_follow_the_jobs_page_columns() {
        let mut done = job("succeeded", 6, 6, None);
        done.finished_at = Some("2026-11-29T12:00:09Z".into());
        let mut table = Table::new(JobView::headers());
        table.push(done.row());
        table.push(job("queued", 0, 3, Some("delete_material")).row());
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "ID{}  Job                        Summary                        Target   Status     Progress  Users          Started              Finished",
                " ".repeat(34)
            )
        );
        assert!(
            lines[1].ends_with(
                "Rotate HSM protected keys  new key for key group ig-demo  ig-demo  succeeded  6/6       Admin1,Admin2  2026-11-29 12:00:01  2026-11-29 12:00:09"
            ),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("queued     0/3"), "{}", lines[2]);
        assert!(lines[2].ends_with("2026-11-29 12:00:01  -"), "{}", lines[2]);
    }

    #[test]
    fn show_lists_the_messages_with_their_times() {
        let mut failed = job("failed", 2, 6, Some("import_material"));
        failed.error = Some("AWS refused: IncorrectKeyMaterial".into());
        failed.messages = Some(vec![message("Generated key"), message("evil\x1b[2J")]);
        let text = render_job(&failed);
        assert!(
            text.contains("Progress:    2/6 (step: import_material)"),
            "{text}"
        );
        assert!(text.contains("Error:       AWS refused"), "{text}");
        assert!(
            text.contains(
                "\nMessages:\nTime                 Message\n2026-11-29 12:00:02  Generated key\n"
            ),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        assert!(!render_job(&job("queued", 0, 6, None)).contains("Messages"));
    }

    #[test]
    fn progress_bar_text() {
        assert_eq!(
            progress_line(&job("running", 3, 6, Some("import_material"))),
            "[##########----------] 3/6 import_material"
        );
        assert_eq!(
            progress_line(&job("queued", 0, 6, Some("generate_key"))),
            "[--------------------] 0/6 queued"
        );
        assert_eq!(
            progress_line(&job("succeeded", 6, 6, None)),
            "[####################] 6/6 succeeded"
        );
        assert_eq!(
            progress_line(&job("failed", 1, 3, Some("import_material"))),
            "[######--------------] 1/3 failed"
        );
        // No steps known yet, and counts that overshoot, stay within the bar.
        assert_eq!(
            progress_line(&job("running", 0, 0, None)),
            "[--------------------] 0/0 running"
        );
        assert_eq!(
            progress_line(&job("running", 9, 4, Some("x\x1b"))),
            "[####################] 4/4 x?"
        );
    }

    #[test]
    fn exit_status_follows_the_job_status() {
        assert_eq!(exit_code(outcome(&job("queued", 0, 6, None))), None);
        assert_eq!(exit_code(outcome(&job("running", 1, 6, None))), None);
        assert_eq!(exit_code(outcome(&job("succeeded", 6, 6, None))), Some(0));
        assert_eq!(exit_code(outcome(&job("failed", 2, 6, None))), Some(1));
        assert_eq!(exit_code(outcome(&job("cancelled", 2, 6, None))), Some(1));
        // An unknown status ends the wait only once the job has finished.
        let mut odd = job("paused", 2, 6, None);
        assert_eq!(outcome(&odd), Outcome::Pending);
        odd.finished_at = Some("2026-11-29T12:00:09Z".into());
        assert_eq!(exit_code(outcome(&odd)), Some(1));
    }

    #[test]
    fn failures_say_why_and_how_to_resume() {
        let mut failed = job("failed", 2, 6, Some("import_material"));
        failed.error = Some("throttled".into());
        let text = failure(&failed);
        assert!(
            text.contains("failed at step import_material: throttled"),
            "{text}"
        );
        assert!(text.contains("keyhold job retry 5b9f4a86"), "{text}");
        let cancelled = job("cancelled", 2, 6, None);
        assert!(failure(&cancelled).ends_with("was cancelled"));
        let mut ok = job("succeeded", 6, 6, None);
        ok.kms_key_id = Some("bbb61d9f-0fba-4585-8c31-988cbc999849".into());
        assert!(summary(&ok).contains("succeeded: 6/6 steps done. KMS key: bbb61d9f"));
    }

    #[test]
    fn only_new_messages_are_shown() {
        let mut shown = 0;
        let mut running = job("running", 1, 6, None);
        assert!(unseen(&running, &mut shown).is_empty());
        running.messages = Some(vec![message("a"), message("b")]);
        let texts: Vec<_> = unseen(&running, &mut shown)
            .iter()
            .map(|m| m.text.clone())
            .collect();
        assert_eq!(texts, ["a", "b"]);
        assert!(unseen(&running, &mut shown).is_empty());
        running.messages = Some(vec![message("a"), message("b"), message("c")]);
        assert_eq!(unseen(&running, &mut shown)[0].text, "c");
        // A shorter list (trimmed by the server) shows nothing again.
        running.messages = Some(vec![message("z")]);
        assert!(unseen(&running, &mut shown).is_empty());
        assert_eq!(shown, 3);
        assert_eq!(message_line(&message("x\ny")), "2026-11-29 12:00:02  x y\n");
    }

    #[test]
    fn only_lost_connections_and_server_failures_are_retried() {
        let api = |status: StatusCode| {
            anyhow::Error::new(CliError::Api {
                status,
                code: String::new(),
                message: "m".into(),
                with_session: true,
            })
        };
        assert!(is_transient(&api(StatusCode::BAD_GATEWAY)));
        assert!(is_transient(&api(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(is_transient(&api(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!is_transient(&api(StatusCode::UNAUTHORIZED)));
        assert!(!is_transient(&api(StatusCode::NOT_FOUND)));
        assert!(is_transient(&anyhow::Error::new(CliError::Unreachable {
            url: "http://x".into(),
            cause: "refused".into(),
        })));
        assert!(is_transient(&anyhow::anyhow!("the request failed: reset")));
        let bad_json = serde_json::from_str::<JobView>("{}").unwrap_err();
        assert!(!is_transient(
            &anyhow::Error::new(bad_json).context("not what this client expects")
        ));
        assert_eq!(
            short_cause(&anyhow::Error::new(CliError::Unreachable {
                url: "http://x".into(),
                cause: "Connection refused".into(),
            })),
            "the server is not reachable: Connection refused"
        );
        assert!(!is_transient(&anyhow::Error::new(CliError::NotLoggedIn {
            url: "http://x".into()
        })));
    }

    #[test]
    fn started_jobs_show_id_title_and_status() {
        let text = started_fields(&job("queued", 0, 6, None));
        assert_eq!(
            text,
            "Job:      Rotate HSM protected keys\nSummary:  new key for key group ig-demo\nID:       5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11\nTarget:   ig-demo\nStatus:   queued\n"
        );
    }
}
