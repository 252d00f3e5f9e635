//! `keyhold group create | list | show | update | delete | rotate`: key
//! groups, the unit that holds the AWS properties and rotation schedule of
//! its keys.

use std::path::{Path, PathBuf};

use keyhold_api::{CreateGroupRequest, GroupView, JobView, UpdateGroupRequest};
use reqwest::Method;

use crate::client::{Context, segment};
use crate::configuration::OnOff;
use crate::drift;
use crate::error::CliError;
use crate::input;
use crate::jobs;
use crate::output::{self, OutputFormat, Tabular};

/// Largest policy file read (AWS allows 32 KiB policies; the server checks).
const MAX_POLICY_BYTES: usize = 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Add a key group (HSM protected, symmetric AES-256, for AWS KMS).
    Create(CreateArgs),
    /// List the key groups.
    List,
    /// Show a key group, with its active key id and next rotation.
    Show {
        /// The group's name.
        name: String,
    },
    /// Change a key group: only the options given change.
    Update(UpdateArgs),
    /// Delete a key group.
    Delete {
        /// The group's name.
        name: String,
    },
    /// Force Rotate: start a job that puts a new key into AWS KMS and moves
    /// the group's alias to it.
    Rotate {
        /// The group's name.
        name: String,
        /// Follow the job until it ends, printing its messages; exits 1 if it
        /// fails or is cancelled.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The group's name: 1 to 64 letters, digits, '.', '_' or '-'.
    #[arg(long)]
    pub name: String,
    /// The cloud credential the group uses (see `keyhold credential list`).
    #[arg(long, value_name = "NAME")]
    pub credential: String,
    /// The AWS region of the group's KMS keys, such as eu-west-1.
    #[arg(long)]
    pub region: String,
    /// The alias that follows the active key, such as alias/NAME.
    #[arg(long)]
    pub alias: String,
    /// Description of the KMS keys.
    #[arg(long)]
    pub description: Option<String>,
    /// A placeholder KMS key (origin External) whose material the first rotation imports.
    #[arg(long, value_name = "UUID")]
    pub active_key_id: Option<String>,
    /// A JSON file with the key policy put on the group's KMS keys.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Rotate on a schedule: a whole number and h, d, w or y (hours, days,
    /// weeks, years), at least 1d (24h), such as 30d or 1y [default: no
    /// scheduled rotation].
    #[arg(long, value_name = "INTERVAL")]
    pub rotate_every: Option<String>,
    /// Keep each key valid for this long: a whole number and h, d, w or y
    /// (hours, days, weeks, years), such as 12h, 90d or 1y [default: keys do
    /// not expire].
    #[arg(long, value_name = "DURATION")]
    pub valid_for: Option<String>,
    /// Disable the previous KMS key in AWS after a rotation.
    #[arg(long)]
    pub disable_after_rotate: bool,
    /// How a rotation gives the alias new material: new_key (a new KMS key
    /// per rotation, the alias moved) or new_material (new material rotated
    /// into the same KMS key; its ARN never changes) [default: new_key].
    #[arg(long, value_name = "new_key|new_material")]
    pub rotation_strategy: Option<String>,
    /// For new_material, once AWS's on-demand rotations of the KMS key are
    /// used up: new_key (a new KMS key, the alias moved) or refuse
    /// [default: new_key].
    #[arg(long, value_name = "new_key|refuse")]
    pub at_rotation_limit: Option<String>,
    /// Drift self-heal: on lets a drift check make the safe repairs itself
    /// (import deleted or expiring material again, point the alias back, put
    /// the policy back, restore keyhold's tags); disabling, enabling and
    /// deletions always wait for officers [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub self_heal: Option<OnOff>,
    /// Who owns the group (free text).
    #[arg(long)]
    pub owner: Option<String>,
    /// Notes (free text).
    #[arg(long)]
    pub notes: Option<String>,
    /// Key type [default: AES].
    #[arg(long)]
    pub key_type: Option<String>,
    /// Key length in bits [default: 256].
    #[arg(long, value_name = "BITS")]
    pub key_length: Option<u32>,
}

