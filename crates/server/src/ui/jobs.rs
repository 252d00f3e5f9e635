//! *Logging and Reporting → Jobs*: the list, whose status and progress the
//! page's script refreshes from `/ui/jobs.json` while jobs run, and a job's
//! detail with its messages, refreshed from `/ui/jobs/{id}/json`. The
//! refreshes need a live session but do not extend it ([`UiRefresh`]).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use maud::{Markup, html};

use super::layout::{self, Nav, csrf_field};
use super::session::{UiRefresh, UiSession};
use super::{Done, encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::jobs;
use crate::views;

/// Jobs the list shows, newest first.
const LIST_LIMIT: u32 = 200;

async fn list(app: &AppState, ui: &UiSession) -> Result<Vec<api::JobView>, ApiError> {
    let jobs = app.keyhold.list_jobs(&ui.session, LIST_LIMIT).await?;
    Ok(jobs.iter().map(|j| views::job(j, None)).collect())
}

fn progress(job: &api::JobView) -> Markup {
    html! {
        progress max=(job.steps_total.max(1)) value=(job.steps_done) aria-label=(format!("Progress of job {}", job.id)) {}
        " " span.steps { (job.steps_done) "/" (job.steps_total) }
    }
}

/// One row; the script builds the same cells from the JSON.
fn row(job: &api::JobView) -> Markup {
    html! {
        tr data-job=(job.id) data-status=(job.status) {
            td { a href=(format!("/ui/jobs/{}", encode(&job.id))) { (job.title) } br; small.job-summary { (job.summary) } }
            td { code { (job.target) } }
            td { (job.group) }
            td.status { span.status-badge data-status=(job.status) { (job.status) } }
            td.progress { (progress(job)) }
            td { (job.current_step.as_deref().unwrap_or("—")) }
            td { (job.users) }
            td.time { (layout::when(&job.created_at)) }
            td.time { @if let Some(t) = &job.finished_at { (layout::when(t)) } @else { "—" } }
        }
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    let jobs = match list(&app, &ui).await {
        Ok(jobs) => jobs,
        Err(e) => return failure(&ui, Nav::Jobs, "Jobs", e, html! {}),
    };
    let body = html! {
        p.hint #live-note aria-live="polite" { "Status and progress update by themselves while jobs run." }
        div.table-wrap {
            table.data #jobs-table data-poll="/ui/jobs.json" {
                caption { "Rotate and synchronize jobs, newest first" }
                thead {
                    tr {
                        @for column in ["Job", "Target", "Key Group", "Status", "Progress", "Step", "Users", "Created", "Finished"] {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody {
                    @if jobs.is_empty() {
                        tr.empty { td colspan="9" { "No jobs yet: Force Rotate or Synchronize starts one." } }
                    }
                    @for job in &jobs { (row(job)) }
                }
            }
        }
    };
    layout::page(&ui, Nav::Jobs, "Jobs", done.notice().as_ref(), body).into_response()
}

/// The list as JSON, for the page's script (cookie session, same views as
/// the API). A refresh: it does not count as the officers' activity.
pub async fn list_json(State(app): State<AppState>, UiRefresh(ui): UiRefresh) -> Response {
    match list(&app, &ui).await {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn detail(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
) -> Response {
    let job = match jobs::show(&app, &ui.session, &id).await {
        Ok(job) => job,
        Err(e) => {
            return failure(
                &ui,
                Nav::Jobs,
                "Job",
                e,
                html! { p { a href="/ui/jobs" { "All jobs" } } },
            );
        }
    };
    let messages = job.messages.clone().unwrap_or_default();
    let body = html! {
        p { a href="/ui/jobs" { "← All jobs" } }
        dl.facts #job-detail data-poll=(format!("/ui/jobs/{}/json", encode(&job.id))) {
            dt { "Job id" } dd { code { (job.id) } }
            dt { "Summary" } dd #job-summary { (job.summary) }
            dt { "Target" } dd { code { (job.target) } }
            dt { "Key group" } dd { (job.group) }
            dt { "Status" } dd #job-status { span.status-badge data-status=(job.status) { (job.status) } }
            dt { "Progress" } dd #job-progress { (progress(&job)) }
            dt { "Step" } dd #job-step { (job.current_step.as_deref().unwrap_or("—")) }
            dt { "Users" } dd { (job.users) }
            dt { "Attempts" } dd #job-attempts { (job.attempts) }
            dt { "KMS key" } dd #job-kms-key { (job.kms_key_id.as_deref().unwrap_or("—")) }
            dt { "Wrapping" } dd #job-wrapping { (job.wrapping_algorithm.as_deref().unwrap_or("—")) }
            dt { "Created" } dd { (layout::when(&job.created_at)) }
            dt { "Finished" } dd #job-finished { @if let Some(t) = &job.finished_at { (layout::when(t)) } @else { "—" } }
            dt { "Error" } dd #job-error { (job.error.as_deref().unwrap_or("—")) }
        }
        // Both forms are always there, hidden while the status refuses them:
        // the page's script shows them as the polled status changes (a job
        // that fails while watched), and without the script the page as
        // served is right until it is reloaded.
        div.actions #job-actions {
            form #retry-form method="post" action=(format!("/ui/jobs/{}/retry", encode(&job.id))) hidden[!can_retry(&job.status)] {
                (csrf_field(&ui.csrf))
                button type="submit" #retry-job { "Retry from the failed step" }
            }
            form #cancel-form method="post" action=(format!("/ui/jobs/{}/cancel", encode(&job.id))) hidden[!can_cancel(&job.status)] {
                (csrf_field(&ui.csrf))
                button.secondary type="submit" #cancel-job { "Cancel job" }
            }
        }
        h2 { "Messages" }
        ol.messages #job-messages {
            @for message in &messages {
                li { (layout::when(&message.time)) " " span { (message.text) } }
            }
        }
    };
    layout::page(&ui, Nav::Jobs, &job.title, None, body).into_response()
}

/// Whether a job in `status` can be retried: the core's rule, which the
/// detail poll of app.js repeats for the polled status.
fn can_retry(status: &str) -> bool {
    status == "failed"
}

/// Whether a job in `status` can be cancelled (repeated in app.js likewise).
fn can_cancel(status: &str) -> bool {
    matches!(status, "failed" | "queued")
}

/// A job as JSON, for the detail page's script. A refresh: it does not
/// count as the officers' activity.
pub async fn detail_json(
    State(app): State<AppState>,
    UiRefresh(ui): UiRefresh,
    Path(id): Path<String>,
) -> Response {
    match jobs::show(&app, &ui.session, &id).await {
        Ok(job) => Json(job).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Retries a failed job (after its cause was fixed), as the API does.
pub async fn retry(State(app): State<AppState>, ui: UiSession, Path(id): Path<String>) -> Response {
    match jobs::retry(&app, &ui.session, &id).await {
        Ok(job) => see_other(&format!("/ui/jobs/{}", encode(&job.id))),
        Err(e) => failure(
            &ui,
            Nav::Jobs,
            "Job",
            e,
            html! { p { a href="/ui/jobs" { "All jobs" } } },
        ),
    }
}

/// Cancels a queued or failed job, as the API does.
pub async fn cancel(
    State(app): State<AppState>,
    ui: UiSession,
    Path(id): Path<String>,
) -> Response {
    match jobs::cancel(&app, &ui.session, &id).await {
        Ok(job) => see_other(&format!("/ui/jobs/{}", encode(&job.id))),
        Err(e) => failure(
            &ui,
            Nav::Jobs,
            "Job",
            e,
            html! { p { a href="/ui/jobs" { "All jobs" } } },
        ),
    }
}
