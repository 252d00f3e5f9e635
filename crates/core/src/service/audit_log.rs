//! Reading, verifying and exporting the audit log.

use super::Keyhold;
use crate::audit::{AuditEntry, AuditFilter, ChainVerifier, VerifyReport};
use crate::error::CoreResult;
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

    /// Walks the whole chain and names the first entry that fails.
    pub async fn verify_audit(&self, session: &Session) -> CoreResult<VerifyReport> {
        session.authorize(Operation::READ, true)?;
        self.verify_audit_chain().await
    }

    pub async fn verify_audit_chain(&self) -> CoreResult<VerifyReport> {
        let mac = self.keystore.clone();
        let mut verifier = ChainVerifier::new(mac.as_ref());
        let mut after = 0;
        loop {
            let page = self.store.audit_page(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Err(broken) = verifier.push(entry) {
                    return Ok(VerifyReport {
                        ok: false,
                        entries_checked: verifier.checked(),
                        first_bad_seq: Some(entry.seq),
                        reason: Some(broken.describe()),
                    });
                }
            }
        }
        Ok(VerifyReport {
            ok: true,
            entries_checked: verifier.checked(),
            first_bad_seq: None,
            reason: None,
        })
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
