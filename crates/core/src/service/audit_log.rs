//! Reading, verifying and exporting the audit log.

use super::Keyhold;
use crate::audit::{
    AuditEntry, AuditFilter, AuditPublicKey, ChainBreak, ChainHead, ChainVerifier, Checkpoint,
    CheckpointError, VerifyReport,
};
use crate::error::{CoreError, CoreResult};
use crate::identity::{Operation, Session};

/// Entries verified per page: bounds memory for long logs.
const VERIFY_PAGE: u32 = 1000;

/// A page of the export, oldest first.
pub struct AuditExport {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` to get the next page; `None` at the end.
    pub next_after_seq: Option<i64>,
}

impl Keyhold {
    pub async fn list_audit(
        &self,
        session: &Session,
        filter: &AuditFilter,
    ) -> CoreResult<Vec<AuditEntry>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_audit(filter).await?)
    }

    /// Walks the whole chain and names the first entry that fails. Each of
    /// `checkpoints` must verify with this keystore's key, and the log must
    /// reach it with the same hash: a log cut short or rewritten fails.
    pub async fn verify_audit(
        &self,
        session: &Session,
        checkpoints: &[Checkpoint],
    ) -> CoreResult<VerifyReport> {
        session.authorize(Operation::READ, true)?;
        self.verify_audit_chain(checkpoints).await
    }

    pub async fn verify_audit_chain(&self, checkpoints: &[Checkpoint]) -> CoreResult<VerifyReport> {
        let key = self.keystore.audit_public_key()?;
        let verifier = ChainVerifier::new(self.keystore.clone());
        if let Some((checkpoint, refused)) = checkpoints
            .iter()
            .find_map(|c| c.verify(&key).err().map(|e| (c, e)))
        {
            return Ok(verifier.report(Err((checkpoint.seq, refused_checkpoint(refused)))));
        }
        self.walk_chain(verifier.anchored(checkpoints)).await
    }

    /// Feeds the log from after the verifier's head to its end, a page at a time.
    async fn walk_chain(&self, mut verifier: ChainVerifier) -> CoreResult<VerifyReport> {
        let mut after = verifier.head().seq;
        loop {
            let page = self.store.audit_page(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Err(broken) = verifier.push(entry) {
                    return Ok(verifier.report(Err((entry.seq, broken))));
                }
            }
        }
        let outcome = verifier.finish();
        Ok(verifier.report(outcome))
    }

    /// Whether the session may read what the server keeps about the audit
    /// log beside it, such as its streams to a SIEM: the log's own rule.
    pub fn may_read_audit(&self, session: &Session) -> CoreResult<()> {
        session.authorize(Operation::READ, true)
    }

    /// The public half of the checkpoint signing key, for auditors to pin.
    pub fn audit_public_key(&self, session: &Session) -> CoreResult<AuditPublicKey> {
        session.authorize(Operation::READ, true)?;
        Ok(self.keystore.audit_public_key()?)
    }

    /// A checkpoint asked for by an officer or auditor (`keyhold audit checkpoint`).
    pub async fn checkpoint_audit(
        &self,
        session: &Session,
        previous: Option<&Checkpoint>,
    ) -> CoreResult<Checkpoint> {
        session.authorize(Operation::READ, true)?;
        self.sign_audit_checkpoint(previous).await
    }

    /// Signs the chain's head, after checking what was appended since
    /// `previous` (the newest checkpoint written before, which must still
    /// match the log) or, without one, the whole chain. A checkpoint vouches
    /// for everything before it, so a chain that fails is never signed.
    pub async fn sign_audit_checkpoint(
        &self,
        previous: Option<&Checkpoint>,
    ) -> CoreResult<Checkpoint> {
        let key = self.keystore.audit_public_key()?;
        // Another key's checkpoint (before a keystore migration) cannot anchor
        // the check; the whole chain is walked instead.
        let previous = previous.filter(|p| p.verify(&key).is_ok());
        let report = match previous {
            Some(previous) => {
                let resumed = match self.store.audit_page(previous.seq - 1, 1).await?.first() {
                    Some(entry) if entry.seq == previous.seq && entry.hash == previous.hash => {
                        ChainVerifier::new(self.keystore.clone()).resume_after(previous.head())
                    }
                    // Missing or different: the walk from the start says where.
                    _ => ChainVerifier::new(self.keystore.clone())
                        .anchored(std::slice::from_ref(previous)),
                };
                self.walk_chain(resumed).await?
            }
            None => {
                self.walk_chain(ChainVerifier::new(self.keystore.clone()))
                    .await?
            }
        };
        if !report.ok {
            return Err(CoreError::Conflict(format!(
                "the audit log fails verification at entry {}: {}. No checkpoint is signed over a broken log; run `keyhold audit verify` and investigate",
                report.first_bad_seq.unwrap_or_default(),
                report.reason.unwrap_or_default()
            )));
        }
        let head = self.audit_head().await?;
        Ok(Checkpoint::sign(head, self.now(), self.keystore.as_ref())?)
    }

    /// Signs a head the caller verified itself (the end of an export).
    pub fn sign_verified_head(&self, head: ChainHead) -> CoreResult<Checkpoint> {
        Ok(Checkpoint::sign(head, self.now(), self.keystore.as_ref())?)
    }

    /// A verifier with this keystore's MAC key, anchored to `checkpoints`
    /// that verify with its key (others are left out).
    pub fn audit_verifier(&self, checkpoints: &[Checkpoint]) -> CoreResult<ChainVerifier> {
        let key = self.keystore.audit_public_key()?;
        let valid: Vec<Checkpoint> = checkpoints
            .iter()
            .filter(|c| c.verify(&key).is_ok())
            .cloned()
            .collect();
        Ok(ChainVerifier::new(self.keystore.clone()).anchored(&valid))
    }

    /// The newest entry's place in the chain.
    pub async fn audit_head(&self) -> CoreResult<ChainHead> {
        let newest = self
            .store
            .list_audit(&AuditFilter {
                limit: 1,
                ..AuditFilter::default()
            })
            .await?;
        Ok(newest.first().map_or(ChainHead::EMPTY, |e| ChainHead {
            seq: e.seq,
            hash: e.hash,
        }))
    }

    /// One page of the log for export, oldest first. The first page is audited.
    pub async fn export_audit(
        &self,
        session: &Session,
        after_seq: i64,
        limit: u32,
    ) -> CoreResult<AuditExport> {
        session.authorize(Operation::READ, true)?;
        if after_seq == 0 {
            self.store
                .append_audit(&self.record(session.users(), "Exported the audit log"))
                .await?;
        }
        let limit = limit.clamp(1, VERIFY_PAGE);
        let entries = self.store.audit_page(after_seq, limit).await?;
        let next_after_seq = if entries.len() == limit as usize {
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditExport {
            entries,
            next_after_seq,
        })
    }
}

/// A checkpoint that does not verify is reported like a break at its entry.
fn refused_checkpoint(refused: CheckpointError) -> ChainBreak {
    ChainBreak::CheckpointRefused {
        why: refused.to_string(),
    }
}
