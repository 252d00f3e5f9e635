//! *Key Management → Keys*: key groups with their keys beneath, the group
//! dialog (Group, Info and AWS Properties tabs), the context menus with
//! *Cloud → Force Rotate* and *Cloud → Synchronize*, and deletion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::CoreError;
use keyhold_core::drift::DriftFilter;
use keyhold_core::group::{AtRotationLimit, RotationStrategy};
use keyhold_core::identity::Operation;
use keyhold_core::interval::INTERVAL_HINT;
use keyhold_core::key::{KeyPage, MaterialState};
use keyhold_core::schedule::ROTATION_INTERVAL_HINT;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{Done, encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::{groups, jobs, keys};
use crate::views;

const TITLE: &str = "Keys";

/// The group dialog's interval fields ask for exactly what the server's
/// parsers accept: their words and examples come from the parsers' own
/// hints, and a test parses every example and placeholder.
const ROTATE_EVERY_PLACEHOLDER: &str = "30d";
const VALID_FOR_PLACEHOLDER: &str = "1y";

fn rotate_every_hint() -> String {
    format!("Write {ROTATION_INTERVAL_HINT}; used when Rotate Key is on.")
}

fn valid_for_hint() -> String {
    format!("Write {INTERVAL_HINT}; leave empty for keys that do not expire.")
}

/// Columns of the keys table (design.md §1.7, plus State, Material, Actions).
const COLUMNS: usize = 12;

/// What the keys screen shows.
struct Listing {
    groups: Vec<api::GroupView>,
    keys: Vec<api::KeyView>,
    /// More keys exist than the screen shows.
    truncated: bool,
    credentials: Vec<api::CredentialView>,
    dual_control: bool,
}

async fn listing(app: &AppState, ui: &UiSession) -> Result<Listing, ApiError> {
    let session = &ui.session;
    let now = app.keyhold.now();
    let group_list = app.keyhold.list_groups(session).await?;
    // One page, the largest: the screen lists groups with their keys
    // beneath, which only suits stores of a size a person can read.
    let page = KeyPage {
        group: None,
        after: None,
        limit: KeyPage::MAX_LIMIT,
    };
    // Every open finding, once, for the keys' drift badges (as many as
    // one listing holds, as for the API's key listing).
    let open = app
        .keyhold
        .list_drift(
            session,
            &DriftFilter {
                limit: crate::http::MAX_PAGE,
                ..DriftFilter::default()
            },
        )
        .await?;
    let mut keys: Vec<api::KeyView> = app
        .keyhold
        .list_keys(session, &page)
        .await?
        .iter()
        .map(|k| views::key_with_drift(k, now, &open))
        .collect();
    let truncated = keys.len() == KeyPage::MAX_LIMIT as usize;
    keys.sort_by(|a, b| a.group.cmp(&b.group).then(b.version.cmp(&a.version)));
    let credentials = app.keyhold.list_credentials(session).await?;
    let settings = app.keyhold.settings(session).await?;
    let group_views = groups::views_of(app, &group_list).await?;
    Ok(Listing {
        groups: group_views,
        keys,
        truncated,
        credentials: credentials.iter().map(views::credential).collect(),
        dual_control: settings.dual_control,
    })
}

/// The keys screen, with a dialog over it when one is open. The outcome
/// of the dialog's last action is drawn inside the dialog, where the
/// officer is looking, not on the page behind it.
async fn screen(
    app: &AppState,
    ui: &UiSession,
    notice: Option<Notice>,
    dialog: impl FnOnce(&Listing) -> Option<Dialog>,
    status: StatusCode,
) -> Response {
    let listing = match listing(app, ui).await {
        Ok(listing) => listing,
        Err(e) => return failure(ui, Nav::Keys, TITLE, e, html! {}),
    };
    let (dialog, notice) = match dialog(&listing) {
        Some(dialog) => (Some(dialog.draw(notice.as_ref())), None),
        None => (None, notice),
    };
    let body = html! {
        (table(ui, &listing))
        @if let Some(dialog) = dialog { (dialog) }
    };
    (
        status,
        layout::page(ui, Nav::Keys, TITLE, notice.as_ref(), body),
    )
        .into_response()
}

/// From and to, each day kept whole: a narrow column breaks between them,
/// never inside a date.
fn validity(key: &api::KeyView) -> Markup {
    let day = |t: &str| t.get(..10).unwrap_or(t).to_owned();
    html! {
        span.day { (day(&key.valid_from)) } " – "
        @match &key.valid_to {
            Some(to) => span.day { (day(to)) },
            None => "no expiry",
        }
    }
}

fn table(ui: &UiSession, listing: &Listing) -> Markup {
    html! {
        div.toolbar {
            a.button #add-group href="/ui/keys/groups/new" { "Add key group" }
            span.hint { "Right-click a row, or use its Actions button, for the Cloud menu." }
        }
        (layout::needs(ui, Operation::ADD_GROUP, listing.dual_control))
        @if listing.truncated {
            p.notice #keys-truncated {
                "Showing the first " (KeyPage::MAX_LIMIT) " keys by group name. "
                "List every key with " code { "keyhold key list" } " or the API's pages."
            }
        }
        @if listing.groups.is_empty() {
            p #no-groups { "No key groups yet. Add one to start." }
        } @else {
            // Said once above the table, not in its caption, which a narrow
            // screen would scroll away with the columns.
            p.hint #keys-columns {
                "State in AWS is the KMS key's, as keyhold last saw it; Material in keyhold says whether keyhold's keystore holds the key's material. "
                "Where versions share one KMS key (a group rotated with new material), State in AWS also says which version's material is current: "
                "KMS encrypts with the current one only, and still decrypts with the non-current ones."
            }
            (keys_table(listing))
        }
    }
}

/// The keys table: each group's heading row, then its keys, newest first.
fn keys_table(listing: &Listing) -> Markup {
    html! {
        div.table-wrap {
            table.data #keys-table {
                caption { "Key groups, each with its keys beneath" }
                thead {
                    tr {
                        @for column in ["Name", "Key Group", "Certificate", "Version", "Storage", "Key type", "Algorithm", "Check Digits", "Validity"] {
                            th scope="col" { (column) }
                        }
                        // Two sources that can disagree, so each says whose it is.
                        th scope="col" title="The KMS key's state in AWS, as keyhold last saw it, and the state of the version's material in it" { "State in AWS" }
                        th scope="col" title="Whether keyhold's keystore holds the key's material" { "Material in keyhold" }
                        th.row-actions scope="col" { "Actions" }
                    }
                }
                @for (index, group) in listing.groups.iter().enumerate() {
                    tbody.group data-group=(group.name) {
                        tr.group-row data-menu=(format!("menu-g{index}")) {
                            th scope="rowgroup" colspan=(COLUMNS - 1) {
                                span.kind { "Key group " }
                                strong.group-name { (group.name) }
                                span.meta {
                                    " · " (group.alias) " · " (group.region)
                                    " · " (group.rotate_every.as_deref().map_or("rotation off".to_owned(), |i| format!("rotate every {i}")))
                                    " · " (rotation_strategy_words(group))
                                }
                                (group_drift_badge(group))
                                @if let Some(warning) = group.in_place_rotations.as_ref().and_then(|r| r.warning.as_ref()) {
                                    p.notice.warn.rotation-limit-warning role="note" { (warning) }
                                }
                            }
                            td.row-actions { (group_menu(index, group)) }
                        }
                        @let keys: Vec<&api::KeyView> = listing.keys.iter().filter(|k| k.group == group.name).collect();
                        @if keys.is_empty() {
                            tr.empty { td colspan=(COLUMNS) { "No keys yet: Cloud → Force Rotate creates the first." } }
                        }
                        @for key in &keys {
                            (key_row(key, shares_kms_key(key, &keys)))
                        }
                    }
                }
            }
        }
    }
}

