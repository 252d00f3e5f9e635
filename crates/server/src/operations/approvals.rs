//! Quorum approvals at the edge: an operation held to a quorum is stored as a
//! request with its exact parameters instead of running, and runs, through
//! the same operation function, when its last approval arrives.
//!
//! Rules:
//! - Every operation a policy may hold calls [`gate`] once its input is
//!   parsed, before it acts: under a quorum it answers
//!   [`ApiError::AwaitingApproval`] (202 with the request) and nothing else
//!   happens. Input that does not parse is refused before any request exists.
//! - A request's parameters are the API request as received, so running it
//!   later takes exactly the path a direct call takes. A secret among them
//!   (an access key CSV) is stored sealed by the keystore, never in the clear.
//! - [`run`] runs an approved request in the session the core lends it; the
//!   store spends the approval with the operation's own write, so a second
//!   run (a parallel answer, a resumption) writes nothing.

use keyhold_api as api;
use keyhold_core::action::Action;
use keyhold_core::approval::{
    ApprovalPolicies, ApprovalRequest, ApprovalStatus, OperationClass, Quorum,
};
use keyhold_core::identity::{Operation, Role, Session, SessionIdentity};
use keyhold_core::service::Gate;
use keyhold_core::{CoreError, InvalidInput, StoreError};
use serde::{Deserialize, Serialize};

use super::{audited, xks};
use crate::ApiResult;
use crate::app::AppState;
use crate::http::errors::ApiError;
use crate::views::time;

/// An operation waiting for its approvals, with its parameters as the API
/// received them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingOperation {
    AddGroup {
        group: api::CreateGroupRequest,
    },
    UpdateGroup {
        group: String,
        change: api::UpdateGroupRequest,
    },
    DeleteGroup {
        group: String,
    },
    DeleteKey {
        key: String,
    },
    RotateGroup {
        group: String,
    },
    SynchronizeKey {
        key: String,
        options: api::SyncRequest,
    },
    /// A drift reconcile plan, named by its digest: it runs only while the
    /// group's plan is still the one approved.
    ReconcileDrift {
        group: String,
        plan: String,
    },
    /// An access key: the CSV (which holds the secret) sealed by the
    /// keystore under `seal`, base64; its access key id in the clear.
    ImportCredential {
        name: String,
        service: Option<String>,
        endpoint: Option<String>,
        access_key_id: String,
        seal: uuid::Uuid,
        sealed_csv: String,
    },
    AddChainCredential {
        credential: api::AddCredentialRequest,
    },
    DeleteCredential {
        name: String,
    },
    ChangeConfiguration {
        change: api::SettingsChangeRequest,
    },
    AddIdentity {
        identity: api::CreateIdentityRequest,
    },
    DeleteIdentity {
        name: String,
    },
    ChangeApprovalPolicies {
        policies: api::ApprovalPoliciesRequest,
    },
    /// A backup, made when approved, by its requester and approvers.
    CreateBackup,
    /// Custodians as public keys: a passphrase custodian's key was derived
    /// before the request was stored, so no passphrase is kept in it.
    SetCustodians {
        custodians: keyhold_core::backup::CustodianSet,
    },
    /// A store and its first credential, whose secret is sealed for the
    /// requester when the request runs (never stored in the request).
    CreateXksStore {
        store: api::CreateXksStoreRequest,
    },
    UpdateXksStore {
        store: String,
        change: api::UpdateXksStoreRequest,
    },
    DeleteXksStore {
        store: String,
    },
    /// A new credential of the store (sealed for the requester, as above).
    AddXksCredential {
        store: String,
    },
    RevokeXksCredential {
        store: String,
        access_key_id: String,
    },
    CreateXksKey {
        store: String,
        key: api::CreateXksKeyRequest,
    },
    /// A change that widens the key (a restriction needs no approvals).
    UpdateXksKey {
        key: String,
        change: api::UpdateXksKeyRequest,
    },
    DeleteXksKey {
        key: String,
    },
}

/// The keystore context a request's sealed CSV is sealed under.
pub(super) fn csv_context(seal: uuid::Uuid) -> Vec<u8> {
    format!("keyhold approval parameters {seal}").into_bytes()
}

