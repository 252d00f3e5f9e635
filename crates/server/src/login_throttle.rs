//! Throttling password attempts per client address, ahead of the
//! per-identity lockout. Rules:
//! - An address with `failures` failed attempts (wrong name or password, a
//!   locked identity) within the last `window` is refused before any
//!   password is checked, so its attempts count towards no identity's
//!   lockout: an attacker at one address is stopped before they can lock an
//!   identity out, while its officer logs in from another address.
//! - Attempts are admitted before they are checked and counted against the
//!   address while they run, so parallel attempts cannot get more than
//!   `failures` through; one that ends with the right password gives its
//!   place back.
//! - IPv6 addresses count per /64 (what one host is usually given), an IPv4
//!   address mapped into IPv6 as the IPv4 address.
//! - The table lives in this node's memory and holds at most `max_addresses`
//!   addresses: when full, those with nothing left to remember go first,
//!   then the one seen least recently. Every node of a cluster throttles on
//!   its own.
//! - Time comes from the caller (the application's clock), never read here.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keyhold_core::clock::Timestamp;

/// Failed attempts from one address within the window before it is
/// throttled: below the default lockout threshold (5), so one address
/// cannot lock an identity out by itself.
pub const DEFAULT_FAILURES: u32 = 3;
/// The window failures are counted in, in minutes: the default lockout's
/// length, so an address needs at least two windows to reach an identity's
/// threshold, and the identity's next successful login starts it again.
pub const DEFAULT_WINDOW_MINUTES: u32 = 15;
/// Addresses remembered at most (a few MiB at most).
pub const DEFAULT_MAX_ADDRESSES: u32 = 10_000;

/// How the throttle counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub failures: u32,
    pub window_minutes: u32,
    pub max_addresses: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            failures: DEFAULT_FAILURES,
            window_minutes: DEFAULT_WINDOW_MINUTES,
            max_addresses: DEFAULT_MAX_ADDRESSES,
        }
    }
}

/// An address refused: how long until it may try again, and whether this is
/// the first refusal since it was last admitted (audited once, not per
/// attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_seconds: u64,
    pub first: bool,
}

#[derive(Debug)]
struct Entry {
    /// When its failures in the window happened, oldest first.
    failures: VecDeque<Timestamp>,
    /// Attempts admitted and not yet ended.
    pending: u32,
    /// Refused since it was last admitted (its refusal is audited already).
    refused: bool,
    last_seen: Timestamp,
}

/// The per-address throttle of one server node.
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// The address a client is counted under.
fn counted_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }

    fn window(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.settings.window_minutes))
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an attempt from `client` at `now`, or refuses it. An admitted
    /// attempt counts as a failure until it ends otherwise
    /// ([`Admission::succeeded`]), even when it never ends (the client went).
    pub fn admit(self: &Arc<Self>, client: IpAddr, now: Timestamp) -> Result<Admission, Throttled> {
        let address = counted_as(client);
        let window = self.window();
        let mut entries = self.entries();
        if !entries.contains_key(&address) {
            self.make_room(&mut entries, now);
        }
        let entry = entries.entry(address).or_insert_with(|| Entry {
            failures: VecDeque::new(),
            pending: 0,
            refused: false,
            last_seen: now,
        });
        entry.last_seen = now;
        while entry.failures.front().is_some_and(|t| *t + window <= now) {
            entry.failures.pop_front();
        }
        let counted = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
        if counted.saturating_add(entry.pending) >= self.settings.failures {
            let first = !entry.refused;
            entry.refused = true;
            let retry_after_seconds = match entry.failures.front() {
                Some(oldest) if counted >= self.settings.failures => {
                    let left = (*oldest + window - now).num_milliseconds();
                    u64::try_from(left).unwrap_or(0).div_ceil(1000).max(1)
                }
                // Full with attempts still running: they end within seconds.
                _ => 1,
            };
            return Err(Throttled {
                retry_after_seconds,
                first,
            });
        }
        entry.pending += 1;
        entry.refused = false;
        Ok(Admission {
            throttle: Arc::clone(self),
            address,
            admitted_at: now,
            ended: false,
        })
    }

    /// Makes room for one more address when the table is full: addresses
    /// with nothing in the window and nothing running go first, then the
    /// one seen least recently.
    fn make_room(&self, entries: &mut HashMap<IpAddr, Entry>, now: Timestamp) {
        let max = usize::try_from(self.settings.max_addresses.max(1)).unwrap_or(usize::MAX);
        if entries.len() < max {
            return;
        }
        let window = self.window();
        entries
            .retain(|_, e| e.pending > 0 || e.failures.back().is_some_and(|t| *t + window > now));
        while entries.len() >= max {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(address, _)| *address)
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }

    fn end(&self, address: IpAddr, failed_at: Option<Timestamp>) {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(&address) else {
            // Evicted meanwhile: nothing left to count against.
            return;
        };
        entry.pending = entry.pending.saturating_sub(1);
        match failed_at {
            Some(at) => {
                entry.failures.push_back(at);
                let max = usize::try_from(self.settings.failures).unwrap_or(usize::MAX);
                while entry.failures.len() > max {
                    entry.failures.pop_front();
                }
            }
            None if entry.failures.is_empty() && entry.pending == 0 => {
                entries.remove(&address);
            }
            None => {}
        }
    }

    /// Addresses remembered now (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.entries().len()
    }
}

/// An admitted attempt. It counts as a failure of its address unless
/// [`Admission::succeeded`] says otherwise: dropped unended (the request was
/// abandoned mid-check), it is a failure too.
#[must_use = "an admission counts as a failure unless it is ended as a success"]
pub struct Admission {
    throttle: Arc<LoginThrottle>,
    address: IpAddr,
    admitted_at: Timestamp,
    ended: bool,
}

