//! *Drift*: where AWS no longer holds what keyhold's record says. Reading
//! the findings and a group's reconcile plan; starting checks (one group,
//! or every group) and applying a plan. Checks and reconciliations run as
//! jobs, handed to this node's runner at once.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::action::{Action, printable};
use keyhold_core::drift::{DriftFilter, KeyFindings};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::names::GroupName;
use serde::Deserialize;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::http::page_limit;
use crate::views;

/// What `GET /api/v1/drift/findings` (and the Drift screen) filters by.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsQuery {
    /// A key group's name.
    pub group: Option<String>,
    /// A key, as the key routes name it (its KMS key id, or keyhold's id):
    /// the findings that concern it, its own and its KMS key's.
    pub key: Option<String>,
    /// Cleared findings too, newest cleared first, after the open ones.
    pub include_cleared: Option<bool>,
    /// 1 to 1000; 100 by default.
    pub limit: Option<u32>,
}

/// What `check_all` audits a failure as: a check of no one group.
const EVERY_GROUP: &str = "*";

fn finding_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    keyhold_core::id::parse_uuid(raw).ok_or_else(|| {
        InvalidInput::new(
            "id",
            format!(
                "'{}' is not a drift finding id: use the id a finding listing shows (a UUID), see GET /api/v1/drift/findings or `keyhold drift list`",
                printable(raw)
            ),
        )
    })
}

/// A plan's digest as `plan` returns it: SHA-256, 64 hex digits (read
/// in either case, compared in lowercase, as `plan` writes it).
fn plan_digest(raw: &str) -> Result<String, InvalidInput> {
    let digest = raw.trim();
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(InvalidInput::new(
            "plan",
            "plan must be the digest of the reconcile plan that was shown (64 hex digits): read it with GET /api/v1/drift/groups/{group}/plan or `keyhold drift plan --group GROUP`, then send its `digest`",
        ))
    }
}

/// Every group's drift and the schedule that checks it.
pub async fn overview(app: &AppState, session: &Session) -> ApiResult<api::DriftOverviewView> {
    let overview = app.keyhold.drift_overview(session).await?;
    Ok(views::drift_overview(&overview))
}

/// Findings by the query: open ones first (by group, kind and subject),
/// then, when asked for, cleared ones.
pub async fn findings(
    app: &AppState,
    session: &Session,
    query: &FindingsQuery,
) -> ApiResult<Vec<api::DriftFindingView>> {
    let limit = page_limit(query.limit)?;
    let group = query.group.as_deref().map(GroupName::parse).transpose()?;
    if let Some(name) = &group {
        // A misspelt group is said, not answered with an empty list.
        app.keyhold.get_group(session, name).await?;
    }
    let key = match &query.key {
        Some(key) => Some(app.keyhold.get_key(session, key).await?.key),
        None => None,
    };
    if let (Some(name), Some(key)) = (&group, &key)
        && name != &key.group
    {
        return Err(InvalidInput::new(
            "key",
            format!(
                "key {} is in key group '{}', not '{name}': name the key alone, or with its own group",
                key.display_name(),
                key.group
            ),
        )
        .into());
    }
    let filter = DriftFilter {
        group: group.or_else(|| key.as_ref().map(|k| k.group.clone())),
        key: key.as_ref().map(KeyFindings::of),
        include_cleared: query.include_cleared.unwrap_or(false),
        limit,
    };
    let found = app.keyhold.list_drift(session, &filter).await?;
    Ok(found.iter().map(views::drift_finding).collect())
}