/// Lets `op` run, or, when a policy holds it to a quorum, stores it as a
/// request (`pending` gives its parameters and the sentence approvers read)
/// and answers [`ApiError::AwaitingApproval`]. `pending` may refuse (a
/// group to delete that does not exist): no request is made then.
pub(super) async fn gate(
    app: &AppState,
    session: &Session,
    op: Operation,
    pending: impl AsyncFnOnce() -> ApiResult<(PendingOperation, String)>,
) -> ApiResult<()> {
    match app.keyhold.gate(session, op).await? {
        Gate::Run => Ok(()),
        Gate::Request(_) => {
            // The role first: what `pending` reads (does the group exist?)
            // must not answer a caller who may not ask at all.
            session.authorize(op, false)?;
            let (operation, summary) = pending().await?;
            let value = serde_json::to_value(&operation).map_err(|e| {
                CoreError::Store(StoreError::Corrupt(format!(
                    "approval parameters do not serialise: {e}"
                )))
            })?;
            let request = app
                .keyhold
                .request_approval(session, op, value, summary)
                .await?;
            app.approval_events
                .requested(&view_as(app, None, &request).await?);
            let view = view(app, session, &request).await?;
            Err(ApiError::AwaitingApproval(Box::new(view)))
        }
    }
}

pub async fn list(
    app: &AppState,
    session: &Session,
    status: Option<&str>,
    limit: u32,
) -> ApiResult<Vec<api::ApprovalView>> {
    let status = status
        .map(|raw| {
            ApprovalStatus::parse(raw).ok_or_else(|| {
                InvalidInput::new(
                    "status",
                    "status must be one of pending, approved, executed, failed, denied, expired",
                )
            })
        })
        .transpose()?;
    let list = app.keyhold.list_approvals(session, status, limit).await?;
    let mut views = Vec::with_capacity(list.len());
    for request in &list {
        views.push(view(app, session, request).await?);
    }
    Ok(views)
}

pub async fn show(app: &AppState, session: &Session, id: &str) -> ApiResult<api::ApprovalView> {
    let request = app.keyhold.get_approval(session, request_id(id)?).await?;
    view(app, session, &request).await
}

/// Approves a request; the last approval needed runs it before answering.
pub async fn approve(app: &AppState, session: &Session, id: &str) -> ApiResult<api::ApprovalView> {
    let request = audited(app, session, Action::ApproveRequest(id), async {
        Ok(app.keyhold.approve(session, request_id(id)?).await?)
    })
    .await?;
    if request.status == ApprovalStatus::Approved {
        #[cfg(feature = "crash-points")]
        crate::crash_points::approval_reached("approval_approved:after", request.id);
        run(app, &request).await?;
    } else {
        app.approval_events
            .decided(&view_as(app, None, &request).await?);
    }
    let request = app.keyhold.get_approval(session, request.id).await?;
    view(app, session, &request).await
}

pub async fn deny(
    app: &AppState,
    session: &Session,
    id: &str,
    req: &api::DenyRequest,
) -> ApiResult<api::ApprovalView> {
    let request = audited(app, session, Action::DenyRequest(id), async {
        Ok(app
            .keyhold
            .deny(session, request_id(id)?, req.reason.as_deref())
            .await?)
    })
    .await?;
    app.approval_events
        .decided(&view_as(app, None, &request).await?);
    view(app, session, &request).await
}

