//! Refused XKS requests in the audit log, one entry each, at a bounded rate.
//!
//! Rules:
//! - What an officer must be able to find later is audited individually:
//!   a request whose SigV4 signature (or credential, or date) failed, a
//!   client certificate that does not match its store's mTLS rule, and a
//!   key's authorization rule refusing (`AccessDeniedException`). Each
//!   entry is `Refused an XKS request for <key or path>` with the store,
//!   the access key id, the KMS request id, the principal and the reason.
//! - At most [`PER_MINUTE`] such entries a minute per node: an
//!   unauthenticated flood must not grow the audit log (or slow it for
//!   the officers). The rest are counted in the next digest and in
//!   `/metrics`; the usage log has every one of them.
//! - The entry is written off the request path (spawned), so a flood of
//!   refusals does not delay good requests behind the audit log's writes.
//! - The users of the entry are `Anonymous`: KMS is no keyhold identity
//!   (the credential and principal are in the details).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhold_core::action::Action;
use keyhold_core::audit::{ANONYMOUS_USER, AuditRecord};
use keyhold_core::ports::AuditFallback;
use keyhold_core::service::Keyhold;
use serde_json::json;

use super::digest::PeriodCounts;
use super::quota::TokenBucket;

/// Individually audited refusals a minute, per node.
pub const PER_MINUTE: u32 = 20;

/// One refusal, as the audit entry tells it. Never a secret: the access
/// key id names a credential, it is not one.
#[derive(Debug)]
pub struct Refusal<'a> {
    /// The key id, or the request's path when there is no key (health).
    pub subject: &'a str,
    pub store: &'a str,
    pub access_key_id: Option<&'a str>,
    pub kms_request_id: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub error_name: &'static str,
    pub reason: &'a str,
}

pub struct Denials {
    bucket: TokenBucket,
}

impl std::fmt::Debug for Denials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denials").finish_non_exhaustive()
    }
}

impl Denials {
    pub fn new() -> Self {
        Self {
            bucket: TokenBucket::new(PER_MINUTE, Duration::from_secs(60), Instant::now()),
        }
    }

    /// Audits `refusal` if the rate allows (in the background), else counts
    /// it; either way the period's counts say which.
    pub fn refused(
        &self,
        keyhold: &Keyhold,
        fallback: Arc<dyn AuditFallback>,
        counts: &PeriodCounts,
        refusal: &Refusal<'_>,
    ) -> bool {
        let audited = self.bucket.try_take(Instant::now());
        counts.denial(audited);
        if audited {
            let record = AuditRecord::new(
                keyhold.now(),
                ANONYMOUS_USER,
                Action::XksRequest(refusal.subject).failed(),
            )
            .with_details(json!({
                "store": refusal.store,
                "access_key_id": refusal.access_key_id,
                "kms_request_id": refusal.kms_request_id,
                "principal": refusal.principal,
                "error": refusal.error_name,
                "reason": refusal.reason,
            }));
            let keyhold = keyhold.clone();
            tokio::spawn(async move {
                if let Err(error) = keyhold.store().append_audit(&record).await {
                    fallback.unwritten(&record, &error);
                }
            });
        }
        audited
    }
}
