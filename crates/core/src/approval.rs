//! Quorum approvals: an operation asked for by one officer and run once M
//! others have approved it, each from their own session.
//!
//! Rules:
//! - Each class of sensitive operation has a policy: today's dual control
//!   (two identities in one session, the default) or a [`Quorum`] of M
//!   approvals from identities holding a role. Changing the policies is
//!   itself held to the strictest policy in force.
//! - A request keeps the operation's exact parameters and their SHA-256; the
//!   approvers see both. Changed parameters are a new request.
//! - The requester never approves their own request; an identity votes once
//!   (the store's key enforces it under any concurrency); one denial ends
//!   the request; an expired request takes no vote.
//! - The operation runs as the requester and the approvers together (all
//!   named in its audit entry and job), exactly once: its own audited write
//!   marks the request executed in the same transaction, guarded on the
//!   request still being approved, so a second run writes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::InvalidInput;
use crate::identity::Role;
use crate::names::IdentityName;

/// Most approvals a quorum may ask for.
pub const MAX_APPROVALS: u8 = 16;
/// Longest a request may wait for its approvals.
pub const MAX_EXPIRY_HOURS: u32 = 30 * 24;

/// A class of sensitive operation, as the approval policies name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationClass {
    AddGroup,
    DeleteGroup,
    /// A group change that moves material or widens access (credential,
    /// region, alias, active key, policy, disable-after-rotate, rotation
    /// strategy, at-limit choice).
    ChangeGroupCustody,
    DeleteKey,
    /// A synchronization that deletes the key material in KMS.
    DeleteKeyMaterial,
    AddCredential,
    DeleteCredential,
    ChangeConfiguration,
    /// Adding or deleting an identity.
    ManageIdentities,
    /// Force Rotate (single control unless a quorum is set for it).
    RotateGroup,
    /// Changing these policies.
    ChangeApprovalPolicies,
    /// Applying a drift reconcile plan (writes to AWS).
    ReconcileDrift,
    /// Making a backup (it holds every key, under the custodians' shares).
    CreateBackup,
    /// Choosing who holds the shares of backups' keys, and how many open one.
    SetCustodians,
    /// Creating, changing or deleting an external key store, adding or
    /// revoking its SigV4 credentials.
    ManageXksStores,
    /// Creating or deleting an XKS key, or widening what it allows
    /// (enabling it, its usage, its authorization rule).
    ManageXksKeys,
}

impl OperationClass {
    pub const ALL: [Self; 16] = [
        Self::AddGroup,
        Self::DeleteGroup,
        Self::ChangeGroupCustody,
        Self::DeleteKey,
        Self::DeleteKeyMaterial,
        Self::AddCredential,
        Self::DeleteCredential,
        Self::ChangeConfiguration,
        Self::ManageIdentities,
        Self::RotateGroup,
        Self::ChangeApprovalPolicies,
        Self::ReconcileDrift,
        Self::CreateBackup,
        Self::SetCustodians,
        Self::ManageXksStores,
        Self::ManageXksKeys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddGroup => "add_group",
            Self::DeleteGroup => "delete_group",
            Self::ChangeGroupCustody => "change_group_custody",
            Self::DeleteKey => "delete_key",
            Self::DeleteKeyMaterial => "delete_key_material",
            Self::AddCredential => "add_credential",
            Self::DeleteCredential => "delete_credential",
            Self::ChangeConfiguration => "change_configuration",
            Self::ManageIdentities => "manage_identities",
            Self::RotateGroup => "rotate_group",
            Self::ChangeApprovalPolicies => "change_approval_policies",
            Self::ReconcileDrift => "reconcile_drift",
            Self::CreateBackup => "create_backup",
            Self::SetCustodians => "set_custodians",
            Self::ManageXksStores => "manage_xks_stores",
            Self::ManageXksKeys => "manage_xks_keys",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                InvalidInput::new(
                    "operation",
                    format!(
                        "'{}' is not an operation class: use one of {}",
                        crate::action::printable(raw),
                        known.join(", ")
                    ),
                )
            })
    }

    /// What the class covers, for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::AddGroup => "adding a key group",
            Self::DeleteGroup => "deleting a key group",
            Self::ChangeGroupCustody => {
                "changing a key group's credential, region, alias, active key, policy, disable-after-rotate, rotation strategy, what it does at the rotation limit or self-heal"
            }
            Self::DeleteKey => "deleting a key",
            Self::DeleteKeyMaterial => "deleting key material in KMS",
            Self::AddCredential => "adding a cloud credential",
            Self::DeleteCredential => "deleting a cloud credential",
            Self::ChangeConfiguration => "changing the configuration",
            Self::ManageIdentities => "adding or deleting an identity",
            Self::RotateGroup => "Force Rotate",
            Self::ChangeApprovalPolicies => "changing the approval policies",
            Self::ReconcileDrift => "applying a drift reconcile plan",
            Self::CreateBackup => "making a backup",
            Self::SetCustodians => "setting the backup custodians",
            Self::ManageXksStores => {
                "creating, changing or deleting an external key store, or adding or revoking its credentials"
            }
            Self::ManageXksKeys => {
                "creating or deleting an XKS key, or enabling it or widening its usage or authorization rule"
            }
        }
    }
}