/// The requester collects an executed request's sealed result, once: an
/// added identity's one-time password, or a new XKS credential (with the
/// AWS KMS console's file).
pub async fn collect_result(
    app: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<api::ApprovalResultView> {
    let (request, secret) = audited(app, session, Action::CollectApprovalResult(id), async {
        let id = request_id(id)?;
        // Read first: what the result is depends on the request's
        // operation, and a failed read then leaves the result waiting.
        let request = app.keyhold.get_approval(session, id).await?;
        let secret = app.keyhold.collect_approval_result(session, id).await?;
        Ok((request, secret))
    })
    .await?;
    let issued_by = serde_json::from_value::<PendingOperation>(request.operation.clone())
        .ok()
        .and_then(|operation| match operation {
            PendingOperation::CreateXksStore { store } => Some(store.name),
            PendingOperation::AddXksCredential { store } => Some(store),
            _ => None,
        });
    if let Some(store) = issued_by {
        let (password, xks_credential) = xks::collected_credential(app, &store, &secret).await?;
        return Ok(api::ApprovalResultView {
            id: id.to_owned(),
            password: password.as_str().to_owned(),
            xks_credential,
        });
    }
    let password = String::from_utf8(secret.to_vec()).map_err(|_| {
        CoreError::Store(StoreError::Corrupt(format!(
            "approval request {id}: its result is not text"
        )))
    })?;
    Ok(api::ApprovalResultView {
        id: id.to_owned(),
        password,
        xks_credential: None,
    })
}

/// Runs an approved request as its requester and approvers. A refusal now
/// (the group was deleted meanwhile, say) fails the request, with the
/// reason; a request another node or answer ran already is left as it is.
pub async fn run(app: &AppState, request: &ApprovalRequest) -> ApiResult<()> {
    let outcome = async {
        let session = app.keyhold.approved_session(request).await?;
        let operation: PendingOperation = serde_json::from_value(request.operation.clone())
            .map_err(|e| {
                CoreError::Store(StoreError::Corrupt(format!(
                    "approval request {}: its parameters do not decode: {e}",
                    request.id
                )))
            })?;
        execute(app, &session, operation).await
    }
    .await;
    match outcome {
        Ok(()) => {}
        Err(ApiError::Core(CoreError::Store(StoreError::ApprovalSpent))) => return Ok(()),
        // Refused as it stands now (the requester gone, the credential in
        // use): the request fails with the reason; asking again is needed.
        Err(e) if e.is_client_error() => {
            app.keyhold
                .fail_approval(request, &e.public_message())
                .await?;
        }
        // Not the request's fault (the database or keystore away): it stays
        // approved and runs again when resumed.
        Err(e) => return Err(e),
    }
    if let Some(done) = app.keyhold.store().get_approval(request.id).await? {
        app.approval_events
            .decided(&view_as(app, None, &done).await?);
    }
    Ok(())
}

async fn execute(app: &AppState, session: &Session, operation: PendingOperation) -> ApiResult<()> {
    use super::{configuration, credentials, drift, groups, identities, jobs, keys};
    match operation {
        PendingOperation::AddGroup { group } => groups::add(app, session, &group).await.map(drop),
        PendingOperation::UpdateGroup { group, change } => {
            groups::update(app, session, &group, &change)
                .await
                .map(drop)
        }
        PendingOperation::DeleteGroup { group } => groups::delete(app, session, &group).await,
        PendingOperation::DeleteKey { key } => keys::delete(app, session, &key).await,
        PendingOperation::RotateGroup { group } => {
            jobs::rotate(app, session, &group).await.map(drop)
        }
        PendingOperation::SynchronizeKey { key, options } => {
            jobs::synchronize(app, session, &key, &options)
                .await
                .map(drop)
        }
        PendingOperation::CreateBackup => super::backups::start(app, session).await.map(drop),
        PendingOperation::SetCustodians { custodians } => {
            super::backups::set_custodian_set(app, session, custodians)
                .await
                .map(drop)
        }
        PendingOperation::ReconcileDrift { group, plan } => {
            drift::reconcile(app, session, &group, &api::ReconcileRequest { plan })
                .await
                .map(drop)
        }
        PendingOperation::ImportCredential {
            name,
            service,
            endpoint,
            seal,
            sealed_csv,
            ..
        } => {
            use base64::Engine;
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(sealed_csv)
                .map_err(|e| {
                    CoreError::Store(StoreError::Corrupt(format!(
                        "a sealed access key CSV is not base64: {e}"
                    )))
                })?;
            let csv = app
                .keyhold
                .keystore()
                .open_secret(&csv_context(seal), &sealed)
                .map_err(CoreError::from)?;
            let csv = String::from_utf8(csv.to_vec()).map_err(|_| {
                CoreError::Store(StoreError::Corrupt(
                    "a sealed access key CSV is not text".into(),
                ))
            })?;
            let req = api::ImportCredentialRequest {
                name,
                service,
                csv,
                endpoint,
            };
            credentials::import(app, session, req).await.map(drop)
        }
        PendingOperation::AddChainCredential { credential } => {
            credentials::add_chain(app, session, &credential)
                .await
                .map(drop)
        }
        PendingOperation::DeleteCredential { name } => {
            credentials::delete(app, session, &name).await
        }
        PendingOperation::ChangeConfiguration { change } => {
            configuration::change(app, session, &change).await.map(drop)
        }
        PendingOperation::AddIdentity { identity } => {
            // The password is sealed into the request for its requester;
            // this copy is dropped (and wiped) here.
            identities::add(app, session, &identity)
                .await
                .map(|created| {
                    drop(zeroize::Zeroizing::new(created.password));
                })
        }
        PendingOperation::DeleteIdentity { name } => identities::delete(app, session, &name).await,
        PendingOperation::ChangeApprovalPolicies { policies } => {
            change_policies(app, session, &policies).await.map(drop)
        }
        // The credential's secret is sealed for the requester by the core;
        // this copy is wiped when the issued credential drops, here.
        PendingOperation::CreateXksStore { store } => {
            xks::create_store_issuing(app, session, &store)
                .await
                .map(drop)
        }
        PendingOperation::UpdateXksStore { store, change } => {
            xks::update_store(app, session, &store, &change)
                .await
                .map(drop)
        }
        PendingOperation::DeleteXksStore { store } => xks::delete_store(app, session, &store).await,
        PendingOperation::AddXksCredential { store } => {
            xks::add_credential_issuing(app, session, &store)
                .await
                .map(drop)
        }
        PendingOperation::RevokeXksCredential {
            store,
            access_key_id,
        } => xks::revoke_credential(app, session, &store, &access_key_id).await,
        PendingOperation::CreateXksKey { store, key } => {
            xks::create_key(app, session, &store, &key).await.map(drop)
        }
        PendingOperation::UpdateXksKey { key, change } => {
            xks::update_key(app, session, &key, &change).await.map(drop)
        }
        PendingOperation::DeleteXksKey { key } => xks::delete_key(app, session, &key).await,
    }
}

/// How long an approved request is left to the answer that approved it
/// before the resumer takes it as left behind (a crash, a lost node).
const LEFT_BEHIND_AFTER: chrono::Duration = chrono::Duration::seconds(10);
/// How often the resumer looks.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes the requests whose time ran out, and runs the approved requests
/// that have not run: those a crash or a lost node left between their last
/// approval and their execution. At start every one is taken up; later,
/// those approved a while ago.
pub fn spawn_resumer(app: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        resume(&app, None).await;
        let mut interval = tokio::time::interval(RESUME_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            resume(&app, Some(LEFT_BEHIND_AFTER)).await;
        }
    })
}

