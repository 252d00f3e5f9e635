//! Liveness, readiness, metrics and the API description.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use keyhold_api as api;

use crate::app::AppState;
use crate::views;

/// The OpenAPI description of this API, kept beside the routes it describes.
const OPENAPI: &str = include_str!("../openapi.json");

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database and keystore answer; the reason when not.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let checks: Vec<api::ReadinessCheck> = app
        .keyhold
        .readiness()
        .await
        .into_iter()
        .map(|(name, result)| api::ReadinessCheck {
            name: name.into(),
            ok: result.is_ok(),
            reason: result.err(),
        })
        .collect();
    let ok = checks.iter().all(|c| c.ok);
    let nodes = app.keyhold.store().list_nodes().await.unwrap_or_default();
    let cluster = views::cluster(&app.rotator.status(), &nodes, app.keyhold.now());
    let backups = app
        .keyhold
        .store()
        .list_backups(100)
        .await
        .unwrap_or_default();
    let view = api::ReadinessView {
        ready: ok,
        checks,
        cluster,
        backup: views::backup_health(&backups),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(view))
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    app.metrics.refresh_drift(&app.keyhold).await;
    app.metrics.refresh_backups(&app.keyhold).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