#[derive(Debug, Default, clap::Args)]
pub struct UpdateArgs {
    /// The group's name.
    pub name: String,
    /// Use another cloud credential.
    #[arg(long, value_name = "NAME")]
    pub credential: Option<String>,
    /// Change the AWS region.
    #[arg(long)]
    pub region: Option<String>,
    /// Change the alias.
    #[arg(long)]
    pub alias: Option<String>,
    /// Change the description.
    #[arg(long)]
    pub description: Option<String>,
    /// Set the placeholder KMS key awaiting its first material.
    #[arg(long, value_name = "UUID", conflicts_with = "clear_active_key_id")]
    pub active_key_id: Option<String>,
    /// Forget the active key id.
    #[arg(long)]
    pub clear_active_key_id: bool,
    /// Replace the key policy with this JSON file.
    #[arg(long, value_name = "FILE", conflicts_with = "clear_policy")]
    pub policy: Option<PathBuf>,
    /// Remove the group's key policy.
    #[arg(long)]
    pub clear_policy: bool,
    /// Rotate on this schedule (turns rotation on): a whole number and h, d,
    /// w or y (hours, days, weeks, years), at least 1d (24h), such as 30d or 1y.
    #[arg(long, value_name = "INTERVAL", conflicts_with = "no_rotate")]
    pub rotate_every: Option<String>,
    /// Turn scheduled rotation off.
    #[arg(long)]
    pub no_rotate: bool,
    /// Keep each key valid for this long: a whole number and h, d, w or y
    /// (hours, days, weeks, years), such as 12h, 90d or 1y.
    #[arg(long, value_name = "DURATION", conflicts_with = "no_valid_for")]
    pub valid_for: Option<String>,
    /// Keys no longer expire.
    #[arg(long)]
    pub no_valid_for: bool,
    /// Whether to disable the previous KMS key after a rotation.
    #[arg(long, value_name = "true|false", value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_after_rotate: Option<bool>,
    /// Change the rotation strategy (dual control): new_key or new_material.
    #[arg(long, value_name = "new_key|new_material")]
    pub rotation_strategy: Option<String>,
    /// Change what a new_material group does at the on-demand rotation
    /// limit (dual control): new_key or refuse.
    #[arg(long, value_name = "new_key|refuse")]
    pub at_rotation_limit: Option<String>,
    /// Turn drift self-heal on or off (dual control): on lets a drift check
    /// make the safe repairs itself (material, alias, policy, tags).
    #[arg(long, value_enum, value_name = "on|off")]
    pub self_heal: Option<OnOff>,
    /// Change the owner (free text).
    #[arg(long)]
    pub owner: Option<String>,
    /// Change the notes (free text).
    #[arg(long)]
    pub notes: Option<String>,
}

/// `3 of 25 used` and, when few are left, what happens at the limit.
fn in_place_rotations(group: &GroupView) -> String {
    match &group.in_place_rotations {
        None => "-".to_owned(),
        Some(r) => match &r.warning {
            Some(warning) => format!("{} of {} used. {warning}", r.used, r.limit),
            None => format!("{} of {} used", r.used, r.limit),
        },
    }
}

/// The request a `group create` sends; `policy` is the policy file's text.
pub fn create_request(args: CreateArgs, policy: Option<String>) -> CreateGroupRequest {
    CreateGroupRequest {
        name: args.name,
        credential: args.credential,
        service: None,
        key_type: args.key_type,
        key_length: args.key_length,
        usage: None,
        rotate_every: args.rotate_every,
        valid_for: args.valid_for,
        owner: args.owner,
        notes: args.notes,
        alias: args.alias,
        description: args.description,
        region: args.region,
        active_key_id: args.active_key_id,
        policy,
        disable_after_rotate: args.disable_after_rotate.then_some(true),
        rotation_strategy: args.rotation_strategy,
        at_rotation_limit: args.at_rotation_limit,
        self_heal: args.self_heal.map(|v| v == OnOff::On),
    }
}

