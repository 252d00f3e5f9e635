//! *Cloud → Force Rotate*, *Cloud → Synchronize*, and retrying or
//! cancelling a job. Starting a job hands it to this node's runner at once;
//! the runner takes it from there.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::action::{Action, printable};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::job::SyncOptions;
use keyhold_core::names::GroupName;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

fn job_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    keyhold_core::id::parse_uuid(raw).ok_or_else(|| {
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

/// The job with its messages.
pub async fn show(app: &AppState, session: &Session, id: &str) -> ApiResult<api::JobView> {
    let (job, messages) = app.keyhold.get_job(session, job_id(id)?).await?;
    Ok(views::job(&job, Some(&messages)))
}

/// Queues a rotation of the group's key.
pub async fn rotate(app: &AppState, session: &Session, group: &str) -> ApiResult<api::JobView> {
    let job = audited(app, session, Action::RotateGroup(group), async {
        let group = GroupName::parse(group)?;
        gate(app, session, Operation::ROTATE_GROUP, async || {
            Ok((
                PendingOperation::RotateGroup {
                    group: group.to_string(),
                },
                format!("Force Rotate key group '{group}': a new key version and KMS key"),
            ))
        })
        .await?;
        Ok(app.keyhold.start_rotation(session, &group).await?)
    })
    .await?;
    app.jobs.submit(job.id);
    Ok(views::job(&job, None))
}

/// Queues a synchronization of the key with its KMS key.
pub async fn synchronize(
    app: &AppState,
    session: &Session,
    key: &str,
    req: &api::SyncRequest,
) -> ApiResult<api::JobView> {
    let job = audited(app, session, Action::SynchronizeKey(key), async {
        let options = sync_options(req);
        if options.delete_material {
            gate(app, session, Operation::DELETE_KEY_MATERIAL, async || {
                Ok((
                    PendingOperation::SynchronizeKey {
                        key: key.to_owned(),
                        options: req.clone(),
                    },
                    format!(
                        "Synchronize key {}, deleting its key material in KMS{}",
                        printable(key),
                        if options.import_material {
                            " and importing it again"
                        } else {
                            ""
                        }
                    ),
                ))
            })
            .await?;
        }
        Ok(app
            .keyhold
            .start_synchronization(session, key, options)
            .await?)
    })
    .await?;
    app.jobs.submit(job.id);
    Ok(views::job(&job, None))
}

/// Queues a failed job again, from the step that failed.
pub async fn retry(app: &AppState, session: &Session, id: &str) -> ApiResult<api::JobView> {
    let action = Action::RetryJob { id, title: None };
    let job = audited(app, session, action, async {
        Ok(app.keyhold.retry_job(session, job_id(id)?).await?)
    })
    .await?;
    app.jobs.submit(job.id);
    Ok(views::job(&job, None))
}

/// Cancels a queued or failed job.
pub async fn cancel(app: &AppState, session: &Session, id: &str) -> ApiResult<api::JobView> {
    let action = Action::CancelJob {
        id,
        title: None,
        removed_key: None,
    };
    let job = audited(app, session, action, async {
        Ok(app.keyhold.cancel_job(session, job_id(id)?).await?)
    })
    .await?;
    Ok(views::job(&job, None))
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
        for other in [
            "{5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11}",
            "urn:uuid:5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "5b9f4a864a1d4c3e9b0e2f0c1e7d9a11",
        ] {
            assert!(job_id(other).is_err(), "{other}");
        }
    }
}
