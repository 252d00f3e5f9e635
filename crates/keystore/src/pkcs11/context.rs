//! The process-wide PKCS#11 module contexts.
//!
//! A module is one shared library with one global state: loading the same
//! path twice in a process yields the same library, `C_Initialize` may run
//! only once, and `C_Finalize` ends every session of every user in the
//! process. So each module is loaded once per process and shared by every
//! [`super::Pkcs11Keystore`] that names it, and a re-initialisation is
//! coordinated here: it waits for the calls in flight (they hold the read
//! lock) and bumps a generation number, so session handles from before are
//! forgotten instead of closed (after `C_Initialize` a token may hand the
//! same handle numbers out again, and closing a stale one would close
//! somebody's new session).
//!
//! Modules are never finalized except to recover: another keystore of the
//! process may still use them, and a process exit releases the token anyway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use keyhold_core::error::KeystoreError;

use super::error::describe;

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One loaded PKCS#11 library.
pub(super) struct Module {
    /// The path as configured, for messages.
    path: PathBuf,
    state: RwLock<ModuleState>,
    /// Why the module must be re-initialised before its next use. Separate
    /// from `state` so a call holding the read lock can ask for it.
    reset: Mutex<Option<String>>,
    /// Shared by every call, exclusive for calls that create or destroy
    /// token objects. SoftHSM2 (2.6 and before; its issue #573) corrupts
    /// objects when one thread writes a token object while others use the
    /// token (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT). keyhold writes
    /// token objects rarely (a key per rotation), so every module gets the lock.
    operations: RwLock<()>,
}

/// Keeps a call's share of [`Module::operation`] until dropped.
pub(super) struct OperationGuard<'a> {
    _shared: Option<RwLockReadGuard<'a, ()>>,
    _exclusive: Option<RwLockWriteGuard<'a, ()>>,
}

pub(super) struct ModuleState {
    pub(super) pkcs11: Pkcs11,
    /// Bumped by every re-initialisation: sessions and slot ids of an older
    /// generation are no longer valid.
    pub(super) generation: u64,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Loads and initialises the module at `path`, or returns the process's
/// existing context for it.
pub(super) fn load(path: &Path) -> Result<Arc<Module>, KeystoreError> {
    let cannot_load = |reason: String| {
        KeystoreError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {reason}; set pkcs11_module to the library, e.g. /usr/lib/softhsm/libsofthsm2.so",
            path.display()
        ))
    };
    // Canonical, so that a symlink and its target share one context like
    // they share one library.
    let canonical = std::fs::canonicalize(path).map_err(|e| cannot_load(e.to_string()))?;
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = modules.get(&canonical) {
        return Ok(Arc::clone(module));
    }
    let pkcs11 = Pkcs11::new(&canonical).map_err(|e| cannot_load(describe(&e)))?;
    initialize(&pkcs11).map_err(|e| {
        // Loaded but refused to start: a configuration problem of the module,
        // not a wrong path.
        KeystoreError::Unavailable(format!(
            "the PKCS#11 module {} failed to initialise ({}); check the module's own configuration (for SoftHSM2: SOFTHSM2_CONF and the tokendir it names, readable by keyhold)",
            path.display(),
            describe(&e)
        ))
    })?;
    let module = Arc::new(Module {
        path: path.to_path_buf(),
        state: RwLock::new(ModuleState {
            pkcs11,
            generation: 0,
        }),
        reset: Mutex::new(None),
        operations: RwLock::new(()),
    });
    modules.insert(canonical, Arc::clone(&module));
    Ok(module)
}

/// `C_Initialize` with OS locking (keyhold calls from several threads).
/// Already initialised is fine: another library in the process got there first.
fn initialize(pkcs11: &Pkcs11) -> Result<(), Error> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Read access to the context for one operation, re-initialising the
    /// module first when a device error asked for it. Never call this while
    /// holding a guard from it: a waiting re-initialisation would deadlock.
    pub(super) fn context(&self) -> Result<RwLockReadGuard<'_, ModuleState>, KeystoreError> {
        // Two rounds: a device error reported by another thread between our
        // re-initialisation and our read lock asks for one more.
        for _ in 0..2 {
            if self.reset_reason().is_some() {
                self.reinitialise()?;
            }
            let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if self.reset_reason().is_none() {
                return Ok(guard);
            }
        }
        Err(KeystoreError::Unavailable(format!(
            "the PKCS#11 module {} keeps failing: {}",
            self.path.display(),
            self.reset_reason().unwrap_or_default()
        )))
    }

    /// Held for the whole of one call: shared, or exclusive when the call
    /// creates or destroys token objects (see `operations`).
    pub(super) fn operation(&self, writes_token_objects: bool) -> OperationGuard<'_> {
        let operations = &self.operations;
        if writes_token_objects {
            OperationGuard {
                _shared: None,
                _exclusive: Some(operations.write().unwrap_or_else(PoisonError::into_inner)),
            }
        } else {
            OperationGuard {
                _shared: Some(operations.read().unwrap_or_else(PoisonError::into_inner)),
                _exclusive: None,
            }
        }
    }

    /// The context as it is, without recovering it (closing sessions on drop).
    pub(super) fn current(&self) -> RwLockReadGuard<'_, ModuleState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a re-initialisation before the next use (a device error).
    pub(super) fn request_reset(&self, reason: &str) {
        let mut reset = self.reset.lock().unwrap_or_else(PoisonError::into_inner);
        if reset.is_none() {
            *reset = Some(reason.to_owned());
        }
    }

    fn reset_reason(&self) -> Option<String> {
        self.reset
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `C_Finalize` + `C_Initialize`, the only recovery PKCS#11 offers from a
    /// removed or failed device.
    fn reinitialise(&self) -> Result<(), KeystoreError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have done it while we waited for the lock.
        let Some(reason) = self.reset_reason() else {
            return Ok(());
        };
        tracing::warn!(
            module = %self.path.display(),
            %reason,
            "re-initialising the PKCS#11 module"
        );
        // Finalize fails when the device is gone or the module was finalized
        // under us; initialize is what matters.
        if let Err(e) = state.pkcs11.clone().finalize() {
            tracing::debug!(error = %describe(&e), "C_Finalize before re-initialising failed");
        }
        state.generation += 1;
        match initialize(&state.pkcs11) {
            Ok(()) => {
                *self.reset.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(module = %self.path.display(), "PKCS#11 module re-initialised");
                Ok(())
            }
            Err(e) => Err(KeystoreError::Unavailable(format!(
                "{reason}; re-initialising the PKCS#11 module {} failed: {}",
                self.path.display(),
                describe(&e)
            ))),
        }
    }
}
