//! *Administration → Backups*: the backups made (their status, file and
//! SHA-256), *Back up now*, each backup's file and its custodians' shares;
//! the custodians who together open a backup, and the form that sets them;
//! the audit log's signed archives and the form that writes one.
//!
//! Reads and actions are the API's operations (`crate::operations::backups`)
//! with the browser's session: who may read backups, dual control or the
//! approval policies of class `create_backup` and `set_custodians`, and
//! what a custodian set must be are decided there, not here. A passphrase
//! typed into the custodians form goes to the operation, which derives the
//! custodian's key from it and forgets it: no page ever shows it again.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::backup::{CustodianSet, MAX_CUSTODIANS, MIN_THRESHOLD};
use keyhold_core::error::CoreError;
use keyhold_core::identity::Operation;
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::backups;

const TITLE: &str = "Backups";
const SHARES_TITLE: &str = "Backup shares";
/// Backups the screen lists, newest first.
const BACKUPS_SHOWN: u32 = 100;
/// Empty custodian rows the form offers beyond the custodians set now (and
/// at least this many rows in all), up to the most a set may have.
const SPARE_ROWS: usize = 2;
const MIN_ROWS: usize = 4;

/// The outcome of the last action, as a redirect carries it: only these
/// sentences can appear, with the values escaped like any other text.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BackupsQuery {
    /// `started`, `custodians`, `archived` or `nothing`.
    done: String,
    /// The backup started, or the archive file written.
    name: String,
    /// The sequence numbers an archive holds.
    first: String,
    last: String,
}

impl BackupsQuery {
    fn notice(&self) -> Option<Notice> {
        let text = match self.done.as_str() {
            "started" => format!(
                "Started backup {}: its file is being made in the background; reload this page to see it finish.",
                self.name
            ),
            "custodians" => {
                "Custodians saved: backups made from now on are split among them.".to_owned()
            }
            "archived" => format!(
                "Archived audit entries {} to {} into {}.",
                self.first, self.last, self.name
            ),
            "nothing" => "Nothing to archive: no audit entry that is not archived yet is that old."
                .to_owned(),
            _ => return None,
        };
        Some(Notice::Done(text))
    }
}

/// What the screen shows.
struct Screen {
    backups: Vec<api::BackupView>,
    custodians: api::CustodiansView,
    archives: Vec<api::AuditArchiveView>,
    dual_control: bool,
}

