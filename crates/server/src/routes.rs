//! Every route keyhold serves, assembled in one place: the API under
//! `/api/v1`, the web UI under `/ui`, `/healthz`, `/readyz` and `/metrics`,
//! the XKS proxy's `<prefix>/kms/xks/v1/...` (through the fallback),
//! with the layers every request passes (metrics, body limit and idle
//! timeout, tracing). `crate::http` and `crate::ui` provide the handlers;
//! neither routes the other's.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;
use axum::routing::{delete, get, post};

use crate::ApiError;
use crate::app::AppState;
use crate::http::{
    approvals, audit, backups, configuration, credentials, drift, groups, health, identities, jobs,
    keys, sessions, xks,
};
use crate::{metrics, ui};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest pause while a request body arrives: a client that stalls (by
/// accident or to hold connections open) is answered 408 and let go.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", api())
        .merge(web_ui())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        // The XKS proxy's paths have prefixes officers choose (any number
        // of segments), so they are found from the fallback: see `crate::xks`.
        .fallback(crate::xks::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_IDLE_TIMEOUT,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The JSON API (crates/server/tests/openapi.rs checks it against openapi.json).
fn api() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(health::openapi))
        .route("/session", get(sessions::show))
        .route("/session/login", post(sessions::login))
        .route("/session/logout", post(sessions::logout))
        .route("/password", post(sessions::change_password))
        .route(
            "/identities",
            get(identities::list).post(identities::create),
        )
        .route("/identities/{name}", delete(identities::delete))
        .route(
            "/credentials",
            get(credentials::list).post(credentials::import),
        )
        .route(
            "/credentials/chain",
            post(credentials::add_chain)
                .get(credentials::show_named_chain)
                .delete(credentials::delete_named_chain),
        )
        .route(
            "/credentials/{name}",
            get(credentials::show).delete(credentials::delete),
        )
        .route("/groups", get(groups::list).post(groups::create))
        .route(
            "/groups/{name}",
            get(groups::show)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route("/groups/{name}/rotate", post(jobs::rotate))
        .route("/keys", get(keys::list))
        .route("/keys/{name}", get(keys::show).delete(keys::delete))
        .route("/keys/{name}/sync", post(jobs::synchronize))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/drift", get(drift::overview))
        .route("/drift/findings", get(drift::findings))
        .route("/drift/findings/{id}", get(drift::finding))
        .route("/drift/checks", post(drift::check_all))
        .route("/drift/groups/{group}/check", post(drift::check_group))
        .route("/drift/groups/{group}/plan", get(drift::plan))
        .route("/drift/groups/{group}/reconcile", post(drift::reconcile))
        .route("/audit", get(audit::list))
        .route(
            "/audit/verify",
            get(audit::verify).post(audit::verify_against),
        )
        .route("/audit/checkpoints", post(audit::checkpoint))
        .route("/audit/public-key", get(audit::public_key))
        .route("/audit/streams", get(audit::streams))
        .route("/audit/export", get(audit::export))
        .route(
            "/audit/archives",
            get(backups::archives).post(backups::archive),
        )
        .route("/backups", get(backups::list).post(backups::start))
        .route(
            "/backups/custodians",
            get(backups::custodians).put(backups::set_custodians),
        )
        .route("/backups/{id}", get(backups::show))
        .route("/backups/{id}/file", get(backups::file))
        .route("/backups/{id}/shares", get(backups::shares))
        .route(
            "/config",
            get(configuration::show).patch(configuration::change),
        )
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/approvals/{id}/result", post(approvals::collect_result))
        .route(
            "/approval-policies",
            get(approvals::policies).put(approvals::change_policies),
        )
        .route("/xks/stores", get(xks::list_stores).post(xks::create_store))
        .route(
            "/xks/stores/{name}",
            get(xks::show_store)
                .patch(xks::update_store)
                .delete(xks::delete_store),
        )
        .route("/xks/stores/{name}/credentials", post(xks::add_credential))
        .route(
            "/xks/stores/{name}/credentials/{access_key_id}",
            delete(xks::revoke_credential),
        )
        .route(
            "/xks/stores/{name}/keys",
            get(xks::list_store_keys).post(xks::create_key),
        )
        .route("/xks/keys", get(xks::list_keys))
        .route(
            "/xks/keys/{id}",
            get(xks::show_key)
                .patch(xks::update_key)
                .delete(xks::delete_key),
        )
}

/// The web UI's pages under `/ui`, each behind the UI's session guard and
/// security headers; `/` leads to it.
fn web_ui() -> Router<AppState> {
    use ui::{
        approvals, audit, backups, configuration, credentials, drift, identities, jobs, keys,
        login, xks,
    };
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/ui/keys") }))
        .route("/assets/app.css", get(ui::css))
        .route("/assets/app.js", get(ui::js))
        .route("/login", get(login::page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/password", post(login::change_password))
        .route("/identities", get(identities::page))
        .route(
            "/identities/{name}/delete",
            get(identities::confirm_delete).post(identities::delete),
        )
        .route(
            "/credentials",
            get(credentials::page).post(credentials::import),
        )
        .route(
            "/credentials/{name}/delete",
            get(credentials::confirm_delete).post(credentials::delete),
        )
        .route("/keys", get(keys::page))
        .route("/keys/groups/new", get(keys::new_group))
        .route("/keys/groups", post(keys::create_group))
        .route(
            "/keys/groups/{name}/edit",
            get(keys::edit_group).post(keys::update_group),
        )
        .route(
            "/keys/groups/{name}/rotate",
            get(keys::confirm_rotate).post(keys::rotate),
        )
        .route(
            "/keys/groups/{name}/delete",
            get(keys::confirm_delete_group).post(keys::delete_group),
        )
        .route(
            "/keys/{key}/sync",
            get(keys::sync_dialog).post(keys::synchronize),
        )
        .route(
            "/keys/{key}/delete",
            get(keys::confirm_delete_key).post(keys::delete_key),
        )
        .route("/jobs", get(jobs::page))
        // The Jobs pages' own refreshes: by their handlers' extractor
        // (`UiRefresh`) they need a live session but do not extend it.
        .route("/jobs.json", get(jobs::list_json))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/jobs/{id}/json", get(jobs::detail_json))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/drift", get(drift::page))
        .route("/drift/checks", post(drift::check_all))
        .route("/drift/groups/{group}/check", post(drift::check_group))
        .route("/drift/groups/{group}/reconcile", post(drift::reconcile))
        .route("/audit", get(audit::page))
        .route("/audit/export", get(audit::export))
        .route("/audit/checkpoint", post(audit::checkpoint))
        .route(
            "/configuration",
            get(configuration::page).post(configuration::change),
        )
        .route(
            "/configuration/approval-policies",
            post(configuration::change_policies),
        )
        .route("/approvals", get(approvals::page))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/approvals/{id}/result", post(approvals::collect_result))
        .route("/backups", get(backups::page))
        .route("/backups/start", post(backups::start))
        .route("/backups/custodians", post(backups::set_custodians))
        .route("/backups/archives", post(backups::archive))
        .route("/backups/{id}", get(backups::show))
        .route("/backups/{id}/file", get(backups::file))
        .route("/backups/{id}/shares", get(backups::shares))
        .route("/backups/{id}/shares/{custodian}", get(backups::share))
        .route("/xks", get(xks::page).post(xks::create))
        .route("/xks/{name}", get(xks::detail))
        .route("/xks/{name}/settings", post(xks::update_settings))
        .route(
            "/xks/{name}/delete",
            get(xks::confirm_delete_store).post(xks::delete_store),
        )
        .route("/xks/{name}/credentials", post(xks::rotate))
        .route(
            "/xks/{name}/credentials/{access_key_id}/revoke",
            get(xks::confirm_revoke).post(xks::revoke),
        )
        .route("/xks/{name}/keys", post(xks::create_key))
        .route("/xks/{name}/keys/{id}/enable", post(xks::enable_key))
        .route("/xks/{name}/keys/{id}/disable", post(xks::disable_key))
        .route(
            "/xks/{name}/keys/{id}/delete",
            get(xks::confirm_delete_key).post(xks::delete_key),
        )
        .layer(axum::middleware::from_fn(ui::session::guard))
        .layer(axum::middleware::map_response(ui::security_headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/keys") }))
        .nest("/ui", pages)
}