/// Runs approved, unexecuted requests whose last approval is older than
/// `older_than` (all of them when `None`).
async fn resume(app: &AppState, older_than: Option<chrono::Duration>) {
    match app.keyhold.expire_approvals().await {
        Ok(expired) => {
            for request in &expired {
                if let Ok(view) = view_as(app, None, request).await {
                    app.approval_events.decided(&view);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot close expired approval requests; trying again shortly");
        }
    }
    let pending = match app.keyhold.approved_unexecuted().await {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(%error, "cannot list approved requests to resume; trying again shortly");
            return;
        }
    };
    let now = app.keyhold.now();
    for request in pending {
        let approved_at = request.votes.iter().map(|v| v.at).max();
        if let (Some(age), Some(at)) = (older_than, approved_at)
            && now - at < age
        {
            continue;
        }
        tracing::info!(request = %request.id, "running an approved request left unexecuted");
        if let Err(error) = run(app, &request).await {
            tracing::warn!(request = %request.id, error = %error, "an approved request could not run yet; it is tried again shortly");
        }
    }
}

// ---- policies -------------------------------------------------------------

/// The policy of every class, as the API shows them.
pub async fn policies(app: &AppState, session: &Session) -> ApiResult<Vec<api::PolicyView>> {
    let settings = app.keyhold.settings(session).await?;
    Ok(policy_views(&settings.approval_policies))
}

pub fn policy_views(policies: &ApprovalPolicies) -> Vec<api::PolicyView> {
    use keyhold_core::approval::Policy;
    OperationClass::ALL
        .into_iter()
        .map(|class| {
            let policy = policies.for_class(class);
            let quorum = match policy {
                Policy::Quorum(q) => Some(q),
                Policy::DualControl => None,
            };
            api::PolicyView {
                class: class.as_str().to_owned(),
                label: class.label().to_owned(),
                policy: if quorum.is_some() {
                    "quorum"
                } else {
                    "dual_control"
                }
                .to_owned(),
                approvals: quorum.map(|q| q.approvals),
                role: quorum.map(|q| q.role.as_str().to_owned()),
                expires_after_hours: quorum.map(|q| q.expires_after_hours),
                description: policy.describe(),
            }
        })
        .collect()
}

/// The policies a change names, parsed.
pub fn parse_policies(
    req: &api::ApprovalPoliciesRequest,
) -> Result<ApprovalPolicies, InvalidInput> {
    let mut quorums = std::collections::BTreeMap::new();
    for (raw, quorum) in &req.quorums {
        let class = OperationClass::parse(raw)?;
        if class == OperationClass::ChangeApprovalPolicies {
            return Err(InvalidInput::new(
                "quorums",
                "change_approval_policies is not set: it is always held to the strictest of the other policies",
            ));
        }
        let role = Role::parse(&quorum.role)?;
        quorums.insert(
            class,
            Quorum::new(quorum.approvals, role, quorum.expires_after_hours)?,
        );
    }
    Ok(ApprovalPolicies::new(quorums))
}

/// Replaces the approval policies (held to the strictest policy in force).
pub async fn change_policies(
    app: &AppState,
    session: &Session,
    req: &api::ApprovalPoliciesRequest,
) -> ApiResult<Vec<api::PolicyView>> {
    let next = parse_policies(req)?;
    let settings = audited(app, session, Action::ChangeApprovalPolicies, async {
        gate(
            app,
            session,
            Operation::CHANGE_APPROVAL_POLICIES,
            async || {
                // Policies no request could satisfy are refused before anyone
                // is asked to approve them.
                app.keyhold.check_approval_policies(&next).await?;
                Ok((
                    PendingOperation::ChangeApprovalPolicies {
                        policies: req.clone(),
                    },
                    "Change the approval policies".to_owned(),
                ))
            },
        )
        .await?;
        Ok(app.keyhold.change_approval_policies(session, next).await?)
    })
    .await?;
    Ok(policy_views(&settings.approval_policies))
}

// ---- views ----------------------------------------------------------------

fn request_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        InvalidInput::new(
            "id",
            "an approval request id is a UUID, as `keyhold approval list` shows it",
        )
    })
}

