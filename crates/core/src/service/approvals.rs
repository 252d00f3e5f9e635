//! Quorum approvals: requests, votes, the session an approved request runs
//! in, and the policies themselves ([`crate::approval`] has the rules).

use super::Keyhold;
use crate::action::{Action, printable};
use crate::approval::{
    ApprovalPolicies, ApprovalRequest, ApprovalStatus, Execution, Grant, OperationClass, Policy,
    Vote, params_hash, result_context,
};
use crate::audit::SYSTEM_USER;
use crate::error::{CoreError, CoreResult, InvalidInput, StoreError};
use crate::identity::{Operation, Permission, Session, SessionIdentity};
use crate::settings::Settings;

/// Longest reason a denial keeps.
const MAX_REASON_CHARS: usize = 200;
/// How often a policy change is applied again to settings changed meanwhile.
const MAX_CHANGE_ROUNDS: usize = 64;

/// What an operation asks for now, before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Run it: the session's own authority decides (dual control as before).
    Run,
    /// Held to a quorum: ask for approvals with [`Keyhold::request_approval`].
    Request(OperationClass),
}

fn in_force_already() -> CoreError {
    InvalidInput::new(
        "policies",
        "these are the policies in force already: nothing to change",
    )
    .into()
}

fn not_found(id: uuid::Uuid) -> CoreError {
    CoreError::NotFound {
        what: "approval request",
        name: id.to_string(),
    }
}

impl Keyhold {
    /// Whether `op` runs now or must be asked for as a request. A session
    /// that runs an approved request of the class runs it.
    pub async fn gate(&self, session: &Session, op: Operation) -> CoreResult<Gate> {
        let Some(class) = op.class else {
            return Ok(Gate::Run);
        };
        if session.grant.is_some_and(|g| g.class == class) {
            return Ok(Gate::Run);
        }
        let policies = self.store.get_settings().await?.approval_policies;
        Ok(match policies.for_class(class) {
            Policy::DualControl => Gate::Run,
            Policy::Quorum(_) => Gate::Request(class),
        })
    }

    /// Asks for approvals of `op` with its exact parameters (`operation`,
    /// which the edge reads back to run it, never holding a secret in the
    /// clear) and the sentence approvers read (`summary`).
    pub async fn request_approval(
        &self,
        session: &Session,
        op: Operation,
        operation: serde_json::Value,
        summary: String,
    ) -> CoreResult<ApprovalRequest> {
        // The requester must hold the role the operation needs: the
        // approvals replace a second identity, not the permission.
        session.authorize(op, false)?;
        let Some(class) = op.class else {
            return Err(CoreError::Conflict(format!(
                "{} needs no approvals: run it directly",
                op.label
            )));
        };
        let settings = self.store.get_settings().await?;
        let Policy::Quorum(quorum) = settings.approval_policies.for_class(class) else {
            return Err(CoreError::Conflict(format!(
                "{} is under dual control, not a quorum: run it with two identities in one session",
                op.label
            )));
        };
        let requested_by: Vec<_> = session.identities.iter().map(|i| i.name.clone()).collect();
        let eligible = self
            .store
            .list_identities()
            .await?
            .into_iter()
            .filter(|i| i.role == quorum.role && !requested_by.contains(&i.name))
            .count();
        if eligible < usize::from(quorum.approvals) {
            return Err(CoreError::Conflict(format!(
                "{} needs {} approval{} from {} identities other than the requester, and only {eligible} exist: add identities, or change the policy",
                op.label,
                quorum.approvals,
                if quorum.approvals == 1 { "" } else { "s" },
                quorum.role.as_str()
            )));
        }
        let request =
            ApprovalRequest::pending(class, operation, summary, requested_by, quorum, self.now());
        let id = request.id;
        let record = self
            .record(
                session.users(),
                Action::RequestApproval {
                    id: &id.to_string(),
                    summary: &request.summary,
                }
                .succeeded(),
            )
            .with_details(serde_json::json!({
                "class": class.as_str(),
                "params_hash": request.params_hash,
                "approvals": quorum.approvals,
                "role": quorum.role.as_str(),
                "expires_at": request.expires_at,
            }));
        self.store.insert_approval(&request, &record).await?;
        Ok(request)
    }