/// M approvals from identities holding `role`, within `expires_after_hours`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quorum {
    pub approvals: u8,
    pub role: Role,
    pub expires_after_hours: u32,
}

impl Quorum {
    pub fn new(approvals: u8, role: Role, expires_after_hours: u32) -> Result<Self, InvalidInput> {
        if !(1..=MAX_APPROVALS).contains(&approvals) {
            return Err(InvalidInput::new(
                "approvals",
                format!("approvals must be between 1 and {MAX_APPROVALS}"),
            ));
        }
        if role == Role::Auditor {
            return Err(InvalidInput::new(
                "role",
                "auditors only read: approvers must be administrators or key officers",
            ));
        }
        if !(1..=MAX_EXPIRY_HOURS).contains(&expires_after_hours) {
            return Err(InvalidInput::new(
                "expires_after_hours",
                format!("expires_after_hours must be between 1 and {MAX_EXPIRY_HOURS} (30 days)"),
            ));
        }
        Ok(Self {
            approvals,
            role,
            expires_after_hours,
        })
    }

    /// People who take part: the requester and the approvers.
    fn people(&self) -> u32 {
        u32::from(self.approvals) + 1
    }
}

/// How a class of operation is controlled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Two identities logged in to one session (when dual control is on).
    DualControl,
    Quorum(Quorum),
}

impl Policy {
    /// Orders policies by how much they ask: the people taking part, and
    /// approvals from separate sessions over one shared session.
    fn strength(&self) -> (u32, u8) {
        match self {
            Self::DualControl => (2, 0),
            Self::Quorum(q) => (q.people(), 1),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::DualControl => "dual control: two identities logged in to one session".to_owned(),
            Self::Quorum(q) => format!(
                "{} approval{} from {} identities, within {} hours",
                q.approvals,
                if q.approvals == 1 { "" } else { "s" },
                q.role.as_str(),
                q.expires_after_hours
            ),
        }
    }
}

/// The quorum set for each class; a class without one keeps dual control.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalPolicies(BTreeMap<OperationClass, Quorum>);

impl ApprovalPolicies {
    pub fn new(quorums: BTreeMap<OperationClass, Quorum>) -> Self {
        Self(quorums)
    }

    pub fn quorums(&self) -> &BTreeMap<OperationClass, Quorum> {
        &self.0
    }