/// The request as `session` sees it.
pub async fn view(
    app: &AppState,
    session: &Session,
    request: &ApprovalRequest,
) -> ApiResult<api::ApprovalView> {
    let voter = match session.identities.as_slice() {
        [one] if session.grant.is_none() => Some(one),
        _ => None,
    };
    view_as(app, voter, request).await
}

/// The request as `voter` sees it; as no one in particular (the webhook's
/// view) without one.
async fn view_as(
    app: &AppState,
    voter: Option<&SessionIdentity>,
    request: &ApprovalRequest,
) -> ApiResult<api::ApprovalView> {
    let now = app.keyhold.now();
    let you_may_answer =
        voter.is_some_and(|one| request.may_vote(&one.name, one.role, now).is_ok());
    let policy_changes = match &request.operation.get("kind").and_then(|k| k.as_str()) {
        Some("change_approval_policies") => {
            let current = app.keyhold.store().get_settings().await?.approval_policies;
            serde_json::from_value::<PendingOperation>(request.operation.clone())
                .ok()
                .and_then(|op| match op {
                    PendingOperation::ChangeApprovalPolicies { policies } => {
                        parse_policies(&policies).ok()
                    }
                    _ => None,
                })
                .map(|next| {
                    current
                        .differences(&next)
                        .into_iter()
                        .map(|(class, before, after)| api::PolicyChangeView {
                            class: class.as_str().to_owned(),
                            before: before.describe(),
                            after: after.describe(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let status = request.status_at(now);
    Ok(api::ApprovalView {
        id: request.id.to_string(),
        class: request.class.as_str().to_owned(),
        class_label: request.class.label().to_owned(),
        summary: request.summary.clone(),
        operation: request.operation.clone(),
        params_hash: request.params_hash.clone(),
        requested_by: request
            .requested_by
            .iter()
            .map(ToString::to_string)
            .collect(),
        requested_at: time(&request.requested_at),
        expires_at: time(&request.expires_at),
        approvals_needed: request.quorum.approvals,
        approver_role: request.quorum.role.as_str().to_owned(),
        approvals_remaining: if status == ApprovalStatus::Pending {
            u32::try_from(request.remaining()).unwrap_or(u32::MAX)
        } else {
            0
        },
        status: status.as_str().to_owned(),
        votes: request
            .votes
            .iter()
            .map(|v| api::VoteView {
                identity: v.identity.to_string(),
                role: v.role.as_str().to_owned(),
                answer: if v.approve { "approved" } else { "denied" }.to_owned(),
                at: time(&v.at),
                reason: v.reason.clone(),
            })
            .collect(),
        decided_at: request.decided_at.as_ref().map(time),
        outcome: request.outcome.clone(),
        result_waiting: request.has_sealed_result,
        policy_changes,
        you_may_answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored request's parameters decode into the operation they were
    /// made from, under their `kind`.
    #[test]
    fn a_reconcile_request_round_trips() {
        let digest = "ab".repeat(32);
        let operation = PendingOperation::ReconcileDrift {
            group: "ig-demo".into(),
            plan: digest.clone(),
        };
        let value = serde_json::to_value(&operation).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"kind": "reconcile_drift", "group": "ig-demo", "plan": digest})
        );
        match serde_json::from_value::<PendingOperation>(value).unwrap() {
            PendingOperation::ReconcileDrift { group, plan } => {
                assert_eq!((group.as_str(), plan), ("ig-demo", digest));
            }
            other => panic!("decoded as {other:?}"),
        }
        let rotate = serde_json::json!({"kind": "rotate_group", "group": "ig-demo"});
        assert!(matches!(
            serde_json::from_value::<PendingOperation>(rotate).unwrap(),
            PendingOperation::RotateGroup { .. }
        ));
    }

    /// Backup requests are stored under their classes' names, and a
    /// custodian set held for approval carries public keys, nothing else.
    #[test]
    fn backup_requests_round_trip_under_their_class_names() {
        let value = serde_json::to_value(PendingOperation::CreateBackup).unwrap();
        assert_eq!(
            value["kind"],
            OperationClass::CreateBackup.as_str(),
            "{value}"
        );
        let set = keyhold_core::backup::CustodianSet::new(
            2,
            ["alice", "bob"]
                .iter()
                .enumerate()
                .map(|(i, name)| keyhold_core::backup::Custodian {
                    name: keyhold_core::backup::CustodianName::parse(name).unwrap(),
                    public_key: format!("{i:064x}"),
                    kdf: None,
                })
                .collect(),
        )
        .unwrap();
        let value = serde_json::to_value(PendingOperation::SetCustodians {
            custodians: set.clone(),
        })
        .unwrap();
        assert_eq!(
            value["kind"],
            OperationClass::SetCustodians.as_str(),
            "{value}"
        );
        match serde_json::from_value::<PendingOperation>(value).unwrap() {
            PendingOperation::SetCustodians { custodians } => assert_eq!(custodians, set),
            other => panic!("decoded as {other:?}"),
        }
    }

    /// XKS requests are stored as the API received them: `"mtls": null`
    /// (turn mutual TLS off) stays null, not absent (keep it), and a store
    /// request names no credential (its secret is made when it runs).
    #[test]
    fn xks_requests_round_trip_as_received() {
        let off = PendingOperation::UpdateXksStore {
            store: "payments".into(),
            change: api::UpdateXksStoreRequest {
                mtls: Some(None),
                ..api::UpdateXksStoreRequest::default()
            },
        };
        let value = serde_json::to_value(&off).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"kind": "update_xks_store", "store": "payments", "change": {"mtls": null}})
        );
        match serde_json::from_value::<PendingOperation>(value).unwrap() {
            PendingOperation::UpdateXksStore { change, .. } => assert_eq!(change.mtls, Some(None)),
            other => panic!("decoded as {other:?}"),
        }
        let create = serde_json::to_value(PendingOperation::CreateXksStore {
            store: api::CreateXksStoreRequest {
                name: "payments".into(),
                ..api::CreateXksStoreRequest::default()
            },
        })
        .unwrap();
        assert_eq!(
            create,
            serde_json::json!({"kind": "create_xks_store", "store": {"name": "payments"}})
        );
    }

    /// The kind a reconcile request is stored under is the class's name,
    /// as for the other operations held by their own class.
    #[test]
    fn reconcile_requests_are_stored_under_their_class_name() {
        let value = serde_json::to_value(PendingOperation::ReconcileDrift {
            group: "g".into(),
            plan: String::new(),
        })
        .unwrap();
        assert_eq!(
            value["kind"],
            OperationClass::ReconcileDrift.as_str(),
            "{value}"
        );
    }
}
