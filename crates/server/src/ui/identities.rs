//! *Identity Management → Identities*: who can log in, with their roles.
//! Adding an identity hands out a one-time password, which this UI does not
//! show (no secret in a page): use `keyhold identity create`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::identity::Operation;
use maud::html;

use super::layout::{self, Nav, csrf_field};
use super::session::UiSession;
use super::{Done, encode, failure, see_other};
use crate::app::AppState;
use crate::operations::identities;

const TITLE: &str = "Identities";

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(done): Query<Done>,
) -> Response {
    let list: Vec<api::IdentityView> = match identities::list(&app, &ui.session).await {
        Ok(list) => list,
        Err(e) => return failure(&ui, Nav::Identities, TITLE, e, html! {}),
    };
    let body = html! {
        div.table-wrap {
            table.data #identities-table {
                caption { "Identities that can log in" }
                thead {
                    tr {
                        @for column in ["Name", "Role", "Must change password", "Locked", "Created", "Actions"] {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody {
                    @for i in &list {
                        tr data-identity=(i.name) {
                            td { (i.name) }
                            td { (i.role.replace('_', " ")) }
                            td { @if i.must_change_password { "Yes" } @else { "No" } }
                            td { @if i.locked { "Yes" } @else { "No" } }
                            td.time { (layout::when(&i.created_at)) }
                            td { a href=(format!("/ui/identities/{}/delete", encode(&i.name))) { "Delete" span.visually-hidden { " identity " (i.name) } } }
                        }
                    }
                }
            }
        }
        p.hint {
            "To add an identity, an administrator runs " code { "keyhold identity create" }
            ": its one-time password is shown once, there, and never in this UI."
        }
    };
    layout::page(&ui, Nav::Identities, TITLE, done.notice().as_ref(), body).into_response()
}

pub async fn confirm_delete(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    let dual_control = match app.keyhold.settings(&ui.session).await {
        Ok(settings) => settings.dual_control,
        Err(e) => return failure(&ui, Nav::Identities, TITLE, e.into(), html! {}),
    };
    let body = html! {
        p #delete-what { "This deletes the identity " strong { (name) } ": it can no longer log in." }
        (layout::needs(&ui, Operation::MANAGE_IDENTITIES, dual_control))
        form method="post" action=(format!("/ui/identities/{}/delete", encode(&name))) {
            (csrf_field(&ui.csrf))
            p.actions {
                button.danger type="submit" #confirm-delete { "Delete identity " (name) }
                a.button.secondary href="/ui/identities" { "Cancel" }
            }
        }
    };
    layout::page(
        &ui,
        Nav::Identities,
        &format!("Delete identity {name}?"),
        None,
        body,
    )
    .into_response()
}

pub async fn delete(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match identities::delete(&app, &ui.session, &name).await {
        Ok(()) => see_other(&format!(
            "/ui/identities?done=identity_deleted&name={}",
            encode(&name)
        )),
        Err(e) => failure(
            &ui,
            Nav::Identities,
            TITLE,
            e,
            html! { p { a href="/ui/identities" { "Back to identities" } } },
        ),
    }
}
