//! Logging in, sessions (dual control), passwords and identities.

use secrecy::{ExposeSecret, SecretString};

use super::Keyhold;
use crate::action::Action;
use crate::audit::ANONYMOUS_USER;
use crate::error::{CoreError, CoreResult, StoreError};
use crate::identity::{
    self, Identity, Operation, PASSWORD_HISTORY, Role, Session, SessionIdentity,
    check_new_password, hash_password, verify_password,
};
use crate::names::IdentityName;

/// The default administrators created on an empty data directory.
pub const DEFAULT_ADMINISTRATORS: [&str; 2] = ["Admin1", "Admin2"];

/// Refusal of a login, the same for every cause so that it reveals nothing
/// about which names exist or are locked.
fn login_refused() -> CoreError {
    CoreError::Unauthenticated(
        "login failed: the user name or password is wrong, or the identity is locked after too many failures; check them, or wait and try again".into(),
    )
}

/// Refusal of a new password that matches one of the identity's earlier ones.
fn recently_used() -> crate::error::InvalidInput {
    crate::error::InvalidInput::new(
        "password",
        format!(
            "the new password was used recently: choose one you have not used for your last {PASSWORD_HISTORY} passwords"
        ),
    )
}

/// The entry of a successful login.
fn logged_in(name: &IdentityName) -> String {
    format!("Logged in '{name}' using Password.")
}

/// A password shown exactly once: to the person who created the identity.
pub struct OneTimePassword {
    pub name: IdentityName,
    pub password: SecretString,
}

impl std::fmt::Debug for OneTimePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneTimePassword")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whether a request is an officer's own doing, which keeps the session
/// alive, or one a page makes by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Something an officer did: a page view, a form, an API or CLI call.
    /// It counts as activity and extends the session's idle timeout.
    Officer,
    /// A refresh a page's script makes on its own (the Jobs page's updates).
    /// It needs a live session like any request but does not extend it: an
    /// unattended page must not keep its officers' session open until the
    /// absolute limit.
    Refresh,
}

/// The result of a successful login.
pub struct LoginOutcome {
    /// The session's bearer token from now on. Joining a session replaces its
    /// token too: the caller's previous one stops working.
    pub token: SecretString,
    /// Whether the identity joined the caller's session (dual control)
    /// rather than opening a new one.
    pub joined: bool,
    pub session: Session,
}

