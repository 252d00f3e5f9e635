//! Domain objects as the API shows them.

use keyhold_api as api;
use keyhold_core::audit::AuditEntry;
use keyhold_core::clock::{Timestamp, format_timestamp};
use keyhold_core::credential::Credential;
use keyhold_core::group::{KeyGroup, KeySpec};
use keyhold_core::identity::{Identity, Session};
use keyhold_core::key::Key;
use keyhold_core::settings::Settings;

/// Keys in AWS-integrated groups are held by the keystore and never exported in clear.
const STORAGE: &str = "Protected";

fn time(t: &Timestamp) -> String {
    format_timestamp(t)
}

pub fn session(session: &Session, token: Option<String>) -> api::SessionView {
    api::SessionView {
        token,
        identities: session
            .identities
            .iter()
            .map(|i| api::SessionIdentityView {
                name: i.name.to_string(),
                role: i.role.as_str().to_owned(),
            })
            .collect(),
        users: session.users(),
        created_at: time(&session.created_at),
    }
}

pub fn identity(identity: &Identity, now: Timestamp) -> api::IdentityView {
    api::IdentityView {
        name: identity.name.to_string(),
        role: identity.role.as_str().to_owned(),
        must_change_password: identity.must_change_password,
        locked: identity.is_locked(now),
        created_at: time(&identity.created_at),
    }
}

pub fn credential(credential: &Credential) -> api::CredentialView {
    api::CredentialView {
        name: credential.name.to_string(),
        service: credential.service.as_str().to_owned(),
        kind: credential.kind.label().to_owned(),
        access_name: credential.kind.access_name().to_owned(),
        endpoint: credential.endpoint.as_ref().map(ToString::to_string),
        created_at: time(&credential.created_at),
    }
}

pub fn group(group: &KeyGroup) -> api::GroupView {
    api::GroupView {
        name: group.name.to_string(),
        service: group.service.as_str().to_owned(),
        credential: group.credential.to_string(),
        key_type: KeySpec::KEY_TYPE.to_owned(),
        key_length: 256,
        algorithm: KeySpec::ALGORITHM.to_owned(),
        usage: KeySpec::USAGE.to_owned(),
        storage: STORAGE.to_owned(),
        rotate: group.rotate_every.is_some(),
        rotate_every: group.rotate_every.map(|i| i.to_string()),
        next_rotation_at: group.next_rotation_at.as_ref().map(time),
        valid_for: group.valid_for.map(|i| i.to_string()),
        owner: group.info.owner.clone(),
        notes: group.info.notes.clone(),
        alias: group.aws.alias.to_string(),
        description: group.aws.description.to_string(),
        region: group.aws.region.to_string(),
        active_key_id: group.aws.active_key_id.as_ref().map(ToString::to_string),
        policy: group.aws.policy.as_ref().map(ToString::to_string),
        disable_after_rotate: group.aws.disable_after_rotate,
        created_at: time(&group.created_at),
        updated_at: time(&group.updated_at),
    }
}

pub fn key(key: &Key, now: Timestamp) -> api::KeyView {
    api::KeyView {
        name: key.display_name(),
        id: key.id.to_string(),
        group: key.group.to_string(),
        certificate: None,
        version: key.version,
        storage: STORAGE.to_owned(),
        key_type: KeySpec::KEY_TYPE.to_owned(),
        algorithm: KeySpec::ALGORITHM.to_owned(),
        check_digits: key.check_digits.to_string(),
        valid_from: time(&key.valid_from),
        valid_to: key.valid_to.as_ref().map(time),
        state: key.state.as_str().to_owned(),
        expired: key.is_expired(now),
    }
}

pub fn audit_entry(entry: &AuditEntry) -> api::AuditEntryView {
    api::AuditEntryView {
        seq: entry.seq,
        date: entry.time.clone(),
        users: entry.users.clone(),
        summary: entry.summary.clone(),
        has_details: entry.has_details(),
        details: serde_json::from_str(&entry.details).unwrap_or(serde_json::Value::Null),
        archived: entry.archived,
        prev_hash: hex::encode(entry.prev_hash),
        hash: hex::encode(entry.hash),
    }
}

pub fn settings(settings: &Settings) -> api::SettingsView {
    api::SettingsView {
        dual_control: settings.dual_control,
        lockout_threshold: settings.lockout_threshold,
        lockout_minutes: settings.lockout_minutes,
        session_idle_minutes: settings.session_idle_minutes,
        session_max_hours: settings.session_max_hours,
    }
}
