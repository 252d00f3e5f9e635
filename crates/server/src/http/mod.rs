//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`;
//! the web UI (`crate::ui`) is merged in under `/ui`.

pub(crate) mod audit;
pub(crate) mod configuration;
pub(crate) mod credentials;
pub mod errors;
mod extract;
pub(crate) mod groups;
mod health;
pub(crate) mod identities;
pub(crate) mod jobs;
pub(crate) mod keys;
mod metrics;
mod requests;
pub(crate) mod sessions;
pub(crate) mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use keyhold_core::InvalidInput;
use keyhold_core::identity::Session;
use keyhold_core::service::Keyhold;

use errors::ApiError;
pub(crate) use extract::{ApiJson, Caller, OptionalJson};
pub use metrics::Metrics;

use crate::jobs::JobRunner;
use crate::rotator::Rotator;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest pause while a request body arrives: a client that stalls (by
/// accident or to hold connections open) is answered 408 and let go.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub keyhold: Keyhold,
    pub metrics: Arc<Metrics>,
    /// Runs the jobs the handlers create or retry (on the rotator node).
    pub jobs: JobRunner,
    /// This node's part in the cluster.
    pub rotator: Rotator,
}

impl AppState {
    /// Passes a result through, auditing it first when it is a refusal or a
    /// failure: every failed action leaves an entry, written in one place.
    async fn audited<T>(
        &self,
        users: &str,
        summary: impl FnOnce() -> String,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(error) = &result {
            let reason = error.public_message();
            if let Err(audit_error) = self.keyhold.audit_failure(users, summary(), &reason).await {
                tracing::error!(error = %audit_error, "could not audit a failed request");
            }
        }
        result
    }

    async fn audited_for<T>(
        &self,
        session: &Session,
        summary: impl FnOnce() -> String,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.audited(&session.users(), summary, result).await
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(health::openapi))
        .route("/session", get(sessions::show))
        .route("/session/login", post(sessions::login))
        .route("/session/logout", post(sessions::logout))
        .route("/password", post(sessions::change_password))
        .route(
            "/identities",
            get(identities::list).post(identities::create),
        )
        .route(
            "/identities/{name}",
            axum::routing::delete(identities::delete),
        )
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
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/export", get(audit::export))
        .route(
            "/config",
            get(configuration::show).patch(configuration::change),
        );
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::ui::router())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NoRoute })
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

/// Entries per page of a listing unless the caller asks for another size.
const DEFAULT_PAGE: u32 = 100;
/// Most entries one page of a listing may hold.
const MAX_PAGE: u32 = 1000;

/// The page size a listing's `limit` asks for, the default without one.
fn page_limit(requested: Option<u32>) -> Result<u32, InvalidInput> {
    match requested.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(InvalidInput::new(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// Echoes a name from a request in an audit summary without letting control
/// characters or an unbounded string into the log.
fn printable(raw: &str) -> String {
    raw.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_default_and_stay_within_bounds() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1)).unwrap(), 1);
        assert_eq!(page_limit(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        for refused in [0, MAX_PAGE + 1, u32::MAX] {
            assert_eq!(page_limit(Some(refused)).unwrap_err().field, "limit");
        }
    }
}