    /// The policy `class` is held to. Changing the policies is held to the
    /// strictest of all, its own included.
    pub fn for_class(&self, class: OperationClass) -> Policy {
        if class == OperationClass::ChangeApprovalPolicies {
            return self.strictest();
        }
        self.0
            .get(&class)
            .copied()
            .map_or(Policy::DualControl, Policy::Quorum)
    }

    fn strictest(&self) -> Policy {
        self.0
            .values()
            .copied()
            .map(Policy::Quorum)
            .chain([Policy::DualControl])
            .max_by_key(Policy::strength)
            .unwrap_or(Policy::DualControl)
    }

    /// Each class whose policy differs between `self` and `next`, with both.
    pub fn differences(&self, next: &Self) -> Vec<(OperationClass, Policy, Policy)> {
        OperationClass::ALL
            .into_iter()
            .filter(|c| *c != OperationClass::ChangeApprovalPolicies)
            .chain([OperationClass::ChangeApprovalPolicies])
            .filter_map(|class| {
                let (before, after) = (self.for_class(class), next.for_class(class));
                (before != after).then_some((class, before, after))
            })
            .collect()
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for approvals.
    Pending,
    /// Approved by the quorum; running (or to be resumed).
    Approved,
    Executed,
    /// Approved, but the operation was refused when it ran (the outcome
    /// says why); a new request is needed.
    Failed,
    Denied,
    /// Not approved in time.
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Executed => "executed",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Executed,
            Self::Failed,
            Self::Denied,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One identity's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub identity: IdentityName,
    pub role: Role,
    pub approve: bool,
    pub at: Timestamp,
    /// Why, when denied (printable, bounded).
    pub reason: Option<String>,
}

/// A request for a sensitive operation, and its approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub id: uuid::Uuid,
    pub class: OperationClass,
    /// The operation's exact parameters, as the edge that runs it reads them
    /// back. Never holds a secret in the clear.
    pub operation: serde_json::Value,
    /// SHA-256 (hex) of `operation` in its canonical form.
    pub params_hash: String,
    /// What will happen, in one sentence.
    pub summary: String,
    /// The identities of the session that asked (one, or two under dual
    /// control): none of them may approve it.
    pub requested_by: Vec<IdentityName>,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    /// The quorum as it was when the request was made.
    pub quorum: Quorum,
    /// As stored; see [`Self::status_at`] for one that accounts for expiry.
    pub status: ApprovalStatus,
    pub votes: Vec<Vote>,
    /// When it was executed, failed, denied or expired.
    pub decided_at: Option<Timestamp>,
    /// What running it gave: its audit summary, or a failure's reason.
    pub outcome: Option<String>,
    /// Whether a sealed result waits for the requester to collect it.
    pub has_sealed_result: bool,
}

/// Why a vote is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefusal {
    OwnRequest,
    AlreadyVoted,
    WrongRole { needed: Role },
    NotPending(ApprovalStatus),
}

impl VoteRefusal {
    pub fn message(&self, id: uuid::Uuid) -> String {
        match self {
            Self::OwnRequest => {
                format!("request {id} is your own: another identity must approve it")
            }
            Self::AlreadyVoted => format!("you have already answered request {id}"),
            Self::WrongRole { needed } => format!(
                "request {id} needs approvals from {} identities: log in as one",
                needed.as_str()
            ),
            Self::NotPending(status) => format!(
                "request {id} is {}, not pending: it takes no more answers{}",
                status.as_str(),
                if *status == ApprovalStatus::Expired {
                    "; ask again with a new request"
                } else {
                    ""
                }
            ),
        }
    }
}

