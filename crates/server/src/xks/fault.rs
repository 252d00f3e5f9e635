//! A test-only fault switch for the keystore calls the proxy makes, so the
//! conformance suite can reach `DependencyTimeoutException` and
//! `InternalException`, which no healthy keystore produces on demand.
//!
//! Compiled only with the `crash-points` cargo feature (never in a release
//! build). `KEYHOLD_XKS_FAULT` arms it at start-up; a test in the server's
//! own process sets it with [`set`]:
//! - `delay:<ms>`: each key operation sleeps that long in the keystore's
//!   thread first (past the proxy's deadline: DependencyTimeoutException);
//! - `fail`: each key operation and each deep health check fails as a
//!   keystore that lost its token would (InternalException; health
//!   `UNAVAILABLE`).
//!
//! Without the feature every function here is a no-op.

#[cfg(feature = "crash-points")]
mod armed {
    use std::sync::{PoisonError, RwLock};
    use std::time::Duration;

    use keyhold_core::KeystoreError;

    pub const FAULT_ENV: &str = "KEYHOLD_XKS_FAULT";

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        Delay(Duration),
        Fail,
    }

    impl Fault {
        pub fn parse(raw: &str) -> Result<Option<Self>, String> {
            let raw = raw.trim();
            if raw.is_empty() {
                return Ok(None);
            }
            if raw == "fail" {
                return Ok(Some(Self::Fail));
            }
            raw.strip_prefix("delay:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| Some(Self::Delay(Duration::from_millis(ms))))
                .ok_or_else(|| format!("{FAULT_ENV}={raw}: use delay:<ms> or fail"))
        }
    }

    static FAULT: RwLock<Option<Option<Fault>>> = RwLock::new(None);
    /// Wakes the health checker when a test changes the fault.
    pub static CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

    pub fn current() -> Option<Fault> {
        if let Some(fault) = *FAULT.read().unwrap_or_else(PoisonError::into_inner) {
            return fault;
        }
        let from_env = std::env::var(FAULT_ENV)
            .ok()
            .and_then(|raw| match Fault::parse(&raw) {
                Ok(fault) => fault,
                Err(error) => {
                    tracing::error!(%error, "ignoring the XKS fault switch");
                    None
                }
            });
        *FAULT.write().unwrap_or_else(PoisonError::into_inner) = Some(from_env);
        from_env
    }

    pub fn set(raw: &str) -> Result<(), String> {
        let fault = Fault::parse(raw)?;
        *FAULT.write().unwrap_or_else(PoisonError::into_inner) = Some(fault);
        CHANGED.notify_waiters();
        Ok(())
    }

    pub fn before_key_operation() -> Result<(), KeystoreError> {
        match current() {
            Some(Fault::Delay(pause)) => {
                std::thread::sleep(pause);
                Ok(())
            }
            Some(Fault::Fail) => Err(KeystoreError::Unavailable(
                "the XKS fault switch is armed (fail)".into(),
            )),
            None => Ok(()),
        }
    }

    pub fn before_health_check() -> Result<(), KeystoreError> {
        match current() {
            Some(Fault::Fail) => Err(KeystoreError::Unavailable(
                "the XKS fault switch is armed (fail)".into(),
            )),
            Some(Fault::Delay(_)) | None => Ok(()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn faults_parse_or_say_what_is_accepted() {
            assert_eq!(
                Fault::parse("delay:300"),
                Ok(Some(Fault::Delay(Duration::from_millis(300))))
            );
            assert_eq!(Fault::parse("fail"), Ok(Some(Fault::Fail)));
            assert_eq!(Fault::parse(" "), Ok(None));
            assert!(Fault::parse("slow").unwrap_err().contains("delay:<ms>"));
        }
    }
}

/// Arms (or with `""` disarms) the fault switch in this process; see the
/// module's header for the values.
#[cfg(feature = "crash-points")]
pub fn set(raw: &str) -> Result<(), String> {
    armed::set(raw)
}

/// Called in the keystore's thread before each key operation.
pub(crate) fn before_key_operation() -> Result<(), keyhold_core::KeystoreError> {
    #[cfg(feature = "crash-points")]
    return armed::before_key_operation();
    #[cfg(not(feature = "crash-points"))]
    Ok(())
}

/// Called in the keystore's thread before each deep health check.
pub(crate) fn before_health_check() -> Result<(), keyhold_core::KeystoreError> {
    #[cfg(feature = "crash-points")]
    return armed::before_health_check();
    #[cfg(not(feature = "crash-points"))]
    Ok(())
}

/// Completes when a test changes the fault (never without the feature).
pub(crate) async fn changed() {
    #[cfg(feature = "crash-points")]
    armed::CHANGED.notified().await;
    #[cfg(not(feature = "crash-points"))]
    std::future::pending::<()>().await;
}
