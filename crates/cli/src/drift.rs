//! `keyhold drift status | list | show | check | plan | reconcile`: *Drift*,
//! where AWS no longer holds what keyhold's record says (a key disabled or
//! scheduled for deletion, material deleted or expiring, the alias moved,
//! the policy edited, tags removed, a keyhold-tagged key no one knows), and
//! the plan that puts it right.
//!
//! A reconciliation applies exactly the plan that was shown: the request
//! names the plan's digest, and the server refuses it (409) if a check
//! changed the plan since.

use std::collections::HashMap;

use keyhold_api::{
    DriftChecksStartedView, DriftFindingView, DriftOverviewView, DriftPlanView, DriftRepairView,
    GroupDriftView, JobView, ReconcileRequest,
};
use reqwest::Method;
use serde::Serialize;

use crate::client::{Client, Context, segment};
use crate::error::{CliError, EXIT_FAILURE};
use crate::jobs::{self, Outcome};
use crate::output::{self, OutputFormat, Table, Tabular};

/// The most findings one request asks for (the server's own ceiling).
const MAX_FINDINGS: u32 = 1000;

/// The mark of a repair self-heal makes without officers.
const SAFE_MARK: &str = "safe (self-heal)";

#[derive(Debug, clap::Subcommand)]
pub enum DriftCommand {
    /// Every key group's drift: its last check, open findings and
    /// self-heal, and the schedule of the checks.
    Status,
    /// List drift findings: the open ones, and with --all the cleared ones
    /// after them.
    List(ListArgs),
    /// Show a finding: what keyhold expected and what AWS holds, and the
    /// repair that puts it right.
    Show {
        /// The finding's id (the ID column of `keyhold drift list`).
        id: String,
    },
    /// Check now: start a job that reads the group's keys, aliases, policies
    /// and tags in AWS KMS and records what drifted (it writes nothing to
    /// AWS, except the safe repairs of a group with self-heal on).
    Check(CheckArgs),
    /// Show the reconcile plan of a key group: the AWS calls that would put
    /// its open findings right, in the order they run, and the digest that
    /// names the plan.
    Plan {
        /// The key group.
        #[arg(long, value_name = "NAME")]
        group: String,
    },
    /// Apply a key group's reconcile plan as a job (dual control, or the
    /// approval policy of reconcile_drift). Without --plan, reads the plan,
    /// prints it and applies it.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Default, clap::Args)]
pub struct ListArgs {
    /// Only the findings of this key group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Only the findings of this key: its name (its KMS key id) or keyhold id.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Cleared findings too, not only open ones.
    #[arg(long)]
    pub all: bool,
    /// How many findings at most [server default: 100; at most 1000].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Default, clap::Args)]
#[command(group(
    clap::ArgGroup::new("which")
        .required(true)
        .args(["group", "all"])
))]
pub struct CheckArgs {
    /// Check this key group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Check every key group (those with another job unfinished are left
    /// alone, and named).
    #[arg(long)]
    pub all: bool,
    /// Follow the check(s) until they end and print the open findings;
    /// exits 1 if a check fails or is cancelled.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Default, clap::Args)]
pub struct ReconcileArgs {
    /// The key group.
    #[arg(long, value_name = "NAME")]
    pub group: String,
    /// Apply exactly this plan: the digest `keyhold drift plan` printed. The
    /// server refuses it if the plan changed since [default: the plan as it
    /// is now, printed first].
    #[arg(long, value_name = "DIGEST")]
    pub plan: Option<String>,
    /// Follow the job until it ends and print the open findings left; exits
    /// 1 if it fails or is cancelled.
    #[arg(long)]
    pub wait: bool,
}

/// The query of `GET /api/v1/drift/findings`.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct FindingsQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The key as the key routes name it (its KMS key id, or keyhold's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_cleared: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl FindingsQuery {
    pub fn of(args: ListArgs) -> Self {
        Self {
            group: args.group,
            key: args.key,
            include_cleared: args.all,
            limit: args.limit,
        }
    }
}

/// `reimport_material`, or `officers` when no repair of keyhold's puts it right.
fn repair_action(repair: Option<&DriftRepairView>) -> String {
    repair.map_or_else(|| "officers".to_owned(), |r| r.action.clone())
}

