//! One token reached through a module: slot lookup, login, a small session
//! pool, and the retry and recovery rules every operation goes through.
//!
//! Rules (after the AWS XKS proxy's PKCS#11 session handling):
//! - at most [`POOL_SIZE`] idle sessions are kept; a session that returned an
//!   error is closed (or, if the token says it is already gone, forgotten),
//!   never returned to the pool;
//! - a pooled session is checked before use (`C_GetSessionInfo`): logged out
//!   behind our back → log in again; gone → take the next one or a new one;
//! - `CKR_USER_NOT_LOGGED_IN`, `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`
//!   during an operation → log in on a fresh session and retry once;
//! - `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_DEVICE_ERROR` (and a
//!   module finalized under us) → report `Unavailable` now and re-initialise
//!   the module on the next call;
//! - a refused PIN is not tried again (tokens lock a PIN after a few
//!   failures): every call reports it until keyhold restarts with another PIN.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use keyhold_core::error::KeystoreError;
use secrecy::SecretString;

use super::TokenSelector;
use super::context::{Module, ModuleState};
use super::error::{Class, Fail, classify, describe, other, rv, rv_name};
use super::handles::HandleCache;

/// Idle sessions kept per keystore: tokens limit sessions per application.
/// Calls beyond this many at once open a session each and close it after;
/// the XKS proxy queues its calls beyond this many
/// (`Keystore::calls_at_once`): on SoftHSM2, 64 XKS clients encrypting at
/// once had a p99 of 9.5 ms queued, 29 ms each on a session of its own
/// (`./scripts/bench --only xks`, the same machine).
pub(super) const POOL_SIZE: usize = 4;

/// What an operation gets to work with.
pub(super) struct Ctx<'a> {
    pub(super) session: &'a Session,
    pub(super) pkcs11: &'a Pkcs11,
    pub(super) slot: Slot,
    /// The module generation the session belongs to.
    pub(super) generation: u64,
    /// Handles of keyhold's objects found before ([`HandleCache`]).
    pub(super) handles: &'a HandleCache,
}

struct Pooled {
    session: Session,
    /// The module generation the session was opened in.
    generation: u64,
}

