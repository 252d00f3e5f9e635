//! Identities, roles, passwords, sessions and dual control.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::approval::{Grant, OperationClass};
use crate::clock::Timestamp;
use crate::error::{CoreError, InvalidInput};
use crate::names::IdentityName;

/// Shortest password accepted when one is set or changed.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (bounds the hashing cost an attacker can ask for).
pub const MAX_PASSWORD_LEN: usize = 256;
/// A new password must differ from this many of the identity's latest
/// passwords, the current one included: the store keeps the hashes of the
/// `PASSWORD_HISTORY - 1` before it. Each is one Argon2id verification per
/// change (about 15 ms each), so the number stays small.
pub const PASSWORD_HISTORY: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including identities and configuration.
    Administrator,
    /// Cloud credentials, key groups and keys.
    KeyOfficer,
    /// Read-only: lists, jobs and the audit log.
    Auditor,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw {
            "administrator" => Ok(Self::Administrator),
            "key_officer" => Ok(Self::KeyOfficer),
            "auditor" => Ok(Self::Auditor),
            _ => Err(InvalidInput::new(
                "role",
                "role must be one of administrator, key_officer, auditor",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Administrator => "administrator",
            Self::KeyOfficer => "key_officer",
            Self::Auditor => "auditor",
        }
    }
    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Self::Administrator => true,
            Self::KeyOfficer => matches!(
                permission,
                Permission::Read | Permission::ManageKeys | Permission::ManageCredentials
            ),
            Self::Auditor => matches!(permission, Permission::Read),
        }
    }
}

/// What an identity's role must allow for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    ManageKeys,
    ManageCredentials,
    ManageIdentities,
    ManageConfiguration,
}

/// An operation with its permission and whether it needs two identities
/// when dual control is on (the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    pub label: &'static str,
    pub permission: Permission,
    pub dual_control: bool,
    /// The class an approval policy may hold it to, if any.
    pub class: Option<OperationClass>,
}

impl Operation {
    pub const READ: Self = Self::single("reading", Permission::Read);
    /// A credential decides which account receives key material, and where
    /// it is sent (its endpoint): as sensitive as exporting the keys.
    pub const ADD_CREDENTIAL: Self = Self::dual(
        "adding a cloud credential",
        Permission::ManageCredentials,
        OperationClass::AddCredential,
    );
    pub const DELETE_CREDENTIAL: Self = Self::dual(
        "deleting a cloud credential",
        Permission::ManageCredentials,
        OperationClass::DeleteCredential,
    );
    /// A change to a group's harmless fields (description, owner and notes,
    /// rotation interval, validity). Changes that decide where material goes
    /// or who may use it in AWS are [`Operation::CHANGE_GROUP_CUSTODY`]; the
    /// core decides per field ([`crate::group::GroupChange::custody_fields`]).
    pub const UPDATE_GROUP: Self = Self::single("updating a key group", Permission::ManageKeys);
    /// A change to a group's credential, region, alias, active KMS key,
    /// policy or "disable key after rotating".
    pub const CHANGE_GROUP_CUSTODY: Self = Self::dual(
        "changing a key group's credential, region, alias, active key, policy, disable-after-rotate, rotation strategy, what it does at the rotation limit or self-heal",
        Permission::ManageKeys,
        OperationClass::ChangeGroupCustody,
    );
    /// Single control unless an approval policy holds Force Rotate.
    pub const ROTATE_GROUP: Self = Self {
        class: Some(OperationClass::RotateGroup),
        ..Self::single("rotating a key group", Permission::ManageKeys)
    };
    pub const SYNC_KEY: Self = Self::single("synchronizing a key", Permission::ManageKeys);
    /// A drift check reads AWS and records what it finds; it writes to AWS
    /// only through self-heal, which two officers turned on for the group.
    pub const CHECK_DRIFT: Self = Self::single("checking drift", Permission::ManageKeys);
    /// Applying a reconcile plan writes to AWS: enabling, disabling,
    /// cancelling deletions, importing material.
    pub const RECONCILE_DRIFT: Self = Self::dual(
        "applying a drift reconcile plan",
        Permission::ManageKeys,
        OperationClass::ReconcileDrift,
    );
    /// A backup holds every key (under the custodians' shares).
    pub const CREATE_BACKUP: Self = Self::dual(
        "making a backup",
        Permission::ManageConfiguration,
        OperationClass::CreateBackup,
    );
    /// Who can open backups, together.
    pub const SET_CUSTODIANS: Self = Self::dual(
        "setting the backup custodians",
        Permission::ManageConfiguration,
        OperationClass::SetCustodians,
    );
    /// Downloading backups' (encrypted) files and (custodian-encrypted)
    /// shares; their records, like the custodians', any role may read.
    pub const DOWNLOAD_BACKUPS: Self = Self::single(
        "downloading backups and their shares",
        Permission::ManageConfiguration,
    );
    /// Writing audit entries out to a signed archive file.
    pub const ARCHIVE_AUDIT: Self =
        Self::single("archiving the audit log", Permission::ManageConfiguration);
    /// An external key store's SigV4 credentials let AWS KMS use its keys.
    pub const MANAGE_XKS_STORES: Self = Self::dual(
        "managing an external key store or its credentials",
        Permission::ManageCredentials,
        OperationClass::ManageXksStores,
    );
    /// Creating or deleting an XKS key, or giving it more than it had.
    pub const MANAGE_XKS_KEYS: Self = Self::dual(
        "creating, deleting or widening an XKS key",
        Permission::ManageKeys,
        OperationClass::ManageXksKeys,
    );
    /// Disabling an XKS key, narrowing its usage or changing its
    /// description: one key officer may pull the brake alone.
    pub const RESTRICT_XKS_KEY: Self = Self::single(
        "disabling or restricting an XKS key",
        Permission::ManageKeys,
    );
    pub const ADD_GROUP: Self = Self::dual(
        "adding a key group",
        Permission::ManageKeys,
        OperationClass::AddGroup,
    );
    pub const DELETE_GROUP: Self = Self::dual(
        "deleting a key group",
        Permission::ManageKeys,
        OperationClass::DeleteGroup,
    );
    pub const DELETE_KEY: Self = Self::dual(
        "deleting a key",
        Permission::ManageKeys,
        OperationClass::DeleteKey,
    );
    pub const DELETE_KEY_MATERIAL: Self = Self::dual(
        "deleting key material",
        Permission::ManageKeys,
        OperationClass::DeleteKeyMaterial,
    );
    pub const CHANGE_CONFIGURATION: Self = Self::dual(
        "changing the configuration",
        Permission::ManageConfiguration,
        OperationClass::ChangeConfiguration,
    );
    /// Held to the strictest approval policy in force.
    pub const CHANGE_APPROVAL_POLICIES: Self = Self::dual(
        "changing the approval policies",
        Permission::ManageConfiguration,
        OperationClass::ChangeApprovalPolicies,
    );
    pub const MANAGE_IDENTITIES: Self = Self::dual(
        "managing identities",
        Permission::ManageIdentities,
        OperationClass::ManageIdentities,
    );

