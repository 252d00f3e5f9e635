//! *Cloud → Force Rotate*, *Cloud → Synchronize*, and *Logging and
//! Reporting → Jobs*. Starting a job answers 202 at once with the queued
//! job; the runner takes it from there.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::job::SyncOptions;
use keyhold_core::names::GroupName;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiQuery, Caller, OptionalJson};
use super::{AppState, page_limit, printable, views};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    limit: Option<u32>,
}

fn job_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    uuid::Uuid::try_parse(raw).map_err(|_| {
        InvalidInput::new(
            "id",
            format!(
                "'{}' is not a job id: use the id that starting the rotation or synchronization returned (a UUID), or see GET /api/v1/jobs",
                printable(raw)
            ),
        )
    })
}

/// Absent options take the walkthrough's defaults: update the policy and
/// import the material, but delete nothing.
fn sync_options(req: &api::SyncRequest) -> SyncOptions {
    let defaults = SyncOptions::default();
    SyncOptions {
        update_policy: req.update_policy.unwrap_or(defaults.update_policy),
        import_material: req.import_material.unwrap_or(defaults.import_material),
        delete_material: req.delete_material.unwrap_or(defaults.delete_material),
    }
}

pub async fn rotate(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let result = async {
        let group = GroupName::parse(&name)?;
        Ok(app.keyhold.start_rotation(&session, &group).await?)
    }
    .await;
    let job = app
        .audited_for(
            &session,
            || {
                format!(
                    "Failed to rotate keys for HSM protected key group {}",
                    printable(&name)
                )
            },
            result,
        )
        .await?;
    app.jobs.submit(job.id);
    Ok((StatusCode::ACCEPTED, Json(views::job(&job, None))))
}

pub async fn synchronize(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    OptionalJson(req): OptionalJson<api::SyncRequest>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let result = app
        .keyhold
        .start_synchronization(&session, &name, sync_options(&req))
        .await
        .map_err(Into::into);
    let job = app
        .audited_for(
            &session,
            || {
                format!(
                    "Failed to synchronize HSM protected key {}",
                    printable(&name)
                )
            },
            result,
        )
        .await?;
    app.jobs.submit(job.id);
    Ok((StatusCode::ACCEPTED, Json(views::job(&job, None))))
}

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<JobQuery>,
) -> ApiResult<Json<Vec<api::JobView>>> {
    let limit = page_limit(query.limit)?;
    let jobs = app.keyhold.list_jobs(&session, limit).await?;
    Ok(Json(jobs.iter().map(|j| views::job(j, None)).collect()))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::JobView>> {
    let (job, messages) = app.keyhold.get_job(&session, job_id(&id)?).await?;
    Ok(Json(views::job(&job, Some(&messages))))
}

pub async fn retry(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let result = async { Ok(app.keyhold.retry_job(&session, job_id(&id)?).await?) }.await;
    let job = app
        .audited_for(
            &session,
            || format!("Failed to retry job {}", printable(&id)),
            result,
        )
        .await?;
    app.jobs.submit(job.id);
    Ok((StatusCode::ACCEPTED, Json(views::job(&job, None))))
}

pub async fn cancel(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::JobView>> {
    let result = async { Ok(app.keyhold.cancel_job(&session, job_id(&id)?).await?) }.await;
    let job = app
        .audited_for(
            &session,
            || format!("Failed to cancel job {}", printable(&id)),
            result,
        )
        .await?;
    Ok(Json(views::job(&job, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_sync_options_take_the_defaults() {
        let none = sync_options(&api::SyncRequest::default());
        assert_eq!(
            none,
            SyncOptions {
                update_policy: true,
                import_material: true,
                delete_material: false
            }
        );
        let some = sync_options(&api::SyncRequest {
            update_policy: Some(false),
            import_material: None,
            delete_material: Some(true),
        });
        assert_eq!(
            some,
            SyncOptions {
                update_policy: false,
                import_material: true,
                delete_material: true
            }
        );
        let parsed: api::SyncRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(sync_options(&parsed), SyncOptions::default());
        assert!(serde_json::from_str::<api::SyncRequest>(r#"{"delete":true}"#).is_err());
    }

    #[test]
    fn job_ids_are_uuids() {
        assert!(job_id("5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11").is_ok());
        let err = job_id("latest\u{7}").unwrap_err();
        assert_eq!(err.field, "id");
        assert!(err.message.contains("'latest?'"), "{}", err.message);
    }
}
