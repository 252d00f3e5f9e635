//! *Administration → Configuration*: the runtime settings (dual control,
//! lockout, session lifetime), changed under dual control through the API.

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
use crate::operations::configuration;

const TITLE: &str = "Configuration";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SettingsForm {
    dual_control: String,
    lockout_threshold: String,
    lockout_minutes: String,
    session_idle_minutes: String,
    session_max_hours: String,
    designated_rotator: String,
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
        })
    }
}

fn number_field(id: &str, label: &str, value: u32, min: u32, max: u32) -> Markup {
    html! {
        div.field {
            label for=(format!("config-{id}")) { (label) }
            input #(format!("config-{id}")) type="number" name=(id) value=(value) min=(min) max=(max) required;
        }
    }
}

fn body(ui: &UiSession, settings: &api::SettingsView) -> Markup {
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
            (layout::needs(&ui.session, Operation::CHANGE_CONFIGURATION, settings.dual_control))
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
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    match configuration::show(&app, &ui.session).await {
        Ok(settings) => layout::page(
            &ui.session,
            &ui.csrf,
            Nav::Configuration,
            TITLE,
            done.notice().as_ref(),
            body(&ui, &settings),
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
            let current = configuration::show(&app, &ui.session).await;
            let shown = match current {
                Ok(settings) => body(&ui, &settings),
                Err(_) => html! {},
            };
            failure(&ui, Nav::Configuration, TITLE, error, shown)
        }
    }
}
