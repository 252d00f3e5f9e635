//! The audited operations, each with the subject it acts on, and the audit
//! summaries of their outcomes, side by side.
//!
//! Rules:
//! - An operation's success and failure sentences are written here and
//!   nowhere else: the service writes the success entry, the edge the
//!   failure entry, and both take the text from the same [`Action`].
//! - A subject is named as the caller named it. On failure that may be raw
//!   request text, so every subject passes through [`printable`]: no control
//!   character and no unbounded string reaches the log. (Parsed names are
//!   short and printable already, so this never changes a success text.)
//! - A job operation's request is an [`Action`] (its success: the job is
//!   queued); the job it starts ends with its [`JobRun`]'s sentences.
//! - Summaries never change wording: audit readers and tests search them.

/// Longest subject an audit summary echoes.
const MAX_SUBJECT_CHARS: usize = 80;

/// Echoes a name from a request in an audit summary (or a message) without
/// letting control characters or an unbounded string through.
pub fn printable(raw: &str) -> String {
    raw.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_SUBJECT_CHARS)
        .collect()
}

/// An operation a session asks for, with what it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Key Management → Keys → Add key group (the group's name).
    AddGroup(&'a str),
    UpdateGroup(&'a str),
    DeleteGroup(&'a str),
    /// Key Management → Keys: deleting a key (its KMS key id or keyhold id).
    DeleteKey(&'a str),
    /// Cloud → Force Rotate (the group's name): starts a rotation job.
    RotateGroup(&'a str),
    /// Cloud → Synchronize (the key's KMS key id, or as the caller named
    /// it): starts a synchronization job.
    SynchronizeKey(&'a str),
    /// Retrying a failed job. `title` is the job's kind
    /// ([`crate::job::JobKind::title`]), known once the job was found; a
    /// refusal names the job by the id alone.
    RetryJob {
        id: &'a str,
        title: Option<&'a str>,
    },
    /// Cancelling a queued or failed job (`title` as for [`Self::RetryJob`]);
    /// `removed_key` names the key a cancelled rotation generated and keyhold
    /// removed with it, since it never reached KMS.
    CancelJob {
        id: &'a str,
        title: Option<&'a str>,
        removed_key: Option<&'a str>,
    },
    /// Adding a cloud credential, from an access key CSV or on the default chain.
    AddCredential(&'a str),
    DeleteCredential(&'a str),
    /// Adding an identity with a role (as the request names them).
    AddIdentity {
        name: &'a str,
        role: &'a str,
    },
    DeleteIdentity(&'a str),
    /// Administration → Configuration.
    ChangeConfiguration,
    /// Asking for approvals of an operation a quorum holds (the request's
    /// id and what it will do). Its refusal is the operation's own.
    RequestApproval {
        id: &'a str,
        summary: &'a str,
    },
    /// Answering an approval request (its id).
    ApproveRequest(&'a str),
    DenyRequest(&'a str),
    /// The requester collecting an executed request's sealed result.
    CollectApprovalResult(&'a str),
    /// Administration → Approval policies.
    ChangeApprovalPolicies,
    /// Drift → Check now (the group's name): starts a drift check job.
    CheckDrift(&'a str),
    /// Drift → Apply plan (the group's name): starts a reconcile job.
    ReconcileDrift(&'a str),
    /// Backups → Back up now (the backup's id once it has one); a scheduled
    /// backup is the same action by `System`.
    CreateBackup(&'a str),
    /// Backups → Custodians.
    SetCustodians,
    /// Audit Logs → Archive (the last sequence number archived, once known).
    ArchiveAudit(&'a str),
    /// Downloading a backup's file (its id): encrypted, but it holds every key.
    DownloadBackup(&'a str),
    /// Handing out a backup's shares (its id): each encrypted for its custodian.
    DownloadShares(&'a str),
    /// External Key Stores → Create (the store's name).
    CreateXksStore(&'a str),
    /// Changing a store's quota or mTLS rule (its name).
    UpdateXksStore(&'a str),
    DeleteXksStore(&'a str),
    /// Rotate credentials: a new SigV4 credential for the store (its name).
    AddXksCredential(&'a str),
    /// Revoking one credential: the store's name and the access key id.
    RevokeXksCredential(&'a str, &'a str),
    /// A new XKS key in the store (its name).
    CreateXksKey(&'a str),
    /// A change of an XKS key (its id).
    UpdateXksKey(&'a str),
    DeleteXksKey(&'a str),
    /// A request of AWS KMS to the proxy (the key's id, or the path when
    /// no key was named); audited when refused by SigV4, mTLS or a rule.
    XksRequest(&'a str),
    /// A node's periodic signed digest of the XKS requests it served (the node).
    XksUsageDigest(&'a str),
}

impl Action<'_> {
    /// The summary of the entry written when the operation is done (for a
    /// job operation: when its job is queued).
    pub fn succeeded(&self) -> String {
        match *self {
            Self::AddGroup(name) => format!("Added HSM protected key group {}", printable(name)),
            Self::UpdateGroup(name) => {
                format!("Updated HSM protected key group {}", printable(name))
            }
            Self::DeleteGroup(name) => {
                format!("Deleted HSM protected key group {}", printable(name))
            }
            Self::DeleteKey(name) => format!("Deleted HSM protected key {}", printable(name)),
            Self::RotateGroup(name) => format!(
                "Started rotating keys for HSM protected key group {}",
                printable(name)
            ),
            Self::SynchronizeKey(name) => {
                format!(
                    "Started synchronizing HSM protected key {}",
                    printable(name)
                )
            }
            Self::RetryJob { id, title } => job_transition("Retried", id, title),
            Self::CancelJob {
                id,
                title,
                removed_key,
            } => {
                let cancelled = job_transition("Cancelled", id, title);
                match removed_key {
                    Some(key) => format!(
                        "{cancelled}; removed its key {}, which never reached KMS",
                        printable(key)
                    ),
                    None => cancelled,
                }
            }
            Self::AddCredential(name) => format!("Added cloud credential {}", printable(name)),
            Self::DeleteCredential(name) => {
                format!("Deleted cloud credential {}", printable(name))
            }
            Self::AddIdentity { name, role } => format!(
                "Added identity '{}' with role {}",
                printable(name),
                printable(role)
            ),
            Self::DeleteIdentity(name) => format!("Deleted identity '{}'", printable(name)),
            Self::ChangeConfiguration => "Changed configuration".to_owned(),
            Self::RequestApproval { id, summary } => {
                format!(
                    "Requested approval {}: {}",
                    printable(id),
                    printable(summary)
                )
            }
            Self::ApproveRequest(id) => format!("Approved request {}", printable(id)),
            Self::DenyRequest(id) => format!("Denied request {}", printable(id)),
            Self::CollectApprovalResult(id) => {
                format!("Collected the result of approved request {}", printable(id))
            }
            Self::ChangeApprovalPolicies => "Changed approval policies".to_owned(),
            Self::CheckDrift(group) => format!(
                "Started checking HSM protected key group {} for drift",
                printable(group)
            ),
            Self::ReconcileDrift(group) => format!(
                "Started reconciling HSM protected key group {} with AWS",
                printable(group)
            ),
            Self::CreateBackup(id) => format!("Started backup {}", printable(id)),
            Self::SetCustodians => "Set the backup custodians".to_owned(),
            Self::ArchiveAudit(seq) => {
                format!("Archived audit entries up to {}", printable(seq))
            }
            Self::DownloadBackup(id) => format!("Downloaded backup {}", printable(id)),
            Self::CreateXksStore(name) => {
                format!("Created external key store {}", printable(name))
            }
            Self::UpdateXksStore(name) => {
                format!("Updated external key store {}", printable(name))
            }
            Self::DeleteXksStore(name) => {
                format!("Deleted external key store {}", printable(name))
            }
            Self::AddXksCredential(name) => format!(
                "Added a credential to external key store {}",
                printable(name)
            ),
            Self::RevokeXksCredential(name, id) => format!(
                "Revoked credential {} of external key store {}",
                printable(id),
                printable(name)
            ),
            Self::CreateXksKey(name) => format!(
                "Created an XKS key in external key store {}",
                printable(name)
            ),
            Self::UpdateXksKey(id) => format!("Updated XKS key {}", printable(id)),
            Self::DeleteXksKey(id) => format!("Deleted XKS key {}", printable(id)),
            Self::XksRequest(subject) => {
                format!("Served an XKS request for {}", printable(subject))
            }
            Self::XksUsageDigest(node) => {
                format!("Recorded the XKS usage digest of node {}", printable(node))
            }
            Self::DownloadShares(id) => {
                format!("Handed out the shares of backup {}", printable(id))
            }
        }
    }

    /// The summary of the entry written when the operation is refused or
    /// fails (the reason goes in the entry's details).
    pub fn failed(&self) -> String {
        match *self {
            Self::AddGroup(name) => {
                format!("Failed to add HSM protected key group {}", printable(name))
            }
            Self::UpdateGroup(name) => format!(
                "Failed to update HSM protected key group {}",
                printable(name)
            ),
            Self::DeleteGroup(name) => format!(
                "Failed to delete HSM protected key group {}",
                printable(name)
            ),
            Self::DeleteKey(name) => {
                format!("Failed to delete HSM protected key {}", printable(name))
            }
            Self::RotateGroup(name) => format!(
                "Failed to rotate keys for HSM protected key group {}",
                printable(name)
            ),
            Self::SynchronizeKey(name) => {
                format!(
                    "Failed to synchronize HSM protected key {}",
                    printable(name)
                )
            }
            Self::RetryJob { id, .. } => format!("Failed to retry job {}", printable(id)),
            Self::CancelJob { id, .. } => format!("Failed to cancel job {}", printable(id)),
            Self::AddCredential(name) => {
                format!("Failed to add cloud credential {}", printable(name))
            }
            Self::DeleteCredential(name) => {
                format!("Failed to delete cloud credential {}", printable(name))
            }
            Self::AddIdentity { name, .. } => {
                format!("Failed to add identity '{}'", printable(name))
            }
            Self::DeleteIdentity(name) => {
                format!("Failed to delete identity '{}'", printable(name))
            }
            Self::ChangeConfiguration => "Failed to change configuration".to_owned(),
            Self::RequestApproval { .. } => "Failed to request approval".to_owned(),
            Self::ApproveRequest(id) => format!("Failed to approve request {}", printable(id)),
            Self::DenyRequest(id) => format!("Failed to deny request {}", printable(id)),
            Self::CollectApprovalResult(id) => format!(
                "Failed to collect the result of approved request {}",
                printable(id)
            ),
            Self::ChangeApprovalPolicies => "Failed to change approval policies".to_owned(),
            Self::CheckDrift(group) => format!(
                "Failed to check HSM protected key group {} for drift",
                printable(group)
            ),
            Self::ReconcileDrift(group) => format!(
                "Failed to reconcile HSM protected key group {} with AWS",
                printable(group)
            ),
            Self::CreateBackup(_) => "Failed to start a backup".to_owned(),
            Self::SetCustodians => "Failed to set the backup custodians".to_owned(),
            Self::ArchiveAudit(_) => "Failed to archive audit entries".to_owned(),
            Self::DownloadBackup(id) => format!("Failed to download backup {}", printable(id)),
            Self::CreateXksStore(name) => {
                format!("Failed to create external key store {}", printable(name))
            }
            Self::UpdateXksStore(name) => {
                format!("Failed to update external key store {}", printable(name))
            }
            Self::DeleteXksStore(name) => {
                format!("Failed to delete external key store {}", printable(name))
            }
            Self::AddXksCredential(name) => format!(
                "Failed to add a credential to external key store {}",
                printable(name)
            ),
            Self::RevokeXksCredential(name, id) => format!(
                "Failed to revoke credential {} of external key store {}",
                printable(id),
                printable(name)
            ),
            Self::CreateXksKey(name) => format!(
                "Failed to create an XKS key in external key store {}",
                printable(name)
            ),
            Self::UpdateXksKey(id) => format!("Failed to update XKS key {}", printable(id)),
            Self::DeleteXksKey(id) => format!("Failed to delete XKS key {}", printable(id)),
            Self::XksRequest(subject) => {
                format!("Refused an XKS request for {}", printable(subject))
            }
            Self::XksUsageDigest(node) => format!(
                "Failed to record the XKS usage digest of node {}",
                printable(node)
            ),
            Self::DownloadShares(id) => {
                format!("Failed to hand out the shares of backup {}", printable(id))
            }
        }
    }
}

/// A job that a job operation started, for the summaries of how it ended
/// (written by the job engine when its last step succeeds, or a step fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRun<'a> {
    /// Rotating the keys of the group (its name).
    Rotation(&'a str),
    /// Synchronizing the key (its KMS key id).
    Synchronization(&'a str),
    /// Checking the group for drift (its name).
    DriftCheck(&'a str),
    /// Reconciling the group with AWS (its name).
    Reconciliation(&'a str),
}

impl JobRun<'_> {
    /// The operation that starts such a job.
    pub fn started_by(&self) -> Action<'_> {
        match *self {
            Self::Rotation(group) => Action::RotateGroup(group),
            Self::Synchronization(key) => Action::SynchronizeKey(key),
            Self::DriftCheck(group) => Action::CheckDrift(group),
            Self::Reconciliation(group) => Action::ReconcileDrift(group),
        }
    }

    pub fn succeeded(&self) -> String {
        match *self {
            Self::Rotation(group) => format!(
                "Successfully rotated keys for HSM protected key group {}.",
                printable(group)
            ),
            Self::Synchronization(key) => format!(
                "Successfully synchronized HSM protected key {}.",
                printable(key)
            ),
            Self::DriftCheck(group) => format!(
                "Successfully checked HSM protected key group {} for drift.",
                printable(group)
            ),
            Self::Reconciliation(group) => format!(
                "Successfully reconciled HSM protected key group {} with AWS.",
                printable(group)
            ),
        }
    }

    /// The failure sentence of the operation that started the job, closed
    /// with a period (the job's own entries are sentences).
    pub fn failed(&self) -> String {
        format!("{}.", self.started_by().failed())
    }
}

/// What a drift check writes to the audit log for each finding that
/// appears or clears, and self-heal for each repair it makes.
pub mod drift {
    use super::printable;

    /// `what` is [`crate::drift::Finding::summary`].
    pub fn found(what: &str) -> String {
        format!("Drift found: {}.", printable_long(what))
    }

    pub fn cleared(what: &str) -> String {
        format!("Drift cleared: {}.", printable_long(what))
    }

    /// `what` is [`crate::drift::Repair::describe`].
    pub fn repaired(group: &str, what: &str, automatically: bool) -> String {
        format!(
            "{} drift of HSM protected key group {}: {}.",
            if automatically {
                "Self-heal repaired"
            } else {
                "Repaired"
            },
            printable(group),
            printable_long(what)
        )
    }

    /// Finding summaries and repairs name KMS key ids and aliases, longer
    /// than a subject's bound; they are made by keyhold, never raw input,
    /// but pass the same filter.
    fn printable_long(raw: &str) -> String {
        raw.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(400)
            .collect()
    }
}

/// The summary of the entry written for a request whose session token is
/// invalid or expired (no operation runs: the caller is unknown).
pub fn refused_session(method: &str, path: &str) -> String {
    format!("Refused {method} {path} with an invalid or expired session.")
}

fn job_transition(verb: &str, id: &str, title: Option<&str>) -> String {
    match title {
        Some(title) => format!("{verb} job {} ({title})", printable(id)),
        None => format!("{verb} job {}", printable(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_printable_and_bounded() {
        assert_eq!(printable("ig-demo"), "ig-demo");
        assert_eq!(printable("a\u{7}b\nc"), "a?b?c");
        assert_eq!(printable(&"x".repeat(200)).chars().count(), 80);
        assert_eq!(
            Action::AddGroup("ig\u{1b}[31m").failed(),
            "Failed to add HSM protected key group ig?[31m"
        );
    }

    #[test]
    fn success_and_failure_texts_stay_as_audit_readers_know_them() {
        let cases = [
            (
                Action::AddGroup("ig-demo"),
                "Added HSM protected key group ig-demo",
                "Failed to add HSM protected key group ig-demo",
            ),
            (
                Action::UpdateGroup("ig-demo"),
                "Updated HSM protected key group ig-demo",
                "Failed to update HSM protected key group ig-demo",
            ),
            (
                Action::DeleteGroup("ig-demo"),
                "Deleted HSM protected key group ig-demo",
                "Failed to delete HSM protected key group ig-demo",
            ),
            (
                Action::DeleteKey("k1"),
                "Deleted HSM protected key k1",
                "Failed to delete HSM protected key k1",
            ),
            (
                Action::RotateGroup("ig-demo"),
                "Started rotating keys for HSM protected key group ig-demo",
                "Failed to rotate keys for HSM protected key group ig-demo",
            ),
            (
                Action::SynchronizeKey("k1"),
                "Started synchronizing HSM protected key k1",
                "Failed to synchronize HSM protected key k1",
            ),
            (
                Action::RetryJob {
                    id: "j1",
                    title: Some("Rotate HSM protected keys"),
                },
                "Retried job j1 (Rotate HSM protected keys)",
                "Failed to retry job j1",
            ),
            (
                Action::CancelJob {
                    id: "j1",
                    title: Some("Synchronize HSM protected keys"),
                    removed_key: None,
                },
                "Cancelled job j1 (Synchronize HSM protected keys)",
                "Failed to cancel job j1",
            ),
            (
                Action::CancelJob {
                    id: "j1",
                    title: Some("Rotate HSM protected keys"),
                    removed_key: Some("ig-demo v3 (no KMS key)"),
                },
                "Cancelled job j1 (Rotate HSM protected keys); removed its key ig-demo v3 (no KMS key), which never reached KMS",
                "Failed to cancel job j1",
            ),
            (
                Action::AddCredential("aws"),
                "Added cloud credential aws",
                "Failed to add cloud credential aws",
            ),
            (
                Action::DeleteCredential("aws"),
                "Deleted cloud credential aws",
                "Failed to delete cloud credential aws",
            ),
            (
                Action::AddIdentity {
                    name: "Off1",
                    role: "key_officer",
                },
                "Added identity 'Off1' with role key_officer",
                "Failed to add identity 'Off1'",
            ),
            (
                Action::DeleteIdentity("Off1"),
                "Deleted identity 'Off1'",
                "Failed to delete identity 'Off1'",
            ),
            (
                Action::ChangeConfiguration,
                "Changed configuration",
                "Failed to change configuration",
            ),
        ];
        for (action, succeeded, failed) in cases {
            assert_eq!(action.succeeded(), succeeded);
            assert_eq!(action.failed(), failed);
        }
    }

    #[test]
    fn jobs_end_with_the_sentences_audit_readers_know() {
        let rotation = JobRun::Rotation("ig-demo");
        assert_eq!(
            rotation.succeeded(),
            "Successfully rotated keys for HSM protected key group ig-demo."
        );
        assert_eq!(
            rotation.failed(),
            "Failed to rotate keys for HSM protected key group ig-demo."
        );
        let sync = JobRun::Synchronization("k1");
        assert_eq!(
            sync.succeeded(),
            "Successfully synchronized HSM protected key k1."
        );
        assert_eq!(sync.failed(), "Failed to synchronize HSM protected key k1.");
        assert_eq!(
            refused_session("GET", "/api/v1/groups"),
            "Refused GET /api/v1/groups with an invalid or expired session."
        );
    }
}