/// How group `group` rotates, as its heading row says it: a new KMS key
/// each time (the alias moved), or new material in the one KMS key, with
/// how many of AWS's on-demand rotations of that key are used.
fn rotation_strategy_words(group: &api::GroupView) -> Markup {
    let in_place = group.rotation_strategy == RotationStrategy::NewMaterial.as_str();
    let at_limit = if group.at_rotation_limit == AtRotationLimit::Refuse.as_str() {
        "refuse to rotate"
    } else {
        "new KMS key"
    };
    html! {
        @if in_place {
            span.strategy data-strategy=(group.rotation_strategy) {
                @match &group.active_key_id {
                    Some(active) => { "new material in KMS key " code { (active) } }
                    None => "new material in one KMS key (the first rotation creates it)",
                }
            }
            @if let Some(rotations) = &group.in_place_rotations {
                " · "
                span.in-place-rotations {
                    (rotations.used) " of " (rotations.limit) " on-demand rotations used"
                }
            }
            " · at the limit: " span.at-limit { (at_limit) }
        } @else {
            span.strategy data-strategy=(group.rotation_strategy) { "new KMS key per rotation" }
            @if let Some(active) = &group.active_key_id { " · active key " code { (active) } }
        }
    }
}

/// Whether another version listed with `key` holds its material in the
/// same KMS key.
fn shares_kms_key(key: &api::KeyView, keys: &[&api::KeyView]) -> bool {
    key.kms_key_id.as_ref().is_some_and(|kms| {
        keys.iter()
            .any(|other| other.id != key.id && other.kms_key_id.as_ref() == Some(kms))
    })
}

/// A material's place in its KMS key, in words: the state, then what KMS
/// does with it.
fn material_state_words(state: &str) -> (String, &'static str) {
    match MaterialState::parse(state) {
        Some(MaterialState::Current) => ("current".into(), " (encrypts and decrypts)"),
        Some(MaterialState::NonCurrent) => ("non-current".into(), " (decrypts only)"),
        Some(MaterialState::PendingRotation) => {
            ("pending rotation".into(), " (imported, not yet current)")
        }
        None => (state.replace('_', " "), ""),
    }
}

fn key_row(key: &api::KeyView, shares_kms_key: bool) -> Markup {
    // Said where it tells something: versions sharing a KMS key, or a
    // material that is not (yet, or any longer) the one KMS encrypts with.
    let material_state = (shares_kms_key
        || MaterialState::parse(&key.material_state).is_some_and(|s| s != MaterialState::Current))
    .then(|| material_state_words(&key.material_state));
    html! {
        tr.key-row data-key=(key.name) data-menu=(format!("menu-k{}", key.id)) {
            td {
                // A narrow column breaks a name between its words (the KMS
                // key id, then the version), never inside the id.
                code.key-name {
                    @for (i, word) in key.name.split(' ').enumerate() {
                        @if i > 0 { " " }
                        span { (word) }
                    }
                }
                // Beside the name, the widest column: the State column
                // stays as narrow as its words.
                (key_drift_badge(key))
                @if key.kms_key_id.is_some() { (key_ids(key)) }
            }
            td.group { (key.group) }
            td { (key.certificate.as_deref().unwrap_or("—")) }
            td.num { (key.version) }
            td { (key.storage) }
            td { (key.key_type) }
            td { (key.algorithm) }
            td { code { (key.check_digits) } }
            td.time { (validity(key)) @if key.expired { " (expired)" } }
            // pending_import as words, so a narrow column can wrap it.
            td.state data-state=(key.state) {
                (key.state.replace('_', " "))
                // Why a key has no KMS key, and what to do about it.
                @if let Some(note) = &key.state_note { p.state-note { (note) } }
                @if let Some((state, what)) = material_state {
                    p.material-state data-material-state=(key.material_state) {
                        // Current is the usual case: the hint above the
                        // table says what it means.
                        "KMS material: " strong { (state) }
                        @if key.material_state != MaterialState::Current.as_str() { (what) }
                    }
                }
            }
            td.material { (key.material) }
            td.row-actions { (key_menu(key)) }
        }
    }
}

/// The KMS key and material ids of a key, behind a disclosure in its name
/// cell: long, and wanted only to match keyhold's versions with AWS's.
fn key_ids(key: &api::KeyView) -> Markup {
    html! {
        details.key-ids {
            summary { "IDs" span.visually-hidden { " of key " (key.name) } }
            (key_facts(key))
        }
    }
}

/// Which KMS key holds a key's material, AWS's id of that material, and
/// the material's state in it.
fn key_facts(key: &api::KeyView) -> Markup {
    let (state, what) = material_state_words(&key.material_state);
    html! {
        dl.facts.key-facts {
            dt { "KMS key" }
            dd { @match &key.kms_key_id { Some(id) => code.kms-key-id { (id) }, None => "none yet" } }
            dt { "Material id" }
            dd { @match &key.kms_material_id { Some(id) => code.kms-material-id { (id) }, None => "not known yet" } }
            @if key.kms_key_id.is_some() {
                dt { "Material in the KMS key" }
                dd.material-state data-material-state=(key.material_state) { (state) (what) }
            }
        }
    }
}

/// A group's open drift findings, as its last check counted them: a link
/// to the Drift screen filtered to the group. Named in full for screen
/// readers (the visible words begin the name).
fn group_drift_badge(group: &api::GroupView) -> Markup {
    let n = group.drift_open;
    html! {
        @if n > 0 {
            " "
            a.badge.drift.group-drift href=(super::drift::group_href(&group.name))
                aria-label=(format!("Drift: {n} open finding{} in key group {}", if n == 1 { "" } else { "s" }, group.name)) {
                "Drift: " (n)
            }
        }
    }
}

/// A key's open drift findings (its own, and its KMS key's): a link to
/// the group's findings on the Drift screen.
fn key_drift_badge(key: &api::KeyView) -> Markup {
    let n = key.drift_open;
    html! {
        @if n > 0 {
            " "
            a.badge.drift.key-drift href=(super::drift::group_href(&key.group))
                aria-label=(format!("Drift: {n} open finding{} on key {}", if n == 1 { "" } else { "s" }, key.name)) {
                "Drift: " (n)
            }
        }
    }
}