    const fn single(label: &'static str, permission: Permission) -> Self {
        Self {
            label,
            permission,
            dual_control: false,
            class: None,
        }
    }
    const fn dual(label: &'static str, permission: Permission, class: OperationClass) -> Self {
        Self {
            label,
            permission,
            dual_control: true,
            class: Some(class),
        }
    }
}

/// A person or account that can log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: IdentityName,
    pub role: Role,
    /// Argon2id PHC string; never leaves the store except to be verified.
    pub password_hash: String,
    pub must_change_password: bool,
    pub failed_logins: u32,
    pub locked_until: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("must_change_password", &self.must_change_password)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// Checks a new password against the policy. The message never contains it.
pub fn check_new_password(name: &IdentityName, new: &SecretString) -> Result<(), InvalidInput> {
    let pw = new.expose_secret();
    let len = pw.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(InvalidInput::new(
            "password",
            format!("the new password is too short: use at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(InvalidInput::new(
            "password",
            format!("the new password is too long: use at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    if pw.eq_ignore_ascii_case(name.as_str()) {
        return Err(InvalidInput::new(
            "password",
            "the new password must not be the identity's name",
        ));
    }
    if pw.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "password",
            "the new password contains control characters",
        ));
    }
    check_strength(name, pw)
}

/// Characters of a password the estimator looks at: its cost grows quickly
/// with the length, and past this a password is long enough to judge by its start.
const ESTIMATED_CHARS: usize = 64;

