//! *Administration → Configuration*: the runtime settings (dual control,
//! lockout, session lifetime), changed under dual control through the API,
//! and the approval policies (dual control or a quorum, per class of
//! sensitive operation).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::identity::Operation;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf_field};
use super::session::UiSession;
use super::{Done, failure, see_other};
use crate::app::AppState;
use crate::operations::{approvals, configuration};
use keyhold_core::approval::{MAX_APPROVALS, MAX_EXPIRY_HOURS};

const TITLE: &str = "Configuration";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SettingsForm {
    dual_control: String,
    lockout_threshold: String,
    lockout_minutes: String,
    session_idle_minutes: String,
    session_max_hours: String,
    on_demand_rotation_limit: String,
    designated_rotator: String,
    drift_check_hours: String,
    drift_expiry_days: String,
    backup_every_hours: String,
    backup_keep: String,
    audit_archive_after_days: String,
}

/// A field the form sent; one it left out (the designated rotator's own
/// form sends only that) is not changed.
fn number(field: &'static str, raw: &str) -> Result<Option<u32>, keyhold_core::InvalidInput> {
    match raw.trim() {
        "" => Ok(None),
        given => given.parse().map(Some).map_err(|_| {
            keyhold_core::InvalidInput::new(field, format!("{field} must be a whole number"))
        }),
    }
}

impl SettingsForm {
    fn request(&self) -> Result<api::SettingsChangeRequest, keyhold_core::InvalidInput> {
        Ok(api::SettingsChangeRequest {
            dual_control: match self.dual_control.as_str() {
                "" => None,
                on_or_off => Some(on_or_off == "on"),
            },
            lockout_threshold: number("lockout_threshold", &self.lockout_threshold)?,
            lockout_minutes: number("lockout_minutes", &self.lockout_minutes)?,
            session_idle_minutes: number("session_idle_minutes", &self.session_idle_minutes)?,
            session_max_hours: number("session_max_hours", &self.session_max_hours)?,
            designated_rotator: (!self.designated_rotator.is_empty())
                .then(|| self.designated_rotator.clone()),
            on_demand_rotation_limit: number(
                "on_demand_rotation_limit",
                &self.on_demand_rotation_limit,
            )?,
            drift_check_hours: number("drift_check_hours", &self.drift_check_hours)?,
            drift_expiry_days: number("drift_expiry_days", &self.drift_expiry_days)?,
            backup_every_hours: number("backup_every_hours", &self.backup_every_hours)?,
            backup_keep: number("backup_keep", &self.backup_keep)?,
            audit_archive_after_days: number(
                "audit_archive_after_days",
                &self.audit_archive_after_days,
            )?,
        })
    }
}

/// The last backup's outcome, as `/readyz` and `/metrics` also tell it.
fn last_backup(backup: Option<&api::BackupView>) -> Markup {
    html! {
        p #last-backup {
            @match backup {
                Some(b) => {
                    "Last backup: " (b.status) ", started " (b.started_at)
                    @if let Some(error) = &b.error { " (" (error) ")" }
                    "."
                }
                None => "No backup has been made yet.",
            }
            " Backups, their custodians and the audit archives are on the "
            a href="/ui/backups" { "Backups" } " screen."
        }
    }
}

fn number_field(id: &str, label: &str, value: u32, min: u32, max: u32) -> Markup {
    number_field_with_hint(id, label, value, min, max, None)
}