fn group_menu(index: usize, group: &api::GroupView) -> Markup {
    let name = encode(&group.name);
    html! {
        details.menu #(format!("menu-g{index}")) {
            summary { "Actions" span.visually-hidden { " for key group " (group.name) } }
            div.menu-panel {
                // Edit first: the first item is the one a stray Enter picks,
                // and Force Rotate creates a billed KMS key.
                p.menu-heading { "Key group" }
                ul {
                    li { a.menu-item href=(format!("/ui/keys/groups/{name}/edit")) data-action="edit" { "Edit" } }
                }
                p.menu-heading { "Cloud" }
                ul {
                    li { a.menu-item href=(format!("/ui/keys/groups/{name}/rotate")) data-action="force-rotate" { "Force Rotate…" } }
                }
                p.menu-heading { "Delete" }
                ul {
                    li { a.menu-item href=(format!("/ui/keys/groups/{name}/delete")) data-action="delete" { "Delete key group…" } }
                }
            }
        }
    }
}

fn key_menu(key: &api::KeyView) -> Markup {
    let name = encode(&key.name);
    html! {
        details.menu #(format!("menu-k{}", key.id)) {
            summary { "Actions" span.visually-hidden { " for key " (key.name) } }
            div.menu-panel {
                p.menu-heading { "Cloud" }
                ul {
                    li { a.menu-item href=(format!("/ui/keys/{name}/sync")) data-action="synchronize" { "Synchronize" } }
                }
                p.menu-heading { "Key" }
                ul {
                    li { a.menu-item href=(format!("/ui/keys/{name}/delete")) data-action="delete" { "Delete" } }
                }
            }
        }
    }
}

/// A dialog over the keys screen: a real page (it works without script and
/// has its own address), drawn as a modal. The page's script makes it
/// modal for the keyboard too (focus inside, the page behind inert, Esc
/// leaves through the dialog's Cancel link, `data-cancel`).
struct Dialog {
    id: &'static str,
    title: String,
    body: Markup,
    /// The dialog's own address, for a form worth coming back to: after a
    /// second officer joins, the page returns there with the fields kept.
    address: Option<String>,
}

fn dialog(id: &'static str, title: &str, body: Markup) -> Dialog {
    Dialog {
        id,
        title: title.to_owned(),
        body,
        address: None,
    }
}

impl Dialog {
    fn draw(self, notice: Option<&Notice>) -> Markup {
        let id = self.id;
        html! {
            div.backdrop {}
            dialog.modal open aria-labelledby=(format!("{id}-title")) #(id) data-cancel="/ui/keys"
                data-address=[self.address] {
                h2 #(format!("{id}-title")) { (self.title) }
                (layout::notice(notice))
                (self.body)
            }
        }
    }
}

// ---- the key group dialog ----

/// The group form's fields; missing checkboxes read as off.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct GroupForm {
    name: String,
    service: String,
    credential: String,
    key_type: String,
    key_length: String,
    usage: String,
    rotate: Option<String>,
    rotate_every: String,
    valid_for: String,
    owner: String,
    notes: String,
    alias: String,
    description: String,
    region: String,
    active_key_id: String,
    policy: String,
    disable_after_rotate: Option<String>,
    rotation_strategy: String,
    at_rotation_limit: String,
    self_heal: Option<String>,
}

impl GroupForm {
    /// A new group's dialog: rotation on, every 30 days.
    fn default_new() -> Self {
        Self {
            rotate: Some("on".into()),
            rotate_every: ROTATE_EVERY_PLACEHOLDER.into(),
            ..Self::default()
        }
    }

    fn from_view(group: &api::GroupView) -> Self {
        Self {
            name: group.name.clone(),
            service: group.service.clone(),
            credential: group.credential.clone(),
            key_type: group.key_type.clone(),
            key_length: group.key_length.to_string(),
            usage: group.usage.clone(),
            rotate: group.rotate.then(|| "on".to_owned()),
            rotate_every: group.rotate_every.clone().unwrap_or_default(),
            valid_for: group.valid_for.clone().unwrap_or_default(),
            owner: group.owner.clone(),
            notes: group.notes.clone(),
            alias: group.alias.clone(),
            description: group.description.clone(),
            region: group.region.clone(),
            active_key_id: group.active_key_id.clone().unwrap_or_default(),
            policy: group.policy.clone().unwrap_or_default(),
            disable_after_rotate: group.disable_after_rotate.then(|| "on".to_owned()),
            rotation_strategy: group.rotation_strategy.clone(),
            at_rotation_limit: group.at_rotation_limit.clone(),
            self_heal: group.self_heal.then(|| "on".to_owned()),
        }
    }

    fn rotates(&self) -> bool {
        self.rotate.is_some()
    }

    fn rotate_every(&self) -> Option<String> {
        self.rotates().then(|| self.rotate_every.trim().to_owned())
    }

    fn create_request(&self) -> Result<api::CreateGroupRequest, ApiError> {
        let key_length = match self.key_length.trim() {
            "" => None,
            raw => Some(raw.parse::<u32>().map_err(|_| {
                keyhold_core::InvalidInput::new("key_length", "key length must be 256")
            })?),
        };
        Ok(api::CreateGroupRequest {
            name: self.name.trim().to_owned(),
            credential: self.credential.clone(),
            service: non_empty(&self.service),
            key_type: non_empty(&self.key_type),
            key_length,
            usage: non_empty(&self.usage),
            rotate_every: self.rotate_every(),
            valid_for: non_empty(&self.valid_for),
            owner: Some(self.owner.clone()),
            notes: Some(self.notes.clone()),
            alias: self.alias.trim().to_owned(),
            description: Some(self.description.clone()),
            region: self.region.trim().to_owned(),
            active_key_id: non_empty(&self.active_key_id),
            policy: non_empty(&self.policy),
            disable_after_rotate: Some(self.disable_after_rotate.is_some()),
            rotation_strategy: non_empty(&self.rotation_strategy),
            at_rotation_limit: non_empty(&self.at_rotation_limit),
            self_heal: Some(self.self_heal.is_some()),
        })
    }

    /// Only what the officer changed, so an untouched field is never rewritten.
    fn update_request(&self, current: &GroupForm) -> api::UpdateGroupRequest {
        let changed = |new: &str, old: &str| (new.trim() != old.trim()).then(|| new.to_owned());
        let clearable = |new: &str, old: &str| (new.trim() != old.trim()).then(|| non_empty(new));
        let rotate_every = if self.rotate_every() == current.rotate_every() {
            None
        } else {
            Some(self.rotate_every())
        };
        api::UpdateGroupRequest {
            credential: changed(&self.credential, &current.credential),
            rotate_every,
            valid_for: clearable(&self.valid_for, &current.valid_for),
            owner: changed(&self.owner, &current.owner),
            notes: changed(&self.notes, &current.notes),
            alias: changed(&self.alias, &current.alias).map(|a| a.trim().to_owned()),
            description: changed(&self.description, &current.description),
            region: changed(&self.region, &current.region).map(|r| r.trim().to_owned()),
            active_key_id: clearable(&self.active_key_id, &current.active_key_id),
            policy: clearable(&self.policy, &current.policy),
            disable_after_rotate: (self.disable_after_rotate.is_some()
                != current.disable_after_rotate.is_some())
            .then_some(self.disable_after_rotate.is_some()),
            rotation_strategy: changed(&self.rotation_strategy, &current.rotation_strategy)
                .map(|r| r.trim().to_owned()),
            at_rotation_limit: changed(&self.at_rotation_limit, &current.at_rotation_limit)
                .map(|l| l.trim().to_owned()),
            self_heal: (self.self_heal.is_some() != current.self_heal.is_some())
                .then_some(self.self_heal.is_some()),
        }
    }
}