/// The change a `group update` sends: absent flags stay absent, `--no-…` and
/// `--clear-…` send `null`. `policy` is the policy file's text.
pub fn update_request(args: UpdateArgs, policy: Option<String>) -> UpdateGroupRequest {
    fn set_or_clear(value: Option<String>, clear: bool) -> Option<Option<String>> {
        if clear { Some(None) } else { value.map(Some) }
    }
    UpdateGroupRequest {
        credential: args.credential,
        rotate_every: set_or_clear(args.rotate_every, args.no_rotate),
        valid_for: set_or_clear(args.valid_for, args.no_valid_for),
        owner: args.owner,
        notes: args.notes,
        alias: args.alias,
        description: args.description,
        region: args.region,
        active_key_id: set_or_clear(args.active_key_id, args.clear_active_key_id),
        policy: set_or_clear(policy, args.clear_policy),
        disable_after_rotate: args.disable_after_rotate,
        rotation_strategy: args.rotation_strategy,
        at_rotation_limit: args.at_rotation_limit,
        self_heal: args.self_heal.map(|v| v == OnOff::On),
    }
}

fn is_empty_update(change: &UpdateGroupRequest) -> bool {
    serde_json::to_value(change).is_ok_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty))
}

/// Reads a policy file and checks that it is JSON before sending it.
fn read_policy(path: &Path) -> anyhow::Result<String> {
    let text = input::read_text_file(path, "policy file", MAX_POLICY_BYTES)?;
    let text = text.trim_start_matches('\u{feff}');
    if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
        return Err(CliError::Input(format!(
            "the policy file {} is not valid JSON: {e}",
            path.display()
        ))
        .into());
    }
    Ok(text.to_owned())
}

impl Tabular for GroupView {
    fn headers() -> &'static [&'static str] {
        &[
            "Name",
            "Credential",
            "Region",
            "Alias",
            "Algorithm",
            "Rotate Every",
            "Next Rotation",
            "Active Key ID",
            "Drift",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.credential.clone(),
            self.region.clone(),
            self.alias.clone(),
            self.algorithm.clone(),
            rotation(self),
            output::opt_time(self.next_rotation_at.as_deref()),
            output::or_dash(self.active_key_id.as_deref()),
            drift_badge(self),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Name", self.name.clone()),
            ("Service", self.service.clone()),
            ("Credential", self.credential.clone()),
            ("Key type", self.key_type.clone()),
            ("Key length", self.key_length.to_string()),
            ("Algorithm", self.algorithm.clone()),
            ("Usage", self.usage.clone()),
            ("Storage", self.storage.clone()),
            ("Rotate", output::yes_no(self.rotate)),
            ("Rotate every", rotation(self)),
            (
                "Next rotation",
                output::opt_time(self.next_rotation_at.as_deref()),
            ),
            ("Last rotation", last_rotation(self)),
            ("Keep valid for", output::or_dash(self.valid_for.as_deref())),
            ("Owner", output::or_dash(Some(&self.owner))),
            ("Notes", output::or_dash(Some(&self.notes))),
            ("Alias", self.alias.clone()),
            ("Description", output::or_dash(Some(&self.description))),
            ("Region", self.region.clone()),
            (
                "Active key ID",
                output::or_dash(self.active_key_id.as_deref()),
            ),
            (
                "Disable after rotate",
                output::yes_no(self.disable_after_rotate),
            ),
            ("Rotation strategy", self.rotation_strategy.clone()),
            ("At rotation limit", self.at_rotation_limit.clone()),
            ("In-place rotations", in_place_rotations(self)),
            ("Self-heal", drift::on_off(self.self_heal)),
            ("Drift", drift_summary(self)),
            (
                "Policy",
                if self.policy.is_some() {
                    "yes (below)"
                } else {
                    "-"
                }
                .to_owned(),
            ),
            ("Created", output::time(&self.created_at)),
            ("Updated", output::time(&self.updated_at)),
        ]
    }
}

/// The list's badge: open findings, or `-` when none.
fn drift_badge(group: &GroupView) -> String {
    match group.drift_open {
        0 => "-".to_owned(),
        n => format!("{n} open"),
    }
}

/// `2 open findings, last check 2026-11-29 12:00:00 (keyhold drift list
/// --group NAME)`, or that no check has run.
fn drift_summary(group: &GroupView) -> String {
    let Some(checked) = group.drift_checked_at.as_deref() else {
        return format!(
            "not checked yet (keyhold drift check --group {})",
            group.name
        );
    };
    let mut text = format!(
        "{} open finding(s), last check {}",
        group.drift_open,
        output::time(checked)
    );
    if group.drift_open > 0 {
        text.push_str(&format!(" (keyhold drift list --group {})", group.name));
    }
    text
}

