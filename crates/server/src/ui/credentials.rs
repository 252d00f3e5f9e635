//! *Identity Management → Cloud Credentials*: the list, and adding one from
//! the CSV file IAM offers for download. The page's script reads the chosen
//! file into a hidden field; the secret goes to keyhold and is never shown.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::identity::Operation;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{Done, encode, failure, see_other};
use crate::app::AppState;
use crate::operations::credentials;

const TITLE: &str = "Cloud Credentials";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ImportForm {
    name: String,
    service: String,
    endpoint: String,
    /// The CSV's text, filled in by the page's script from the chosen file.
    csv: String,
}

fn body(ui: &UiSession, credentials: &[api::CredentialView], name: &str, endpoint: &str) -> Markup {
    html! {
        div.table-wrap {
            table.data #credentials-table {
                caption { "Cloud credentials (secrets are never shown)" }
                thead {
                    tr {
                        @for column in ["Name", "Service", "Kind", "Access Name", "Endpoint", "Created", "Actions"] {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody {
                    @if credentials.is_empty() {
                        tr.empty { td colspan="7" { "No cloud credentials yet." } }
                    }
                    @for c in credentials {
                        tr data-credential=(c.name) {
                            td { (c.name) }
                            td { @if c.service == "aws" { "Amazon Web Services" } @else { (c.service) } }
                            td { (c.kind) }
                            td { code { (c.access_name) } }
                            td { (c.endpoint.as_deref().unwrap_or("AWS default")) }
                            td.time { (layout::when(&c.created_at)) }
                            td { a href=(format!("/ui/credentials/{}/delete", encode(&c.name))) { "Delete" span.visually-hidden { " credential " (c.name) } } }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="add-credential" {
            h2 #add-credential { "Add a cloud credential" }
            (layout::needs(ui, Operation::ADD_CREDENTIAL, true))
            form #credential-form method="post" action="/ui/credentials" data-csv-form {
                (csrf_field(&ui.csrf))
                div.field {
                    label for="credential-name" { "Name (required)" }
                    input #credential-name type="text" name="name" value=(name) required;
                }
                div.field {
                    label for="credential-service" { "Service" }
                    select #credential-service name="service" { option value="aws" selected { "Amazon Web Services" } }
                }
                div.field {
                    label for="credential-csv" { "Access key CSV file (required)" }
                    input #credential-csv type="file" accept=".csv,text/csv" required data-fills="credential-csv-text" aria-describedby="credential-csv-hint";
                    p.hint #credential-csv-hint {
                        "The file IAM offers when you create an access key. The Access Name is filled from its access key id; "
                        "the secret is stored encrypted and never shown again."
                    }
                    input #credential-csv-text type="hidden" name="csv" value="";
                }
                div.field {
                    label for="credential-endpoint" { "Endpoint override (optional)" }
                    input #credential-endpoint type="url" name="endpoint" value=(endpoint) placeholder="https://vpce-….kms.eu-west-1.vpce.amazonaws.com" aria-describedby="credential-endpoint-hint";
                    p.hint #credential-endpoint-hint { "A VPC endpoint or a test peer; leave empty for AWS's regional endpoint." }
                }
                p.actions { button type="submit" #add-credential-button { "Add credential" } }
            }
        }
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    match credentials::list(&app, &ui.session).await {
        Ok(list) => layout::page(
            &ui,
            Nav::Credentials,
            TITLE,
            done.notice().as_ref(),
            body(&ui, &list, "", ""),
        )
        .into_response(),
        Err(e) => failure(&ui, Nav::Credentials, TITLE, e, html! {}),
    }
}

pub async fn import(
    State(app): State<AppState>,
    ui: UiSession,
    axum::Form(mut form): axum::Form<ImportForm>,
) -> Response {
    // The CSV holds the secret: moved (not copied) into the API's request,
    // which the operation wipes.
    let csv = std::mem::take(&mut form.csv);
    let no_file = csv.trim().is_empty();
    let request = api::ImportCredentialRequest {
        name: form.name.trim().to_owned(),
        service: Some(form.service.clone()).filter(|s| !s.is_empty()),
        csv,
        endpoint: Some(form.endpoint.trim().to_owned()).filter(|e| !e.is_empty()),
    };
    let result = if no_file {
        Err(keyhold_core::InvalidInput::new(
            "csv",
            "choose the access key CSV file (the browser sent no file content)",
        )
        .into())
    } else {
        credentials::import(&app, &ui.session, request).await
    };
    match result {
        Ok(view) => see_other(&format!(
            "/ui/credentials?done=credential_added&name={}",
            encode(&view.name)
        )),
        Err(error) => {
            if let Some(sent) = super::sent_for_approval(&error) {
                return sent;
            }
            let list = credentials::list(&app, &ui.session)
                .await
                .unwrap_or_default();
            failure(
                &ui,
                Nav::Credentials,
                TITLE,
                error,
                body(&ui, &list, &form.name, &form.endpoint),
            )
        }
    }
}

pub async fn confirm_delete(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match credentials::show(&app, &ui.session, &name).await {
        Ok(c) => layout::page(&ui,
            Nav::Credentials,
            &format!("Delete cloud credential {}?", c.name),
            None,
            html! {
                p #delete-what {
                    "This deletes the cloud credential " strong { (c.name) } " (" code { (c.access_name) } ") from keyhold. "
                    "Key groups that use it can no longer reach AWS; keyhold refuses while any does."
                }
                form method="post" action=(format!("/ui/credentials/{}/delete", encode(&c.name))) {
                    (csrf_field(&ui.csrf))
                    p.actions {
                        button.danger type="submit" #confirm-delete { "Delete credential " (c.name) }
                        a.button.secondary href="/ui/credentials" { "Cancel" }
                    }
                }
            },
        )
        .into_response(),
        Err(e) => failure(&ui, Nav::Credentials, TITLE, e, html! {}),
    }
}

pub async fn delete(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match credentials::delete(&app, &ui.session, &name).await {
        Ok(()) => see_other(&format!(
            "/ui/credentials?done=credential_deleted&name={}",
            encode(&name)
        )),
        Err(error) => {
            if let Some(sent) = super::sent_for_approval(&error) {
                return sent;
            }
            let list = credentials::list(&app, &ui.session)
                .await
                .unwrap_or_default();
            let status = error.status_and_code().0;
            let notice = Notice::Failed(error.public_message());
            (
                if status.is_success() {
                    StatusCode::BAD_REQUEST
                } else {
                    status
                },
                layout::page(
                    &ui,
                    Nav::Credentials,
                    TITLE,
                    Some(&notice),
                    body(&ui, &list, "", ""),
                ),
            )
                .into_response()
        }
    }
}