/// *Rotation strategy*: a new KMS key per rotation, or new material in the
/// same KMS key (and what to do at AWS's on-demand rotation limit).
fn rotation_strategy_fields(values: &GroupForm) -> Markup {
    let strategy = if values.rotation_strategy.is_empty() {
        RotationStrategy::NewKey.as_str()
    } else {
        values.rotation_strategy.as_str()
    };
    let at_limit = if values.at_rotation_limit.is_empty() {
        AtRotationLimit::NewKey.as_str()
    } else {
        values.at_rotation_limit.as_str()
    };
    html! {
        div.field {
            label for="group-rotation-strategy" { "Rotation strategy" }
            select #group-rotation-strategy name="rotation_strategy" aria-describedby="group-rotation-strategy-hint" {
                option value="new_key" selected[strategy == "new_key"] { "New KMS key per rotation (alias moved)" }
                option value="new_material" selected[strategy == "new_material"] { "New material in the same KMS key (ARN kept)" }
            }
            p.hint #group-rotation-strategy-hint {
                "New material keeps the KMS key and its ARN, so services that pin the ARN keep working, and earlier material still decrypts. AWS allows each KMS key a limited number of on-demand rotations."
            }
        }
        div.field {
            label for="group-at-rotation-limit" { "At the on-demand rotation limit" }
            select #group-at-rotation-limit name="at_rotation_limit" {
                option value="new_key" selected[at_limit == "new_key"] { "Start a new KMS key and move the alias" }
                option value="refuse" selected[at_limit == "refuse"] { "Refuse to rotate" }
            }
        }
    }
}

fn non_empty(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The field an invalid-input error names, and what is wrong with it, to
/// show the error beside the field.
#[derive(Clone, Copy)]
struct FieldError<'a> {
    field: &'a str,
    message: &'a str,
}

fn field_error(error: Option<&ApiError>) -> Option<FieldError<'_>> {
    match error {
        Some(ApiError::Core(CoreError::Invalid(invalid))) => Some(FieldError {
            field: invalid.field,
            message: &invalid.message,
        }),
        _ => None,
    }
}

impl FieldError<'_> {
    fn is(error: Option<Self>, field: &str) -> Option<Self> {
        error.filter(|e| e.field == field)
    }
}

/// What a field refused says beside it, named by the field's
/// `aria-describedby`, and the field takes the focus when the dialog opens.
fn error_beside(field: &str, error: Option<FieldError<'_>>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.field-error #(format!("{field}-error")) { "Not saved: " (error.message) }
        }
    }
}