pub async fn finding(
    app: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<api::DriftFindingView> {
    let found = app.keyhold.get_drift(session, finding_id(id)?).await?;
    Ok(views::drift_finding(&found))
}

/// Drift → Check all: a check of every group that has no other job
/// unfinished; the others are named with the reason.
pub async fn check_all(
    app: &AppState,
    session: &Session,
) -> ApiResult<api::DriftChecksStartedView> {
    let outcome = audited(app, session, Action::CheckDrift(EVERY_GROUP), async {
        Ok(app.keyhold.start_drift_checks(session).await?)
    })
    .await?;
    for job in &outcome.started {
        app.jobs.submit(job.id);
    }
    Ok(views::drift_checks_started(&outcome))
}

/// Drift → Check now, for one group.
pub async fn check_group(
    app: &AppState,
    session: &Session,
    group: &str,
) -> ApiResult<api::JobView> {
    let job = audited(app, session, Action::CheckDrift(group), async {
        let group = GroupName::parse(group)?;
        Ok(app.keyhold.start_drift_check(session, &group).await?)
    })
    .await?;
    app.jobs.submit(job.id);
    Ok(views::job(&job, None))
}

/// The group's reconcile plan, with the digest that applies it.
pub async fn plan(app: &AppState, session: &Session, group: &str) -> ApiResult<api::DriftPlanView> {
    let group = GroupName::parse(group)?;
    let plan = app.keyhold.drift_plan(session, &group).await?;
    Ok(views::drift_plan(&plan))
}

/// Drift → Apply plan: queues a reconcile job with the group's plan, while
/// it is still the plan named by `req.plan`; under dual control, or held
/// for approval by a policy of class `reconcile_drift`.
pub async fn reconcile(
    app: &AppState,
    session: &Session,
    group: &str,
    req: &api::ReconcileRequest,
) -> ApiResult<api::JobView> {
    let job = audited(app, session, Action::ReconcileDrift(group), async {
        let group = GroupName::parse(group)?;
        let digest = plan_digest(&req.plan)?;
        let digest = digest.as_str();
        gate(app, session, Operation::RECONCILE_DRIFT, async || {
            // Approvers read the repairs they approve; a plan that changed
            // since it was shown (or has nothing to do) is refused now, as
            // the request would be when it runs.
            let repairs = app.keyhold.plan_to_apply(session, &group, digest).await?;
            Ok((
                PendingOperation::ReconcileDrift {
                    group: group.to_string(),
                    plan: digest.to_owned(),
                },
                reconcile_summary(&group, &repairs),
            ))
        })
        .await?;
        Ok(app.keyhold.start_reconcile(session, &group, digest).await?)
    })
    .await?;
    app.jobs.submit(job.id);
    Ok(views::job(&job, None))
}

/// Most repairs an approval request's sentence lists before "and N more".
const SUMMARY_REPAIRS: usize = 5;

/// The sentence approvers read: the group and what the plan does.
fn reconcile_summary(group: &GroupName, repairs: &[keyhold_core::drift::Repair]) -> String {
    let mut listed: Vec<String> = repairs
        .iter()
        .take(SUMMARY_REPAIRS)
        .map(keyhold_core::drift::Repair::describe)
        .collect();
    if repairs.len() > SUMMARY_REPAIRS {
        listed.push(format!("and {} more", repairs.len() - SUMMARY_REPAIRS));
    }
    format!(
        "Reconcile key group '{group}' with AWS ({} repair(s)): {}",
        repairs.len(),
        listed.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::cloud::aws::KmsKeyId;
    use keyhold_core::drift::Repair;

    #[test]
    fn finding_ids_are_uuids() {
        assert!(finding_id("5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11").is_ok());
        let err = finding_id("latest\u{7}").unwrap_err();
        assert_eq!(err.field, "id");
        assert!(err.message.contains("'latest?'"), "{}", err.message);
        assert!(
            err.message.contains("/api/v1/drift/findings"),
            "{}",
            err.message
        );
    }

    #[test]
    fn plan_digests_are_sha256_hex() {
        let digest = "ab".repeat(32);
        assert_eq!(plan_digest(&digest).unwrap(), digest);
        assert_eq!(plan_digest(&format!(" {digest}\n")).unwrap(), digest);
        // Either case is read; what the core compares is lowercase.
        assert_eq!(plan_digest(&"AB".repeat(32)).unwrap(), digest);
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"a b".repeat(21),
        ] {
            let err = plan_digest(bad).unwrap_err();
            assert_eq!(err.field, "plan");
            assert!(err.message.contains("/plan"), "{}", err.message);
        }
    }

    #[test]
    fn the_query_names_only_known_parameters() {
        let query: FindingsQuery =
            serde_urlencoded::from_str("group=ig-demo&include_cleared=true&limit=5").unwrap();
        assert_eq!(query.group.as_deref(), Some("ig-demo"));
        assert_eq!(query.include_cleared, Some(true));
        assert_eq!(query.limit, Some(5));
        assert!(query.key.is_none());
        assert!(serde_urlencoded::from_str::<FindingsQuery>("kind=alias_missing").is_err());
        assert!(serde_urlencoded::from_str::<FindingsQuery>("include_cleared=yes").is_err());
    }

    #[test]
    fn the_approval_sentence_lists_the_first_repairs() {
        let group = GroupName::parse("ig-demo").unwrap();
        let kms = KmsKeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let one = vec![Repair::PutPolicy {
            kms_key_id: kms.clone(),
        }];
        assert_eq!(
            reconcile_summary(&group, &one),
            format!(
                "Reconcile key group 'ig-demo' with AWS (1 repair(s)): put the key group's policy on KMS key {kms}"
            )
        );
        let many = vec![
            Repair::EnableKey {
                kms_key_id: kms.clone()
            };
            8
        ];
        let summary = reconcile_summary(&group, &many);
        assert!(summary.contains("(8 repair(s))"), "{summary}");
        assert!(summary.ends_with("; and 3 more"), "{summary}");
    }
}