impl Admission {
    /// The attempt did not fail on its name or password: its place is free again.
    pub fn succeeded(mut self) {
        self.ended = true;
        self.throttle.end(self.address, None);
    }

    /// The attempt failed on its name or password (or a locked identity).
    pub fn failed(mut self) {
        self.ended = true;
        self.throttle.end(self.address, Some(self.admitted_at));
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.ended {
            self.throttle.end(self.address, Some(self.admitted_at));
        }
    }
}

#[cfg(test)]
mod tests {
    use keyhold_core::clock::{Clock, ManualClock};

    use super::*;

    fn clock() -> ManualClock {
        ManualClock::new(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn throttle(failures: u32, max_addresses: u32) -> Arc<LoginThrottle> {
        LoginThrottle::new(ThrottleSettings {
            failures,
            window_minutes: 15,
            max_addresses,
        })
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_moves_on() {
        let clock = clock();
        let t = throttle(3, 100);
        let attacker = ip("10.0.0.2");
        for _ in 0..3 {
            t.admit(attacker, clock.now()).unwrap().failed();
            clock.advance(chrono::Duration::minutes(1));
        }
        // Failures at 0, 1 and 2 minutes; now 3 minutes: the first leaves at 15.
        let refused = t.admit(attacker, clock.now()).err().unwrap();
        assert_eq!(
            refused,
            Throttled {
                retry_after_seconds: 12 * 60,
                first: true
            }
        );
        let again = t.admit(attacker, clock.now()).err().unwrap();
        assert!(!again.first, "one refusal per episode is reported first");
        // Another address is not affected.
        t.admit(ip("10.0.0.1"), clock.now()).unwrap().succeeded();
        clock.advance(chrono::Duration::minutes(12));
        // The oldest failure has left the window: one more attempt.
        t.admit(attacker, clock.now()).unwrap().failed();
        let refused = t.admit(attacker, clock.now()).err().unwrap();
        assert_eq!(refused.retry_after_seconds, 60);
        assert!(refused.first, "a new episode after an admission");
    }

    #[test]
    fn successes_give_their_place_back_and_are_not_counted() {
        let clock = clock();
        let t = throttle(2, 100);
        let officer = ip("10.0.0.1");
        for _ in 0..10 {
            t.admit(officer, clock.now()).unwrap().succeeded();
        }
        t.admit(officer, clock.now()).unwrap().failed();
        t.admit(officer, clock.now()).unwrap().succeeded();
        t.admit(officer, clock.now()).unwrap().failed();
        assert!(t.admit(officer, clock.now()).is_err());
        // Nothing to remember is not remembered.
        t.admit(ip("10.0.0.9"), clock.now()).unwrap().succeeded();
        assert_eq!(t.addresses(), 1);
    }

    #[test]
    fn parallel_attempts_count_while_they_run_and_an_abandoned_one_is_a_failure() {
        let clock = clock();
        let t = throttle(3, 100);
        let attacker = ip("10.0.0.2");
        let running: Vec<Admission> = (0..3)
            .map(|_| t.admit(attacker, clock.now()).unwrap())
            .collect();
        let refused = t.admit(attacker, clock.now()).err().unwrap();
        assert_eq!(refused.retry_after_seconds, 1, "running attempts end soon");
        // Dropped unended: counted as failures.
        drop(running);
        let refused = t.admit(attacker, clock.now()).err().unwrap();
        assert_eq!(refused.retry_after_seconds, 15 * 60);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let clock = clock();
        let t = throttle(1, 100);
        t.admit(ip("2001:db8:1:2::1"), clock.now())
            .unwrap()
            .failed();
        assert!(t.admit(ip("2001:db8:1:2:ffff::7"), clock.now()).is_err());
        t.admit(ip("2001:db8:1:3::1"), clock.now())
            .unwrap()
            .failed();
        t.admit(ip("::ffff:10.0.0.5"), clock.now())
            .unwrap()
            .failed();
        assert!(t.admit(ip("10.0.0.5"), clock.now()).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_first() {
        let clock = clock();
        let t = throttle(1, 3);
        for n in 1..=3 {
            t.admit(ip(&format!("10.0.0.{n}")), clock.now())
                .unwrap()
                .failed();
            clock.advance(chrono::Duration::seconds(1));
        }
        assert_eq!(t.addresses(), 3);
        // A flood of new addresses never grows the table past its bound.
        for n in 0..1000u32 {
            let [_, _, a, b] = n.to_be_bytes();
            let _ = t.admit(ip(&format!("10.1.{a}.{b}")), clock.now());
            assert!(t.addresses() <= 3);
        }
        // Each new address evicted the least recently seen one.
        assert!(t.admit(ip("10.0.0.1"), clock.now()).is_ok());
    }

    #[test]
    fn expired_addresses_make_room_before_recent_ones() {
        let clock = clock();
        let t = throttle(1, 2);
        t.admit(ip("10.0.0.1"), clock.now()).unwrap().failed();
        clock.advance(chrono::Duration::minutes(20));
        t.admit(ip("10.0.0.2"), clock.now()).unwrap().failed();
        // Full: 10.0.0.1's failure has left the window, so it goes, and
        // 10.0.0.2 stays refused.
        t.admit(ip("10.0.0.3"), clock.now()).unwrap().failed();
        assert!(t.admit(ip("10.0.0.2"), clock.now()).is_err());
        assert_eq!(t.addresses(), 2);
    }
}