pub(super) struct Token {
    module: Arc<Module>,
    selector: TokenSelector,
    pin: SecretString,
    /// The slot found for `selector`, and the module generation it was found
    /// in: slot ids may change when the module is re-initialised.
    slot: Mutex<Option<(u64, Slot)>>,
    pool: Mutex<Vec<Pooled>>,
    /// Set once the token refused the PIN.
    pin_refused: Mutex<Option<String>>,
    handles: HandleCache,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module.path())
            .field("token", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub(super) fn new(module: Arc<Module>, selector: TokenSelector, pin: SecretString) -> Self {
        Self {
            module,
            selector,
            pin,
            slot: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            pin_refused: Mutex::new(None),
            handles: HandleCache::default(),
        }
    }

    pub(super) fn selector(&self) -> &TokenSelector {
        &self.selector
    }

    pub(super) fn module(&self) -> &Module {
        &self.module
    }

    /// Forgets a cached handle (an object this keystore removed).
    pub(super) fn forget_handle(&self, label: &[u8]) {
        self.handles.forget(label);
    }

    /// Runs `op` on a logged-in session of the token, following the rules
    /// of this module. `what` starts every error message ("sealing a secret").
    pub(super) fn run<T>(
        &self,
        what: &str,
        op: impl Fn(&Ctx<'_>) -> Result<T, Fail>,
    ) -> Result<T, KeystoreError> {
        self.run_with(what, false, op)
    }

    /// [`Self::run`] for an `op` that creates or destroys token objects: it
    /// runs alone (see `Module::operation`).
    pub(super) fn run_writing<T>(
        &self,
        what: &str,
        op: impl Fn(&Ctx<'_>) -> Result<T, Fail>,
    ) -> Result<T, KeystoreError> {
        self.run_with(what, true, op)
    }

    fn run_with<T>(
        &self,
        what: &str,
        writes_token_objects: bool,
        op: impl Fn(&Ctx<'_>) -> Result<T, Fail>,
    ) -> Result<T, KeystoreError> {
        if let Some(reason) = lock(&self.pin_refused).clone() {
            return Err(KeystoreError::Unavailable(reason));
        }
        let state = self.module.context()?;
        let _operation = self.module.operation(writes_token_objects);
        let mut retried = false;
        loop {
            let e = match self.attempt(&state, retried, &op) {
                Ok(value) => return Ok(value),
                Err(Fail::Verdict(e) | Fail::TokenVerdict(e)) => return Err(e),
                Err(Fail::Token(e)) => e,
            };
            match classify(&e) {
                Class::Session if !retried => {
                    tracing::info!(
                        error = %describe(&e),
                        "{what}: the PKCS#11 session was closed or logged out; retrying on a fresh session"
                    );
                    retried = true;
                }
                Class::Session => {
                    return Err(KeystoreError::Unavailable(format!(
                        "{what}: the PKCS#11 token ended keyhold's session again right after a fresh login ({})",
                        describe(&e)
                    )));
                }
                Class::Device => {
                    let cause = format!(
                        "{what}: the PKCS#11 {} is not reachable ({})",
                        self.selector,
                        describe(&e)
                    );
                    tracing::warn!("{cause}");
                    // Their handles die with the re-initialisation; never close them.
                    lock(&self.pool).clear();
                    self.module.request_reset(&cause);
                    return Err(KeystoreError::Unavailable(format!(
                        "{cause}; keyhold re-initialises the module {} on the next call",
                        self.module.path().display()
                    )));
                }
                Class::Pin => return Err(self.pin_refused(&e)),
                Class::Other => return Err(other(what, &e)),
            }
        }
    }

    fn attempt<T>(
        &self,
        state: &ModuleState,
        fresh: bool,
        op: &impl Fn(&Ctx<'_>) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let (pooled, slot) = self.checkout(state, fresh)?;
        let result = op(&Ctx {
            session: &pooled.session,
            pkcs11: &state.pkcs11,
            slot,
            generation: state.generation,
            handles: &self.handles,
        });
        match &result {
            Ok(_) | Err(Fail::Verdict(_)) => self.checkin(state, pooled),
            Err(Fail::TokenVerdict(_)) => discard(state, pooled, false),
            Err(Fail::Token(e)) => discard(state, pooled, is_gone(e)),
        }
        result
    }

    /// A logged-in session: a pooled one that still works, else a new one.
    fn checkout(&self, state: &ModuleState, fresh: bool) -> Result<(Pooled, Slot), Fail> {
        let slot = self.slot(state)?;
        if !fresh {
            loop {
                let Some(pooled) = lock(&self.pool).pop() else {
                    break;
                };
                if pooled.generation != state.generation {
                    // Opened before a re-initialisation: the handle is dead
                    // and may now name somebody else's session.
                    continue;
                }
                match pooled.session.get_session_info() {
                    Ok(info) if info.session_state() == SessionState::RwUser => {
                        return Ok((pooled, slot));
                    }
                    Ok(_) => {
                        // Logged out behind our back (C_Logout on any session
                        // of the process logs them all out).
                        tracing::info!("the PKCS#11 token logged keyhold out; logging in again");
                        match self.login(&pooled.session) {
                            Ok(()) => return Ok((pooled, slot)),
                            Err(e) => {
                                discard(state, pooled, is_gone(&e));
                                return Err(e.into());
                            }
                        }
                    }
                    Err(e) if classify(&e) == Class::Session => {
                        // Closed behind our back: try the next one.
                        discard(state, pooled, true);
                    }
                    Err(e) => {
                        discard(state, pooled, is_gone(&e));
                        return Err(e.into());
                    }
                }
            }
        }
        // Read-write: keyhold creates and destroys token objects.
        let session = state.pkcs11.open_rw_session_no_drop(slot)?;
        let pooled = Pooled {
            session,
            generation: state.generation,
        };
        match self.login(&pooled.session) {
            Ok(()) => Ok((pooled, slot)),
            Err(e) => {
                discard(state, pooled, is_gone(&e));
                Err(e.into())
            }
        }
    }

    fn checkin(&self, state: &ModuleState, pooled: Pooled) {
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_SIZE && pooled.generation == state.generation {
            pool.push(pooled);
        } else {
            drop(pool);
            discard(state, pooled, false);
        }
    }

    fn login(&self, session: &Session) -> Result<(), Error> {
        match session.login(UserType::User, Some(&self.pin)) {
            // The login state belongs to the application, not the session:
            // another session (or keystore) of this process logged in already.
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn pin_refused(&self, e: &Error) -> KeystoreError {
        let code = rv(e).map(rv_name).unwrap_or_else(|| describe(e));
        let hint = match rv(e) {
            Some(RvError::PinLocked) => {
                "the user PIN is locked: the token's security officer must unlock or reset it"
            }
            Some(RvError::PinExpired) => "the user PIN expired: change it on the token",
            Some(RvError::UserPinNotInitialized) => {
                "the token has no user PIN yet: initialise it (e.g. softhsm2-util --init-token, or C_InitPIN as security officer)"
            }
            _ => "set pkcs11_pin to the token's user PIN",
        };
        let message = format!(
            "the PKCS#11 token refused the PIN ({code}) of {}: {hint}; keyhold does not try a refused PIN again (tokens lock a PIN after a few failures), restart it once the PIN is fixed",
            self.selector
        );
        *lock(&self.pin_refused) = Some(message.clone());
        KeystoreError::Unavailable(message)
    }

    /// The slot holding our token in this module generation.
    fn slot(&self, state: &ModuleState) -> Result<Slot, Fail> {
        if let Some((generation, slot)) = *lock(&self.slot)
            && generation == state.generation
        {
            return Ok(slot);
        }
        let slot = self.find_slot(&state.pkcs11)?;
        *lock(&self.slot) = Some((state.generation, slot));
        Ok(slot)
    }

    fn find_slot(&self, pkcs11: &Pkcs11) -> Result<Slot, Fail> {
        let slots = pkcs11.get_slots_with_token()?;
        let mut present = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            let info = match pkcs11.get_token_info(slot) {
                Ok(info) => info,
                // A token pulled out between the two calls: not ours to worry about.
                Err(Error::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _)) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let label = info.label();
            let is_ours = match &self.selector {
                TokenSelector::Label(wanted) => wanted == label && info.token_initialized(),
                TokenSelector::Slot(id) => slot.id() == *id,
            };
            if is_ours {
                matching.push(slot);
            }
            present.push(if info.token_initialized() {
                format!("'{label}' in slot {}", slot.id())
            } else {
                // SoftHSM2 always offers one free slot with a blank token.
                format!("an uninitialised token in slot {}", slot.id())
            });
        }
        let present = if present.is_empty() {
            "none".to_owned()
        } else {
            present.join(", ")
        };
        if matching.is_empty() {
            // Modules read their slots at C_Initialize (SoftHSM2 does): a
            // token inserted or restored since then shows only after a
            // re-initialisation, which the next call does.
            self.module
                .request_reset(&format!("the {} was not found", self.selector));
        }
        match matching.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(Fail::Verdict(KeystoreError::Unavailable(format!(
                "no {} in PKCS#11 module {} (tokens present: {present}); initialise it (e.g. softhsm2-util --init-token --free --label LABEL) or fix pkcs11_token",
                self.selector,
                self.module.path().display()
            )))),
            several => Err(Fail::Verdict(KeystoreError::Unavailable(format!(
                "{} tokens in PKCS#11 module {} match {} (tokens present: {present}); select one by slot",
                several.len(),
                self.module.path().display(),
                self.selector
            )))),
        }
    }

    /// Closes the idle sessions (keystore dropped).
    fn close_pool(&self) {
        let pooled: Vec<Pooled> = lock(&self.pool).drain(..).collect();
        if pooled.is_empty() {
            return;
        }
        let state = self.module.current();
        for p in pooled {
            discard(&state, p, false);
        }
    }
}

#[cfg(test)]
impl Token {
    pub(super) fn pooled(&self) -> usize {
        lock(&self.pool).len()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.close_pool();
    }
}

/// The session is gone already: closing it again could close a session the
/// token has since handed out under the same handle.
fn is_gone(e: &Error) -> bool {
    matches!(
        rv(e),
        Some(RvError::SessionHandleInvalid | RvError::SessionClosed)
    ) || classify(e) == Class::Device
}

/// Ends a session that is not going back to the pool.
fn discard(state: &ModuleState, pooled: Pooled, gone: bool) {
    if gone || pooled.generation != state.generation {
        // The session was opened `close_on_drop = false`: dropping only forgets it.
        return;
    }
    if let Err(e) = pooled.session.close() {
        tracing::debug!(error = %describe(&e), "closing a PKCS#11 session failed");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind (a
    // list of sessions, a message); carrying on is safe.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