fn rotation(group: &GroupView) -> String {
    match (&group.rotate_every, group.rotate) {
        (Some(every), true) => every.clone(),
        _ => "off".to_owned(),
    }
}

/// A policy for people: re-indented JSON (which also escapes any control
/// characters), or the raw text made safe.
fn render_policy(policy: &str) -> String {
    let pretty = serde_json::from_str::<serde_json::Value>(policy)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    match pretty {
        Some(text) => text.lines().map(|l| format!("  {l}\n")).collect(),
        None => format!("  {}\n", output::clean(policy)),
    }
}

fn print_group(format: OutputFormat, group: &GroupView) -> anyhow::Result<()> {
    output::print_item(format, group)?;
    if format == OutputFormat::Table
        && let Some(policy) = &group.policy
    {
        output::emit(&format!("\nPolicy:\n{}", render_policy(policy)))?;
    }
    Ok(())
}

pub async fn run(ctx: &Context, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create(args) => {
            let policy = args.policy.as_deref().map(read_policy).transpose()?;
            let client = ctx.authenticated()?;
            let request = create_request(args, policy);
            let group: GroupView = client.call(Method::POST, "/groups", &request).await?;
            print_group(ctx.output, &group)
        }
        GroupCommand::List => {
            let groups: Vec<GroupView> = ctx.authenticated()?.get("/groups").await?;
            output::print_list(ctx.output, &groups)
        }
        GroupCommand::Show { name } => {
            let group: GroupView = ctx
                .authenticated()?
                .get(&format!("/groups/{}", segment(&name)))
                .await?;
            print_group(ctx.output, &group)
        }
        GroupCommand::Update(args) => {
            let policy = args.policy.as_deref().map(read_policy).transpose()?;
            let path = format!("/groups/{}", segment(&args.name));
            let change = update_request(args, policy);
            if is_empty_update(&change) {
                return Err(CliError::Input(
                    "nothing to change: give at least one option, such as --rotate-every 30d (see `keyhold group update --help`)"
                        .into(),
                )
                .into());
            }
            let client = ctx.authenticated()?;
            let group: GroupView = client.call(Method::PATCH, &path, &change).await?;
            print_group(ctx.output, &group)
        }
        GroupCommand::Delete { name } => {
            ctx.authenticated()?
                .delete(&format!("/groups/{}", segment(&name)))
                .await?;
            output::print_done(ctx.output, &format!("Deleted key group {name}."))?;
            Ok(())
        }
        GroupCommand::Rotate { name, wait } => {
            let client = ctx.authenticated()?;
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/groups/{}/rotate", segment(&name)),
                    &serde_json::Map::new(),
                )
                .await?;
            jobs::started(ctx, &client, job, wait).await
        }
    }
}