/// A field's `aria-describedby`: its hint (the element `hint`), then what
/// was refused ([`error_beside`]).
fn described_by(field: &str, hint: Option<&str>, error: Option<FieldError<'_>>) -> Option<String> {
    let ids: Vec<String> = [
        hint.map(str::to_owned),
        error.map(|_| format!("{field}-error")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!ids.is_empty()).then(|| ids.join(" "))
}

#[allow(clippy::too_many_arguments)]
fn text_field(
    id: &str,
    label: &str,
    value: &str,
    required: bool,
    readonly: bool,
    placeholder: &str,
    hint: Option<&str>,
    error: Option<FieldError<'_>>,
) -> Markup {
    let field = format!("group-{id}");
    let error = FieldError::is(error, id);
    html! {
        div.field {
            label for=(field) { (label) @if required { " (required)" } }
            input #(field) type="text" name=(id) value=(value) required[required] readonly[readonly]
                placeholder=(placeholder) aria-invalid=[error.map(|_| "true")] autofocus[error.is_some()]
                aria-describedby=[described_by(&field, hint.map(|_| format!("{field}-hint")).as_deref(), error)];
            @if let Some(hint) = hint { p.hint #(format!("{field}-hint")) { (hint) } }
            (error_beside(&field, error))
        }
    }
}

fn group_dialog(
    ui: &UiSession,
    listing: &Listing,
    values: &GroupForm,
    editing: bool,
    error: Option<&ApiError>,
) -> Dialog {
    let bad = field_error(error);
    let action = if editing {
        format!("/ui/keys/groups/{}/edit", encode(&values.name))
    } else {
        "/ui/keys/groups".to_owned()
    };
    let title = if editing {
        format!("Edit key group {}", values.name)
    } else {
        "Add key group".to_owned()
    };
    let tabs = [
        ("tab-group", "Group"),
        ("tab-info", "Info"),
        ("tab-aws", "AWS Properties"),
    ];
    let body = html! {
        @if editing {
            // Harmless fields need one officer; where material goes and who
            // may use the key (the AWS properties, the credential) need two.
            (layout::needs(ui, Operation::CHANGE_GROUP_CUSTODY, listing.dual_control))
        } @else {
            (layout::needs(ui, Operation::ADD_GROUP, listing.dual_control))
        }
        form #group-form method="post" action=(action) {
            (csrf_field(&ui.csrf))
            div.tabs role="tablist" aria-label="Key group properties" {
                @for (i, (id, label)) in tabs.iter().enumerate() {
                    button.tab type="button" role="tab" #(format!("{id}-button")) aria-controls=(id)
                        aria-selected=(if i == 0 { "true" } else { "false" }) { (label) }
                }
            }
            section.tab-panel #tab-group role="tabpanel" aria-labelledby="tab-group-button" {
                p.static { "Key Type: Symmetric · Storage Location: HSM Protected" }
                (text_field("name", "Name", &values.name, true, editing, "ig-demo", None, bad))
                div.field {
                    label for="group-service" { "Service" }
                    select #group-service name="service" {
                        option value="aws" selected { "Amazon Web Services" }
                    }
                }
                div.field {
                    label for="group-credential" { "Credential (required)" }
                    @let credential_error = FieldError::is(bad, "credential");
                    select #group-credential name="credential" required aria-invalid=[credential_error.map(|_| "true")]
                        autofocus[credential_error.is_some()] aria-describedby=[described_by("group-credential", None, credential_error)] {
                        @if listing.credentials.is_empty() {
                            option value="" { "No cloud credential yet: add one first" }
                        }
                        @for credential in &listing.credentials {
                            option value=(credential.name) selected[credential.name == values.credential] {
                                (credential.name) " (" (credential.access_name) ")"
                            }
                        }
                    }
                    (error_beside("group-credential", credential_error))
                }
                div.field {
                    label for="group-key-type" { "Key Type" }
                    select #group-key-type name="key_type" { option value="AES" selected { "AES" } }
                }
                div.field {
                    label for="group-key-length" { "Key Length" }
                    select #group-key-length name="key_length" { option value="256" selected { "AES-256" } }
                }
                div.field {
                    label for="group-usage" { "Key Usage" }
                    select #group-usage name="usage" { option value="encrypt_decrypt" selected { "Encrypt + Decrypt" } }
                }
                div.field.check {
                    input #group-rotate type="checkbox" name="rotate" value="on" checked[values.rotates()];
                    label for="group-rotate" { "Rotate Key" }
                }
                (text_field("rotate_every", "Rotate every", &values.rotate_every, false, false, ROTATE_EVERY_PLACEHOLDER, Some(rotate_every_hint().as_str()), bad))
                (text_field("valid_for", "Keep key valid for", &values.valid_for, false, false, VALID_FOR_PLACEHOLDER, Some(valid_for_hint().as_str()), bad))
                (rotation_strategy_fields(values))
            }
            section.tab-panel #tab-info role="tabpanel" aria-labelledby="tab-info-button" {
                (text_field("owner", "Owner", &values.owner, false, false, "", None, bad))
                div.field {
                    label for="group-notes" { "Notes" }
                    textarea #group-notes name="notes" rows="4" { (values.notes) }
                }
            }
            section.tab-panel #tab-aws role="tabpanel" aria-labelledby="tab-aws-button" {
                (text_field("alias", "Alias", &values.alias, true, false, "alias/ig-demo", None, bad))
                (text_field("description", "Description", &values.description, false, false, "", None, bad))
                (text_field("region", "Region", &values.region, true, false, "eu-west-1", None, bad))
                (text_field("active_key_id", "Active Key ID", &values.active_key_id, false, false, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", Some("A placeholder KMS key (origin External) awaiting its first material; optional."), bad))
                div.field {
                    label for="group-policy-file" { "Policy file (JSON)" }
                    input #group-policy-file type="file" accept=".json,application/json" data-fills="group-policy";
                }
                div.field {
                    label for="group-policy" { "Policy (uploaded or pasted JSON)" }
                    @let policy_error = FieldError::is(bad, "policy");
                    textarea #group-policy name="policy" rows="8" spellcheck="false" data-json="group-policy-status"
                        aria-describedby=[described_by("group-policy", Some("group-policy-status"), policy_error)]
                        aria-invalid=[policy_error.map(|_| "true")] autofocus[policy_error.is_some()] { (values.policy) }
                    p.hint #group-policy-status aria-live="polite" { "Checked as JSON before saving; keyhold checks it again." }
                    (error_beside("group-policy", policy_error))
                }
                div.field.check {
                    input #group-disable type="checkbox" name="disable_after_rotate" value="on" checked[values.disable_after_rotate.is_some()];
                    label for="group-disable" { "Disable key after rotating" }
                }
                div.field.check {
                    input #group-self-heal type="checkbox" name="self_heal" value="on" checked[values.self_heal.is_some()]
                        aria-describedby="group-self-heal-hint";
                    label for="group-self-heal" { "Self-heal drift" }
                }
                p.hint #group-self-heal-hint {
                    "A drift check then makes the safe repairs by itself, and audits them: it imports deleted or expiring material again, "
                    "moves the alias back, and puts the policy and keyhold's tags back. Enabling, disabling or a cancelled deletion always wait for officers on the Drift screen."
                }
            }
            p.actions {
                button type="submit" #save-group { "Save" }
                a.button.secondary href="/ui/keys" { "Cancel" }
            }
        }
    };
    let address = if editing {
        format!("/ui/keys/groups/{}/edit", encode(&values.name))
    } else {
        "/ui/keys/groups/new".to_owned()
    };
    Dialog {
        address: Some(address),
        ..dialog("group-dialog", &title, body)
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    screen(&app, &ui, done.notice(), |_| None, StatusCode::OK).await
}

pub async fn new_group(State(app): State<AppState>, ui: UiSession) -> Response {
    let values = GroupForm::default_new();
    screen(
        &app,
        &ui,
        None,
        |listing| Some(group_dialog(&ui, listing, &values, false, None)),
        StatusCode::OK,
    )
    .await
}

pub async fn create_group(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(form): axum::Form<GroupForm>,
) -> Response {
    let result = match form.create_request() {
        Ok(request) => groups::add(&app, &ui.session, &request).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(group) => see_other(&format!(
            "/ui/keys?done=group_added&name={}",
            encode(&group.name)
        )),
        Err(error) => {
            reopen(&app, &ui, error, |listing, error| {
                group_dialog(&ui, listing, &form, false, Some(error))
            })
            .await
        }
    }
}

/// The screen again with the dialog still open, the officer's input kept,
/// and why keyhold refused it.
async fn reopen(
    app: &AppState,
    ui: &UiSession,
    error: ApiError,
    dialog: impl FnOnce(&Listing, &ApiError) -> Dialog,
) -> Response {
    if matches!(error, ApiError::Core(CoreError::Unauthenticated(_))) {
        return super::session::to_login(true);
    }
    if let Some(sent) = super::sent_for_approval(&error) {
        return sent;
    }
    let status = error.status_and_code().0;
    let notice = Notice::Failed(error.public_message());
    screen(app, ui, Some(notice), |l| Some(dialog(l, &error)), status).await
}

async fn current_group(
    app: &AppState,
    ui: &UiSession,
    name: &str,
) -> Result<api::GroupView, ApiError> {
    groups::show(app, &ui.session, name).await
}

