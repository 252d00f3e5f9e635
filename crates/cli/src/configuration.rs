//! `keyhold config show | set`: *Administration → Configuration*.

use keyhold_api::{SettingsChangeRequest, SettingsView};
use reqwest::Method;

use crate::client::Context;
use crate::error::CliError;
use crate::output::{self, Tabular};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Show the settings (the default).
    Show,
    /// Change settings: only the options given change.
    Set(SetArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Default, clap::Args)]
pub struct SetArgs {
    /// Whether sensitive actions need two identities in the session.
    #[arg(long, value_enum, value_name = "on|off")]
    pub dual_control: Option<OnOff>,
    /// Failed logins before an identity is locked.
    #[arg(long, value_name = "N")]
    pub lockout_threshold: Option<u32>,
    /// How long a locked identity stays locked.
    #[arg(long, value_name = "N")]
    pub lockout_minutes: Option<u32>,
    /// A session ends after this many idle minutes.
    #[arg(long, value_name = "N")]
    pub session_idle_minutes: Option<u32>,
    /// A session ends this many hours after it started, idle or not.
    #[arg(long, value_name = "N")]
    pub session_max_hours: Option<u32>,
    /// HSM Protected Key Options: the node that rotates, or `automatic` to
    /// let the nodes elect one.
    #[arg(long, value_name = "automatic|NODE")]
    pub designated_rotator: Option<String>,
    /// On-demand rotations keyhold makes of one KMS key before a
    /// new_material group starts a new one (or refuses); AWS allows 25.
    #[arg(long, value_name = "N")]
    pub on_demand_rotation_limit: Option<u32>,
    /// Hours between scheduled drift checks of every key group, 1 to 744;
    /// 0 turns them off (checks on demand only: `keyhold drift check`).
    #[arg(long, value_name = "N")]
    pub drift_check_hours: Option<u32>,
    /// A drift check reports material that expires within this many days,
    /// with no newer version to take over (1 to 366).
    #[arg(long, value_name = "N")]
    pub drift_expiry_days: Option<u32>,
    /// Hours between scheduled backups, 1 to 744 (needs backup custodians);
    /// 0 turns them off (backups on demand only: `keyhold backup create`).
    #[arg(long, value_name = "N")]
    pub backup_every_hours: Option<u32>,
    /// Scheduled backups kept in the backup directory (0: all).
    #[arg(long, value_name = "N")]
    pub backup_keep: Option<u32>,
    /// Audit entries older than this many days are archived daily (0: only
    /// on demand, `keyhold audit archive`).
    #[arg(long, value_name = "DAYS")]
    pub audit_archive_after_days: Option<u32>,
}

pub fn change_request(args: SetArgs) -> SettingsChangeRequest {
    SettingsChangeRequest {
        dual_control: args.dual_control.map(|v| v == OnOff::On),
        lockout_threshold: args.lockout_threshold,
        lockout_minutes: args.lockout_minutes,
        session_idle_minutes: args.session_idle_minutes,
        session_max_hours: args.session_max_hours,
        designated_rotator: args.designated_rotator,
        on_demand_rotation_limit: args.on_demand_rotation_limit,
        drift_check_hours: args.drift_check_hours,
        drift_expiry_days: args.drift_expiry_days,
        backup_every_hours: args.backup_every_hours,
        backup_keep: args.backup_keep,
        audit_archive_after_days: args.audit_archive_after_days,
    }
}

impl Tabular for SettingsView {
    fn headers() -> &'static [&'static str] {
        &[
            "Dual Control",
            "Lockout Threshold",
            "Lockout Minutes",
            "Session Idle Minutes",
            "Session Max Hours",
            "Designated Rotator",
            "On-Demand Rotation Limit",
            "Drift Checks",
            "Drift Expiry Window",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            if self.dual_control { "on" } else { "off" }.to_owned(),
            self.lockout_threshold.to_string(),
            self.lockout_minutes.to_string(),
            self.session_idle_minutes.to_string(),
            self.session_max_hours.to_string(),
            self.designated_rotator.clone(),
            self.on_demand_rotation_limit.to_string(),
            crate::drift::check_schedule(self.drift_check_hours),
            format!("{} day(s)", self.drift_expiry_days),
        ]
    }

    /// The settings, then who rotates as the answering node sees it.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let c = &self.cluster;
        let mut fields: Vec<(&'static str, String)> =
            Self::headers().iter().copied().zip(self.row()).collect();
        fields.extend([
            (
                "Scheduled backups",
                match self.backup_every_hours {
                    0 => "off (on demand only)".to_owned(),
                    1 => "every hour".to_owned(),
                    h => format!("every {h} hours"),
                },
            ),
            (
                "Backups kept",
                match self.backup_keep {
                    0 => "all".to_owned(),
                    n => n.to_string(),
                },
            ),
            (
                "Audit archiving",
                match self.audit_archive_after_days {
                    0 => "on demand only".to_owned(),
                    d => format!("entries older than {d} day(s)"),
                },
            ),
            (
                "Last backup",
                self.last_backup.as_ref().map_or_else(
                    || "none".to_owned(),
                    |b| format!("{} {} ({})", b.id, b.status, output::time(&b.started_at)),
                ),
            ),
        ]);
        fields.extend([
            ("This node", format!("{} ({})", c.node, c.role)),
            (
                "Rotator lease",
                match (&c.lease_holder, c.lease_token, &c.lease_expires_at) {
                    (Some(holder), Some(token), Some(until)) => {
                        format!("{holder}, token {token}, until {}", output::time(until))
                    }
                    _ => "nobody".to_owned(),
                },
            ),
            (
                "Nodes",
                c.nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{} ({}, {})",
                            n.id,
                            n.role,
                            if n.alive { "alive" } else { "not seen lately" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
        if let Some(note) = &c.note {
            fields.push(("Note", note.clone()));
        }
        fields
    }
}

pub async fn run(ctx: &Context, command: Option<ConfigCommand>) -> anyhow::Result<()> {
    let view: SettingsView = match command.unwrap_or(ConfigCommand::Show) {
        ConfigCommand::Show => ctx.authenticated()?.get("/config").await?,
        ConfigCommand::Set(args) => {
            let change = change_request(args);
            let empty = serde_json::to_value(&change)
                .is_ok_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty));
            if empty {
                return Err(CliError::Input(
                    "nothing to change: give at least one option, such as --dual-control on (see `keyhold config set --help`)"
                        .into(),
                )
                .into());
            }
            ctx.authenticated()?
                .call(Method::PATCH, "/config", &change)
                .await?
        }
    };
    output::print_item(ctx.output, &view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_settings_are_sent() {
        let change = change_request(SetArgs {
            dual_control: Some(OnOff::Off),
            lockout_minutes: Some(15),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(change).unwrap(),
            serde_json::json!({"dual_control": false, "lockout_minutes": 15})
        );
        let change = change_request(SetArgs {
            drift_check_hours: Some(0),
            drift_expiry_days: Some(14),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(change).unwrap(),
            serde_json::json!({"drift_check_hours": 0, "drift_expiry_days": 14})
        );
        assert_eq!(
            serde_json::to_value(change_request(SetArgs::default())).unwrap(),
            serde_json::json!({})
        );
    }
}