/// A repair in a sentence: what it does, and whether self-heal makes it.
fn repair_text(repair: Option<&DriftRepairView>) -> String {
    match repair {
        Some(r) if r.safe => format!("{} [{}; {SAFE_MARK}]", r.description, r.action),
        Some(r) => format!(
            "{} [{}; waits for officers: keyhold drift reconcile]",
            r.description, r.action
        ),
        None => "none keyhold can make: for officers, outside keyhold".to_owned(),
    }
}

impl Tabular for DriftFindingView {
    fn headers() -> &'static [&'static str] {
        &[
            "ID",
            "Key Group",
            "Drift",
            "Subject",
            "First Seen",
            "Last Seen",
            "Cleared",
            "Repair",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.group.clone(),
            self.title.clone(),
            self.subject.clone(),
            output::time(&self.first_seen),
            output::time(&self.last_seen),
            output::opt_time(self.cleared_at.as_deref()),
            repair_action(self.repair.as_ref()),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ID", self.id.clone()),
            ("Key group", self.group.clone()),
            ("Drift", format!("{} ({})", self.title, self.kind)),
            ("Subject", self.subject.clone()),
            ("Key ID", output::or_dash(self.key_id.as_deref())),
            ("KMS key ID", output::or_dash(self.kms_key_id.as_deref())),
            (
                "Status",
                if self.cleared_at.is_some() {
                    "cleared"
                } else {
                    "open"
                }
                .to_owned(),
            ),
            ("First seen", output::time(&self.first_seen)),
            ("Last seen", output::time(&self.last_seen)),
            ("Cleared", output::opt_time(self.cleared_at.as_deref())),
            ("Repair", repair_text(self.repair.as_ref())),
        ]
    }
}

impl Tabular for GroupDriftView {
    fn headers() -> &'static [&'static str] {
        &["Key Group", "Last Check", "Open Findings", "Self-Heal"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.group.clone(),
            self.checked_at
                .as_deref()
                .map_or_else(|| "never".to_owned(), output::time),
            self.open.to_string(),
            on_off(self.self_heal),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Key group", self.group.clone()),
            (
                "Last check",
                self.checked_at
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), output::time),
            ),
            ("Check job", output::or_dash(self.check_job.as_deref())),
            ("Open findings", self.open.to_string()),
            ("Self-heal", on_off(self.self_heal)),
        ]
    }
}

pub fn on_off(value: bool) -> String {
    if value { "on" } else { "off" }.to_owned()
}

/// `every 24 hours`, or `off (on demand only)`.
pub fn check_schedule(hours: u32) -> String {
    match hours {
        0 => "off (on demand only)".to_owned(),
        1 => "every hour".to_owned(),
        n => format!("every {n} hours"),
    }
}

/// The schedule under `drift status`'s table.
fn schedule_lines(overview: &DriftOverviewView) -> String {
    output::render_fields(&[
        ("Scheduled checks", check_schedule(overview.check_hours)),
        (
            "Expiry window",
            format!(
                "material expiring within {} day(s), with no newer version, is drift",
                overview.expiry_days
            ),
        ),
    ])
}

fn render_status(overview: &DriftOverviewView) -> String {
    let mut table = Table::new(GroupDriftView::headers());
    for group in &overview.groups {
        table.push(group.row());
    }
    let mut text = if overview.groups.is_empty() {
        "No key groups.\n".to_owned()
    } else {
        table.render()
    };
    text.push('\n');
    text.push_str(&schedule_lines(overview));
    text
}

/// A finding for people: its fields, then what drifted line by line (a
/// policy difference is several lines).
fn render_finding(finding: &DriftFindingView) -> String {
    let mut text = output::render_fields(&finding.fields());
    text.push_str("\nDetail:\n");
    text.push_str(&indented(&finding.detail, "  "));
    text
}

/// Each line of server text made safe and indented.
fn indented(text: &str, indent: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = format!("{indent}{}", output::clean(line));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str(indent);
        out.push_str("-\n");
    }
    out
}