impl ApprovalRequest {
    /// A new request, pending and unanswered: its hash is read from its
    /// parameters, its expiry from the quorum's.
    pub fn pending(
        class: OperationClass,
        operation: serde_json::Value,
        summary: String,
        requested_by: Vec<IdentityName>,
        quorum: Quorum,
        now: Timestamp,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            class,
            params_hash: params_hash(&operation),
            operation,
            summary,
            requested_by,
            requested_at: now,
            expires_at: now + chrono::Duration::hours(i64::from(quorum.expires_after_hours)),
            quorum,
            status: ApprovalStatus::Pending,
            votes: Vec::new(),
            decided_at: None,
            outcome: None,
            has_sealed_result: false,
        }
    }

    /// The status as of `now`: a pending request past its expiry is expired.
    pub fn status_at(&self, now: Timestamp) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    pub fn approvals(&self) -> impl Iterator<Item = &Vote> {
        self.votes.iter().filter(|v| v.approve)
    }

    /// Whether `who` (holding `role`) may answer the request now.
    pub fn may_vote(
        &self,
        who: &IdentityName,
        role: Role,
        now: Timestamp,
    ) -> Result<(), VoteRefusal> {
        let status = self.status_at(now);
        if status != ApprovalStatus::Pending {
            return Err(VoteRefusal::NotPending(status));
        }
        if self.requested_by.contains(who) {
            return Err(VoteRefusal::OwnRequest);
        }
        if self.votes.iter().any(|v| &v.identity == who) {
            return Err(VoteRefusal::AlreadyVoted);
        }
        if role != self.quorum.role {
            return Err(VoteRefusal::WrongRole {
                needed: self.quorum.role,
            });
        }
        Ok(())
    }

    /// Approvals still needed.
    pub fn remaining(&self) -> usize {
        usize::from(self.quorum.approvals).saturating_sub(self.approvals().count())
    }
}

/// SHA-256 (hex) of an operation's parameters in canonical form (object keys
/// sorted, no whitespace), so the same parameters always hash alike.
pub fn params_hash(operation: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(canonical(operation).as_bytes()))
}

fn canonical(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// An approved request being run, as the audit record of its change carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub request: uuid::Uuid,
    /// A result only the requester may read, sealed by the keystore (an
    /// added identity's one-time password), kept with the request until
    /// collected.
    pub sealed_result: Option<Vec<u8>>,
}

/// The keystore context a request's sealed result is sealed under.
pub fn result_context(request: uuid::Uuid) -> Vec<u8> {
    format!("keyhold approval result {request}").into_bytes()
}