/// "succeeded (job …)", or the failure with when it is tried again.
fn last_rotation(group: &GroupView) -> String {
    match (&group.last_rotation_status, &group.last_rotation_job) {
        (Some(status), Some(job)) => {
            let mut text = format!("{status} (job {job})");
            if let Some(error) = &group.last_rotation_error {
                text.push_str(&format!(": {error}"));
            }
            if let Some(at) = &group.rotation_retry_at {
                text.push_str(&format!("; retried at {}", output::time(at)));
            }
            text
        }
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: GroupCommand,
    }

    /// The help of `keyhold group SUBCOMMAND --FLAG`.
    fn help_of(subcommand: &str, flag: &str) -> String {
        let command = <Harness as clap::CommandFactory>::command();
        let sub = command.find_subcommand(subcommand).unwrap();
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("no --{flag} in group {subcommand}"));
        arg.get_help().unwrap().to_string()
    }

    #[test]
    fn interval_help_names_only_what_the_server_accepts() {
        use keyhold_core::interval::{Interval, written_intervals};
        use keyhold_core::schedule::parse_rotation_interval;
        for subcommand in ["create", "update"] {
            let rotate = help_of(subcommand, "rotate-every");
            let examples: Vec<&str> = written_intervals(&rotate).collect();
            assert!(examples.len() >= 2, "{rotate}");
            for example in examples {
                assert!(
                    parse_rotation_interval(example).is_ok(),
                    "{example} in {rotate}"
                );
            }
            let valid = help_of(subcommand, "valid-for");
            let examples: Vec<&str> = written_intervals(&valid).collect();
            assert!(examples.len() >= 2, "{valid}");
            for example in examples {
                assert!(Interval::parse(example).is_ok(), "{example} in {valid}");
            }
        }
    }

    fn parse(args: &[&str]) -> Result<GroupCommand, clap::Error> {
        Harness::try_parse_from(std::iter::once("group").chain(args.iter().copied()))
            .map(|h| h.command)
    }

    fn update_json(args: &[&str]) -> serde_json::Value {
        let Ok(GroupCommand::Update(update)) = parse(&[&["update", "g"][..], args].concat()) else {
            panic!("not an update: {args:?}");
        };
        serde_json::to_value(update_request(update, None)).unwrap()
    }

    #[test]
    fn absent_flags_send_nothing() {
        assert_eq!(update_json(&[]), json!({}));
        assert!(is_empty_update(&update_request(
            UpdateArgs::default(),
            None
        )));
    }

    #[test]
    fn set_flags_send_values() {
        assert_eq!(
            update_json(&[
                "--rotate-every",
                "30d",
                "--valid-for",
                "1y",
                "--alias",
                "alias/x",
                "--owner",
                "sec"
            ]),
            json!({"rotate_every": "30d", "valid_for": "1y", "alias": "alias/x", "owner": "sec"})
        );
        assert_eq!(
            update_json(&[
                "--active-key-id",
                "0b5e1c1e-0000-4000-8000-000000000000",
                "--credential",
                "c2",
                "--region",
                "us-east-1"
            ]),
            json!({"active_key_id": "0b5e1c1e-0000-4000-8000-000000000000", "credential": "c2", "region": "us-east-1"})
        );
    }

    #[test]
    fn no_and_clear_flags_send_null() {
        assert_eq!(
            update_json(&[
                "--no-rotate",
                "--no-valid-for",
                "--clear-active-key-id",
                "--clear-policy"
            ]),
            json!({"rotate_every": null, "valid_for": null, "active_key_id": null, "policy": null})
        );
    }

    #[test]
    fn disable_after_rotate_takes_true_or_false() {
        assert_eq!(
            update_json(&["--disable-after-rotate", "true"]),
            json!({"disable_after_rotate": true})
        );
        assert_eq!(
            update_json(&["--disable-after-rotate", "false"]),
            json!({"disable_after_rotate": false})
        );
        assert!(parse(&["update", "g", "--disable-after-rotate", "maybe"]).is_err());
    }

    #[test]
    fn contradictory_flags_are_refused() {
        assert!(parse(&["update", "g", "--rotate-every", "1d", "--no-rotate"]).is_err());
        assert!(parse(&["update", "g", "--valid-for", "1y", "--no-valid-for"]).is_err());
        assert!(parse(&["update", "g", "--policy", "p.json", "--clear-policy"]).is_err());
        assert!(
            parse(&[
                "update",
                "g",
                "--active-key-id",
                "x",
                "--clear-active-key-id"
            ])
            .is_err()
        );
    }

    #[test]
    fn policy_text_goes_into_the_update() {
        let Ok(GroupCommand::Update(update)) = parse(&["update", "g"]) else {
            panic!()
        };
        let value = serde_json::to_value(update_request(
            update,
            Some("{\"Version\":\"2012-10-17\"}".into()),
        ))
        .unwrap();
        assert_eq!(value, json!({"policy": "{\"Version\":\"2012-10-17\"}"}));
    }

    #[test]
    fn create_maps_flags_and_leaves_defaults_to_the_server() {
        let Ok(GroupCommand::Create(create)) = parse(&[
            "create",
            "--name",
            "ig-demo",
            "--credential",
            "aws1",
            "--region",
            "eu-west-1",
            "--alias",
            "alias/ig-demo",
            "--rotate-every",
            "30d",
            "--disable-after-rotate",
        ]) else {
            panic!()
        };
        let request = create_request(create, None);
        assert_eq!(request.name, "ig-demo");
        assert_eq!(request.rotate_every.as_deref(), Some("30d"));
        assert_eq!(request.disable_after_rotate, Some(true));
        assert_eq!(request.key_length, None);
        assert!(parse(&["create", "--name", "x"]).is_err());
    }

    #[test]
    fn policy_files_must_be_json() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            "\u{feff}{\"Version\":\"2012-10-17\",\"Statement\":[]}",
        )
        .unwrap();
        assert!(read_policy(&good).unwrap().starts_with('{'));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        assert!(
            read_policy(&bad)
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn rotate_takes_a_name_and_wait() {
        assert!(matches!(
            parse(&["rotate", "ig-demo", "--wait"]),
            Ok(GroupCommand::Rotate { name, wait: true }) if name == "ig-demo"
        ));
        assert!(matches!(
            parse(&["rotate", "ig-demo"]),
            Ok(GroupCommand::Rotate { wait: false, .. })
        ));
        assert!(parse(&["rotate"]).is_err());
    }

    #[test]
    fn self_heal_is_on_or_off_and_sent_only_when_given() {
        assert_eq!(
            update_json(&["--self-heal", "on"]),
            json!({"self_heal": true})
        );
        assert_eq!(
            update_json(&["--self-heal", "off"]),
            json!({"self_heal": false})
        );
        assert!(parse(&["update", "g", "--self-heal", "yes"]).is_err());
        let create = |extra: &[&str]| {
            let line = [
                &[
                    "create",
                    "--name",
                    "g",
                    "--credential",
                    "c",
                    "--region",
                    "eu-west-1",
                    "--alias",
                    "alias/g",
                ][..],
                extra,
            ]
            .concat();
            let Ok(GroupCommand::Create(create)) = parse(&line) else {
                panic!("not a create: {extra:?}");
            };
            create_request(create, None).self_heal
        };
        assert_eq!(create(&[]), None);
        assert_eq!(create(&["--self-heal", "on"]), Some(true));
        assert_eq!(create(&["--self-heal", "off"]), Some(false));
    }

    fn group_view(drift_open: u32, checked: Option<&str>) -> GroupView {
        serde_json::from_value(json!({
            "name": "ig-demo", "service": "AWS", "credential": "aws1", "key_type": "AES",
            "key_length": 256, "algorithm": "AES-256", "usage": "encrypt,decrypt",
            "storage": "Protected", "rotate": false, "rotate_every": null,
            "next_rotation_at": null, "valid_for": null, "owner": "", "notes": "",
            "alias": "alias/ig-demo", "description": "", "region": "eu-west-1",
            "active_key_id": null, "policy": null, "disable_after_rotate": false,
            "rotation_strategy": "new_key", "at_rotation_limit": "new_key",
            "self_heal": true, "drift_open": drift_open, "drift_checked_at": checked,
            "created_at": "2026-11-29T12:00:00Z", "updated_at": "2026-11-29T12:00:00Z",
            "last_rotation_job": null, "last_rotation_status": null,
            "last_rotation_error": null, "rotation_retry_at": null
        }))
        .unwrap()
    }

    #[test]
    fn show_names_self_heal_and_drift() {
        let fields = group_view(2, Some("2026-11-29T12:00:00Z")).fields();
        assert!(
            fields.contains(&("Self-heal", "on".to_owned())),
            "{fields:?}"
        );
        assert!(
            fields.contains(&(
                "Drift",
                "2 open finding(s), last check 2026-11-29 12:00:00 (keyhold drift list --group ig-demo)"
                    .to_owned()
            )),
            "{fields:?}"
        );
        let clean = group_view(0, Some("2026-11-29T12:00:00Z"));
        assert_eq!(
            drift_summary(&clean),
            "0 open finding(s), last check 2026-11-29 12:00:00"
        );
        assert_eq!(clean.row().last().map(String::as_str), Some("-"));
        let never = group_view(0, None);
        assert_eq!(
            drift_summary(&never),
            "not checked yet (keyhold drift check --group ig-demo)"
        );
        assert_eq!(
            group_view(3, None).row().last().map(String::as_str),
            Some("3 open")
        );
    }

    #[test]
    fn policies_are_shown_indented_and_safe() {
        assert_eq!(render_policy("{\"a\":1}"), "  {\n    \"a\": 1\n  }\n");
        assert_eq!(render_policy("raw\x1b"), "  raw?\n");
    }
}