/// `5b9f… key policy differs on bbb6…`, or the bare id of a finding not at hand.
fn finding_line(id: &str, known: &HashMap<&str, &DriftFindingView>) -> String {
    match known.get(id) {
        Some(f) => format!("{id}  {} on {}", f.title, f.subject),
        None => id.to_owned(),
    }
}

/// A plan for people: the actions numbered in the order they run with the
/// findings each resolves, the findings no action resolves, and the digest.
/// `open` is the group's open findings, to name those the actions resolve.
/// `apply_hint`: end with the command line that applies it.
fn render_plan(plan: &DriftPlanView, open: &[DriftFindingView], apply_hint: bool) -> String {
    let known: HashMap<&str, &DriftFindingView> = open.iter().map(|f| (f.id.as_str(), f)).collect();
    let group = &plan.group;
    let mut text = String::new();
    if plan.actions.is_empty() && plan.unresolved.is_empty() {
        text.push_str(&format!(
            "Key group {group} has no open drift findings: nothing to reconcile.\n"
        ));
    } else {
        text.push_str(&format!(
            "Reconcile plan of key group {group}: {} action(s); {} finding(s) no action resolves.\n",
            plan.actions.len(),
            plan.unresolved.len()
        ));
    }
    if !plan.actions.is_empty() {
        text.push_str("\nActions, in the order they run:\n");
        for (n, planned) in plan.actions.iter().enumerate() {
            let mark = if planned.repair.safe {
                format!("  [{SAFE_MARK}]")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "  {}. {}{mark}\n",
                n + 1,
                output::clean(&planned.repair.description)
            ));
            for id in &planned.findings {
                text.push_str(&format!(
                    "     resolves {}\n",
                    output::clean(&finding_line(id, &known))
                ));
            }
        }
    }
    if !plan.unresolved.is_empty() {
        text.push_str(
            "\nUnresolved (no repair keyhold can make; for officers, outside keyhold):\n",
        );
        for finding in &plan.unresolved {
            text.push_str(&format!(
                "  {}  {} on {}\n",
                finding.id,
                output::clean(&finding.title),
                output::clean(&finding.subject)
            ));
        }
        text.push_str("  (`keyhold drift show ID` says what each is and what to do)\n");
    }
    text.push_str(&format!("\nPlan digest: {}\n", output::clean(&plan.digest)));
    if apply_hint && !plan.actions.is_empty() {
        text.push_str(&format!(
            "Apply it: keyhold drift reconcile --group {group} --plan {}\n",
            output::clean(&plan.digest)
        ));
    }
    text
}