/// A number field, with a hint its input is described by.
fn number_field_with_hint(
    id: &str,
    label: &str,
    value: u32,
    min: u32,
    max: u32,
    hint: Option<&str>,
) -> Markup {
    let field = format!("config-{id}");
    let hint_id = format!("{field}-hint");
    html! {
        div.field {
            label for=(field) { (label) }
            input #(field) type="number" name=(id) value=(value) min=(min) max=(max) required
                aria-describedby=[hint.map(|_| hint_id.as_str())];
            @if let Some(hint) = hint { p.hint #(hint_id) { (hint) } }
        }
    }
}

/// Most hours between scheduled drift checks (a month), as the core accepts.
const DRIFT_CHECK_HOURS_MAX: u32 = 24 * 31;
/// Widest expiry window, in days, as the core accepts.
const DRIFT_EXPIRY_DAYS_MAX: u32 = 366;

/// The class the policies form does not set: it is always held to the
/// strictest of the others.
const POLICIES_CLASS: &str = "change_approval_policies";

/// The approval policies form as sent: per class `policy.<class>`
/// (`dual_control` or `quorum`), `approvals.<class>`, `role.<class>` and
/// `hours.<class>`.
fn policies_request(
    fields: &[(String, String)],
) -> Result<api::ApprovalPoliciesRequest, keyhold_core::InvalidInput> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    };
    let mut quorums = std::collections::BTreeMap::new();
    for (key, value) in fields {
        let Some(class) = key.strip_prefix("policy.") else {
            continue;
        };
        if value != "quorum" {
            continue;
        }
        let approvals = field(&format!("approvals.{class}")).parse().map_err(|_| {
            keyhold_core::InvalidInput::new(
                "approvals",
                format!(
                    "the approvals for {class} must be a whole number from 1 to {MAX_APPROVALS}"
                ),
            )
        })?;
        let expires_after_hours = field(&format!("hours.{class}")).parse().map_err(|_| {
            keyhold_core::InvalidInput::new(
                "expires_after_hours",
                format!("the expiry for {class} must be a whole number of hours from 1 to {MAX_EXPIRY_HOURS}"),
            )
        })?;
        quorums.insert(
            class.to_owned(),
            api::QuorumRequest {
                approvals,
                role: field(&format!("role.{class}")).to_owned(),
                expires_after_hours,
            },
        );
    }
    Ok(api::ApprovalPoliciesRequest { quorums })
}

fn policies_section(ui: &UiSession, policies: &[api::PolicyView]) -> Markup {
    html! {
        section.card #approval-policies aria-labelledby="approval-policies-title" {
            h2 #approval-policies-title { "Approval policies" }
            p.hint {
                "Each class of sensitive operation needs either dual control (two officers in one session) "
                "or a quorum: the operation is stored as a request, and runs when enough officers of a role approve it, each from their own session. "
                "Changing these policies is itself held to the strictest of them."
            }
            div.table-wrap {
                table.data #approval-policies-table {
                    caption { "Policy in force for each class" }
                    thead { tr { th scope="col" { "Operation class" } th scope="col" { "Policy" } } }
                    tbody {
                        @for policy in policies {
                            tr data-class=(policy.class) {
                                td { (policy.label) " " code { (policy.class) } }
                                td.policy { (policy.description) }
                            }
                        }
                    }
                }
            }
            form #approval-policies-form method="post" action="/ui/configuration/approval-policies" {
                (csrf_field(&ui.csrf))
                @for policy in policies.iter().filter(|p| p.class != POLICIES_CLASS) {
                    @let id = |what: &str| format!("policy-{what}-{}", policy.class);
                    fieldset.policy data-class=(policy.class) {
                        legend { (policy.label) }
                        div.field {
                            label for=(id("kind")) { "Policy" }
                            select #(id("kind")) name=(format!("policy.{}", policy.class)) {
                                option value="dual_control" selected[policy.policy != "quorum"] { "Dual control" }
                                option value="quorum" selected[policy.policy == "quorum"] { "Quorum of approvals" }
                            }
                        }
                        div.field {
                            label for=(id("approvals")) { "Approvals (quorum)" }
                            input #(id("approvals")) type="number" min="1" max=(MAX_APPROVALS)
                                name=(format!("approvals.{}", policy.class)) value=(policy.approvals.unwrap_or(2));
                        }
                        div.field {
                            label for=(id("role")) { "Approvers' role (quorum)" }
                            @let role = policy.role.as_deref().unwrap_or("administrator");
                            select #(id("role")) name=(format!("role.{}", policy.class)) {
                                option value="administrator" selected[role == "administrator"] { "Administrator" }
                                option value="key_officer" selected[role == "key_officer"] { "Key officer" }
                            }
                        }
                        div.field {
                            label for=(id("hours")) { "Expires after (hours, quorum)" }
                            input #(id("hours")) type="number" min="1" max=(MAX_EXPIRY_HOURS)
                                name=(format!("hours.{}", policy.class)) value=(policy.expires_after_hours.unwrap_or(24));
                        }
                    }
                }
                p.actions { button type="submit" #save-approval-policies { "Save approval policies" } }
            }
        }
    }
}