pub async fn edit_group(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match current_group(&app, &ui, &name).await {
        Ok(group) => {
            let values = GroupForm::from_view(&group);
            screen(
                &app,
                &ui,
                None,
                |listing| Some(group_dialog(&ui, listing, &values, true, None)),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => screen_failure(&app, &ui, e).await,
    }
}

async fn screen_failure(app: &AppState, ui: &UiSession, error: ApiError) -> Response {
    if matches!(error, ApiError::Core(CoreError::Unauthenticated(_))) {
        return super::session::to_login(true);
    }
    if let Some(sent) = super::sent_for_approval(&error) {
        return sent;
    }
    let status = error.status_and_code().0;
    screen(
        app,
        ui,
        Some(Notice::Failed(error.public_message())),
        |_| None,
        status,
    )
    .await
}

pub async fn update_group(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
    axum::Form(mut form): axum::Form<GroupForm>,
) -> Response {
    let current = match current_group(&app, &ui, &name).await {
        Ok(group) => group,
        Err(e) => return screen_failure(&app, &ui, e).await,
    };
    form.name.clone_from(&current.name);
    let request = form.update_request(&GroupForm::from_view(&current));
    let result = groups::update(&app, &ui.session, &name, &request).await;
    match result {
        Ok(group) => see_other(&format!(
            "/ui/keys?done=group_updated&name={}",
            encode(&group.name)
        )),
        Err(error) => {
            reopen(&app, &ui, error, |listing, error| {
                group_dialog(&ui, listing, &form, true, Some(error))
            })
            .await
        }
    }
}

/// *Cloud → Force Rotate* asks first: each rotation creates a KMS key, which
/// AWS bills, and moves the alias.
pub async fn confirm_rotate(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    confirm_for_group(&app, &ui, &name, rotate_dialog).await
}

/// The keys screen with a confirmation `dialog` about group `name` over it.
async fn confirm_for_group(
    app: &AppState,
    ui: &UiSession,
    name: &str,
    dialog: fn(&UiSession, &Listing, &api::GroupView) -> Dialog,
) -> Response {
    let group = match current_group(app, ui, name).await {
        Ok(group) => group,
        Err(e) => return screen_failure(app, ui, e).await,
    };
    screen(
        app,
        ui,
        None,
        |listing| Some(dialog(ui, listing, &group)),
        StatusCode::OK,
    )
    .await
}

fn rotate_dialog(ui: &UiSession, listing: &Listing, group: &api::GroupView) -> Dialog {
    let in_place = group.rotation_strategy == RotationStrategy::NewMaterial.as_str()
        && group
            .in_place_rotations
            .as_ref()
            .is_some_and(|r| r.left > 0);
    let body = html! {
        @if in_place {
            p #rotate-what {
                "This imports new key material into KMS key " code { (group.active_key_id.clone().unwrap_or_default()) }
                " and rotates it on demand: its ARN and " code { (group.alias) } " stay, and what it encrypted before still decrypts."
            }
        } @else {
            p #rotate-what {
                "This creates a new KMS key in " (group.region) " (AWS bills each key), imports new key material into it, and moves "
                code { (group.alias) } " to it"
                @if group.disable_after_rotate { "; the key it replaces is then disabled in AWS" }
                "."
            }
        }
        @if let Some(warning) = group.in_place_rotations.as_ref().and_then(|r| r.warning.as_ref()) {
            p.warning #rotation-limit-warning role="note" { (warning) }
        }
        (layout::needs(ui, Operation::ROTATE_GROUP, listing.dual_control))
        form method="post" action=(format!("/ui/keys/groups/{}/rotate", encode(&group.name))) {
            (csrf_field(&ui.csrf))
            p.actions {
                button type="submit" #confirm-rotate { "Force Rotate " (group.name) }
                a.button.secondary href="/ui/keys" { "Cancel" }
            }
        }
    };
    dialog(
        "rotate-dialog",
        &format!("Force Rotate key group {}?", group.name),
        body,
    )
}

pub async fn rotate(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match jobs::rotate(&app, &ui.session, &name).await {
        Ok(job) => see_other(&format!("/ui/jobs?done=job&name={}", encode(&job.id))),
        Err(e) => screen_failure(&app, &ui, e).await,
    }
}

// ---- deletion ----

pub async fn confirm_delete_group(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    confirm_for_group(&app, &ui, &name, delete_group_dialog).await
}

fn delete_group_dialog(ui: &UiSession, listing: &Listing, group: &api::GroupView) -> Dialog {
    let keys: Vec<&api::KeyView> = listing
        .keys
        .iter()
        .filter(|k| k.group == group.name)
        .collect();
    let body = html! {
        p #delete-what {
            "This deletes the HSM protected key group " strong { (group.name) }
            " (alias " code { (group.alias) } " in " (group.region) ") from keyhold. "
            "Nothing is deleted in AWS."
        }
        @if !keys.is_empty() {
            p.notice.warn role="note" {
                "It still has " (keys.len()) " key(s), which keyhold refuses to delete with the group "
                "because AWS may still need their material: delete them first."
            }
            ul { @for key in &keys { li { code { (key.name) } " (version " (key.version) ")" } } }
        }
        (layout::needs(ui, Operation::DELETE_GROUP, listing.dual_control))
        form method="post" action=(format!("/ui/keys/groups/{}/delete", encode(&group.name))) {
            (csrf_field(&ui.csrf))
            p.actions {
                // Keys left: keyhold refuses, as the notice above says, so
                // the button does not pretend otherwise.
                button.danger type="submit" #confirm-delete disabled[!keys.is_empty()] { "Delete key group " (group.name) }
                a.button.secondary href="/ui/keys" { "Cancel" }
            }
        }
    };
    dialog(
        "delete-dialog",
        &format!("Delete key group {}?", group.name),
        body,
    )
}

pub async fn delete_group(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match groups::delete(&app, &ui.session, &name).await {
        Ok(()) => see_other(&format!(
            "/ui/keys?done=group_deleted&name={}",
            encode(&name)
        )),
        Err(e) => screen_failure(&app, &ui, e).await,
    }
}

async fn current_key(app: &AppState, ui: &UiSession, name: &str) -> Result<api::KeyView, ApiError> {
    keys::show(app, &ui.session, name).await
}

pub async fn confirm_delete_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    let key = match current_key(&app, &ui, &name).await {
        Ok(key) => key,
        Err(e) => return screen_failure(&app, &ui, e).await,
    };
    screen(
        &app,
        &ui,
        None,
        |listing| {
            let body = html! {
                p #delete-what {
                    "This deletes the HSM protected key " code { (key.name) } " (key group " strong { (key.group) }
                    ", version " (key.version) ", check digits " code { (key.check_digits) }
                    ") from keyhold, and its material from the keystore. The KMS key in AWS stays as it is."
                }
                (key_facts(&key))
                (layout::needs(&ui, Operation::DELETE_KEY, listing.dual_control))
                form method="post" action=(format!("/ui/keys/{}/delete", encode(&key.name))) {
                    (csrf_field(&ui.csrf))
                    p.actions {
                        button.danger type="submit" #confirm-delete { "Delete key " (key.name) }
                        a.button.secondary href="/ui/keys" { "Cancel" }
                    }
                }
            };
            Some(dialog("delete-dialog", &format!("Delete key {}?", key.name), body))
        },
        StatusCode::OK,
    )
    .await
}

pub async fn delete_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match keys::delete(&app, &ui.session, &name).await {
        Ok(()) => see_other(&format!("/ui/keys?done=key_deleted&name={}", encode(&name))),
        Err(e) => screen_failure(&app, &ui, e).await,
    }
}

// ---- Cloud → Synchronize ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SyncForm {
    update_policy: Option<String>,
    import_material: Option<String>,
    delete_material: Option<String>,
}

