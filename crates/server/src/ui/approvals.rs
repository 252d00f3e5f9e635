//! *Administration → Approvals*: the requests a quorum policy holds, each
//! with exactly what will run, its votes, and the Approve and Deny forms for
//! an officer who may answer it.
//!
//! Answers go through the same operations the API calls, so who may answer
//! (not the requester, the role the quorum names, one identity per answer)
//! is decided by the core; the page only says in advance what it will say.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{encode, failure, see_other};
use crate::app::AppState;
use crate::operations::approvals;

const TITLE: &str = "Approvals";
const DETAIL_TITLE: &str = "Approval request";
/// Pending requests the list shows, then at most this many decided ones.
const PENDING_SHOWN: u32 = 200;
const DECIDED_SHOWN: usize = 50;

/// Outcome notices a redirect carries as `?done=CODE`: only these sentences.
#[derive(Deserialize, Default)]
pub struct Answered {
    done: Option<String>,
}

impl Answered {
    fn notice(&self, view: &api::ApprovalView) -> Option<Notice> {
        let text = match self.done.as_deref()? {
            "sent" => {
                if view.status == "pending" {
                    format!(
                        "Sent for approval: waits for {} from {} identities.",
                        approvals_count(view.approvals_remaining),
                        role_words(&view.approver_role)
                    )
                } else {
                    format!("Sent for approval; the request is now {}.", view.status)
                }
            }
            "approved" => match view.status.as_str() {
                "executed" => "You approved this request: it had its approvals and ran.".to_owned(),
                "failed" => "You approved this request: it had its approvals, but running it failed (see Outcome).".to_owned(),
                "pending" => format!(
                    "You approved this request: it still waits for {}.",
                    approvals_count(view.approvals_remaining)
                ),
                other => format!("You approved this request; it is now {other}."),
            },
            "denied" => "You denied this request: it will not run.".to_owned(),
            _ => return None,
        };
        Some(Notice::Done(text))
    }
}

fn approvals_count(n: u32) -> String {
    if n == 1 {
        "1 approval".to_owned()
    } else {
        format!("{n} approvals")
    }
}

fn role_words(role: &str) -> String {
    role.replace('_', " ")
}

fn status_badge(status: &str) -> Markup {
    html! { span.status-badge data-status=(status) { (status) } }
}

fn approvals_given(view: &api::ApprovalView) -> usize {
    view.votes.iter().filter(|v| v.answer == "approved").count()
}

fn detail_href(view: &api::ApprovalView) -> String {
    format!("/ui/approvals/{}", encode(&view.id))
}

// ---- the list ---------------------------------------------------------------

async fn requests(app: &AppState, ui: &UiSession) -> crate::ApiResult<Vec<api::ApprovalView>> {
    let mut shown = approvals::list(app, &ui.session, Some("pending"), PENDING_SHOWN).await?;
    let recent = approvals::list(app, &ui.session, None, PENDING_SHOWN).await?;
    shown.extend(
        recent
            .into_iter()
            .filter(|r| r.status != "pending")
            .take(DECIDED_SHOWN),
    );
    Ok(shown)
}