async fn read(app: &AppState, ui: &UiSession) -> Result<Screen, ApiError> {
    let session = &ui.session;
    Ok(Screen {
        backups: backups::list(app, session, Some(BACKUPS_SHOWN)).await?,
        custodians: backups::custodians(app, session).await?,
        archives: backups::archives(app, session).await?,
        dual_control: app.keyhold.settings(session).await?.dual_control,
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A file's size as people read it, in binary units.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return plural(bytes, "byte", "bytes");
    }
    // Display only: the precision lost in the float does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}\u{a0}{}", UNITS[unit])
}

fn backup_href(id: &str) -> String {
    format!("/ui/backups/{}", encode(id))
}

fn status_badge(status: &str) -> Markup {
    html! { span.status-badge data-status=(status) { (status) } }
}

/// Who made it: the officers of the session, or the schedule.
fn made_by(backup: &api::BackupView) -> String {
    if backup.trigger == "scheduled" {
        "Schedule".to_owned()
    } else {
        // Stored as the session's names joined by commas.
        backup
            .initiated_by
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn backups_table(backups: &[api::BackupView]) -> Markup {
    html! {
        div.table-wrap {
            table.data #backups-table {
                caption { "Backups, newest first" }
                thead {
                    tr {
                        th scope="col" { "Status" }
                        th scope="col" { "Started" }
                        th scope="col" { "By" }
                        th scope="col" { "Keys" }
                        th scope="col" { "Size" }
                        th scope="col" { "Custodians" }
                        th scope="col" { "File" }
                        th scope="col" { "SHA-256" }
                        th scope="col" { "Error" }
                        th.row-actions scope="col" { "Actions" }
                    }
                }
                tbody {
                    @if backups.is_empty() {
                        tr.empty { td colspan="10" { "No backups yet." } }
                    }
                    @for backup in backups {
                        tr data-backup=(backup.id) data-status=(backup.status) {
                            td.status { (status_badge(&backup.status)) }
                            td.time {
                                (layout::when(&backup.started_at))
                                @if let Some(at) = &backup.finished_at {
                                    span.finished { "Finished " (layout::when(at)) }
                                }
                            }
                            td.by { (made_by(backup)) }
                            td.num.keys { @if let Some(keys) = backup.keys { (keys) } @else { "—" } }
                            td.num.size { @if let Some(bytes) = backup.size { (size(bytes)) } @else { "—" } }
                            td.custodians {
                                (backup.threshold) " of " (backup.custodians.len())
                                span.names { (backup.custodians.join(", ")) }
                            }
                            td.file { code { (backup.file) } }
                            td.sha256 {
                                @match &backup.sha256 {
                                    Some(sha) => code.hash { (sha) },
                                    None => "—",
                                }
                            }
                            td.error { (backup.error.as_deref().unwrap_or("—")) }
                            td.row-actions {
                                @if backup.status == "succeeded" {
                                    a.download href=(format!("{}/file", backup_href(&backup.id))) download=(backup.file) {
                                        "Download" span.visually-hidden { " backup file " (backup.file) }
                                    }
                                    " "
                                    a.shares href=(format!("{}/shares", backup_href(&backup.id))) {
                                        "Shares" span.visually-hidden { " of backup " (backup.file) }
                                    }
                                } @else {
                                    "—"
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn backups_section(ui: &UiSession, screen: &Screen) -> Markup {
    html! {
        section.card #backups aria-labelledby="backups-title" {
            h2 #backups-title { "Backups" }
            p.hint {
                "A backup is one encrypted file: the database, every key's material wrapped, and the audit log's keys. "
                "Its key is split among the custodians: "
                @if screen.custodians.threshold == 0 {
                    "enough of them together open it, fewer learn nothing. "
                } @else {
                    "any " (screen.custodians.threshold) " of them together open it, fewer learn nothing. "
                }
                "Scheduled backups and how many are kept are set on the "
                a href="/ui/configuration#backup-settings" { "Configuration" } " screen."
            }
            @if screen.custodians.custodians.is_empty() {
                p.notice.warn #no-custodians role="note" {
                    "No custodians are set: set them below before the first backup."
                }
            }
            (layout::needs(ui, Operation::CREATE_BACKUP, screen.dual_control))
            form #backup-now-form method="post" action="/ui/backups/start" {
                (csrf_field(&ui.csrf))
                p.actions { button type="submit" #backup-now { "Back up now" } }
            }
            (backups_table(&screen.backups))
        }
    }
}

fn custodians_table(view: &api::CustodiansView) -> Markup {
    html! {
        @if view.custodians.is_empty() {
            p #custodians-none { "No custodians yet." }
        } @else {
            p #custodians-threshold-now {
                "Any " strong { (view.threshold) } " of these "
                (view.custodians.len()) " custodians together open a backup made from now on."
            }
            div.table-wrap {
                table.data #custodians-table {
                    caption { "Custodians of the backups made from now on" }
                    thead {
                        tr {
                            th scope="col" { "Custodian" }
                            th scope="col" { "Their key" }
                            th scope="col" { "Public key (X25519)" }
                        }
                    }
                    tbody {
                        @for custodian in &view.custodians {
                            tr data-custodian=(custodian.name) {
                                th scope="row" { (custodian.name) }
                                td.kind {
                                    @if custodian.passphrase { "From a passphrase" } @else { "A key file" }
                                }
                                td { code.hash { (custodian.public_key) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One row of the custodians form as the page fills it: never a passphrase.
#[derive(Clone, Default)]
struct Row {
    name: String,
    public_key: String,
    /// The key comes from a passphrase (the server keeps its salt).
    passphrase_key: bool,
}

/// What the custodians form shows: the set in force, or what an officer
/// sent when it was refused (without the passphrases they typed).
struct Draft {
    threshold: String,
    rows: Vec<Row>,
    /// A passphrase was typed and must be typed again.
    had_passphrases: bool,
}

impl Draft {
    fn current(view: &api::CustodiansView) -> Self {
        Self {
            threshold: match view.threshold {
                0 => String::new(),
                t => t.to_string(),
            },
            rows: view
                .custodians
                .iter()
                .map(|c| Row {
                    name: c.name.clone(),
                    public_key: c.public_key.clone(),
                    passphrase_key: c.passphrase,
                })
                .collect(),
            had_passphrases: false,
        }
    }
}

fn custodian_row(index: usize, row: &Row) -> Markup {
    let id = |what: &str| format!("custodian-{index}-{what}");
    let number = index + 1;
    html! {
        fieldset.custodian data-row=(index) {
            legend { "Custodian " (number) }
            div.field {
                label for=(id("name")) { "Name" }
                input #(id("name")) type="text" name=(format!("name.{index}")) value=(row.name)
                    maxlength="64" autocomplete="off" spellcheck="false";
            }
            div.field.wide {
                label for=(id("public-key")) { "Public key" }
                input #(id("public-key")) type="text" name=(format!("public_key.{index}")) value=(row.public_key)
                    maxlength="64" autocomplete="off" spellcheck="false"
                    aria-describedby=[row.passphrase_key.then(|| id("from-passphrase"))];
                @if row.passphrase_key {
                    p.hint #(id("from-passphrase")) {
                        "From a passphrase: keeping this key keeps the passphrase. To change it, clear the key and type the new passphrase."
                    }
                }
            }
            div.field {
                label for=(id("passphrase")) { "Or a passphrase" }
                input #(id("passphrase")) type="password" name=(format!("passphrase.{index}"))
                    autocomplete="new-password";
            }
            div.field {
                label for=(id("confirm")) { "The passphrase again" }
                input #(id("confirm")) type="password" name=(format!("confirm.{index}"))
                    autocomplete="new-password";
            }
        }
    }
}

fn custodians_section(ui: &UiSession, screen: &Screen, draft: &Draft) -> Markup {
    let count = (draft.rows.len() + SPARE_ROWS).clamp(MIN_ROWS, MAX_CUSTODIANS);
    let empty = Row::default();
    html! {
        section.card #custodians aria-labelledby="custodians-title" {
            h2 #custodians-title { "Custodians" }
            (custodians_table(&screen.custodians))
            h3 { "Set the custodians" }
            p.hint #custodians-form-hint {
                "The custodians you give here replace the whole set, for backups made from now on (older backups keep theirs). "
                "Give each either a public key, made on their own machine with "
                code { "keyhold backup custodian-key" }
                ", or a passphrase: keyhold derives their key from it (Argon2id), keeps only the public key and salt, and forgets the passphrase. "
                "They need that passphrase, or their key file, to open their share. Leave a row empty to skip it."
            }
            (layout::needs(ui, Operation::SET_CUSTODIANS, screen.dual_control))
            @if draft.had_passphrases {
                p.notice.warn #passphrases-again role="note" {
                    "Passphrases are never shown again: type them again before saving."
                }
            }
            form #custodians-form method="post" action="/ui/backups/custodians" aria-describedby="custodians-form-hint" {
                (csrf_field(&ui.csrf))
                div.field {
                    label for="custodians-threshold" { "Custodians needed to open a backup" }
                    input #custodians-threshold type="number" name="threshold" value=(draft.threshold)
                        min=(MIN_THRESHOLD) max=(MAX_CUSTODIANS) required;
                }
                @for index in 0..count {
                    (custodian_row(index, draft.rows.get(index).unwrap_or(&empty)))
                }
                p.actions { button type="submit" #save-custodians { "Save custodians" } }
            }
        }
    }
}

fn archives_section(ui: &UiSession, screen: &Screen) -> Markup {
    html! {
        section.card #audit-archives aria-labelledby="audit-archives-title" {
            h2 #audit-archives-title { "Audit archives" }
            p.hint {
                "Archiving writes audit entries, in order and hash-chained, to a file signed with the audit signing key, and marks them archived. "
                "keyhold archives entries older than the days set on the "
                a href="/ui/configuration#backup-settings" { "Configuration" } " screen once a day by itself; these forms archive now."
            }
            (layout::needs(ui, Operation::ARCHIVE_AUDIT, screen.dual_control))
            div.archive-forms {
                form #archive-older-form method="post" action="/ui/backups/archives" {
                    (csrf_field(&ui.csrf))
                    div.field {
                        label for="archive-older-than-days" { "Archive entries older than (days)" }
                        input #archive-older-than-days type="number" name="older_than_days" min="1" max="36500" required;
                    }
                    p.actions { button type="submit" #archive-older { "Archive older entries" } }
                }
                form #archive-up-to-form method="post" action="/ui/backups/archives" {
                    (csrf_field(&ui.csrf))
                    div.field {
                        label for="archive-up-to-seq" { "Archive entries up to sequence number" }
                        input #archive-up-to-seq type="number" name="up_to_seq" min="1" required;
                    }
                    p.actions { button type="submit" #archive-up-to { "Archive up to this entry" } }
                }
            }
            @if screen.archives.is_empty() {
                p #no-archives { "No audit archives yet." }
            } @else {
                div.table-wrap {
                    table.data #archives-table {
                        caption { "Audit archive files" }
                        thead {
                            tr {
                                th scope="col" { "File" }
                                th scope="col" { "Entries" }
                                th scope="col" { "Written" }
                                th scope="col" { "SHA-256" }
                            }
                        }
                        tbody {
                            @for archive in &screen.archives {
                                tr data-archive=(archive.id) {
                                    th scope="row" { code { (archive.file) } }
                                    td.entries { (archive.first_seq) " to " (archive.last_seq) }
                                    td { (layout::when(&archive.created_at)) }
                                    td { code.hash { (archive.sha256) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn body(ui: &UiSession, screen: &Screen, draft: &Draft) -> Markup {
    html! {
        (backups_section(ui, screen))
        (custodians_section(ui, screen, draft))
        (archives_section(ui, screen))
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(query): Query<BackupsQuery>,
) -> Response {
    match read(&app, &ui).await {
        Ok(screen) => {
            let draft = Draft::current(&screen.custodians);
            layout::page(
                &ui,
                Nav::Backups,
                TITLE,
                query.notice().as_ref(),
                body(&ui, &screen, &draft),
            )
            .into_response()
        }
        Err(error) => failure(&ui, Nav::Backups, TITLE, error, html! {}),
    }
}

/// The screen again with why an action was refused; the custodians form
/// keeps what was sent (`draft`), passphrases excepted.
async fn refused(
    app: &AppState,
    ui: &UiSession,
    error: ApiError,
    draft: Option<Draft>,
) -> Response {
    let shown = match read(app, ui).await {
        Ok(screen) => {
            let draft = draft.unwrap_or_else(|| Draft::current(&screen.custodians));
            body(ui, &screen, &draft)
        }
        Err(_) => html! {},
    };
    failure(ui, Nav::Backups, TITLE, error, shown)
}

/// *Back up now*: under dual control, or sent for approval when a policy
/// holds `create_backup` to a quorum (`failure` sends the officer there).
pub async fn start(State(app): State<AppState>, ui: UiSession) -> Response {
    match backups::start(&app, &ui.session).await {
        Ok(backup) => see_other(&format!(
            "/ui/backups?done=started&name={}",
            encode(&backup.file)
        )),
        Err(error) => refused(&app, &ui, error, None).await,
    }
}

// ---- the custodians form ------------------------------------------------------

/// The custodians form as sent: `threshold`, and per row `name.N`,
/// `public_key.N`, `passphrase.N` and `confirm.N`. Every value is wiped
/// from memory when the form is dropped, passphrases among them.
struct CustodiansForm {
    fields: Vec<(String, String)>,
}

impl Drop for CustodiansForm {
    fn drop(&mut self) {
        for (key, value) in &mut self.fields {
            key.zeroize();
            value.zeroize();
        }
    }
}

/// One row as sent; the passphrases wiped when it is dropped.
#[derive(Default)]
struct SentRow {
    name: String,
    public_key: String,
    passphrase: Zeroizing<String>,
    confirm: Zeroizing<String>,
}

impl CustodiansForm {
    /// The rows in their order on the page, each with its number there
    /// (rows left wholly empty skipped).
    fn rows(&self) -> Vec<(usize, SentRow)> {
        let mut rows: std::collections::BTreeMap<usize, SentRow> = Default::default();
        for (key, value) in &self.fields {
            let Some((what, index)) = key.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            if index >= MAX_CUSTODIANS * 2 {
                continue;
            }
            let row = rows.entry(index).or_default();
            match what {
                "name" => row.name = value.trim().to_owned(),
                "public_key" => row.public_key = value.trim().to_owned(),
                "passphrase" => row.passphrase = Zeroizing::new(value.clone()),
                "confirm" => row.confirm = Zeroizing::new(value.clone()),
                _ => {}
            }
        }
        rows.into_iter()
            .map(|(index, row)| (index + 1, row))
            .filter(|(_, r)| {
                !(r.name.is_empty()
                    && r.public_key.is_empty()
                    && r.passphrase.is_empty()
                    && r.confirm.is_empty())
            })
            .collect()
    }

    fn threshold(&self) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == "threshold")
            .map_or("", |(_, v)| v.trim())
    }

    /// What the form shows again when the set is refused: names and keys
    /// as sent, passphrases not.
    fn draft(&self) -> Draft {
        let rows = self.rows();
        Draft {
            threshold: self.threshold().to_owned(),
            had_passphrases: rows
                .iter()
                .any(|(_, r)| !r.passphrase.is_empty() || !r.confirm.is_empty()),
            rows: rows
                .into_iter()
                .map(|(_, r)| Row {
                    name: r.name.clone(),
                    public_key: r.public_key.clone(),
                    passphrase_key: false,
                })
                .collect(),
        }
    }

    /// The operation's request. A custodian kept with the key it has now
    /// keeps that key's passphrase salt (`current`), so a passphrase
    /// custodian stays one when the set is saved again unchanged.
    fn request(
        &self,
        current: Option<&CustodianSet>,
    ) -> Result<api::SetCustodiansRequest, InvalidInput> {
        let threshold = self.threshold().parse::<u8>().map_err(|_| {
            InvalidInput::new(
                "threshold",
                format!(
                    "the custodians needed to open a backup must be a whole number from {MIN_THRESHOLD} to {MAX_CUSTODIANS}"
                ),
            )
        })?;
        let mut custodians = Vec::new();
        for (number, row) in &self.rows() {
            if row.name.is_empty() {
                return Err(InvalidInput::new(
                    "name",
                    format!(
                        "custodian {number} has a key or passphrase but no name: give the custodian's name"
                    ),
                ));
            }
            let who = row.name.as_str();
            let passphrase = !row.passphrase.is_empty() || !row.confirm.is_empty();
            let custodian = match (row.public_key.is_empty(), passphrase) {
                (false, true) => {
                    return Err(InvalidInput::new(
                        "passphrase",
                        format!(
                            "custodian '{who}' has both a public key and a passphrase: give one (clear the key to derive a new one from the passphrase)"
                        ),
                    ));
                }
                (true, false) => {
                    return Err(InvalidInput::new(
                        "public_key",
                        format!(
                            "custodian '{who}' has neither a public key nor a passphrase: give one"
                        ),
                    ));
                }
                (true, true) => {
                    if *row.passphrase != *row.confirm {
                        return Err(InvalidInput::new(
                            "passphrase",
                            format!(
                                "the two passphrases typed for custodian '{who}' differ: type them again"
                            ),
                        ));
                    }
                    api::CustodianRequest {
                        name: who.to_owned(),
                        passphrase: Some(row.passphrase.to_string()),
                        ..api::CustodianRequest::default()
                    }
                }
                (false, false) => {
                    let key = row.public_key.to_ascii_lowercase();
                    let kdf = current
                        .and_then(|set| set.custodians.iter().find(|c| c.public_key == key))
                        .and_then(|c| c.kdf.as_ref())
                        .map(|k| api::PassphraseKdfView {
                            memory_kib: k.memory_kib,
                            iterations: k.iterations,
                            parallelism: k.parallelism,
                            salt: k.salt.clone(),
                        });
                    api::CustodianRequest {
                        name: who.to_owned(),
                        public_key: Some(key),
                        kdf,
                        ..api::CustodianRequest::default()
                    }
                }
            };
            custodians.push(custodian);
        }
        Ok(api::SetCustodiansRequest {
            threshold,
            custodians,
        })
    }
}

/// Wipes the passphrases a request carries once it has been used.
fn forget_passphrases(request: &mut api::SetCustodiansRequest) {
    for custodian in &mut request.custodians {
        if let Some(passphrase) = custodian.passphrase.as_mut() {
            passphrase.zeroize();
        }
    }
}

/// *Save custodians*: the whole set, under dual control, or sent for
/// approval when a policy holds `set_custodians` to a quorum.
pub async fn set_custodians(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let form = CustodiansForm { fields };
    let result = match app.keyhold.custodians(&ui.session).await {
        Ok(current) => match form.request(current.as_ref()) {
            Ok(mut request) => {
                let done = backups::set_custodians(&app, &ui.session, &request).await;
                forget_passphrases(&mut request);
                done
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(_) => see_other("/ui/backups?done=custodians#custodians"),
        Err(error) => {
            let draft = form.draft();
            refused(&app, &ui, error, Some(draft)).await
        }
    }
}

// ---- audit archives -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ArchiveForm {
    older_than_days: String,
    up_to_seq: String,
}

impl ArchiveForm {
    fn request(&self) -> Result<api::ArchiveRequest, InvalidInput> {
        let days = self.older_than_days.trim();
        let seq = self.up_to_seq.trim();
        let refused = || {
            InvalidInput::new(
                "older_than_days",
                "give the age in days (1 to 36500) of the oldest entries to keep, or the sequence number of the last entry to archive (1 or more)",
            )
        };
        Ok(match (days.is_empty(), seq.is_empty()) {
            (false, true) => api::ArchiveRequest {
                older_than_days: Some(days.parse().map_err(|_| refused())?),
                up_to_seq: None,
            },
            (true, false) => api::ArchiveRequest {
                up_to_seq: Some(seq.parse().map_err(|_| refused())?),
                older_than_days: None,
            },
            _ => return Err(refused()),
        })
    }
}

/// *Archive*: the entries older than some days, or up to a sequence
/// number, into a signed archive file.
pub async fn archive(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(form): axum::Form<ArchiveForm>,
) -> Response {
    let result = match form.request() {
        Ok(request) => backups::archive(&app, &ui.session, &request).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(Some(archive)) => see_other(&format!(
            "/ui/backups?done=archived&name={}&first={}&last={}#audit-archives",
            encode(&archive.file),
            archive.first_seq,
            archive.last_seq
        )),
        Ok(None) => see_other("/ui/backups?done=nothing#audit-archives"),
        Err(error) => refused(&app, &ui, error, None).await,
    }
}

// ---- one backup's file and shares -------------------------------------------------

/// The backup's encrypted file, streamed (its key is in the shares).
pub async fn file(State(app): State<AppState>, ui: UiSession, Path(id): Path<String>) -> Response {
    let (name, path) = match backups::file(&app, &ui.session, &id).await {
        Ok(found) => found,
        Err(error) => return refused(&app, &ui, error, None).await,
    };
    let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path)).await;
    let file = match opened {
        Ok(Ok(file)) => file,
        Ok(Err(e)) => {
            let error = CoreError::Conflict(format!(
                "the file of backup {id} cannot be read on this node ({e}): download it from the node that made it, or from where the backup directory is shipped"
            ));
            return refused(&app, &ui, error.into(), None).await;
        }
        Err(e) => {
            let error =
                CoreError::Keystore(keyhold_core::error::KeystoreError::Internal(e.to_string()));
            return refused(&app, &ui, error.into(), None).await;
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                crate::backup::attachment(&name),
            ),
        ],
        crate::backup::file_body(file),
    )
        .into_response()
}

fn share_file_name(custodian: &str) -> String {
    format!("{custodian}.share")
}

fn shares_body(backup: &api::BackupView, shares: &api::BackupSharesView) -> Markup {
    html! {
        p { a href="/ui/backups" { "All backups" } }
        section.card #backup-facts aria-labelledby="backup-facts-title" {
            h2 #backup-facts-title { "Backup " code { (backup.file) } }
            dl.facts {
                dt { "Status" } dd { (status_badge(&backup.status)) }
                dt { "Started" } dd { (layout::when(&backup.started_at)) }
                dt { "By" } dd { (made_by(backup)) }
                @if let Some(keys) = backup.keys { dt { "Keys" } dd { (keys) } }
                @if let Some(sha) = &backup.sha256 { dt { "SHA-256" } dd { code.hash { (sha) } } }
                dt { "Opened by" } dd #shares-threshold {
                    "any " (shares.threshold) " of its " (shares.shares.len()) " custodians"
                }
            }
        }
        p.hint {
            "Give each custodian their own share file, and keep the shares apart from each other and from the backup file. "
            "Each share is encrypted for its custodian alone: it is of no use without that custodian's key file or passphrase, "
            "and fewer than " (shares.threshold) " of them together reveal nothing of the backup's key."
        }
        @for (index, share) in shares.shares.iter().enumerate() {
            @let title = format!("share-{index}-title");
            section.card.share #(format!("share-{index}")) data-custodian=(share.custodian) aria-labelledby=(title) {
                h2 #(title) { "Share of " (share.custodian) }
                p.actions {
                    a.button.secondary.download-share href=(format!("{}/shares/{}", backup_href(&backup.id), encode(&share.custodian)))
                        download=(share_file_name(&share.custodian)) {
                        "Download " (share_file_name(&share.custodian))
                    }
                }
                details {
                    summary { "Show the share's text" span.visually-hidden { " of " (share.custodian) } }
                    pre.share-text { (share.text) }
                }
            }
        }
    }
}

/// A backup's shares: one per custodian, each to download as its file.
pub async fn shares(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
) -> Response {
    let shown = match backups::show(&app, &ui.session, &id).await {
        Ok(backup) => backups::shares(&app, &ui.session, &id)
            .await
            .map(|shares| (backup, shares)),
        Err(e) => Err(e),
    };
    match shown {
        Ok((backup, shares)) => layout::page(
            &ui,
            Nav::Backups,
            SHARES_TITLE,
            None,
            shares_body(&backup, &shares),
        )
        .into_response(),
        Err(error) => refused(&app, &ui, error, None).await,
    }
}

/// One custodian's share, as the file `<custodian>.share`.
pub async fn share(
    State(app): State<AppState>,
    ui: UiSession,
    Path((id, custodian)): Path<(String, String)>,
) -> Response {
    let found = backups::shares(&app, &ui.session, &id)
        .await
        .and_then(|shares| {
            shares
                .shares
                .into_iter()
                .find(|s| s.custodian == custodian)
                .ok_or_else(|| CoreError::not_found("custodian of this backup", &custodian).into())
        });
    match found {
        Ok(share) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    crate::backup::attachment(&share_file_name(&share.custodian)),
                ),
            ],
            share.text,
        )
            .into_response(),
        Err(error) => refused(&app, &ui, error, None).await,
    }
}

/// The route a backup's own address leads to: its shares page (it shows
/// the backup too).
pub async fn show(Path(id): Path<String>) -> Response {
    see_other(&format!("{}/shares", backup_href(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> CustodiansForm {
        CustodiansForm {
            fields: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    const KEY: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn the_custodians_form_sends_keys_and_passphrases_and_skips_empty_rows() {
        let sent = form(&[
            ("csrf", "t"),
            ("threshold", " 2 "),
            ("name.0", "anne"),
            ("public_key.0", ""),
            ("passphrase.0", "correct horse"),
            ("confirm.0", "correct horse"),
            ("name.1", " bob "),
            ("public_key.1", &KEY.to_ascii_uppercase()),
            ("passphrase.1", ""),
            ("confirm.1", ""),
            ("name.2", ""),
            ("public_key.2", ""),
            ("passphrase.2", ""),
            ("confirm.2", ""),
        ]);
        let request = sent.request(None).unwrap();
        assert_eq!(request.threshold, 2);
        assert_eq!(request.custodians.len(), 2);
        assert_eq!(request.custodians[0].name, "anne");
        assert_eq!(
            request.custodians[0].passphrase.as_deref(),
            Some("correct horse")
        );
        assert!(request.custodians[0].public_key.is_none());
        assert_eq!(request.custodians[1].name, "bob");
        assert_eq!(request.custodians[1].public_key.as_deref(), Some(KEY));
        assert!(request.custodians[1].kdf.is_none());
    }

    #[test]
    fn a_kept_passphrase_key_keeps_its_salt() {
        let current = CustodianSet::new(
            2,
            vec![
                keyhold_core::backup::Custodian {
                    name: keyhold_core::backup::CustodianName::parse("anne").unwrap(),
                    public_key: KEY.to_owned(),
                    kdf: Some(keyhold_core::backup::PassphraseKdf {
                        memory_kib: 65536,
                        iterations: 3,
                        parallelism: 1,
                        salt: "00112233445566778899aabbccddeeff".to_owned(),
                    }),
                },
                keyhold_core::backup::Custodian {
                    name: keyhold_core::backup::CustodianName::parse("bob").unwrap(),
                    public_key: KEY.replace("aa", "bb"),
                    kdf: None,
                },
            ],
        )
        .unwrap();
        let sent = form(&[
            ("threshold", "2"),
            ("name.0", "anne"),
            ("public_key.0", KEY),
        ]);
        let request = sent.request(Some(&current)).unwrap();
        let kdf = request.custodians[0].kdf.as_ref().unwrap();
        assert_eq!(kdf.salt, "00112233445566778899aabbccddeeff");
        assert_eq!(kdf.memory_kib, 65536);
    }

    #[test]
    fn unclear_rows_are_refused_with_the_reason() {
        let both = form(&[
            ("threshold", "2"),
            ("name.0", "anne"),
            ("public_key.0", KEY),
            ("passphrase.0", "x"),
            ("confirm.0", "x"),
        ]);
        assert!(
            both.request(None)
                .unwrap_err()
                .message
                .contains("both a public key and a passphrase")
        );
        let neither = form(&[("threshold", "2"), ("name.0", "anne")]);
        assert!(
            neither
                .request(None)
                .unwrap_err()
                .message
                .contains("neither")
        );
        let differ = form(&[
            ("threshold", "2"),
            ("name.0", "anne"),
            ("passphrase.0", "first-secret"),
            ("confirm.0", "second-secret"),
        ]);
        let message = differ.request(None).unwrap_err().message;
        assert!(message.contains("differ"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        let nameless = form(&[("threshold", "2"), ("public_key.1", KEY)]);
        assert!(
            nameless
                .request(None)
                .unwrap_err()
                .message
                .contains("custodian 2 has")
        );
        let threshold = form(&[("threshold", "two")]);
        assert_eq!(threshold.request(None).unwrap_err().field, "threshold");
    }

    #[test]
    fn a_refused_form_shows_names_and_keys_again_but_no_passphrase() {
        let sent = form(&[
            ("threshold", "3"),
            ("name.0", "anne"),
            ("passphrase.0", "hunter2-secret"),
            ("confirm.0", "hunter2-other"),
            ("name.1", "bob"),
            ("public_key.1", KEY),
        ]);
        let draft = sent.draft();
        assert!(draft.had_passphrases);
        assert_eq!(draft.threshold, "3");
        let shown = html! {
            @for (i, row) in draft.rows.iter().enumerate() { (custodian_row(i, row)) }
        }
        .into_string();
        assert!(shown.contains("value=\"anne\""), "{shown}");
        assert!(shown.contains(KEY), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_archive_form_asks_for_one_bound() {
        let days = ArchiveForm {
            older_than_days: " 30 ".into(),
            up_to_seq: String::new(),
        };
        let request = days.request().unwrap();
        assert_eq!(request.older_than_days, Some(30));
        assert_eq!(request.up_to_seq, None);
        let seq = ArchiveForm {
            older_than_days: String::new(),
            up_to_seq: "12".into(),
        };
        assert_eq!(seq.request().unwrap().up_to_seq, Some(12));
        assert!(ArchiveForm::default().request().is_err());
        let both = ArchiveForm {
            older_than_days: "1".into(),
            up_to_seq: "1".into(),
        };
        assert!(both.request().is_err());
    }

    #[test]
    fn sizes_read_in_binary_units_and_notices_are_fixed_sentences() {
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(1536), "1.5\u{a0}KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0\u{a0}MiB");
        assert!(
            BackupsQuery {
                done: "<b>".into(),
                ..BackupsQuery::default()
            }
            .notice()
            .is_none()
        );
        assert_eq!(
            crate::backup::attachment("a\"b/c.share"),
            "attachment; filename=\"abc.share\""
        );
    }
}
