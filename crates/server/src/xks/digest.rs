//! What the audit log keeps of XKS traffic: a signed digest per node and
//! period, and the refusals that matter one by one (see `denials`).
//!
//! Why a digest rather than an entry per call: at KMS's 1,800 requests a
//! second per store, one chained, keystore-sealed audit entry per call
//! would make the audit log the proxy's bottleneck and bury the officers'
//! actions. The usage log has every call; the digest makes it
//! tamper-evident after the fact. Rules:
//! - Each node counts its calls per period (store, key, operation,
//!   outcome; principals, the most frequent by name and the rest as
//!   `other`) on the request path, under one short lock.
//! - Every interval (configured, by the Clock port) the node cuts the
//!   usage log (flushed and synced) and appends ONE audit entry,
//!   `XksUsageDigest(node)`, with the counts, the lines of the usage log
//!   the period wrote (file, first and last line, SHA-256 of exactly those
//!   bytes) and what could not be logged or audited individually.
//! - A period without a single call writes nothing and goes on: the next
//!   digest's period starts where the last one ended, so periods are
//!   contiguous and a gap in them means the node was down.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use keyhold_core::action::Action;
use keyhold_core::audit::{AuditRecord, SYSTEM_USER};
use keyhold_core::clock::{Timestamp, format_timestamp};
use keyhold_core::ports::AuditFallback;
use serde_json::json;

use super::usage::Segment;

/// Principals a digest names, the most frequent first; the rest are summed.
pub const TOP_PRINCIPALS: usize = 20;
/// Distinct principals a period counts by name; beyond that they count
/// as `other` at once (the set is the callers', so it is bounded).
const TRACKED_PRINCIPALS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CallKey {
    store: String,
    key: String,
    operation: &'static str,
    outcome: String,
}

#[derive(Debug)]
struct Counts {
    started_at: Timestamp,
    calls: HashMap<CallKey, u64>,
    principals: HashMap<String, u64>,
    untracked_principals: u64,
    denials_audited: u64,
    denials_not_audited: u64,
}

impl Counts {
    fn new(started_at: Timestamp) -> Self {
        Self {
            started_at,
            calls: HashMap::new(),
            principals: HashMap::new(),
            untracked_principals: 0,
            denials_audited: 0,
            denials_not_audited: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.denials_not_audited == 0 && self.denials_audited == 0
    }
}

/// One call as the period counts it.
pub struct CountedCall<'a> {
    pub store: &'a str,
    pub key: &'a str,
    pub operation: &'static str,
    pub outcome: &'a str,
    pub principal: Option<&'a str>,
}

/// This node's counts for the current period.
pub struct PeriodCounts {
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for PeriodCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodCounts").finish_non_exhaustive()
    }
}