fn list_body(list: &[api::ApprovalView]) -> Markup {
    html! {
        p.hint {
            "Operations a policy holds to a quorum wait here for their approvals; the last approval runs them. "
            "Pending requests come first, then recently decided ones. The policies are on the "
            a href="/ui/configuration#approval-policies" { "Configuration" } " screen."
        }
        @if list.is_empty() {
            p #no-approvals { "No approval requests." }
        } @else {
            div.table-wrap {
                table.data #approvals-table {
                    caption { "Approval requests, pending first" }
                    thead {
                        tr {
                            th scope="col" { "Status" }
                            th scope="col" { "What will happen" }
                            th scope="col" { "Requested by" }
                            th scope="col" { "Approvals" }
                            th scope="col" { "Expires" }
                        }
                    }
                    tbody {
                        @for view in list {
                            tr data-approval=(view.id) data-status=(view.status) {
                                td { (status_badge(&view.status)) }
                                td {
                                    a href=(detail_href(view)) { (view.summary) }
                                    @if view.you_may_answer {
                                        " " span.badge.waits { "waits for you" }
                                    }
                                }
                                td { (view.requested_by.join(", ")) }
                                td.num {
                                    (approvals_given(view)) " of " (view.approvals_needed)
                                    " (" (role_words(&view.approver_role)) ")"
                                }
                                td { (layout::when(&view.expires_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page(State(app): State<AppState>, ui: UiSession) -> Response {
    match requests(&app, &ui).await {
        Ok(list) => {
            layout::page(&ui, Nav::Approvals, TITLE, None, list_body(&list)).into_response()
        }
        Err(e) => failure(&ui, Nav::Approvals, TITLE, e, html! {}),
    }
}

// ---- one request ------------------------------------------------------------

/// Why the session cannot answer a pending request, as far as the page can
/// tell in advance (the core decides when an answer is sent).
fn why_not(ui: &UiSession, view: &api::ApprovalView) -> String {
    let names: Vec<&str> = ui
        .session
        .identities
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    if view
        .requested_by
        .iter()
        .any(|r| names.contains(&r.as_str()))
    {
        "You asked for this operation: it needs approvals from other officers.".to_owned()
    } else if view
        .votes
        .iter()
        .any(|v| names.contains(&v.identity.as_str()))
    {
        "You have answered this request already.".to_owned()
    } else if names.len() != 1 {
        "An answer is one officer's: log in alone (in your own browser session) to approve or deny it.".to_owned()
    } else {
        format!(
            "Only {} identities answer this request.",
            role_words(&view.approver_role)
        )
    }
}

/// An added identity's one-time password, shown once to its requester.
fn password_section(password: &str) -> Markup {
    html! {
        section.card #approval-result aria-labelledby="approval-result-title" {
            h2 #approval-result-title { "One-time password" }
            p.notice.warn role="note" {
                "Shown this once: give it to the new identity's holder, who must replace it at first login."
            }
            p { code #approval-password { (password) } }
        }
    }
}

fn detail_body(ui: &UiSession, view: &api::ApprovalView, password: Option<&str>) -> Markup {
    let parameters = serde_json::to_string_pretty(&view.operation)
        .unwrap_or_else(|_| view.operation.to_string());
    let names: Vec<&str> = ui
        .session
        .identities
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    let requester = view
        .requested_by
        .iter()
        .any(|r| names.contains(&r.as_str()));
    html! {
        p { a href="/ui/approvals" { "All approval requests" } }
        section.card #approval-request aria-labelledby="approval-what" {
            h2 #approval-what { (view.summary) }
            dl.facts {
                dt { "Status" } dd #approval-status { (status_badge(&view.status)) }
                dt { "Operation class" } dd { code { (view.class) } " (" (view.class_label) ")" }
                dt { "Requested by" } dd #approval-requester { (view.requested_by.join(", ")) }
                dt { "Requested at" } dd { (layout::when(&view.requested_at)) }
                dt { "Expires" } dd { (layout::when(&view.expires_at)) }
                dt { "Approvals" } dd #approval-count {
                    (approvals_given(view)) " of " (view.approvals_needed) " from "
                    (role_words(&view.approver_role)) " identities"
                    @if view.status == "pending" {
                        "; " (approvals_count(view.approvals_remaining)) " still needed"
                    }
                }
                @if let Some(at) = &view.decided_at {
                    dt { "Decided at" } dd { (layout::when(at)) }
                }
                @if let Some(outcome) = &view.outcome {
                    dt { "Outcome" } dd #approval-outcome { (outcome) }
                }
            }
        }
        @if let Some(password) = password {
            (password_section(password))
        } @else if view.result_waiting && requester {
            form #result-form method="post" action=(format!("{}/result", detail_href(view))) {
                (csrf_field(&ui.csrf))
                @if super::xks::issued_by_request(view).is_some() {
                    p.actions { button type="submit" #show-result { "Show the credential's secret" } }
                    p.hint { "The external key store credential's secret access key is shown once, to you only." }
                } @else {
                    p.actions { button type="submit" #show-result { "Show the one-time password" } }
                    p.hint { "The added identity's password is shown once, to you only." }
                }
            }
        }
        @if !view.policy_changes.is_empty() {
            div.table-wrap {
                table.data #policy-changes {
                    caption { "Approval policies this request changes" }
                    thead { tr { th scope="col" { "Operation class" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody {
                        @for change in &view.policy_changes {
                            tr { td { code { (change.class) } } td { (change.before) } td { (change.after) } }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="approval-parameters" {
            h2 #approval-parameters {
                @if view.status == "pending" { "Exactly what will run" } @else { "Exactly what was asked for" }
            }
            p.hint { "The parameters as they were asked for; a secret among them is stored sealed and shows only as sealed text." }
            pre.parameters #approval-operation { (parameters) }
            p { "Parameters hash (SHA-256): " code.hash #approval-hash { (view.params_hash) } }
        }
        section.card aria-labelledby="approval-votes" {
            h2 #approval-votes { "Votes" }
            @if view.votes.is_empty() {
                p #no-votes { "No answers yet." }
            } @else {
                div.table-wrap {
                    table.data #votes-table {
                        caption { "Answers, oldest first" }
                        thead { tr { th scope="col" { "Identity" } th scope="col" { "Role" } th scope="col" { "Answer" } th scope="col" { "At" } th scope="col" { "Reason" } } }
                        tbody {
                            @for vote in &view.votes {
                                tr {
                                    td { (vote.identity) }
                                    td { (role_words(&vote.role)) }
                                    td { (vote.answer) }
                                    td { (layout::when(&vote.at)) }
                                    td { (vote.reason.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if view.you_may_answer {
            section.card #approval-answer aria-labelledby="approval-answer-title" {
                h2 #approval-answer-title { "Your answer" }
                form #approve-form method="post" action=(format!("{}/approve", detail_href(view))) {
                    (csrf_field(&ui.csrf))
                    p.actions { button type="submit" #approve-request { "Approve" } }
                    @if view.approvals_remaining == 1 {
                        p.hint { "Yours is the last approval needed: approving runs the operation now." }
                    }
                }
                form #deny-form method="post" action=(format!("{}/deny", detail_href(view))) {
                    (csrf_field(&ui.csrf))
                    div.field {
                        label for="deny-reason" { "Reason for denying (optional)" }
                        input #deny-reason type="text" name="reason" maxlength="500";
                    }
                    p.actions { button.danger type="submit" #deny-request { "Deny" } }
                }
            }
        } @else if view.status == "pending" {
            p.notice.warn #approval-why-not role="note" { (why_not(ui, view)) }
        }
    }
}

fn detail(ui: &UiSession, view: &api::ApprovalView, notice: Option<&Notice>) -> Response {
    layout::page(
        ui,
        Nav::Approvals,
        DETAIL_TITLE,
        notice,
        detail_body(ui, view, None),
    )
    .into_response()
}

/// The request's page again with why an answer was refused.
async fn refused(app: &AppState, ui: &UiSession, id: &str, error: crate::ApiError) -> Response {
    let shown = match approvals::show(app, &ui.session, id).await {
        Ok(view) => detail_body(ui, &view, None),
        Err(_) => html! { p { a href="/ui/approvals" { "All approval requests" } } },
    };
    failure(ui, Nav::Approvals, DETAIL_TITLE, error, shown)
}

pub async fn show(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
    Query(answered): Query<Answered>,
) -> Response {
    match approvals::show(&app, &ui.session, &id).await {
        Ok(view) => detail(&ui, &view, answered.notice(&view).as_ref()),
        Err(e) => failure(
            &ui,
            Nav::Approvals,
            DETAIL_TITLE,
            e,
            html! { p { a href="/ui/approvals" { "All approval requests" } } },
        ),
    }
}

pub async fn approve(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
) -> Response {
    match approvals::approve(&app, &ui.session, &id).await {
        Ok(view) => see_other(&format!("{}?done=approved", detail_href(&view))),
        Err(e) => refused(&app, &ui, &id, e).await,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DenyForm {
    reason: String,
}

pub async fn deny(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<DenyForm>,
) -> Response {
    let reason = form.reason.trim();
    let request = api::DenyRequest {
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    };
    match approvals::deny(&app, &ui.session, &id, &request).await {
        Ok(view) => see_other(&format!("{}?done=denied", detail_href(&view))),
        Err(e) => refused(&app, &ui, &id, e).await,
    }
}

/// The requester's one look at an executed request's result: drawn in the
/// answer to the POST (never in a URL, never again). An external key
/// store's credential is shown as its store's own pages show one.
pub async fn collect_result(
    State(app): State<AppState>,
    ui: UiSession,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = match approvals::collect_result(&app, &ui.session, &id).await {
        Ok(result) => result,
        Err(e) => return refused(&app, &ui, &id, e).await,
    };
    let view = approvals::show(&app, &ui.session, &id).await;
    if let Ok(view) = &view
        && let Some(created) = super::xks::issued_by_request(view)
    {
        let body = html! {
            (super::xks::collected(result, created, &headers))
            (detail_body(&ui, view, None))
        };
        return layout::page(&ui, Nav::Approvals, DETAIL_TITLE, None, body).into_response();
    }
    let result = zeroize::Zeroizing::new(result.password);
    match view {
        Ok(view) => layout::page(
            &ui,
            Nav::Approvals,
            DETAIL_TITLE,
            None,
            detail_body(&ui, &view, Some(result.as_str())),
        )
        .into_response(),
        // The password was handed over already: it is shown whatever else
        // cannot be read now.
        Err(_) => layout::page(
            &ui,
            Nav::Approvals,
            DETAIL_TITLE,
            None,
            html! {
                (password_section(result.as_str()))
                p { a href="/ui/approvals" { "All approval requests" } }
            },
        )
        .into_response(),
    }
}