fn body(ui: &UiSession, settings: &api::SettingsView, policies: &[api::PolicyView]) -> Markup {
    html! {
        form.card #configuration-form method="post" action="/ui/configuration" {
            (csrf_field(&ui.csrf))
            h2 { "Security" }
            div.field {
                label for="config-dual_control" { "Dual control" }
                select #config-dual_control name="dual_control" {
                    option value="on" selected[settings.dual_control] { "On: sensitive actions need two officers" }
                    option value="off" selected[!settings.dual_control] { "Off" }
                }
            }
            (number_field("lockout_threshold", "Failed logins before an identity is locked", settings.lockout_threshold, 1, 100))
            (number_field("lockout_minutes", "Lockout duration (minutes)", settings.lockout_minutes, 1, 1440))
            (number_field("session_idle_minutes", "Session idle timeout (minutes)", settings.session_idle_minutes, 1, 1440))
            (number_field("session_max_hours", "Session maximum lifetime (hours)", settings.session_max_hours, 1, 168))
            (number_field("on_demand_rotation_limit", "On-demand rotations per KMS key (groups rotating in place; AWS allows 25)", settings.on_demand_rotation_limit, 1, 25))
            h2 #drift-settings { "Drift" }
            (number_field_with_hint("drift_check_hours", "Drift check interval (hours)", settings.drift_check_hours, 0, DRIFT_CHECK_HOURS_MAX,
                Some("How often keyhold checks every key group against AWS by itself; 0 checks only when an officer asks, on the Drift screen.")))
            (number_field_with_hint("drift_expiry_days", "Drift expiry window (days)", settings.drift_expiry_days, 1, DRIFT_EXPIRY_DAYS_MAX,
                Some("Key material that expires in AWS within this many days, with no rotation due before, is drift.")))
            h2 #backup-settings { "Backups and audit archiving" }
            (last_backup(settings.last_backup.as_ref()))
            (number_field_with_hint("backup_every_hours", "Backup interval (hours)", settings.backup_every_hours, 0, 744,
                Some("How often keyhold makes a backup by itself, into its backup directory; 0 makes them only when officers ask, on the Backups screen. Needs custodians.")))
            (number_field_with_hint("backup_keep", "Scheduled backups kept", settings.backup_keep, 0, 10_000,
                Some("Older scheduled backups are removed from the backup directory after a new one succeeds; 0 keeps all.")))
            (number_field_with_hint("audit_archive_after_days", "Archive audit entries after (days)", settings.audit_archive_after_days, 0, 36_500,
                Some("Entries older than this are written to a signed archive file once a day and marked archived; 0 archives only when asked.")))
            (layout::needs(ui, Operation::CHANGE_CONFIGURATION, settings.dual_control))
            p.actions { button type="submit" #save-configuration { "Save configuration" } }
        }
        section.card #hsm-protected-key-options aria-labelledby="hsm-options" {
            h2 #hsm-options { "HSM Protected Key Options" }
            form #rotator-form method="post" action="/ui/configuration" {
            (csrf_field(&ui.csrf))
            div.field {
                label for="config-designated_rotator" { "Designated rotator" }
                select #config-designated_rotator name="designated_rotator" {
                    option value="automatic" selected[settings.designated_rotator == "automatic"] {
                        "Automatic: the nodes elect one"
                    }
                    @for node in &settings.cluster.nodes {
                        option value=(node.id) selected[settings.designated_rotator == node.id] {
                            (node.id)
                        }
                    }
                }
            }
            p.actions { button type="submit" #save-rotator { "Save designated rotator" } }
            }
            p { "This node: " strong { (settings.cluster.node) } " (" (settings.cluster.role) ")" }
            p {
                "Rotator lease: "
                @match (&settings.cluster.lease_holder, settings.cluster.lease_token) {
                    (Some(holder), Some(token)) => { strong { (holder) } " (token " (token) ")" }
                    _ => { "nobody" }
                }
            }
            @if let Some(note) = &settings.cluster.note {
                p.notice role="note" { (note) }
            }
            table {
                caption { "Nodes" }
                thead { tr { th scope="col" { "Node" } th scope="col" { "Role" } th scope="col" { "Last seen" } th scope="col" { "State" } } }
                tbody {
                    @for node in &settings.cluster.nodes {
                        tr {
                            td { (node.id) }
                            td { (node.role) }
                            td { (layout::when(&node.last_seen)) }
                            td { @if node.alive { "alive" } @else { "not seen lately" } }
                        }
                    }
                }
            }
        }
        (policies_section(ui, policies))
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    let shown = match configuration::show(&app, &ui.session).await {
        Ok(settings) => approvals::policies(&app, &ui.session)
            .await
            .map(|policies| (settings, policies)),
        Err(e) => Err(e),
    };
    match shown {
        Ok((settings, policies)) => layout::page(
            &ui,
            Nav::Configuration,
            TITLE,
            done.notice().as_ref(),
            body(&ui, &settings, &policies),
        )
        .into_response(),
        Err(e) => failure(&ui, Nav::Configuration, TITLE, e, html! {}),
    }
}