/// What `drift check --all` started and left alone, for people.
fn render_checks_started(checks: &DriftChecksStartedView) -> String {
    let mut text = String::new();
    if checks.started.is_empty() && checks.busy.is_empty() {
        return "No key groups to check.\n".to_owned();
    }
    text.push_str(&format!(
        "Drift checks started: {}; key groups left alone: {}.\n",
        checks.started.len(),
        checks.busy.len()
    ));
    if !checks.started.is_empty() {
        let mut table = Table::new(&["Key Group", "Job", "Status"]);
        for job in &checks.started {
            table.push(vec![job.group.clone(), job.id.clone(), job.status.clone()]);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    if !checks.busy.is_empty() {
        text.push_str(&render_busy(checks));
    }
    text
}

/// The groups a `check --all` left alone, and why.
fn render_busy(checks: &DriftChecksStartedView) -> String {
    let mut table = Table::new(&["Key Group", "Not Checked Because"]);
    for busy in &checks.busy {
        table.push(vec![busy.group.clone(), busy.reason.clone()]);
    }
    format!("\n{}", table.render())
}

/// The ended checks of `check --all --wait`, with each group's open findings.
fn render_checks_ended(jobs: &[JobView], open: &HashMap<String, u32>) -> String {
    let mut table = Table::new(&["Key Group", "Job", "Status", "Open Findings"]);
    for job in jobs {
        let findings = match (jobs::outcome(job), open.get(&job.group)) {
            (Outcome::Succeeded, Some(n)) => n.to_string(),
            _ => "-".to_owned(),
        };
        table.push(vec![
            job.group.clone(),
            job.id.clone(),
            job.status.clone(),
            findings,
        ]);
    }
    table.render()
}

/// The line after a check or reconciliation that succeeded.
fn open_findings_line(group: &str, open: u32) -> String {
    if open == 0 {
        format!("Key group {group} has no open drift findings.\n")
    } else {
        format!(
            "Key group {group} has {open} open drift finding(s): keyhold drift list --group {group}\n"
        )
    }
}

/// Open findings by group, as `GET /api/v1/drift` counts them.
async fn open_by_group(client: &Client) -> anyhow::Result<HashMap<String, u32>> {
    let overview: DriftOverviewView = client.get("/drift").await?;
    Ok(overview
        .groups
        .into_iter()
        .map(|g| (g.group, g.open))
        .collect())
}

/// The group's open findings (to name those a plan's actions resolve).
async fn open_findings(client: &Client, group: &str) -> anyhow::Result<Vec<DriftFindingView>> {
    client
        .get_query(
            "/drift/findings",
            &FindingsQuery {
                group: Some(group.to_owned()),
                limit: Some(MAX_FINDINGS),
                ..FindingsQuery::default()
            },
        )
        .await
}

/// A job of one group started by `check` or `reconcile`: printed, or
/// (`--wait`) followed to its end and followed by the group's open findings.
async fn started(ctx: &Context, client: &Client, job: JobView, wait: bool) -> anyhow::Result<()> {
    if !wait {
        return jobs::started(ctx, client, job, false).await;
    }
    let done = jobs::follow(ctx, client, &job).await?;
    jobs::conclude(ctx.output, &done)?;
    if ctx.output == OutputFormat::Table && jobs::outcome(&done) == Outcome::Succeeded {
        let open = open_by_group(client)
            .await?
            .get(&done.group)
            .copied()
            .unwrap_or(0);
        output::emit(&open_findings_line(&done.group, open))?;
    }
    Ok(())
}

/// `drift check --all`: starts every group's check, and with `--wait`
/// follows them all to their end; exits 1 if one failed.
async fn check_all(ctx: &Context, client: &Client, wait: bool) -> anyhow::Result<()> {
    let checks: DriftChecksStartedView = client
        .call(Method::POST, "/drift/checks", &serde_json::Map::new())
        .await?;
    let people = ctx.output == OutputFormat::Table;
    if !wait {
        return match ctx.output {
            OutputFormat::Json => output::print_json(&checks),
            OutputFormat::Table => {
                let mut text = render_checks_started(&checks);
                if !checks.started.is_empty() {
                    text.push_str(
                        "\nFollow them with `keyhold job watch ID`, or see where they stand with `keyhold drift status`.\n",
                    );
                }
                output::emit(&text)
            }
        };
    }
    if people {
        output::emit(&render_checks_started(&checks))?;
    }
    let mut ended = Vec::with_capacity(checks.started.len());
    for job in &checks.started {
        ended.push(jobs::follow_quietly(client, &job.id).await?);
    }
    let failures: Vec<String> = ended
        .iter()
        .filter(|j| jobs::outcome(j) != Outcome::Succeeded)
        .map(jobs::failure)
        .collect();
    match ctx.output {
        OutputFormat::Json => output::print_json(&DriftChecksStartedView {
            started: ended,
            busy: checks.busy,
        })?,
        OutputFormat::Table if !ended.is_empty() => {
            let open = open_by_group(client).await?;
            output::emit(&format!(
                "\nChecks ended:\n{}",
                render_checks_ended(&ended, &open)
            ))?;
        }
        OutputFormat::Table => {}
    }
    if failures.is_empty() {
        return Ok(());
    }
    for failure in failures {
        eprintln!("error: {failure}");
    }
    Err(CliError::Reported(EXIT_FAILURE).into())
}

pub async fn run(ctx: &Context, command: DriftCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        DriftCommand::Status => {
            let overview: DriftOverviewView = client.get("/drift").await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&overview),
                OutputFormat::Table => output::emit(&render_status(&overview)),
            }
        }
        DriftCommand::List(args) => {
            // The server names an unknown group or key rather than listing nothing.
            let findings: Vec<DriftFindingView> = client
                .get_query("/drift/findings", &FindingsQuery::of(args))
                .await?;
            output::print_list(ctx.output, &findings)
        }
        DriftCommand::Show { id } => {
            let finding: DriftFindingView = client
                .get(&format!("/drift/findings/{}", segment(&id)))
                .await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&finding),
                OutputFormat::Table => output::emit(&render_finding(&finding)),
            }
        }
        DriftCommand::Check(CheckArgs {
            group: Some(group),
            all: false,
            wait,
        }) => {
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/drift/groups/{}/check", segment(&group)),
                    &serde_json::Map::new(),
                )
                .await?;
            started(ctx, &client, job, wait).await
        }
        DriftCommand::Check(CheckArgs {
            group: None,
            all: true,
            wait,
        }) => check_all(ctx, &client, wait).await,
        // clap requires exactly one of them; kept for a command built by hand.
        DriftCommand::Check(_) => Err(CliError::Input(
            "say which key groups to check: --group NAME for one, or --all for every group".into(),
        )
        .into()),
        DriftCommand::Plan { group } => {
            let plan: DriftPlanView = client
                .get(&format!("/drift/groups/{}/plan", segment(&group)))
                .await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&plan),
                OutputFormat::Table => {
                    let open = open_findings(&client, &group).await?;
                    output::emit(&render_plan(&plan, &open, true))
                }
            }
        }
        DriftCommand::Reconcile(args) => {
            let digest = match args.plan {
                Some(digest) => digest,
                None => {
                    let plan: DriftPlanView = client
                        .get(&format!("/drift/groups/{}/plan", segment(&args.group)))
                        .await?;
                    if ctx.output == OutputFormat::Table {
                        let open = open_findings(&client, &args.group).await?;
                        output::emit(&render_plan(&plan, &open, false))?;
                        output::emit("\n")?;
                    }
                    plan.digest
                }
            };
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/drift/groups/{}/reconcile", segment(&args.group)),
                    &ReconcileRequest { plan: digest },
                )
                .await?;
            started(ctx, &client, job, args.wait).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use keyhold_api::{DriftBusyView, DriftPlannedView};

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: DriftCommand,
    }

    fn parse(args: &[&str]) -> Result<DriftCommand, clap::Error> {
        Harness::try_parse_from(std::iter::once("drift").chain(args.iter().copied()))
            .map(|h| h.command)
    }

    const ID: &str = "5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11";
    const KMS: &str = "bbb61d9f-0fba-4585-8c31-988cbc999849";

    fn repair(action: &str, safe: bool) -> DriftRepairView {
        DriftRepairView {
            action: action.into(),
            description: format!("put the key group's policy on KMS key {KMS}"),
            kms_key_id: KMS.into(),
            safe,
        }
    }

    fn finding(repair: Option<DriftRepairView>) -> DriftFindingView {
        DriftFindingView {
            id: ID.into(),
            group: "ig-demo".into(),
            kind: "policy_differs".into(),
            title: "key policy differs".into(),
            subject: KMS.into(),
            key_id: Some("0b5e1c1e-0000-4000-8000-000000000000".into()),
            kms_key_id: Some(KMS.into()),
            detail: "- \"Sid\": \"keyhold\"\n+ \"Sid\": \"edited\x1b[2J\"".into(),
            repair,
            first_seen: "2026-11-29T12:00:00Z".into(),
            last_seen: "2026-11-29T13:00:00Z".into(),
            cleared_at: None,
        }
    }

    fn job(group: &str, status: &str) -> JobView {
        JobView {
            id: ID.into(),
            kind: "check_drift".into(),
            title: "Check HSM protected keys".into(),
            summary: format!("drift of key group {group}"),
            target: group.into(),
            group: group.into(),
            status: status.into(),
            users: "Admin1".into(),
            steps_done: 1,
            steps_total: 1,
            current_step: None,
            created_at: "2026-11-29T12:00:00Z".into(),
            started_at: None,
            finished_at: None,
            error: None,
            attempts: 1,
            kms_key_id: None,
            wrapping_algorithm: None,
            messages: None,
        }
    }

    #[test]
    fn check_takes_a_group_or_all_but_not_both_nor_neither() {
        assert!(matches!(
            parse(&["check", "--group", "ig-demo", "--wait"]),
            Ok(DriftCommand::Check(CheckArgs { group: Some(g), all: false, wait: true })) if g == "ig-demo"
        ));
        assert!(matches!(
            parse(&["check", "--all"]),
            Ok(DriftCommand::Check(CheckArgs {
                group: None,
                all: true,
                wait: false
            }))
        ));
        let neither = parse(&["check"]).unwrap_err();
        assert_eq!(
            neither.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(neither.to_string().contains("--group"), "{neither}");
        let both = parse(&["check", "--group", "g", "--all"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn plan_and_reconcile_need_a_group() {
        assert!(parse(&["plan"]).is_err());
        assert!(parse(&["reconcile"]).is_err());
        assert!(parse(&["reconcile", "--plan", "abc"]).is_err());
        assert!(matches!(
            parse(&["plan", "--group", "g"]),
            Ok(DriftCommand::Plan { group }) if group == "g"
        ));
        assert!(matches!(
            parse(&["reconcile", "--group", "g", "--plan", "abc", "--wait"]),
            Ok(DriftCommand::Reconcile(ReconcileArgs { group, plan: Some(p), wait: true }))
                if group == "g" && p == "abc"
        ));
        assert!(matches!(
            parse(&["reconcile", "--group", "g"]),
            Ok(DriftCommand::Reconcile(ReconcileArgs {
                plan: None,
                wait: false,
                ..
            }))
        ));
    }

    #[test]
    fn list_flags_become_the_query() {
        let query = |line: &[&str]| {
            let Ok(DriftCommand::List(args)) = parse(line) else {
                panic!("not a list: {line:?}");
            };
            serde_json::to_value(FindingsQuery::of(args)).unwrap()
        };
        assert_eq!(
            query(&["list", "--group", "g", "--all", "--limit", "5"]),
            serde_json::json!({"group": "g", "include_cleared": true, "limit": 5})
        );
        assert_eq!(
            query(&["list", "--key", KMS]),
            serde_json::json!({"key": KMS})
        );
        // Open findings only, unless --all: the flag is left out.
        assert_eq!(
            serde_json::to_value(FindingsQuery::default()).unwrap(),
            serde_json::json!({})
        );
        assert!(parse(&["list", "--limit", "many"]).is_err());
        assert!(parse(&["show"]).is_err());
    }

    #[test]
    fn finding_rows_name_the_repair_or_the_officers() {
        let mut table = Table::new(DriftFindingView::headers());
        table.push(finding(Some(repair("put_policy", true))).row());
        let mut cleared = finding(None);
        cleared.cleared_at = Some("2026-11-30T00:00:00Z".into());
        table.push(cleared.row());
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID")
                && lines[0].contains("Key Group  Drift")
                && lines[0].ends_with("Cleared              Repair"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(
                "2026-11-29 12:00:00  2026-11-29 13:00:00  -                    put_policy"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with("2026-11-30 00:00:00  officers"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn show_prints_the_whole_detail_line_by_line() {
        let text = render_finding(&finding(Some(repair("put_policy", true))));
        assert!(
            text.contains("Drift:       key policy differs (policy_differs)\n"),
            "{text}"
        );
        assert!(text.contains("Status:      open\n"), "{text}");
        assert!(
            text.contains(&format!(
                "Repair:      put the key group's policy on KMS key {KMS} [put_policy; safe (self-heal)]\n"
            )),
            "{text}"
        );
        assert!(
            text.ends_with("\nDetail:\n  - \"Sid\": \"keyhold\"\n  + \"Sid\": \"edited?[2J\"\n"),
            "{text}"
        );
        let officers = render_finding(&finding(Some(repair("enable_key", false))));
        assert!(officers.contains("waits for officers"), "{officers}");
        let none = render_finding(&finding(None));
        assert!(
            none.contains("Repair:      none keyhold can make"),
            "{none}"
        );
    }

    #[test]
    fn plans_number_actions_mark_the_safe_ones_and_end_with_the_digest() {
        let mut unresolved = finding(None);
        unresolved.id = "9c0d0000-0000-4000-8000-000000000000".into();
        unresolved.title = "KMS key missing".into();
        let plan = DriftPlanView {
            group: "ig-demo".into(),
            digest: "3f9a".into(),
            actions: vec![
                DriftPlannedView {
                    repair: DriftRepairView {
                        action: "enable_key".into(),
                        description: format!("enable KMS key {KMS}"),
                        kms_key_id: KMS.into(),
                        safe: false,
                    },
                    findings: vec!["77aa".into()],
                },
                DriftPlannedView {
                    repair: repair("put_policy", true),
                    findings: vec![ID.into()],
                },
            ],
            unresolved: vec![unresolved],
        };
        let open = vec![finding(Some(repair("put_policy", true)))];
        let text = render_plan(&plan, &open, true);
        assert!(
            text.starts_with(
                "Reconcile plan of key group ig-demo: 2 action(s); 1 finding(s) no action resolves.\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  1. enable KMS key {KMS}\n     resolves 77aa\n  2. put the key group's policy on KMS key {KMS}  [safe (self-heal)]\n     resolves {ID}  key policy differs on {KMS}\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("\n  9c0d0000-0000-4000-8000-000000000000  KMS key missing on "),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nPlan digest: 3f9a\nApply it: keyhold drift reconcile --group ig-demo --plan 3f9a\n"
            ),
            "{text}"
        );
        assert!(!render_plan(&plan, &open, false).contains("Apply it"));
        let empty = DriftPlanView {
            group: "g".into(),
            digest: "e3b0".into(),
            actions: vec![],
            unresolved: vec![],
        };
        let text = render_plan(&empty, &[], true);
        assert!(
            text.starts_with("Key group g has no open drift findings: nothing to reconcile.\n"),
            "{text}"
        );
        assert!(!text.contains("Apply it"), "{text}");
    }

    #[test]
    fn status_shows_each_group_and_the_schedule() {
        let overview = DriftOverviewView {
            groups: vec![
                GroupDriftView {
                    group: "ig-demo".into(),
                    checked_at: Some("2026-11-29T12:00:00Z".into()),
                    check_job: Some(ID.into()),
                    open: 2,
                    self_heal: true,
                },
                GroupDriftView {
                    group: "other".into(),
                    checked_at: None,
                    check_job: None,
                    open: 0,
                    self_heal: false,
                },
            ],
            check_hours: 24,
            expiry_days: 30,
        };
        assert_eq!(
            render_status(&overview),
            "Key Group  Last Check           Open Findings  Self-Heal\n\
             ig-demo    2026-11-29 12:00:00  2              on\n\
             other      never                0              off\n\
             \n\
             Scheduled checks:  every 24 hours\n\
             Expiry window:     material expiring within 30 day(s), with no newer version, is drift\n"
        );
        assert_eq!(check_schedule(0), "off (on demand only)");
        assert_eq!(check_schedule(1), "every hour");
    }

    #[test]
    fn check_all_names_started_and_busy_groups() {
        let checks = DriftChecksStartedView {
            started: vec![job("a", "queued")],
            busy: vec![DriftBusyView {
                group: "b".into(),
                reason: "key group 'b' has a rotation job unfinished".into(),
            }],
        };
        let text = render_checks_started(&checks);
        assert!(
            text.starts_with("Drift checks started: 1; key groups left alone: 1.\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("a          {ID}  queued\n")),
            "{text}"
        );
        assert!(
            text.contains("Key Group  Not Checked Because\nb          key group 'b' has a rotation job unfinished\n"),
            "{text}"
        );
        assert_eq!(
            render_checks_started(&DriftChecksStartedView {
                started: vec![],
                busy: vec![]
            }),
            "No key groups to check.\n"
        );
        let mut failed = job("b", "failed");
        failed.finished_at = Some("2026-11-29T12:00:09Z".into());
        let ended = render_checks_ended(
            &[job("a", "succeeded"), failed],
            &HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]),
        );
        assert!(ended.contains("succeeded  3\n"), "{ended}");
        assert!(ended.contains("failed     -\n"), "{ended}");
    }

    #[test]
    fn the_line_after_a_job_counts_the_open_findings() {
        assert_eq!(
            open_findings_line("g", 0),
            "Key group g has no open drift findings.\n"
        );
        assert_eq!(
            open_findings_line("g", 2),
            "Key group g has 2 open drift finding(s): keyhold drift list --group g\n"
        );
    }
}