/// Refuses a password an attacker would guess early: common passwords and
/// words, keyboard walks, repeats, sequences, dates, and variants of the
/// identity's name or keyhold's, as estimated by zxcvbn. The estimate must
/// reach score 3 (about 10^8 guesses or more, beyond an online attack's
/// reach and slow against a stolen Argon2id hash). The refusal says why,
/// in the estimator's words, never echoing the password.
fn check_strength(name: &IdentityName, pw: &str) -> Result<(), InvalidInput> {
    let judged: String = pw.chars().take(ESTIMATED_CHARS).collect();
    let context = [name.as_str(), "keyhold", "admin", "administrator"];
    let estimate = zxcvbn::zxcvbn(&judged, &context);
    if estimate.score() >= zxcvbn::Score::Three {
        return Ok(());
    }
    let mut why = String::from("the new password is too easy to guess");
    let feedback = estimate.feedback();
    if let Some(warning) = feedback.and_then(zxcvbn::feedback::Feedback::warning) {
        why.push_str(&format!(" ({})", warning.to_string().trim_end_matches('.')));
    }
    why.push_str(&format!(
        ": fewer than 10^{} guesses would find it, and 10^8 are needed.",
        estimate.guesses_log10().floor().max(0.0) + 1.0
    ));
    for suggestion in feedback.map(|f| f.suggestions()).unwrap_or_default() {
        why.push(' ');
        why.push_str(&suggestion.to_string());
    }
    why.push_str(" A passphrase of four or more unrelated words is strong and easy to remember.");
    Err(InvalidInput::new("password", why))
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's Argon2id baseline (19 MiB, 2 passes): about 10-20 ms on a server core.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hashes a password with Argon2id and a fresh random salt.
pub fn hash_password(password: &SecretString) -> Result<String, CoreError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::getrandom(&mut salt_bytes)
        .map_err(|e| crate::error::KeystoreError::Unavailable(format!("no OS randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| crate::error::KeystoreError::Internal(e.to_string()))?;
    hasher()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            crate::error::KeystoreError::Internal(format!("password hashing failed: {e}")).into()
        })
}

/// Verifies a password against a stored hash in constant time.
pub fn verify_password(password: &SecretString, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Burns the same time as a real verification, so that an unknown name takes as
/// long to refuse as a wrong password (no user enumeration by timing).
pub fn verify_against_dummy(password: &SecretString) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| {
        hash_password(&SecretString::from("keyhold-dummy-password".to_owned())).unwrap_or_default()
    });
    let _ = verify_password(password, stored);
}

/// Generates a one-time password for a new identity: 24 characters from an
/// unambiguous alphabet (about 137 bits).
pub fn generate_password() -> Result<SecretString, CoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = zeroize::Zeroizing::new([0u8; 24]);
    getrandom::getrandom(bytes.as_mut())
        .map_err(|e| crate::error::KeystoreError::Unavailable(format!("no OS randomness: {e}")))?;
    let pw: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    Ok(SecretString::from(pw))
}

/// A login session: a bearer token held by a client, and the identities that
/// have logged in to it (two or more for dual control).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the token, hex. The token itself is never stored.
    pub id: String,
    pub identities: Vec<SessionIdentity>,
    pub created_at: Timestamp,
    pub last_seen: Timestamp,
    /// Set only on the session keyhold makes to run an approved request:
    /// never stored, never from a token.
    pub grant: Option<Grant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionIdentity {
    pub name: IdentityName,
    pub role: Role,
}