pub async fn change(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(form): axum::Form<SettingsForm>,
) -> Response {
    let result = match form.request() {
        Ok(request) => configuration::change(&app, &ui.session, &request).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(_) => see_other("/ui/configuration?done=configuration"),
        Err(error) => {
            let shown = current(&app, &ui).await;
            failure(&ui, Nav::Configuration, TITLE, error, shown)
        }
    }
}

/// The screen's body as it is now, for a refused change (empty when it
/// cannot be read).
async fn current(app: &AppState, ui: &UiSession) -> Markup {
    let settings = configuration::show(app, &ui.session).await;
    let policies = approvals::policies(app, &ui.session).await;
    match (settings, policies) {
        (Ok(settings), Ok(policies)) => body(ui, &settings, &policies),
        _ => html! {},
    }
}

/// Replaces the approval policies with the form's whole set; under a quorum
/// the change itself becomes a request (see `super::sent_for_approval`).
pub async fn change_policies(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let result = match policies_request(&fields) {
        Ok(request) => approvals::change_policies(&app, &ui.session, &request).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(_) => see_other("/ui/configuration?done=approval_policies#approval-policies"),
        Err(error) => {
            let shown = current(&app, &ui).await;
            failure(&ui, Nav::Configuration, TITLE, error, shown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_policies_form_names_only_its_quorums() {
        let request = policies_request(&fields(&[
            ("csrf", "t"),
            ("policy.delete_group", "quorum"),
            ("approvals.delete_group", "2"),
            ("role.delete_group", "key_officer"),
            ("hours.delete_group", " 48 "),
            ("policy.add_group", "dual_control"),
            ("approvals.add_group", "3"),
            ("role.add_group", "administrator"),
            ("hours.add_group", "24"),
        ]))
        .unwrap();
        assert_eq!(request.quorums.len(), 1);
        let quorum = &request.quorums["delete_group"];
        assert_eq!(quorum.approvals, 2);
        assert_eq!(quorum.role, "key_officer");
        assert_eq!(quorum.expires_after_hours, 48);
    }

    #[test]
    fn the_drift_settings_are_sent_as_given_and_left_alone_when_absent() {
        let form = SettingsForm {
            drift_check_hours: "0".into(),
            drift_expiry_days: " 14 ".into(),
            ..SettingsForm::default()
        };
        let request = form.request().unwrap();
        assert_eq!(request.drift_check_hours, Some(0));
        assert_eq!(request.drift_expiry_days, Some(14));
        // The designated rotator's own form sends neither.
        let rotator = SettingsForm {
            designated_rotator: "automatic".into(),
            ..SettingsForm::default()
        };
        let request = rotator.request().unwrap();
        assert_eq!(request.drift_check_hours, None);
        assert_eq!(request.drift_expiry_days, None);
        let bad = SettingsForm {
            drift_check_hours: "daily".into(),
            ..SettingsForm::default()
        };
        assert_eq!(bad.request().unwrap_err().field, "drift_check_hours");
    }

    #[test]
    fn a_quorum_without_a_number_is_refused() {
        let refused = policies_request(&fields(&[
            ("policy.delete_key", "quorum"),
            ("approvals.delete_key", "two"),
            ("role.delete_key", "administrator"),
            ("hours.delete_key", "24"),
        ]));
        assert!(refused.is_err());
    }
}
