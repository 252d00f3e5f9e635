//! Time as a parameter: everything that depends on "now" asks a [`Clock`].

use chrono::{DateTime, Utc};

pub type Timestamp = DateTime<Utc>;

/// The source of the current time. Production uses the system clock; tests
/// move a manual clock forward instead of sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that may read the wall clock
    fn now(&self) -> Timestamp {
        use chrono::SubsecRound;
        // Stored timestamps keep microseconds; rounding here makes a value read
        // back from the store equal to the one written.
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(std::sync::Mutex::new(start))
    }
    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
    pub fn set(&self, to: Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = to;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        match self.0.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// Timestamps are written in one fixed, sortable form everywhere they are stored
/// or hashed (the audit chain depends on the exact text).
pub fn format_timestamp(t: &Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn parse_timestamp(raw: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