impl Keyhold {
    /// Creates the default administrators when no identity exists yet and
    /// returns their one-time passwords; returns nothing on later calls.
    pub async fn bootstrap(&self) -> CoreResult<Vec<OneTimePassword>> {
        if !self.store.list_identities().await?.is_empty() {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for name in DEFAULT_ADMINISTRATORS {
            let name = IdentityName::parse(name)?;
            let password = identity::generate_password()?;
            let identity = Identity {
                name: name.clone(),
                role: Role::Administrator,
                password_hash: hash_password(&password)?,
                must_change_password: true,
                failed_logins: 0,
                locked_until: None,
                created_at: self.now(),
            };
            let record = self.record(
                crate::audit::SYSTEM_USER,
                Action::AddIdentity {
                    name: name.as_str(),
                    role: Role::Administrator.as_str(),
                }
                .succeeded(),
            );
            self.store.insert_identity(&identity, &record).await?;
            created.push(OneTimePassword { name, password });
        }
        Ok(created)
    }

    /// Refuses a login attempt whose password is not checked (bad name,
    /// unknown or locked identity) as one with a wrong password is refused:
    /// the same answer, a dummy hash check for the same time, and the
    /// attempt audited with its reason.
    async fn refuse_unchecked(
        &self,
        users: &str,
        summary: String,
        reason: &str,
        password: &SecretString,
    ) -> CoreResult<Identity> {
        identity::verify_against_dummy(password);
        self.audit_refusal(users, summary, reason).await?;
        Err(login_refused())
    }

    /// Checks a name and password, counting failures towards a lockout.
    /// Every outcome is audited.
    async fn check_password(
        &self,
        users: &str,
        raw_name: &str,
        password: &SecretString,
        purpose: &str,
    ) -> CoreResult<Identity> {
        let settings = self.store.get_settings().await?;
        let now = self.now();
        let Ok(name) = IdentityName::parse(raw_name) else {
            return self
                .refuse_unchecked(
                    users,
                    format!("Failed {purpose} for an invalid identity name."),
                    "invalid identity name",
                    password,
                )
                .await;
        };
        // The summary of every refusal from here on.
        let failed = format!("Failed {purpose} for '{name}' using Password.");
        let Some(mut who) = self.store.get_identity(&name).await? else {
            return self
                .refuse_unchecked(users, failed, "unknown identity", password)
                .await;
        };
        if who.is_locked(now) {
            return self
                .refuse_unchecked(users, failed, "identity is locked", password)
                .await;
        }
        // The attempt is counted before the password is checked, by the
        // database: however many arrive at once, at most the threshold are
        // checked before the lock; the others are refused unchecked.
        // An attempt that cannot be counted (the database cannot record
        // changes) is refused unchecked: no guess goes uncounted.
        let admitted = self
            .store
            .begin_login_attempt(&name, now, settings.lockout_threshold)
            .await
            .inspect_err(|e| {
                self.unaudited_refusal(users, failed.clone(), e);
            })?;
        let Some(attempt) = admitted else {
            return self
                .refuse_unchecked(users, failed, "identity is locked", password)
                .await;
        };
        if !verify_password(password, &who.password_hash) {
            let summary = failed;
            if attempt >= settings.lockout_threshold {
                let until = now + chrono::Duration::minutes(i64::from(settings.lockout_minutes));
                let record = self.record(users, summary).with_details(serde_json::json!({
                    "reason": format!(
                        "wrong password; identity locked for {} minutes",
                        settings.lockout_minutes
                    )
                }));
                match self.store.lock_identity(&name, until, &record).await {
                    // Deleted meanwhile: refused all the same.
                    Ok(()) | Err(StoreError::NotFound) => {}
                    // Not locked, but its count stays at the threshold, so
                    // the next attempts are refused unchecked until the
                    // lock can be written: refused all the same.
                    Err(e @ StoreError::CannotWrite { .. }) => self.fallback.unwritten(&record, &e),
                    Err(e) => {
                        self.fallback.unwritten(&record, &e);
                        return Err(e.into());
                    }
                }
            } else {
                // Counted already, when the attempt was admitted.
                self.audit_refusal(users, summary, "wrong password").await?;
            }
            return Err(login_refused());
        }
        // A parallel attempt may have locked the identity since this one was
        // admitted, or a parallel change replaced the password just checked:
        // the count is cleared only while neither happened, else refused.
        if !self
            .store
            .clear_failed_logins(&name, now, &who.password_hash)
            .await?
        {
            self.audit_refusal(users, failed, "identity is locked")
                .await?;
            return Err(login_refused());
        }
        who.failed_logins = 0;
        who.locked_until = None;
        Ok(who)
    }

    /// Logs an identity in. With `existing_token` naming a live session the
    /// identity joins it (dual control); otherwise a new session starts.
    pub async fn login(
        &self,
        existing_token: Option<&str>,
        raw_name: &str,
        password: &SecretString,
    ) -> CoreResult<LoginOutcome> {
        let existing = match existing_token {
            Some(token) => Some(self.session(token).await?),
            None => None,
        };
        let users = existing
            .as_ref()
            .map_or(ANONYMOUS_USER.to_owned(), Session::users);
        let who = self
            .check_password(&users, raw_name, password, "login")
            .await?;
        if who.must_change_password {
            self.audit_refusal(
                &users,
                format!("Failed login for '{}' using Password.", who.name),
                "password must be changed first",
            )
            .await?;
            return Err(CoreError::PasswordChangeRequired(who.name.to_string()));
        }
        let now = self.now();
        let member = SessionIdentity {
            name: who.name.clone(),
            role: who.role,
        };
        let (session, token, joined) = match existing {
            Some(mut session) => {
                if session.identities.iter().any(|i| i.name == who.name) {
                    let refusal = format!(
                        "'{}' is already logged in to this session: dual control needs a different identity",
                        who.name
                    );
                    self.audit_refusal(
                        &users,
                        format!("Failed login for '{}' using Password.", who.name),
                        &refusal,
                    )
                    .await?;
                    return Err(CoreError::Conflict(refusal));
                }
                session.identities.push(member);
                session.last_seen = now;
                // More rights, new token: whoever knew the old one (it may
                // have been planted: session fixation) does not gain the
                // joining identity's rights with it.
                let token = identity::generate_token()?;
                let previous_id = std::mem::replace(
                    &mut session.id,
                    identity::session_id_for_token(token.expose_secret()),
                );
                let record = self.record(session.users(), logged_in(&who.name));
                self.store
                    .replace_session(&previous_id, &session, &record)
                    .await?;
                (session, token, true)
            }
            None => {
                let token = identity::generate_token()?;
                let session = Session {
                    id: identity::session_id_for_token(token.expose_secret()),
                    identities: vec![member],
                    created_at: now,
                    last_seen: now,
                    grant: None,
                };
                let record = self.record(session.users(), logged_in(&who.name));
                self.store.insert_session(&session, &record).await?;
                (session, token, false)
            }
        };
        Ok(LoginOutcome {
            token,
            joined,
            session,
        })
    }

    /// Resolves a bearer token to its live session, ending it when it timed
    /// out; the request counts as the officers' activity.
    pub async fn session(&self, token: &str) -> CoreResult<Session> {
        self.session_for(token, Activity::Officer).await
    }

    /// Resolves a bearer token to its live session, ending it when it timed
    /// out. Only [`Activity::Officer`] extends the idle timeout.
    pub async fn session_for(&self, token: &str, activity: Activity) -> CoreResult<Session> {
        let expired = || {
            CoreError::Unauthenticated(
                "the session has expired or does not exist: log in again".into(),
            )
        };
        let id = identity::session_id_for_token(token);
        let Some(mut session) = self.store.get_session(&id).await? else {
            return Err(expired());
        };
        let settings = self.store.get_settings().await?;
        let now = self.now();
        let idle = now - session.last_seen
            > chrono::Duration::minutes(i64::from(settings.session_idle_minutes));
        let too_old = now - session.created_at
            > chrono::Duration::hours(i64::from(settings.session_max_hours));
        if idle || too_old {
            match self.store.delete_session(&id, None).await {
                // A database that cannot record changes keeps the row, but
                // the session is over all the same: this check ends it again.
                Ok(()) | Err(StoreError::CannotWrite { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            return Err(expired());
        }
        // Writing on every request would turn reads into writes; a coarse
        // last-seen is enough for an idle timeout measured in minutes.
        if activity == Activity::Officer && now - session.last_seen > chrono::Duration::seconds(30)
        {
            session.last_seen = now;
            match self.store.update_session(&session).await {
                // Reads go on while the database cannot record changes; the
                // session may then time out early, never late.
                Ok(()) | Err(StoreError::CannotWrite { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(session)
    }

    pub async fn logout(&self, session: &Session) -> CoreResult<()> {
        let record = self.record(session.users(), "Logged out.");
        self.store
            .delete_session(&session.id, Some(&record))
            .await?;
        Ok(())
    }

    /// Changes a password after checking the current one (the first-use change
    /// of the default administrators goes through here). Ends the identity's sessions.
    pub async fn change_password(
        &self,
        raw_name: &str,
        current: &SecretString,
        new: &SecretString,
    ) -> CoreResult<()> {
        let who = self
            .check_password(ANONYMOUS_USER, raw_name, current, "password change")
            .await?;
        let mut acceptable = check_new_password(&who.name, new).and_then(|()| {
            if new.expose_secret() == current.expose_secret() {
                Err(crate::error::InvalidInput::new(
                    "password",
                    "the new password must differ from the current one",
                ))
            } else {
                Ok(())
            }
        });
        if acceptable.is_ok() {
            // Verified as a login verifies: the history holds salted
            // hashes, never the passwords.
            let history = self.store.password_history(&who.name).await?;
            if history.iter().any(|earlier| verify_password(new, earlier)) {
                acceptable = Err(recently_used());
            }
        }
        if let Err(refusal) = acceptable {
            self.audit_refusal(
                who.name.as_str(),
                format!("Failed password change for '{}'.", who.name),
                &refusal.message,
            )
            .await?;
            return Err(refusal.into());
        }
        let new_hash = hash_password(new)?;
        let record = self.record(
            who.name.as_str(),
            format!("Changed password of '{}'.", who.name),
        );
        // Only while the password is still the one just checked: of parallel
        // changes from one password one wins, and the others are told.
        if !self
            .store
            .set_password(
                &who.name,
                &who.password_hash,
                &new_hash,
                PASSWORD_HISTORY - 1,
                &record,
            )
            .await?
        {
            return Err(CoreError::Conflict(format!(
                "the password of '{}' was changed meanwhile: log in with the new one, or ask an administrator",
                who.name
            )));
        }
        self.store.delete_sessions_of(&who.name).await?;
        Ok(())
    }

    pub async fn list_identities(&self, session: &Session) -> CoreResult<Vec<Identity>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_identities().await?)
    }

    /// Adds an identity with a one-time password that must be changed on first use.
    pub async fn create_identity(
        &self,
        session: &Session,
        name: IdentityName,
        role: Role,
    ) -> CoreResult<OneTimePassword> {
        self.authorize(session, Operation::MANAGE_IDENTITIES)
            .await?;
        let password = identity::generate_password()?;
        let identity = Identity {
            name: name.clone(),
            role,
            password_hash: hash_password(&password)?,
            must_change_password: true,
            failed_logins: 0,
            locked_until: None,
            created_at: self.now(),
        };
        let mut record = self.record_for(
            session,
            Action::AddIdentity {
                name: name.as_str(),
                role: role.as_str(),
            }
            .succeeded(),
        );
        // Run as an approved request, the password waits, sealed, for the
        // requester to collect: the approver whose answer ran it never sees it.
        self.seal_result(&mut record, password.expose_secret().as_bytes())?;
        match self.store.insert_identity(&identity, &record).await {
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "an identity named '{name}' already exists: choose another name"
            ))),
            other => other.map_err(Into::into),
        }?;
        Ok(OneTimePassword { name, password })
    }

    pub async fn delete_identity(&self, session: &Session, name: &IdentityName) -> CoreResult<()> {
        self.authorize(session, Operation::MANAGE_IDENTITIES)
            .await?;
        let identities = self.store.list_identities().await?;
        let Some(target) = identities.iter().find(|i| &i.name == name) else {
            return Err(CoreError::not_found("identity", name));
        };
        if session.identities.iter().any(|i| &i.name == name) {
            return Err(CoreError::Conflict(format!(
                "'{name}' is logged in to this session and cannot delete itself: ask two other administrators"
            )));
        }
        let admins = identities
            .iter()
            .filter(|i| i.role == Role::Administrator)
            .count();
        if target.role == Role::Administrator && admins <= 2 {
            return Err(CoreError::Conflict(
                "keyhold keeps at least two administrators so that dual control stays possible: add another administrator first".into(),
            ));
        }
        let record = self.record_for(session, Action::DeleteIdentity(name.as_str()).succeeded());
        self.store.delete_identity(name, &record).await?;
        self.store.delete_sessions_of(name).await?;
        Ok(())
    }

    /// Whether the session may run `op` now (its roles, and dual control as
    /// configured). Every operation checks this first; a caller that must
    /// read before it acts checks it before reading, so a refusal never
    /// depends on what exists.
    pub async fn authorize(&self, session: &Session, op: Operation) -> CoreResult<()> {
        if op.class.is_none() && !op.dual_control {
            return session.authorize(op, false);
        }
        let settings = self.store.get_settings().await?;
        // Held to a quorum, it runs only as an approved request of its class
        // (whose session carries the grant): never on a session's own say.
        if let Some(class) = op.class
            && let policy @ crate::approval::Policy::Quorum(_) =
                settings.approval_policies.for_class(class)
            && session.grant.is_none_or(|g| g.class != class)
        {
            session.authorize(op, false)?;
            return Err(CoreError::ApprovalRequired {
                operation: op.label.to_owned(),
                policy: policy.describe(),
            });
        }
        session.authorize(op, settings.dual_control)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::testing::{FakeKeystore, FakeStore};

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    fn world(password: &str) -> (Keyhold, Arc<FakeStore>) {
        let (keyhold, store, _) = world_with_clock(password);
        (keyhold, store)
    }

    fn world_with_clock(password: &str) -> (Keyhold, Arc<FakeStore>, Arc<ManualClock>) {
        let store = Arc::new(FakeStore::new());
        store.put_identity(Identity {
            name: IdentityName::parse("Admin1").unwrap(),
            role: Role::Administrator,
            password_hash: hash_password(&secret(password)).unwrap(),
            must_change_password: true,
            failed_logins: 0,
            locked_until: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
        });
        let clock = Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH));
        let keyhold = Keyhold::new(store.clone(), Arc::new(FakeKeystore::new()), clock.clone());
        (keyhold, store, clock)
    }

    /// Admin1 with its one-time password replaced, logged in alone.
    async fn logged_in_world() -> (Keyhold, Arc<FakeStore>, Arc<ManualClock>, SecretString) {
        let (keyhold, store, clock) = world_with_clock(&nth(0));
        keyhold
            .change_password("Admin1", &secret(&nth(0)), &secret(&nth(1)))
            .await
            .unwrap();
        let outcome = keyhold
            .login(None, "Admin1", &secret(&nth(1)))
            .await
            .unwrap();
        (keyhold, store, clock, outcome.token)
    }

    #[tokio::test]
    async fn refreshes_need_a_live_session_but_do_not_keep_it_alive() {
        let (keyhold, store, clock, token) = logged_in_world().await;
        let token = token.expose_secret();
        // Polled every few minutes for longer than the idle timeout (15
        // minutes): each refresh is answered, none extends the session.
        for _ in 0..3 {
            clock.advance(chrono::Duration::minutes(5));
            keyhold.session_for(token, Activity::Refresh).await.unwrap();
        }
        clock.advance(chrono::Duration::minutes(1));
        assert!(matches!(
            keyhold.session_for(token, Activity::Refresh).await,
            Err(CoreError::Unauthenticated(_))
        ));
        assert!(
            store.snapshot().sessions.is_empty(),
            "the timed-out session is ended"
        );

        // An officer's request does extend it.
        let outcome = keyhold
            .login(None, "Admin1", &secret(&nth(1)))
            .await
            .unwrap();
        let token = outcome.token.expose_secret();
        for _ in 0..4 {
            clock.advance(chrono::Duration::minutes(10));
            keyhold.session_for(token, Activity::Refresh).await.unwrap();
            keyhold.session(token).await.unwrap();
        }
    }

    #[tokio::test]
    async fn joining_a_session_one_is_in_already_is_refused_and_audited() {
        let (keyhold, store, _, token) = logged_in_world().await;
        let refused = keyhold
            .login(Some(token.expose_secret()), "Admin1", &secret(&nth(1)))
            .await;
        let Err(CoreError::Conflict(message)) = refused else {
            panic!("Admin1 joined its own session");
        };
        assert!(message.contains("already logged in"), "{message}");
        let state = store.snapshot();
        let last = state.audit.last().unwrap();
        assert_eq!(last.users, "Admin1");
        assert_eq!(last.summary, "Failed login for 'Admin1' using Password.");
        assert!(
            last.details["reason"]
                .as_str()
                .is_some_and(|r| r.contains("already logged in to this session")),
            "{:?}",
            last.details
        );
        // The session is as it was: Admin1 alone.
        let session = keyhold.session(token.expose_secret()).await.unwrap();
        assert_eq!(session.users(), "Admin1");
    }

    /// The passwords of a series of changes: strong, and each one new.
    fn nth(n: usize) -> String {
        format!("tulip marble quietly orbit {n}")
    }

    #[tokio::test]
    async fn the_last_five_passwords_cannot_be_used_again() {
        let (keyhold, store) = world(&nth(0));
        for n in 1..=5 {
            keyhold
                .change_password("Admin1", &secret(&nth(n - 1)), &secret(&nth(n)))
                .await
                .unwrap();
        }
        // Current: 5. The four before it (1 to 4) are kept, hashed.
        let history = store.snapshot().password_history;
        let kept = &history[&IdentityName::parse("Admin1").unwrap()];
        assert_eq!(kept.len(), usize::try_from(PASSWORD_HISTORY - 1).unwrap());
        assert!(kept.iter().all(|h| h.starts_with("$argon2id$")));
        assert!(!kept.iter().any(|h| h.contains("tulip")), "hashes only");

        for earlier in 1..=4 {
            let Err(CoreError::Invalid(refusal)) = keyhold
                .change_password("Admin1", &secret(&nth(5)), &secret(&nth(earlier)))
                .await
            else {
                panic!("password {earlier} was accepted again");
            };
            assert_eq!(refusal.field, "password");
            assert_eq!(
                refusal.message,
                "the new password was used recently: choose one you have not used for your last 5 passwords"
            );
        }
        // The current one has its own refusal.
        let Err(CoreError::Invalid(refusal)) = keyhold
            .change_password("Admin1", &secret(&nth(5)), &secret(&nth(5)))
            .await
        else {
            panic!("the current password was accepted again");
        };
        assert!(refusal.message.contains("differ from the current one"));
        // Each refusal is audited with its reason, and changed nothing.
        let state = store.snapshot();
        let refused = state
            .audit
            .iter()
            .filter(|a| a.summary == "Failed password change for 'Admin1'.")
            .count();
        assert_eq!(refused, 5);
        assert!(state.audit.iter().any(|a| {
            a.details["reason"]
                .as_str()
                .is_some_and(|r| r.contains("used recently"))
        }));

        // The sixth-latest one has left the history and is accepted.
        keyhold
            .change_password("Admin1", &secret(&nth(5)), &secret(&nth(0)))
            .await
            .unwrap();
        let history = store.snapshot().password_history;
        assert_eq!(
            history[&IdentityName::parse("Admin1").unwrap()].len(),
            usize::try_from(PASSWORD_HISTORY - 1).unwrap()
        );
    }

    #[tokio::test]
    async fn the_one_time_password_joins_the_history() {
        let (keyhold, _) = world(&nth(0));
        keyhold
            .change_password("Admin1", &secret(&nth(0)), &secret(&nth(1)))
            .await
            .unwrap();
        assert!(matches!(
            keyhold
                .change_password("Admin1", &secret(&nth(1)), &secret(&nth(0)))
                .await,
            Err(CoreError::Invalid(_))
        ));
    }
}