impl Session {
    /// The users column of audit entries: `Admin1,Admin2`.
    pub fn users(&self) -> String {
        self.identities
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the session may run `op`: some identity must hold the permission,
    /// and with dual control on, two distinct identities must hold it.
    pub fn authorize(&self, op: Operation, dual_control_on: bool) -> Result<(), CoreError> {
        // An approved request's session runs its own operation and reads;
        // its approvals stand in for dual control, for that class alone.
        let granted = match self.grant {
            Some(grant) if op.class == Some(grant.class) => true,
            Some(_) if op.permission != Permission::Read => {
                return Err(CoreError::Forbidden(format!(
                    "an approved request runs only the operation it was approved for, not {}",
                    op.label
                )));
            }
            _ => false,
        };
        let allowed = self
            .identities
            .iter()
            .filter(|i| i.role.allows(op.permission))
            .count();
        if allowed == 0 {
            return Err(CoreError::Forbidden(format!(
                "{} is not allowed for {}: log in with an identity whose role allows it",
                op.label,
                self.users()
            )));
        }
        if op.dual_control && dual_control_on && !granted && allowed < 2 {
            return Err(CoreError::DualControlRequired {
                operation: op.label.to_owned(),
            });
        }
        Ok(())
    }
}

/// Hashes a bearer token into the session id kept in the store.
pub fn session_id_for_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random bearer token (256 bits, URL-safe base64).
pub fn generate_token() -> Result<SecretString, CoreError> {
    use base64::Engine;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(bytes.as_mut())
        .map_err(|e| crate::error::KeystoreError::Unavailable(format!("no OS randomness: {e}")))?;
    Ok(SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ids: &[(&str, Role)]) -> Session {
        Session {
            id: "x".into(),
            identities: ids
                .iter()
                .map(|(n, r)| SessionIdentity {
                    name: IdentityName::parse(n).unwrap(),
                    role: *r,
                })
                .collect(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            last_seen: chrono::DateTime::UNIX_EPOCH,
            grant: None,
        }
    }

    #[test]
    fn dual_control_needs_two_permitted_identities() {
        let one = session(&[("Admin1", Role::Administrator)]);
        assert!(matches!(
            one.authorize(Operation::ADD_GROUP, true),
            Err(CoreError::DualControlRequired { .. })
        ));
        assert!(one.authorize(Operation::ADD_GROUP, false).is_ok());
        assert!(one.authorize(Operation::UPDATE_GROUP, true).is_ok());
        for custody in [
            Operation::ADD_CREDENTIAL,
            Operation::DELETE_CREDENTIAL,
            Operation::CHANGE_GROUP_CUSTODY,
        ] {
            assert!(matches!(
                one.authorize(custody, true),
                Err(CoreError::DualControlRequired { .. })
            ));
        }
        let officers = session(&[("Off1", Role::KeyOfficer), ("Off2", Role::KeyOfficer)]);
        assert!(officers.authorize(Operation::ADD_CREDENTIAL, true).is_ok());
        assert!(
            officers
                .authorize(Operation::CHANGE_GROUP_CUSTODY, true)
                .is_ok()
        );
        let with_auditor = session(&[("Admin1", Role::Administrator), ("Aud", Role::Auditor)]);
        assert!(with_auditor.authorize(Operation::ADD_GROUP, true).is_err());
        let two = session(&[("Admin1", Role::Administrator), ("Off", Role::KeyOfficer)]);
        assert!(two.authorize(Operation::ADD_GROUP, true).is_ok());
        assert!(two.authorize(Operation::MANAGE_IDENTITIES, true).is_err());
        assert_eq!(two.users(), "Admin1,Off");
    }

    #[test]
    fn auditor_reads_only() {
        let aud = session(&[("Aud", Role::Auditor)]);
        assert!(aud.authorize(Operation::READ, true).is_ok());
        assert!(matches!(
            aud.authorize(Operation::UPDATE_GROUP, true),
            Err(CoreError::Forbidden(_))
        ));
    }

    #[test]
    fn password_hash_round_trip() {
        let pw = SecretString::from("correct horse battery".to_owned());
        let hash = hash_password(&pw).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&pw, &hash));
        assert!(!verify_password(
            &SecretString::from("wrong".to_owned()),
            &hash
        ));
        assert!(!verify_password(&pw, "garbage"));
    }

    #[test]
    fn password_policy() {
        let name = IdentityName::parse("Admin1").unwrap();
        assert!(check_new_password(&name, &SecretString::from("short".to_owned())).is_err());
        assert!(
            check_new_password(&name, &SecretString::from("a long enough one".to_owned())).is_ok()
        );
        let generated = generate_password().unwrap();
        assert!(check_new_password(&name, &generated).is_ok());
    }

    #[test]
    fn common_and_predictable_passwords_are_refused_saying_why() {
        let name = IdentityName::parse("Admin1").unwrap();
        for weak in [
            "password1234",
            "Password123!",
            "qwertyuiop123",
            "aaaaaaaaaaaaaaaa",
            "123456789012",
            "abcabcabcabcabc",
            "Admin1Admin1Admin1",
            "administrator1",
            "iloveyou2024!",
            "1qaz2wsx3edc",
        ] {
            let Err(err) = check_new_password(&name, &SecretString::from(weak.to_owned())) else {
                panic!("{weak} was accepted");
            };
            assert_eq!(err.field, "password");
            assert!(
                err.message.contains("too easy to guess"),
                "{weak}: {}",
                err.message
            );
            assert!(err.message.contains("10^"), "{}", err.message);
            assert!(!err.message.contains(weak), "the refusal echoes {weak}");
        }
        // What the tests and the walkthrough use, and passphrases generally.
        for strong in [
            "Admin1-correct-horse",
            "Admin2-battery-staple",
            "auditor-password-1",
            "tulip marble quietly orbit",
            "Vx7#qL9!mR2$wK4@",
        ] {
            let who = if strong.starts_with("Admin2") {
                "Admin2"
            } else {
                "Admin1"
            };
            let who = IdentityName::parse(who).unwrap();
            assert!(
                check_new_password(&who, &SecretString::from(strong.to_owned())).is_ok(),
                "{strong}"
            );
        }
    }

    #[test]
    fn a_long_password_is_judged_quickly() {
        let name = IdentityName::parse("Admin1").unwrap();
        let long = "correct horse battery staple ".repeat(8);
        let started = std::time::Instant::now();
        let _ = check_new_password(
            &name,
            &SecretString::from(long[..MAX_PASSWORD_LEN.min(long.len())].to_owned()),
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