    pub async fn list_approvals(
        &self,
        session: &Session,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> CoreResult<Vec<ApprovalRequest>> {
        session.authorize(Operation::READ, true)?;
        let now = self.now();
        // Expiry is read against the clock: a pending request past its
        // time is expired whether or not the expiry pass stored it so yet.
        let mut list = match status {
            Some(ApprovalStatus::Expired) => {
                // Those the pass closed already, and those it has yet to.
                let mut both = self
                    .store
                    .list_approvals(Some(ApprovalStatus::Expired), limit)
                    .await?;
                both.extend(
                    self.store
                        .list_approvals(Some(ApprovalStatus::Pending), limit)
                        .await?,
                );
                // Newest first, as the store lists them.
                both.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
                both
            }
            other => self.store.list_approvals(other, limit).await?,
        };
        if let Some(wanted) = status {
            list.retain(|r| r.status_at(now) == wanted);
            list.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(list)
    }

    pub async fn get_approval(
        &self,
        session: &Session,
        id: uuid::Uuid,
    ) -> CoreResult<ApprovalRequest> {
        session.authorize(Operation::READ, true)?;
        self.store
            .get_approval(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// The one identity of a session that answers a request: an answer is
    /// one person's, so a session of two cannot give it.
    fn voter(session: &Session) -> CoreResult<&SessionIdentity> {
        match session.identities.as_slice() {
            [one] => Ok(one),
            _ => Err(CoreError::Conflict(
                "approve or deny from a session of your own: each answer is one identity's, and this session has two".into(),
            )),
        }
    }

    async fn vote(
        &self,
        session: &Session,
        id: uuid::Uuid,
        approve: bool,
        reason: Option<&str>,
    ) -> CoreResult<ApprovalRequest> {
        let voter = Self::voter(session)?;
        if !voter.role.allows(Permission::ManageKeys) {
            return Err(CoreError::Forbidden(format!(
                "answering an approval request is not allowed for {}: log in with an identity whose role allows it (administrator or key officer)",
                voter.name
            )));
        }
        let request = self
            .store
            .get_approval(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let now = self.now();
        request
            .may_vote(&voter.name, voter.role, now)
            .map_err(|refusal| match refusal {
                crate::approval::VoteRefusal::WrongRole { .. } => {
                    CoreError::Forbidden(refusal.message(id))
                }
                _ => CoreError::Conflict(refusal.message(id)),
            })?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty()).map(|r| {
            printable(r)
                .chars()
                .take(MAX_REASON_CHARS)
                .collect::<String>()
        });
        let vote = Vote {
            identity: voter.name.clone(),
            role: voter.role,
            approve,
            at: now,
            reason: reason.clone(),
        };
        let given = request.approvals().count() + usize::from(approve);
        let shown_id = id.to_string();
        let action = if approve {
            Action::ApproveRequest(&shown_id)
        } else {
            Action::DenyRequest(&shown_id)
        };
        let record = self
            .record(session.users(), action.succeeded())
            .with_details(serde_json::json!({
                "summary": request.summary,
                "params_hash": request.params_hash,
                "approvals": given,
                "needed": request.quorum.approvals,
                "reason": reason,
            }));
        match self.store.vote_approval(id, &vote, &record).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Decided or expired between the read and the write.
                let now_status = self
                    .store
                    .get_approval(id)
                    .await?
                    .map_or(ApprovalStatus::Expired, |r| r.status_at(self.now()));
                return Err(CoreError::Conflict(
                    crate::approval::VoteRefusal::NotPending(now_status).message(id),
                ));
            }
            Err(StoreError::Duplicate) => {
                return Err(CoreError::Conflict(
                    crate::approval::VoteRefusal::AlreadyVoted.message(id),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.store
            .get_approval(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Approves a request from the approver's own session. Returns the
    /// request as it is left: approved once this was the last approval
    /// needed, and then the edge runs it ([`Self::approved_session`]).
    pub async fn approve(&self, session: &Session, id: uuid::Uuid) -> CoreResult<ApprovalRequest> {
        self.vote(session, id, true, None).await
    }

    /// Denies a request: it ends, whatever approvals it had.
    pub async fn deny(
        &self,
        session: &Session,
        id: uuid::Uuid,
        reason: Option<&str>,
    ) -> CoreResult<ApprovalRequest> {
        self.vote(session, id, false, reason).await
    }

    /// The session an approved request runs in: the requester and the
    /// approvers, lent the right to run the request's class of operation
    /// once (the store spends it with the operation's own write).
    pub async fn approved_session(&self, request: &ApprovalRequest) -> CoreResult<Session> {
        if request.status != ApprovalStatus::Approved {
            return Err(CoreError::Conflict(format!(
                "request {} is {}, not approved: it does not run",
                request.id,
                request.status.as_str()
            )));
        }
        if params_hash(&request.operation) != request.params_hash {
            return Err(CoreError::Store(StoreError::Corrupt(format!(
                "approval request {}: its parameters no longer match their hash",
                request.id
            ))));
        }
        // The requesters with the roles they hold now: one deleted since
        // (or whose role no longer allows the operation) makes it fail.
        let mut identities = Vec::with_capacity(request.requested_by.len());
        for name in &request.requested_by {
            let Some(identity) = self.store.get_identity(name).await? else {
                return Err(CoreError::Conflict(format!(
                    "'{name}', who asked for request {}, no longer exists: ask again",
                    request.id
                )));
            };
            identities.push(SessionIdentity {
                name: identity.name,
                role: identity.role,
            });
        }
        identities.extend(request.approvals().map(|v| SessionIdentity {
            name: v.identity.clone(),
            role: v.role,
        }));
        let now = self.now();
        Ok(Session {
            id: format!("approval:{}", request.id),
            identities,
            created_at: now,
            last_seen: now,
            grant: Some(Grant {
                request: request.id,
                class: request.class,
            }),
        })
    }

    /// Records that an approved request's operation was refused when it
    /// ran: it is failed, and a new request is needed. Nothing happens if
    /// it ran (or failed) meanwhile.
    pub async fn fail_approval(&self, request: &ApprovalRequest, reason: &str) -> CoreResult<()> {
        let record = self.record(
            SYSTEM_USER,
            format!(
                "Approved request {} failed: {}",
                request.id,
                printable(reason)
            ),
        );
        self.store
            .close_approval(
                request.id,
                ApprovalStatus::Approved,
                ApprovalStatus::Failed,
                reason,
                &record,
            )
            .await?;
        Ok(())
    }

    /// Closes the pending requests whose time ran out (audited, as the
    /// system) and returns them as they are left: expired.
    pub async fn expire_approvals(&self) -> CoreResult<Vec<ApprovalRequest>> {
        let now = self.now();
        let mut closed = Vec::new();
        for request in self
            .store
            .list_approvals(Some(ApprovalStatus::Pending), 1000)
            .await?
        {
            if request.status_at(now) != ApprovalStatus::Expired {
                continue;
            }
            let record = self.record(
                SYSTEM_USER,
                format!(
                    "Approval request {} expired unapproved: {}",
                    request.id,
                    printable(&request.summary)
                ),
            );
            let outcome = format!(
                "not approved in time: {} of {} approvals by {}",
                request.approvals().count(),
                request.quorum.approvals,
                crate::clock::format_timestamp(&request.expires_at)
            );
            if self
                .store
                .close_approval(
                    request.id,
                    ApprovalStatus::Pending,
                    ApprovalStatus::Expired,
                    &outcome,
                    &record,
                )
                .await?
                && let Some(done) = self.store.get_approval(request.id).await?
            {
                closed.push(done);
            }
        }
        Ok(closed)
    }

    /// Approved requests that have not run: what a restart resumes.
    pub async fn approved_unexecuted(&self) -> CoreResult<Vec<ApprovalRequest>> {
        Ok(self
            .store
            .list_approvals(Some(ApprovalStatus::Approved), 1000)
            .await?)
    }

    /// The audit record of a change made by `session`: when it runs an
    /// approved request, the record spends it (see [`Execution`]).
    pub(super) fn record_for(
        &self,
        session: &Session,
        summary: String,
    ) -> crate::audit::AuditRecord {
        let mut record = self.record(session.users(), summary);
        record.executes = session.grant.map(|g| Execution {
            request: g.request,
            sealed_result: None,
        });
        record
    }

    /// Seals a result only the requester may read (an added identity's
    /// one-time password) into the record that executes the request.
    pub(super) fn seal_result(
        &self,
        record: &mut crate::audit::AuditRecord,
        secret: &[u8],
    ) -> CoreResult<()> {
        if let Some(execution) = record.executes.as_mut() {
            execution.sealed_result = Some(
                self.keystore
                    .seal_secret(&result_context(execution.request), secret)?,
            );
        }
        Ok(())
    }

    /// The requester collects the sealed result of their executed request,
    /// once; it is gone from the store afterwards.
    pub async fn collect_approval_result(
        &self,
        session: &Session,
        id: uuid::Uuid,
    ) -> CoreResult<zeroize::Zeroizing<Vec<u8>>> {
        let request = self.get_approval(session, id).await?;
        if !session
            .identities
            .iter()
            .any(|i| request.requested_by.contains(&i.name))
        {
            return Err(CoreError::Forbidden(format!(
                "only the identity that asked for request {id} may collect its result"
            )));
        }
        let record = self.record(
            session.users(),
            Action::CollectApprovalResult(&id.to_string()).succeeded(),
        );
        let Some(sealed) = self.store.take_approval_result(id, &record).await? else {
            return Err(CoreError::Conflict(format!(
                "request {id} has no result waiting: it was collected already, or its operation gives none"
            )));
        };
        Ok(self.keystore.open_secret(&result_context(id), &sealed)?)
    }

    /// Refuses policies no request could ever satisfy: a quorum needs M
    /// identities of its role besides the one who asks. Checked before a
    /// change is asked for, and again when it runs.
    pub async fn check_approval_policies(&self, next: &ApprovalPolicies) -> CoreResult<()> {
        if &self.store.get_settings().await?.approval_policies == next {
            return Err(in_force_already());
        }
        let identities = self.store.list_identities().await?;
        for (class, quorum) in next.quorums() {
            let holders = identities.iter().filter(|i| i.role == quorum.role).count();
            // The requester is one of them when they hold the role: M others
            // must remain, or nothing of the class could ever run.
            if holders <= usize::from(quorum.approvals) {
                return Err(InvalidInput::new(
                    "policies",
                    format!(
                        "{} would need {} approval{} from {} identities besides the requester, and only {holders} hold that role: add identities first, or ask for fewer",
                        class.as_str(),
                        quorum.approvals,
                        if quorum.approvals == 1 { "" } else { "s" },
                        quorum.role.as_str()
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Replaces the approval policies; held to the strictest policy in
    /// force (an edge asks for approvals first when that is a quorum).
    pub async fn change_approval_policies(
        &self,
        session: &Session,
        next: ApprovalPolicies,
    ) -> CoreResult<Settings> {
        self.authorize(session, Operation::CHANGE_APPROVAL_POLICIES)
            .await?;
        self.check_approval_policies(&next).await?;
        for _ in 0..MAX_CHANGE_ROUNDS {
            let current = self.store.get_settings().await?;
            // Checked again on the settings being replaced: a parallel
            // change may have put these policies in force meanwhile.
            if current.approval_policies == next {
                return Err(in_force_already());
            }
            let mut settings = current.clone();
            settings.approval_policies = next.clone();
            let changes: Vec<serde_json::Value> = current
                .approval_policies
                .differences(&next)
                .into_iter()
                .map(|(class, before, after)| {
                    serde_json::json!({
                        "class": class.as_str(),
                        "before": before.describe(),
                        "after": after.describe(),
                    })
                })
                .collect();
            let record = self
                .record_for(session, Action::ChangeApprovalPolicies.succeeded())
                .with_details(serde_json::json!({
                    "before": current.approval_policies,
                    "after": next,
                    "changes": changes,
                }));
            if self
                .store
                .replace_settings(&current, &settings, &record)
                .await?
            {
                return Ok(settings);
            }
        }
        Err(CoreError::Conflict(
            "the configuration kept changing while the policies were changed: try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::approval::Quorum;
    use crate::clock::ManualClock;
    use crate::identity::{Identity, Role};
    use crate::names::IdentityName;
    use crate::ports::Store;
    use crate::testing::{FakeKeystore, FakeStore};

    fn name(n: &str) -> IdentityName {
        IdentityName::parse(n).unwrap()
    }

    fn alone(n: &str, role: Role) -> Session {
        Session {
            id: format!("session of {n}"),
            identities: vec![SessionIdentity {
                name: name(n),
                role,
            }],
            created_at: chrono::DateTime::UNIX_EPOCH,
            last_seen: chrono::DateTime::UNIX_EPOCH,
            grant: None,
        }
    }

    /// Admin1..Admin4 and an officer; identity deletion held to a quorum of
    /// two administrators within a day.
    async fn world() -> (Keyhold, Arc<FakeStore>, Arc<ManualClock>) {
        let store = Arc::new(FakeStore::new());
        for (n, role) in [
            ("Admin1", Role::Administrator),
            ("Admin2", Role::Administrator),
            ("Admin3", Role::Administrator),
            ("Admin4", Role::Administrator),
            ("Off1", Role::KeyOfficer),
        ] {
            store.put_identity(Identity {
                name: name(n),
                role,
                password_hash: String::new(),
                must_change_password: false,
                failed_logins: 0,
                locked_until: None,
                created_at: chrono::DateTime::UNIX_EPOCH,
            });
        }
        let clock = Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH));
        let keyhold = Keyhold::new(store.clone(), Arc::new(FakeKeystore::new()), clock.clone());
        let mut settings = store.get_settings().await.unwrap();
        settings.approval_policies = ApprovalPolicies::new(BTreeMap::from([(
            OperationClass::ManageIdentities,
            Quorum::new(2, Role::Administrator, 24).unwrap(),
        )]));
        let record = crate::audit::AuditRecord::new(chrono::DateTime::UNIX_EPOCH, "test", "setup");
        store.put_settings(&settings, &record).await.unwrap();
        (keyhold, store, clock)
    }

    async fn ask_to_delete(keyhold: &Keyhold, who: &Session, target: &str) -> ApprovalRequest {
        assert_eq!(
            keyhold
                .gate(who, Operation::MANAGE_IDENTITIES)
                .await
                .unwrap(),
            Gate::Request(OperationClass::ManageIdentities)
        );
        keyhold
            .request_approval(
                who,
                Operation::MANAGE_IDENTITIES,
                serde_json::json!({"kind": "delete_identity", "name": target}),
                format!("Delete identity '{target}'"),
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_session_alone_is_refused_and_only_the_granted_session_runs_the_operation() {
        let (keyhold, store, _) = world().await;
        let admin1 = alone("Admin1", Role::Administrator);
        // Asked directly, even by two administrators, it is refused.
        let mut both = admin1.clone();
        both.identities.push(SessionIdentity {
            name: name("Admin2"),
            role: Role::Administrator,
        });
        let refused = keyhold.delete_identity(&both, &name("Off1")).await;
        assert!(
            matches!(refused, Err(CoreError::ApprovalRequired { .. })),
            "{refused:?}"
        );

        let request = ask_to_delete(&keyhold, &admin1, "Off1").await;
        assert_eq!(request.params_hash, params_hash(&request.operation));
        for approver in ["Admin2", "Admin3"] {
            keyhold
                .approve(&alone(approver, Role::Administrator), request.id)
                .await
                .unwrap();
        }
        let approved = keyhold.get_approval(&admin1, request.id).await.unwrap();
        assert_eq!(approved.status, ApprovalStatus::Approved);
        let session = keyhold.approved_session(&approved).await.unwrap();
        assert_eq!(session.users(), "Admin1,Admin2,Admin3");

        // The grant is for its class alone.
        let other = keyhold
            .change_settings(
                &session,
                crate::settings::SettingsChange {
                    lockout_threshold: Some(3),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(other, Err(CoreError::Forbidden(_))), "{other:?}");

        keyhold
            .delete_identity(&session, &name("Off1"))
            .await
            .unwrap();
        let state = store.snapshot();
        assert!(!state.identities.contains_key(&name("Off1")));
        assert_eq!(
            state.approvals[&request.id].status,
            ApprovalStatus::Executed
        );
        let entry = state.audit.last().unwrap();
        assert_eq!(entry.users, "Admin1,Admin2,Admin3");
        assert_eq!(entry.summary, "Deleted identity 'Off1'");

        // Spent: the same session runs nothing more.
        let again = keyhold.delete_identity(&session, &name("Admin4")).await;
        assert!(
            matches!(again, Err(CoreError::Store(StoreError::ApprovalSpent))),
            "{again:?}"
        );
        assert!(store.snapshot().identities.contains_key(&name("Admin4")));
    }

    #[tokio::test]
    async fn answers_follow_the_rules_and_a_denial_ends_the_request() {
        let (keyhold, _, clock) = world().await;
        let admin1 = alone("Admin1", Role::Administrator);
        let request = ask_to_delete(&keyhold, &admin1, "Off1").await;
        let conflict = |r: CoreResult<ApprovalRequest>| matches!(r, Err(CoreError::Conflict(_)));
        assert!(conflict(keyhold.approve(&admin1, request.id).await));
        assert!(matches!(
            keyhold
                .approve(&alone("Off1", Role::KeyOfficer), request.id)
                .await,
            Err(CoreError::Forbidden(_))
        ));
        let admin2 = alone("Admin2", Role::Administrator);
        keyhold.approve(&admin2, request.id).await.unwrap();
        assert!(conflict(keyhold.approve(&admin2, request.id).await));
        let denied = keyhold
            .deny(
                &alone("Admin3", Role::Administrator),
                request.id,
                Some("  no\u{7}  "),
            )
            .await
            .unwrap();
        assert_eq!(denied.status, ApprovalStatus::Denied);
        assert_eq!(denied.votes[1].reason.as_deref(), Some("no?"));
        assert!(conflict(
            keyhold
                .approve(&alone("Admin4", Role::Administrator), request.id)
                .await
        ));
        assert!(keyhold.approved_session(&denied).await.is_err());

        // A day later an unanswered request is expired, and closed as such.
        let late = ask_to_delete(&keyhold, &admin1, "Admin4").await;
        clock.advance(chrono::Duration::hours(24));
        assert!(conflict(keyhold.approve(&admin2, late.id).await));
        let closed = keyhold.expire_approvals().await.unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].status, ApprovalStatus::Expired);
        assert!(keyhold.expire_approvals().await.unwrap().is_empty());
    }

    /// Listed as expired whether or not the expiry pass closed it yet: a
    /// pass between two reads must not make it vanish from the listing.
    #[tokio::test]
    async fn an_expired_request_is_listed_as_such_before_and_after_the_expiry_pass() {
        let (keyhold, _, clock) = world().await;
        let admin1 = alone("Admin1", Role::Administrator);
        let fresh = ask_to_delete(&keyhold, &admin1, "Off1").await;
        clock.advance(chrono::Duration::hours(24));
        let late = ask_to_delete(&keyhold, &admin1, "Admin4").await;
        clock.advance(chrono::Duration::hours(1));
        let listed = |status| {
            let keyhold = &keyhold;
            let admin1 = &admin1;
            async move {
                keyhold
                    .list_approvals(admin1, Some(status), 100)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(ApprovalStatus::Expired).await, [fresh.id]);
        assert_eq!(listed(ApprovalStatus::Pending).await, [late.id]);
        assert_eq!(keyhold.expire_approvals().await.unwrap().len(), 1);
        assert_eq!(listed(ApprovalStatus::Expired).await, [fresh.id]);
        assert_eq!(listed(ApprovalStatus::Pending).await, [late.id]);
        // Newest first across both, and within the limit.
        clock.advance(chrono::Duration::hours(24));
        let both = listed(ApprovalStatus::Expired).await;
        assert_eq!(both, [late.id, fresh.id]);
        let first = keyhold
            .list_approvals(&admin1, Some(ApprovalStatus::Expired), 1)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, late.id);
    }

    #[tokio::test]
    async fn the_session_of_an_approved_request_holds_the_requesters_roles_as_they_are_now() {
        let (keyhold, store, _) = world().await;
        // Key officers approve what an administrator asks for: the session
        // that runs it still holds the administrator's own role.
        let mut settings = store.get_settings().await.unwrap();
        settings.approval_policies = ApprovalPolicies::new(BTreeMap::from([(
            OperationClass::ManageIdentities,
            Quorum::new(1, Role::KeyOfficer, 24).unwrap(),
        )]));
        let record = crate::audit::AuditRecord::new(chrono::DateTime::UNIX_EPOCH, "test", "setup");
        store.put_settings(&settings, &record).await.unwrap();
        let admin1 = alone("Admin1", Role::Administrator);
        let request = ask_to_delete(&keyhold, &admin1, "Admin4").await;
        keyhold
            .approve(&alone("Off1", Role::KeyOfficer), request.id)
            .await
            .unwrap();
        let approved = keyhold.get_approval(&admin1, request.id).await.unwrap();
        let session = keyhold.approved_session(&approved).await.unwrap();
        assert_eq!(session.identities[0].role, Role::Administrator);
        keyhold
            .delete_identity(&session, &name("Admin4"))
            .await
            .unwrap();

        // A requester deleted since: the request cannot run.
        let request =
            ask_to_delete(&keyhold, &alone("Admin2", Role::Administrator), "Admin3").await;
        let gone = crate::audit::AuditRecord::new(chrono::DateTime::UNIX_EPOCH, "test", "gone");
        store.delete_identity(&name("Admin2"), &gone).await.unwrap();
        keyhold
            .approve(&alone("Off1", Role::KeyOfficer), request.id)
            .await
            .unwrap();
        let approved = keyhold.get_approval(&admin1, request.id).await.unwrap();
        assert!(matches!(
            keyhold.approved_session(&approved).await,
            Err(CoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn a_quorum_no_one_could_meet_is_refused_before_anyone_is_asked() {
        let (keyhold, _, _) = world().await;
        // Four administrators: a quorum of four besides the requester is not.
        let impossible = ApprovalPolicies::new(BTreeMap::from([(
            OperationClass::DeleteGroup,
            Quorum::new(4, Role::Administrator, 24).unwrap(),
        )]));
        assert!(matches!(
            keyhold.check_approval_policies(&impossible).await,
            Err(CoreError::Invalid(_))
        ));
        let officers = ApprovalPolicies::new(BTreeMap::from([(
            OperationClass::DeleteGroup,
            Quorum::new(1, Role::KeyOfficer, 24).unwrap(),
        )]));
        assert!(matches!(
            keyhold.check_approval_policies(&officers).await,
            Err(CoreError::Invalid(_))
        ));
        // The policies in force already: nothing to change.
        let current = keyhold
            .store
            .get_settings()
            .await
            .unwrap()
            .approval_policies;
        assert!(keyhold.check_approval_policies(&current).await.is_err());
    }
}