pub async fn sync_dialog(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    let key = match current_key(&app, &ui, &name).await {
        Ok(key) => key,
        Err(e) => return screen_failure(&app, &ui, e).await,
    };
    screen(
        &app,
        &ui,
        None,
        |listing| {
            let body = html! {
                p { "Key " code { (key.name) } " of key group " strong { (key.group) } ", version " (key.version) "." }
                (key_facts(&key))
                form #sync-form method="post" action=(format!("/ui/keys/{}/sync", encode(&key.name))) {
                    (csrf_field(&ui.csrf))
                    fieldset {
                        legend { "Synchronize options" }
                        div.field.check {
                            input #sync-update-policy type="checkbox" name="update_policy" value="on" checked;
                            label for="sync-update-policy" { "Update Policy" }
                        }
                        p.hint { "Puts the key group's policy on this KMS key." }
                        div.field.check {
                            input #sync-import-material type="checkbox" name="import_material" value="on" checked;
                            label for="sync-import-material" { "Import Key Material" }
                        }
                        p.hint { "Imports this key's own material again (for example after it was deleted in AWS)." }
                        div.field.check {
                            input #sync-delete-material type="checkbox" name="delete_material" value="on";
                            label for="sync-delete-material" { "Delete Key Material" }
                        }
                        p.hint { "Deletes the imported material from AWS: the KMS key becomes pending import." }
                    }
                    (layout::needs(&ui, Operation::DELETE_KEY_MATERIAL, listing.dual_control))
                    p.actions {
                        button type="submit" #start-sync { "Synchronize" }
                        a.button.secondary href="/ui/keys" { "Cancel" }
                    }
                }
            };
            Some(dialog("sync-dialog", "Synchronize HSM protected key", body))
        },
        StatusCode::OK,
    )
    .await
}

