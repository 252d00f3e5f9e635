//! *Logging and Reporting → Audit Logs*: the table of design.md §1.10 with
//! filters, paging, the chain's verification, and export.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyhold_core::InvalidInput;
use keyhold_core::audit::AuditFilter;
use keyhold_core::clock::{Timestamp, parse_timestamp};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, csrf_field};
use super::session::UiSession;
use super::{encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::audit;
use crate::views;

const TITLE: &str = "Audit Logs";
const PAGE: u32 = 50;

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct AuditQuery {
    from: String,
    to: String,
    user: String,
    text: String,
    before: Option<i64>,
    /// `signed` after *Sign a checkpoint now*: the page shows it to copy.
    checkpoint: String,
}

impl AuditQuery {
    /// The query string of these filters (without `before`).
    fn filters(&self) -> String {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("user", &self.user),
            ("text", &self.text),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// A time from the filter form: the browser's `datetime-local` value (read
/// as UTC) or a full RFC 3339 time.
fn bound(field: &'static str, raw: &str) -> Result<Option<Timestamp>, InvalidInput> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let candidates = [raw.to_owned(), format!("{raw}Z"), format!("{raw}:00Z")];
    candidates
        .iter()
        .find_map(|c| parse_timestamp(c))
        .map(Some)
        .ok_or_else(|| {
            InvalidInput::new(
                field,
                format!("{field} must be a date and time such as 2026-11-29T12:00 (UTC)"),
            )
        })
}

fn filters_form(query: &AuditQuery) -> Markup {
    html! {
        form.filters #audit-filters method="get" action="/ui/audit" {
            div.field {
                label for="audit-from" { "From (UTC)" }
                input #audit-from type="datetime-local" name="from" value=(query.from) step="1";
            }
            div.field {
                label for="audit-to" { "To (UTC)" }
                input #audit-to type="datetime-local" name="to" value=(query.to) step="1";
            }
            div.field {
                label for="audit-user" { "User" }
                input #audit-user type="text" name="user" value=(query.user) placeholder="Admin1";
            }
            div.field {
                label for="audit-text" { "Text" }
                input #audit-text type="search" name="text" value=(query.text) placeholder="rotated";
            }
            div.field.buttons {
                button type="submit" { "Filter" }
                a.button.secondary href="/ui/audit" { "Clear" }
            }
        }
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(query): Query<AuditQuery>,
) -> Response {
    let shown = async {
        let filter = AuditFilter {
            from: bound("from", &query.from)?,
            to: bound("to", &query.to)?,
            user: Some(query.user.trim().to_owned()).filter(|u| !u.is_empty()),
            text: Some(query.text.trim().to_owned()).filter(|t| !t.is_empty()),
            limit: PAGE,
            before_seq: query.before,
        };
        let entries = app.keyhold.list_audit(&ui.session, &filter).await?;
        let report = crate::operations::audit::verify(&app, &ui.session, Vec::new()).await?;
        let archives = crate::operations::audit::verify_archives(&app, &ui.session).await?;
        Ok::<_, ApiError>((entries, report, archives))
    }
    .await;
    let (entries, report, archives) = match shown {
        Ok(shown) => shown,
        Err(e) => return failure(&ui, Nav::Audit, TITLE, e, filters_form(&query)),
    };
    let filters = query.filters();
    let older = (entries.len() == PAGE as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let body = html! {
        @if report.ok {
            p.notice.ok #audit-verify data-ok="true" role="status" {
                "Chain verified: all " (report.entries_checked) " entries are intact (hash chain and MAC)"
                @if let Some(checkpoint) = &report.checkpoint {
                    ", and the log reaches the signed checkpoint of entry " (checkpoint.seq) " (" (layout::when(&checkpoint.time)) ")."
                } @else {
                    "; no signed checkpoint yet."
                }
            }
        } @else {
            p.notice.error #audit-verify data-ok="false" role="alert" {
                "Chain verification FAILED at entry " (report.first_bad_seq.map_or("?".to_owned(), |s| s.to_string()))
                ": " (report.reason.as_deref().unwrap_or("the log was altered"))
            }
        }
        @if archives.archives > 0 {
            @match &archives.problem {
                None => p.notice.ok #audit-archives data-ok="true" role="status" {
                    (archives.archives) " signed archive(s) hold entries 1 to " (archives.entries)
                    ": each verified against the live log (see Backups for the files)."
                },
                Some(problem) => p.notice.error #audit-archives data-ok="false" role="alert" {
                    "Audit archives FAILED: " (problem)
                },
            }
        }
        (filters_form(&query))
        p.toolbar {
            a.button.secondary #audit-export href="/ui/audit/export" download="keyhold-audit.jsonl" aria-describedby="audit-export-note" { "Export the whole log (JSON Lines)" }
            span.hint #audit-export-note {
                @if query.filters().is_empty() {
                    "Every entry, ending with a signed checkpoint: it verifies offline."
                } @else {
                    "Every entry, not only those the filters show: a signed export is whole, so it verifies offline."
                }
            }
        }
        (checkpoints_section(&ui, &app, query.checkpoint == "signed"))
        (streams_section(&ui, &app))
        div.table-wrap {
            table.data #audit-table {
                caption { "Audit entries, newest first" }
                thead {
                    tr {
                        @for column in ["#", "Date", "Users", "Summary", "Details", "Archived"] {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody {
                    @if entries.is_empty() {
                        tr.empty { td colspan="6" { "No entries match these filters." } }
                    }
                    @for entry in &entries {
                        @let view = views::audit_entry(entry);
                        tr data-seq=(view.seq) {
                            td.num { (view.seq) }
                            td.time { (layout::when(&view.date)) }
                            td.users { (view.users) }
                            td.summary { (view.summary) }
                            td {
                                @if view.has_details {
                                    details {
                                        summary { "Yes" span.visually-hidden { ", details of entry " (view.seq) } }
                                        pre { (serde_json::to_string_pretty(&view.details).unwrap_or_default()) }
                                    }
                                } @else { "No" }
                            }
                            td { @if view.archived { "Yes" } @else { "No" } }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Audit pages" {
            @if query.before.is_some() {
                a #audit-newest href=(format!("/ui/audit?{filters}")) { "Newest entries" }
            }
            @if let Some(seq) = older {
                @let sep = if filters.is_empty() { "" } else { "&" };
                a #audit-older href=(format!("/ui/audit?{filters}{sep}before={seq}")) { "Older entries" }
            }
        }
    };
    layout::page(&ui, Nav::Audit, TITLE, None, body).into_response()
}

/// The newest signed checkpoint, the key that verifies it, and a button to
/// sign one now: what an auditor copies somewhere the server cannot reach.
fn checkpoints_section(ui: &UiSession, app: &AppState, just_signed: bool) -> Markup {
    let newest = app.checkpoints.newest();
    let key = app.keyhold.audit_public_key(&ui.session).ok();
    html! {
        section.card #audit-checkpoints aria-labelledby="audit-checkpoints-title" {
            h2 #audit-checkpoints-title { "Signed checkpoints" }
            p {
                "A checkpoint is the log's newest entry and hash, signed by the keystore. Keep copies away from this server: "
                code { "keyhold audit verify --checkpoint FILE" }
                " proves the log still reaches them, so entries cut from its end are caught."
            }
            @match &newest {
                Some(checkpoint) => {
                    @if just_signed {
                        p.notice.ok role="status" { "Checkpoint signed at entry " (checkpoint.seq) ". Copy it:" }
                    } @else {
                        p { "Newest: entry " (checkpoint.seq) ", signed " (layout::when(&checkpoint.time)) "." }
                    }
                    pre #audit-checkpoint-line { (checkpoint.to_json_line()) }
                }
                None => { p { "None yet." } }
            }
            @if let Some(key) = key {
                details #audit-public-key {
                    summary { "Public key (fingerprint " code { (key.fingerprint_hex()) } ")" }
                    pre { (key.to_pem()) }
                }
            }
            form #audit-checkpoint-form method="post" action="/ui/audit/checkpoint" {
                (csrf_field(&ui.csrf))
                button type="submit" { "Sign a checkpoint now" }
            }
        }
    }
}

/// The audit streams to a SIEM, as this node sees them: is the log
/// reaching the receiver, how far behind, and why not.
fn streams_section(ui: &UiSession, app: &AppState) -> Markup {
    let streams = audit::streams(app, &ui.session).unwrap_or_default();
    html! {
        section.card #audit-streams aria-labelledby="audit-streams-title" {
            h2 #audit-streams-title { "Streaming to a SIEM" }
            @if streams.is_empty() {
                p {
                    "Not configured: this node streams the log nowhere. Set "
                    code { "audit_syslog_address" } " (RFC 5424 over TCP or TLS) or "
                    code { "audit_json_file" } " (JSON lines); the README's "
                    "\"Streaming the audit log to a SIEM\" says how."
                }
            } @else {
                div.table-wrap {
                    table.data #audit-streams-table {
                        caption { "This node's streams, each entry delivered in order and none lost (a receiver that is away gets them when it is back)" }
                        thead { tr {
                            @for column in ["Kind", "Destination", "State", "Last entry delivered", "Behind", "Last delivery", "Failures", "Last error"] {
                                th scope="col" { (column) }
                            }
                        } }
                        tbody {
                            @for stream in &streams {
                                tr data-kind=(stream.kind) {
                                    td { (stream.kind) }
                                    td { code { (stream.destination) } }
                                    td.state { span.status-badge data-status=(stream.state) { (stream.state) } }
                                    td.num { (stream.cursor.map_or("—".to_owned(), |c| c.to_string())) }
                                    td.num { (stream.lag.map_or("—".to_owned(), |l| l.to_string())) }
                                    td.time { @if let Some(t) = &stream.last_delivered_at { (layout::when(t)) } @else { "—" } }
                                    td.num { (stream.failures) }
                                    td { (stream.last_error.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// *Sign a checkpoint now*: signed, appended to the checkpoint file, shown.
pub async fn checkpoint(State(app): State<AppState>, ui: UiSession) -> Response {
    match audit::checkpoint(&app, &ui.session).await {
        Ok(_) => see_other("/ui/audit?checkpoint=signed"),
        Err(e) => failure(&ui, Nav::Audit, TITLE, e, html! {}),
    }
}

/// The whole log as JSON Lines, the export the API gives, as a download.
pub async fn export(State(app): State<AppState>, ui: UiSession) -> Response {
    match audit::export(&app, &ui.session).await {
        Ok(lines) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"keyhold-audit.jsonl\"",
                ),
            ],
            Body::from_stream(lines),
        )
            .into_response(),
        Err(e) => failure(&ui, Nav::Audit, TITLE, e, html! {}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_times_are_read_as_utc() {
        let t = bound("from", "2026-11-29T09:30").unwrap().unwrap();
        assert_eq!(
            keyhold_core::clock::format_timestamp(&t),
            "2026-11-29T09:30:00.000000Z"
        );
        let t = bound("from", "2026-11-29T09:30:15").unwrap().unwrap();
        assert_eq!(
            keyhold_core::clock::format_timestamp(&t),
            "2026-11-29T09:30:15.000000Z"
        );
        assert!(bound("to", "").unwrap().is_none());
        assert_eq!(bound("to", "yesterday").unwrap_err().field, "to");
    }

    #[test]
    fn paging_links_keep_the_filters() {
        let query = AuditQuery {
            user: "Admin 2".into(),
            text: "rotated".into(),
            ..AuditQuery::default()
        };
        assert_eq!(query.filters(), "user=Admin%202&text=rotated");
    }
}