impl PeriodCounts {
    pub fn new(started_at: Timestamp) -> Self {
        Self {
            counts: Mutex::new(Counts::new(started_at)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn call(&self, call: &CountedCall<'_>) {
        let key = CallKey {
            store: call.store.to_owned(),
            key: call.key.to_owned(),
            operation: call.operation,
            outcome: call.outcome.to_owned(),
        };
        let mut counts = self.lock();
        *counts.calls.entry(key).or_insert(0) += 1;
        if let Some(principal) = call.principal {
            if let Some(count) = counts.principals.get_mut(principal) {
                *count += 1;
            } else if counts.principals.len() < TRACKED_PRINCIPALS {
                counts.principals.insert(principal.to_owned(), 1);
            } else {
                counts.untracked_principals += 1;
            }
        }
    }

    /// A refusal audited individually (`audited`) or only counted here.
    pub fn denial(&self, audited: bool) {
        let mut counts = self.lock();
        if audited {
            counts.denials_audited += 1;
        } else {
            counts.denials_not_audited += 1;
        }
    }

    pub fn started_at(&self) -> Timestamp {
        self.lock().started_at
    }

    /// Whether the period has anything to digest.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Ends the period at `end`; the next starts there. A clock set back
    /// before the period's start restarts it at `end`, without a digest.
    fn take(&self, end: Timestamp) -> Counts {
        std::mem::replace(&mut *self.lock(), Counts::new(end))
    }

    /// Restarts an empty period at `at` (the clock went back).
    pub fn restart(&self, at: Timestamp) {
        let mut counts = self.lock();
        counts.started_at = at;
    }

    /// The audit entry for the period ending at `end`, taking its counts.
    pub fn digest(
        &self,
        node: &str,
        end: Timestamp,
        usage_log: Vec<Segment>,
        usage_log_dropped: u64,
    ) -> AuditRecord {
        let counts = self.take(end);
        digest_record(node, counts, end, usage_log, usage_log_dropped)
    }
}

fn digest_record(
    node: &str,
    counts: Counts,
    end: Timestamp,
    usage_log: Vec<Segment>,
    usage_log_dropped: u64,
) -> AuditRecord {
    let mut calls: Vec<(CallKey, u64)> = counts.calls.into_iter().collect();
    calls.sort();
    let requests: u64 = calls.iter().map(|(_, n)| n).sum();
    let mut principals: Vec<(String, u64)> = counts.principals.into_iter().collect();
    principals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other: u64 = principals
        .iter()
        .skip(TOP_PRINCIPALS)
        .map(|(_, n)| n)
        .sum::<u64>()
        + counts.untracked_principals;
    principals.truncate(TOP_PRINCIPALS);
    let details = json!({
        "node": node,
        "period": {
            "start": format_timestamp(&counts.started_at),
            "end": format_timestamp(&end),
        },
        "requests": requests,
        "calls": calls.iter().map(|(k, n)| json!({
            "store": k.store,
            "key": k.key,
            "operation": k.operation,
            "outcome": k.outcome,
            "count": n,
        })).collect::<Vec<_>>(),
        "principals": {
            "top": principals.iter().map(|(p, n)| json!({"principal": p, "count": n})).collect::<Vec<_>>(),
            "other": other,
        },
        "denials": {
            "audited_individually": counts.denials_audited,
            "not_audited_individually": counts.denials_not_audited,
        },
        "usage_log": usage_log,
        "usage_log_dropped_lines": usage_log_dropped,
    });
    AuditRecord::new(end, SYSTEM_USER, Action::XksUsageDigest(node).succeeded())
        .with_details(details)
}

/// Appends a digest; one the store refuses goes to the fallback (the
/// server's log, whole, and the unwritten-audit counter).
pub async fn append(
    keyhold: &keyhold_core::service::Keyhold,
    fallback: &dyn AuditFallback,
    record: AuditRecord,
) {
    if let Err(error) = keyhold.store().append_audit(&record).await {
        fallback.unwritten(&record, &error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    #[test]
    fn a_digest_counts_the_period_and_names_its_lines() {
        let counts = PeriodCounts::new(at(0));
        assert!(counts.is_empty());
        for i in 0..30 {
            counts.call(&CountedCall {
                store: "payments",
                key: "k1",
                operation: "encrypt",
                outcome: if i % 10 == 0 {
                    "AccessDeniedException"
                } else {
                    "ok"
                },
                principal: Some(&format!("p{}", i % 25)),
            });
        }
        counts.denial(true);
        counts.denial(false);
        let segment = Segment {
            file: "/data/xks-usage.jsonl".into(),
            lines: 30,
            first_line: Some(11),
            last_line: Some(40),
            sha256: Some("ab".repeat(32)),
            write_failed: false,
        };
        let record = counts.digest("node-a", at(5), vec![segment], 2);
        assert_eq!(
            record.summary,
            "Recorded the XKS usage digest of node node-a"
        );
        let d = &record.details;
        assert_eq!(d["requests"], 30);
        assert_eq!(d["calls"][0]["outcome"], "AccessDeniedException");
        assert_eq!(d["calls"][0]["count"], 3);
        assert_eq!(d["calls"][1]["count"], 27);
        assert_eq!(
            d["principals"]["top"].as_array().unwrap().len(),
            TOP_PRINCIPALS
        );
        // p0..p4 twice each lead; 5 of the once-seen are "other".
        assert_eq!(d["principals"]["top"][0]["count"], 2);
        assert_eq!(d["principals"]["other"], 5);
        assert_eq!(d["denials"]["not_audited_individually"], 1);
        assert_eq!(d["usage_log"][0]["first_line"], 11);
        assert_eq!(d["usage_log_dropped_lines"], 2);
        assert_eq!(d["period"]["start"], format_timestamp(&at(0)));
        // The next period starts where this one ended, empty.
        assert!(counts.is_empty());
        assert_eq!(counts.started_at(), at(5));
    }
}