pub async fn synchronize(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<SyncForm>,
) -> Response {
    let request = api::SyncRequest {
        update_policy: Some(form.update_policy.is_some()),
        import_material: Some(form.import_material.is_some()),
        delete_material: Some(form.delete_material.is_some()),
    };
    match jobs::synchronize(&app, &ui.session, &name, &request).await {
        Ok(job) => see_other(&format!("/ui/jobs?done=job&name={}", encode(&job.id))),
        Err(e) => screen_failure(&app, &ui, e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::interval::{Interval, written_intervals};
    use keyhold_core::schedule::parse_rotation_interval;

    #[test]
    fn interval_hints_and_placeholders_name_only_what_is_accepted() {
        let rotate = rotate_every_hint();
        let rotate_examples: Vec<&str> = written_intervals(&rotate).collect();
        assert!(rotate_examples.len() >= 3, "{rotate}");
        for example in rotate_examples.iter().chain([&ROTATE_EVERY_PLACEHOLDER]) {
            assert!(
                parse_rotation_interval(example).is_ok(),
                "{example} in {rotate}"
            );
        }
        let valid = valid_for_hint();
        let valid_examples: Vec<&str> = written_intervals(&valid).collect();
        assert!(valid_examples.len() >= 3, "{valid}");
        for example in valid_examples.iter().chain([&VALID_FOR_PLACEHOLDER]) {
            assert!(Interval::parse(example).is_ok(), "{example} in {valid}");
        }
        // The new-group dialog's default is accepted too.
        assert!(parse_rotation_interval(&GroupForm::default_new().rotate_every).is_ok());
    }

    fn view() -> api::GroupView {
        api::GroupView {
            name: "ig-demo".into(),
            service: "aws".into(),
            credential: "aws".into(),
            key_type: "AES".into(),
            key_length: 256,
            algorithm: "AES-256".into(),
            usage: "encrypt_decrypt".into(),
            storage: "Protected".into(),
            rotate: true,
            rotate_every: Some("30d".into()),
            next_rotation_at: None,
            valid_for: None,
            owner: "sec".into(),
            notes: String::new(),
            alias: "alias/ig-demo".into(),
            description: String::new(),
            region: "eu-west-1".into(),
            active_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
            policy: Some("{}".into()),
            disable_after_rotate: true,
            rotation_strategy: "new_key".into(),
            at_rotation_limit: "new_key".into(),
            in_place_rotations: None,
            created_at: String::new(),
            updated_at: String::new(),
            last_rotation_job: None,
            last_rotation_status: None,
            last_rotation_error: None,
            rotation_retry_at: None,
            self_heal: false,
            drift_open: 0,
            drift_checked_at: None,
        }
    }

    const KMS_KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn key(name: &str, group: &str, version: u32, material_state: &str) -> api::KeyView {
        api::KeyView {
            name: name.into(),
            id: format!("00000000-0000-0000-0000-00000000000{version}"),
            group: group.into(),
            certificate: None,
            version,
            storage: "Protected".into(),
            key_type: "AES".into(),
            algorithm: "AES-256".into(),
            check_digits: "A1B2C3".into(),
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_to: None,
            state: "enabled".into(),
            expired: false,
            material: "present".into(),
            state_note: None,
            kms_key_id: Some(KMS_KEY.into()),
            kms_material_id: Some(format!("{version}{}", "a".repeat(63))),
            material_state: material_state.into(),
            drift_open: 0,
        }
    }

    /// The markup of key `name`'s row in `page`.
    fn row_of<'a>(page: &'a str, name: &str) -> &'a str {
        let start = page
            .find(&format!("data-key=\"{name}\""))
            .unwrap_or_else(|| panic!("no row for {name} in {page}"));
        let rest = &page[start..];
        &rest[..rest.find("</tr>").unwrap()]
    }

    #[test]
    fn versions_sharing_a_kms_key_say_which_material_is_current() {
        let mut in_place = api::GroupView {
            name: "ig-inplace".into(),
            alias: "alias/ig-inplace".into(),
            rotation_strategy: "new_material".into(),
            at_rotation_limit: "refuse".into(),
            in_place_rotations: Some(api::InPlaceRotationsView {
                used: 8,
                limit: 10,
                left: 2,
                warning: Some("2 of 10 on-demand rotations of KMS key left: then refused".into()),
            }),
            ..view()
        };
        in_place.active_key_id = Some(KMS_KEY.into());
        let mut other_key = key(
            "5678abcd-12ab-34cd-56ef-1234567890ab",
            "ig-demo",
            1,
            "current",
        );
        other_key.id = "00000000-0000-0000-0000-0000000000ff".into();
        other_key.kms_key_id = Some(other_key.name.clone());
        let listing = Listing {
            groups: vec![view(), in_place],
            keys: vec![
                other_key,
                key(&format!("{KMS_KEY} v2"), "ig-inplace", 2, "current"),
                key(KMS_KEY, "ig-inplace", 1, "non_current"),
            ],
            truncated: false,
            credentials: Vec::new(),
            dual_control: true,
        };
        let page = keys_table(&listing).into_string();

        // Each group's heading row says how it rotates.
        let groups: Vec<&str> = page.split("<tbody").skip(1).collect();
        assert_eq!(groups.len(), 2, "{page}");
        assert!(
            groups[0].contains("new KMS key per rotation"),
            "{}",
            groups[0]
        );
        assert!(!groups[0].contains("on-demand rotations"), "{}", groups[0]);
        assert!(
            !groups[0].contains("rotation-limit-warning"),
            "{}",
            groups[0]
        );
        let heading = &groups[1][..groups[1].find("</tr>").unwrap()];
        for words in [
            format!("new material in KMS key <code>{KMS_KEY}</code>"),
            "8 of 10 on-demand rotations used".to_owned(),
            "at the limit: <span class=\"at-limit\">refuse to rotate</span>".to_owned(),
            "role=\"note\">2 of 10 on-demand rotations of KMS key left: then refused</p>"
                .to_owned(),
        ] {
            assert!(heading.contains(&words), "{words} missing in {heading}");
        }

        // The versions sharing the KMS key say, in words, which material
        // KMS encrypts with; each shows its KMS key and material ids.
        let current = row_of(&page, &format!("{KMS_KEY} v2"));
        assert!(
            current.contains("KMS material: <strong>current</strong></p>"),
            "{current}"
        );
        let older = row_of(&page, KMS_KEY);
        assert!(
            older.contains("data-material-state=\"non_current\"")
                && older.contains("KMS material: <strong>non-current</strong> (decrypts only)"),
            "{older}"
        );
        for (row, version) in [(current, 2), (older, 1)] {
            assert!(row.contains("<summary>IDs"), "{row}");
            assert!(
                row.contains(&format!("<code class=\"kms-key-id\">{KMS_KEY}</code>")),
                "{row}"
            );
            let material = format!("{version}{}", "a".repeat(63));
            assert!(
                row.contains(&format!(
                    "<code class=\"kms-material-id\">{material}</code>"
                )),
                "{row}"
            );
        }
        // A key alone in its KMS key, with current material: nothing to say.
        let alone = row_of(&page, "5678abcd-12ab-34cd-56ef-1234567890ab");
        assert!(!alone.contains("KMS material:"), "{alone}");
        assert!(alone.contains("<summary>IDs"), "{alone}");

        // The header is a real one, and the state column says it holds both.
        assert!(page.contains("<th scope=\"col\" title=\"The KMS key's state in AWS, as keyhold last saw it, and the state of the version's material in it\">State in AWS</th>"), "{page}");
    }

    #[test]
    fn groups_and_keys_with_open_drift_findings_link_to_them() {
        let mut drifted = key(KMS_KEY, "ig-demo", 1, "current");
        drifted.drift_open = 2;
        let listing = Listing {
            groups: vec![api::GroupView {
                drift_open: 3,
                ..view()
            }],
            keys: vec![drifted],
            truncated: false,
            credentials: Vec::new(),
            dual_control: true,
        };
        let page = keys_table(&listing).into_string();
        assert!(
            page.contains("<a class=\"badge drift group-drift\" href=\"/ui/drift?group=ig-demo\" aria-label=\"Drift: 3 open findings in key group ig-demo\">Drift: 3</a>"),
            "{page}"
        );
        let row = row_of(&page, KMS_KEY);
        assert!(
            row.contains(&format!("<a class=\"badge drift key-drift\" href=\"/ui/drift?group=ig-demo\" aria-label=\"Drift: 2 open findings on key {KMS_KEY}\">Drift: 2</a>")),
            "{row}"
        );
        // No findings, no badge.
        let clean = Listing {
            groups: vec![view()],
            keys: vec![key(KMS_KEY, "ig-demo", 1, "current")],
            ..listing
        };
        assert!(!keys_table(&clean).into_string().contains("badge drift"));
    }

    #[test]
    fn self_heal_is_sent_when_it_changes() {
        let current = GroupForm::from_view(&view());
        let mut edited = current.clone();
        edited.self_heal = Some("on".into());
        let request = serde_json::to_value(edited.update_request(&current)).unwrap();
        assert_eq!(request, serde_json::json!({"self_heal": true}));
        let created = GroupForm {
            name: "ig-demo".into(),
            ..GroupForm::default()
        };
        assert_eq!(created.create_request().unwrap().self_heal, Some(false));
    }

    #[test]
    fn a_pending_rotation_is_said_even_before_another_version_shares_the_key() {
        let pending = key(&format!("{KMS_KEY} v2"), "ig-demo", 2, "pending_rotation");
        let listing = Listing {
            groups: vec![view()],
            keys: vec![pending],
            truncated: false,
            credentials: Vec::new(),
            dual_control: false,
        };
        let page = keys_table(&listing).into_string();
        assert!(
            page.contains(
                "KMS material: <strong>pending rotation</strong> (imported, not yet current)"
            ),
            "{page}"
        );
        // The dialogs' facts say the same, and where the material is.
        let mut facts = key_facts(&listing.keys[0]).into_string();
        assert!(
            facts.contains("pending rotation (imported, not yet current)"),
            "{facts}"
        );
        assert!(facts.contains(KMS_KEY), "{facts}");
        let mut local = listing.keys[0].clone();
        local.kms_key_id = None;
        local.kms_material_id = None;
        facts = key_facts(&local).into_string();
        assert!(
            facts.contains("none yet") && facts.contains("not known yet"),
            "{facts}"
        );
        assert!(!facts.contains("Material in the KMS key"), "{facts}");
    }

    #[test]
    fn a_field_is_described_by_its_hint_then_what_was_refused() {
        let refused = Some(FieldError {
            field: "policy",
            message: "not JSON",
        });
        assert_eq!(
            described_by("group-policy", Some("group-policy-status"), refused).as_deref(),
            Some("group-policy-status group-policy-error")
        );
        assert_eq!(
            described_by("group-policy", Some("group-policy-status"), None).as_deref(),
            Some("group-policy-status")
        );
        assert_eq!(
            described_by("group-credential", None, refused).as_deref(),
            Some("group-credential-error")
        );
        assert_eq!(described_by("group-owner", None, None), None);
    }

    #[test]
    fn an_untouched_edit_changes_nothing() {
        let current = GroupForm::from_view(&view());
        let request = current.clone().update_request(&current);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn an_edit_sends_only_what_changed_and_clears_empty_fields() {
        let current = GroupForm::from_view(&view());
        let mut edited = current.clone();
        edited.rotate = None;
        edited.policy = String::new();
        edited.owner = "payments".into();
        edited.disable_after_rotate = None;
        let request = serde_json::to_value(edited.update_request(&current)).unwrap();
        assert_eq!(
            request,
            serde_json::json!({"rotate_every": null, "policy": null, "owner": "payments", "disable_after_rotate": false})
        );
    }

    #[test]
    fn a_new_group_turns_checkboxes_and_empty_fields_into_the_api_request() {
        let form = GroupForm {
            name: " ig-demo ".into(),
            credential: "aws".into(),
            key_length: "256".into(),
            rotate: Some("on".into()),
            rotate_every: "30d".into(),
            alias: "alias/ig-demo".into(),
            region: "eu-west-1".into(),
            ..GroupForm::default()
        };
        let request = form.create_request().unwrap();
        assert_eq!(request.name, "ig-demo");
        assert_eq!(request.key_length, Some(256));
        assert_eq!(request.rotate_every.as_deref(), Some("30d"));
        assert_eq!(request.valid_for, None);
        assert_eq!(request.policy, None);
        assert_eq!(request.disable_after_rotate, Some(false));
        let off = GroupForm {
            rotate: None,
            ..form
        };
        assert_eq!(off.create_request().unwrap().rotate_every, None);
    }
}