/// What an approved request lends the session that runs it: the right to run
/// operations of its class, once, sealed by the request's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub request: uuid::Uuid,
    pub class: OperationClass,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quorum(m: u8) -> Quorum {
        Quorum::new(m, Role::Administrator, 24).unwrap()
    }

    fn request(m: u8, now: Timestamp) -> ApprovalRequest {
        ApprovalRequest::pending(
            OperationClass::DeleteGroup,
            serde_json::json!({"kind": "delete_group", "group": "g"}),
            "Delete group g".into(),
            vec![IdentityName::parse("Admin1").unwrap()],
            quorum(m),
            now,
        )
    }

    #[test]
    fn classes_round_trip_through_their_names() {
        for class in OperationClass::ALL {
            assert_eq!(OperationClass::parse(class.as_str()), Ok(class));
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::Value::String(class.as_str().into())
            );
        }
        assert!(OperationClass::parse("drop_tables").is_err());
    }

    #[test]
    fn quorums_refuse_what_cannot_work() {
        assert!(Quorum::new(0, Role::Administrator, 24).is_err());
        assert!(Quorum::new(MAX_APPROVALS + 1, Role::Administrator, 24).is_err());
        assert!(Quorum::new(2, Role::Auditor, 24).is_err());
        assert!(Quorum::new(2, Role::KeyOfficer, 0).is_err());
        assert!(Quorum::new(2, Role::KeyOfficer, MAX_EXPIRY_HOURS + 1).is_err());
        assert!(Quorum::new(2, Role::KeyOfficer, MAX_EXPIRY_HOURS).is_ok());
    }

    #[test]
    fn changing_the_policies_needs_the_strictest_policy_in_force() {
        let none = ApprovalPolicies::default();
        assert_eq!(
            none.for_class(OperationClass::ChangeApprovalPolicies),
            Policy::DualControl
        );
        let one = ApprovalPolicies::new(BTreeMap::from([(OperationClass::DeleteKey, quorum(1))]));
        // One approver from another session asks as many people as dual
        // control, and more separation: it is the stricter.
        assert_eq!(
            one.for_class(OperationClass::ChangeApprovalPolicies),
            Policy::Quorum(quorum(1))
        );
        let mixed = ApprovalPolicies::new(BTreeMap::from([
            (OperationClass::DeleteKey, quorum(3)),
            (OperationClass::AddGroup, quorum(2)),
        ]));
        assert_eq!(
            mixed.for_class(OperationClass::ChangeApprovalPolicies),
            Policy::Quorum(quorum(3))
        );
        assert_eq!(
            mixed.for_class(OperationClass::DeleteGroup),
            Policy::DualControl
        );
    }

    #[test]
    fn differences_name_each_changed_class_once() {
        let before = ApprovalPolicies::default();
        let after = ApprovalPolicies::new(BTreeMap::from([(OperationClass::DeleteKey, quorum(2))]));
        let diff = before.differences(&after);
        let classes: Vec<_> = diff.iter().map(|d| d.0).collect();
        assert_eq!(
            classes,
            [
                OperationClass::DeleteKey,
                OperationClass::ChangeApprovalPolicies
            ]
        );
        assert!(before.differences(&before).is_empty());
    }

    #[test]
    fn votes_follow_the_rules() {
        let now = chrono::DateTime::UNIX_EPOCH;
        let mut r = request(2, now);
        let admin1 = IdentityName::parse("Admin1").unwrap();
        let admin2 = IdentityName::parse("Admin2").unwrap();
        assert_eq!(
            r.may_vote(&admin1, Role::Administrator, now),
            Err(VoteRefusal::OwnRequest)
        );
        assert_eq!(
            r.may_vote(&admin2, Role::KeyOfficer, now),
            Err(VoteRefusal::WrongRole {
                needed: Role::Administrator
            })
        );
        assert_eq!(r.may_vote(&admin2, Role::Administrator, now), Ok(()));
        r.votes.push(Vote {
            identity: admin2.clone(),
            role: Role::Administrator,
            approve: true,
            at: now,
            reason: None,
        });
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            r.may_vote(&admin2, Role::Administrator, now),
            Err(VoteRefusal::AlreadyVoted)
        );
        let later = now + chrono::Duration::hours(24);
        assert_eq!(r.status_at(later), ApprovalStatus::Expired);
        let admin3 = IdentityName::parse("Admin3").unwrap();
        assert_eq!(
            r.may_vote(&admin3, Role::Administrator, later),
            Err(VoteRefusal::NotPending(ApprovalStatus::Expired))
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Executed,
            ApprovalStatus::Failed,
            ApprovalStatus::Denied,
            ApprovalStatus::Expired,
        ] {
            assert_eq!(ApprovalStatus::parse(s.as_str()), Some(s));
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[a-z\"\\\\ ]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_hash_reads_the_parameters_not_their_layout(value in json_value()) {
            // Serialised and read back (keys in another order, other
            // whitespace), the same parameters hash alike, and the
            // canonical text is itself JSON of the same value.
            let text = serde_json::to_string_pretty(&value).unwrap();
            let again: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(params_hash(&value), params_hash(&again));
            let canonical: serde_json::Value = serde_json::from_str(&canonical(&value)).unwrap();
            prop_assert_eq!(canonical, value);
        }
    }

    #[test]
    fn different_parameters_hash_differently() {
        let a = serde_json::json!({"kind": "delete_group", "group": "a"});
        let b = serde_json::json!({"kind": "delete_group", "group": "b"});
        assert_ne!(params_hash(&a), params_hash(&b));
    }
}
