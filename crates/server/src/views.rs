//! Domain objects as the API shows them (the web UI draws the same views).

use keyhold_api as api;
use keyhold_core::audit::{AuditEntry, AuditPublicKey, VerifyReport};
use keyhold_core::backup::{AuditArchive, BackupRecord, CustodianSet};
use keyhold_core::clock::{Timestamp, format_timestamp};
use keyhold_core::cluster::NodeRecord;
use keyhold_core::credential::Credential;
use keyhold_core::drift::{DriftCheck, Finding, KeyFindings, Plan, PlannedRepair, Repair};
use keyhold_core::group::{KeyGroup, KeySpec};
use keyhold_core::identity::{Identity, Session};
use keyhold_core::job::{Job, JobMessage};
use keyhold_core::key::{Key, KeyListing};
use keyhold_core::service::{
    ChecksStarted, DriftOverview, GroupPlan, InPlaceRotations, RotationState,
};
use keyhold_core::settings::Settings;
use keyhold_core::xks::{
    MtlsRule, Pattern, XksAccessKeyId, XksCredential, XksKey, XksSecret, XksStore,
};

use crate::rotator::RotatorStatus;

/// Keys in AWS-integrated groups are held by the keystore and never exported in clear.
const STORAGE: &str = "Protected";

pub fn time(t: &Timestamp) -> String {
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
        role_arn: credential.kind.role_arn().map(ToString::to_string),
        endpoint: credential.endpoint.as_ref().map(ToString::to_string),
        created_at: time(&credential.created_at),
    }
}

/// The group with where its rotation stands and its drift badge: `drift`
/// is the group's last drift check, whose count of open findings stays
/// true until the next check (only a check opens or clears findings).
pub fn group(
    group: &KeyGroup,
    rotation: &RotationState,
    drift: Option<&DriftCheck>,
) -> api::GroupView {
    let last = rotation.last.as_ref();
    api::GroupView {
        self_heal: group.aws.self_heal,
        drift_open: drift.map_or(0, |c| c.open),
        drift_checked_at: drift.map(|c| time(&c.checked_at)),
        last_rotation_job: last.map(|j| j.id.to_string()),
        last_rotation_status: last.map(|j| j.status.as_str().to_owned()),
        last_rotation_error: last.and_then(|j| j.error.clone()),
        rotation_retry_at: rotation.retry_at.as_ref().map(time),
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
        rotation_strategy: group.aws.rotation.as_str().to_owned(),
        at_rotation_limit: group.aws.at_rotation_limit.as_str().to_owned(),
        in_place_rotations: rotation
            .in_place
            .map(|count| in_place_rotations(group, count)),
        created_at: time(&group.created_at),
        updated_at: time(&group.updated_at),
    }
}

fn in_place_rotations(group: &KeyGroup, count: InPlaceRotations) -> api::InPlaceRotationsView {
    let warning = count.running_low().then(|| {
        format!(
            "{} of {} on-demand rotations of KMS key {} left: then {}",
            count.left(),
            count.limit,
            group
                .aws
                .active_key_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            group.aws.at_rotation_limit.what_follows()
        )
    });
    api::InPlaceRotationsView {
        used: count.used,
        limit: count.limit,
        left: count.left(),
        warning,
    }
}

/// The key with its drift badge: of `open` (open findings, of its group or
/// more), those that concern it.
pub fn key_with_drift(listing: &KeyListing, now: Timestamp, open: &[Finding]) -> api::KeyView {
    let key = &listing.key;
    api::KeyView {
        drift_open: drift_of_key(key, open),
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
        material: listing.material.as_str().to_owned(),
        state_note: listing.note.clone(),
        kms_key_id: key.kms_key_id.as_ref().map(ToString::to_string),
        kms_material_id: key.kms_material_id.as_ref().map(ToString::to_string),
        material_state: key.material_state.as_str().to_owned(),
    }
}

/// How many of the open findings concern the key.
pub fn drift_of_key(key: &Key, open: &[Finding]) -> u32 {
    // The usual case, once per key of a page: nothing to match against.
    if open.is_empty() {
        return 0;
    }
    let concerned = KeyFindings::of(key);
    let count = open
        .iter()
        .filter(|f| f.is_open() && concerned.concern(f))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

pub fn drift_repair(repair: &Repair) -> api::DriftRepairView {
    api::DriftRepairView {
        action: repair.as_str().to_owned(),
        description: repair.describe(),
        kms_key_id: repair.kms_key_id().to_string(),
        safe: repair.is_safe(),
    }
}

pub fn drift_finding(finding: &Finding) -> api::DriftFindingView {
    api::DriftFindingView {
        id: finding.id.to_string(),
        group: finding.group.to_string(),
        kind: finding.kind.as_str().to_owned(),
        title: finding.kind.title().to_owned(),
        subject: finding.subject.clone(),
        key_id: finding.key_id.map(|k| k.to_string()),
        kms_key_id: finding.kms_key_id.as_ref().map(ToString::to_string),
        detail: finding.detail.clone(),
        repair: finding.repair.as_ref().map(drift_repair),
        first_seen: time(&finding.first_seen),
        last_seen: time(&finding.last_seen),
        cleared_at: finding.cleared_at.as_ref().map(time),
    }
}

fn drift_planned(planned: &PlannedRepair) -> api::DriftPlannedView {
    api::DriftPlannedView {
        repair: drift_repair(&planned.repair),
        findings: planned.findings.iter().map(ToString::to_string).collect(),
    }
}

pub fn drift_plan(plan: &GroupPlan) -> api::DriftPlanView {
    let Plan {
        actions,
        unresolved,
    } = &plan.plan;
    api::DriftPlanView {
        group: plan.group.to_string(),
        digest: plan.digest.clone(),
        actions: actions.iter().map(drift_planned).collect(),
        unresolved: unresolved.iter().map(drift_finding).collect(),
    }
}

pub fn drift_overview(overview: &DriftOverview) -> api::DriftOverviewView {
    api::DriftOverviewView {
        groups: overview
            .groups
            .iter()
            .map(|g| api::GroupDriftView {
                group: g.group.to_string(),
                checked_at: g.last_check.as_ref().map(|c| time(&c.checked_at)),
                check_job: g.last_check.as_ref().map(|c| c.job_id.to_string()),
                open: g.open,
                self_heal: g.self_heal,
            })
            .collect(),
        check_hours: overview.check_hours,
        expiry_days: overview.expiry_days,
    }
}

pub fn drift_checks_started(outcome: &ChecksStarted) -> api::DriftChecksStartedView {
    api::DriftChecksStartedView {
        started: outcome.started.iter().map(|j| job(j, None)).collect(),
        busy: outcome
            .busy
            .iter()
            .map(|(group, reason)| api::DriftBusyView {
                group: group.to_string(),
                reason: reason.clone(),
            })
            .collect(),
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

pub fn audit_verify(report: VerifyReport) -> api::AuditVerifyView {
    api::AuditVerifyView {
        ok: report.ok,
        entries_checked: report.entries_checked,
        first_bad_seq: report.first_bad_seq,
        reason: report.reason,
        checkpoint_seq: report.checkpoint.as_ref().map(|c| c.seq),
        checkpoint_time: report.checkpoint.map(|c| c.time),
        archives: None,
    }
}

/// The live log's verification and the archives', as one answer: not ok
/// when either found a problem.
pub fn audit_verify_with_archives(
    report: VerifyReport,
    archives: &crate::backup::archive::ArchivesChecked,
) -> api::AuditVerifyView {
    let mut view = audit_verify(report);
    if let Some(problem) = &archives.problem {
        view.ok = false;
        view.reason.get_or_insert_with(|| problem.clone());
    }
    view.archives = Some(api::ArchivesVerifiedView {
        archives: archives.archives,
        entries: archives.entries,
        problem: archives.problem.clone(),
    });
    view
}

pub fn audit_stream(status: &crate::audit_stream::StreamStatus) -> api::AuditStreamView {
    api::AuditStreamView {
        kind: status.kind.to_owned(),
        destination: status.destination.clone(),
        state: status.state.as_str().to_owned(),
        cursor: status.cursor,
        lag: status.lag,
        last_delivered_at: status.last_delivered_at.map(|t| time(&t)),
        last_error: status.last_error.clone(),
        failures: status.failures,
    }
}

pub fn audit_public_key(key: &AuditPublicKey) -> api::AuditPublicKeyView {
    api::AuditPublicKeyView {
        algorithm: "ECDSA P-256 SHA-256".into(),
        fingerprint: key.fingerprint_hex(),
        pem: key.to_pem(),
    }
}

pub fn settings(
    settings: &Settings,
    cluster: api::ClusterView,
    last_backup: Option<&BackupRecord>,
) -> api::SettingsView {
    api::SettingsView {
        dual_control: settings.dual_control,
        lockout_threshold: settings.lockout_threshold,
        lockout_minutes: settings.lockout_minutes,
        session_idle_minutes: settings.session_idle_minutes,
        session_max_hours: settings.session_max_hours,
        designated_rotator: settings.designated_rotator.to_string(),
        on_demand_rotation_limit: settings.on_demand_rotation_limit,
        drift_check_hours: settings.drift_check_hours,
        drift_expiry_days: settings.drift_expiry_days,
        backup_every_hours: settings.backup_every_hours,
        backup_keep: settings.backup_keep,
        audit_archive_after_days: settings.audit_archive_after_days,
        last_backup: last_backup.map(backup),
        cluster,
    }
}

pub fn backup(record: &BackupRecord) -> api::BackupView {
    api::BackupView {
        id: record.id.to_string(),
        trigger: record.trigger.as_str().to_owned(),
        initiated_by: record.initiated_by.clone(),
        status: record.status.as_str().to_owned(),
        started_at: time(&record.started_at),
        finished_at: record.finished_at.as_ref().map(time),
        file: record.file.clone(),
        size: record.size,
        sha256: record.sha256.clone(),
        keys: record.keys,
        threshold: record.threshold,
        custodians: record.custodians.clone(),
        error: record.error.clone(),
        node: record.node.clone(),
    }
}

/// The newest backup's status and the newest success, from backups newest first.
pub fn backup_health(backups: &[BackupRecord]) -> Option<api::BackupHealthView> {
    let last = backups.first()?;
    Some(api::BackupHealthView {
        last_status: last.status.as_str().to_owned(),
        last_started_at: time(&last.started_at),
        last_success_at: backups
            .iter()
            .find(|b| b.status == keyhold_core::backup::BackupStatus::Succeeded)
            .and_then(|b| b.finished_at.as_ref())
            .map(time),
    })
}

pub fn backup_shares(record: &BackupRecord) -> api::BackupSharesView {
    api::BackupSharesView {
        backup: record.id.to_string(),
        threshold: record.threshold,
        shares: record
            .custodians
            .iter()
            .zip(&record.shares)
            .map(|(custodian, text)| api::ShareView {
                custodian: custodian.clone(),
                text: text.clone(),
            })
            .collect(),
    }
}

pub fn custodians(set: Option<&CustodianSet>) -> api::CustodiansView {
    api::CustodiansView {
        threshold: set.map_or(0, |s| s.threshold),
        custodians: set
            .map(|s| {
                s.custodians
                    .iter()
                    .map(|c| api::CustodianView {
                        name: c.name.to_string(),
                        public_key: c.public_key.clone(),
                        passphrase: c.kdf.is_some(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub fn audit_archive(archive: &AuditArchive) -> api::AuditArchiveView {
    api::AuditArchiveView {
        id: archive.id.to_string(),
        file: archive.file.clone(),
        first_seq: archive.first_seq,
        last_seq: archive.last_seq,
        created_at: time(&archive.created_at),
        sha256: archive.sha256.clone(),
    }
}

pub fn cluster(status: &RotatorStatus, nodes: &[NodeRecord], now: Timestamp) -> api::ClusterView {
    api::ClusterView {
        node: status.node.to_string(),
        role: status.role.as_str().to_owned(),
        designated_rotator: status.designated.to_string(),
        lease_holder: status.lease.as_ref().map(|l| l.holder.to_string()),
        lease_token: status.lease.as_ref().map(|l| l.token),
        lease_expires_at: status.lease.as_ref().map(|l| time(&l.expires_at)),
        note: status.note.clone(),
        error: status.error.clone(),
        last_schedule_pass: status.last_pass.as_ref().map(|pass| {
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            api::SchedulePassView {
                at: time(&pass.at),
                duration_ms: u64::try_from(pass.took.as_millis()).unwrap_or(u64::MAX),
                started: count(pass.started),
                deferred: count(pass.deferred),
                retried: count(pass.retried),
            }
        }),
        nodes: nodes
            .iter()
            .map(|n| api::NodeView {
                id: n.id.to_string(),
                role: n.role.as_str().to_owned(),
                started_at: time(&n.started_at),
                last_seen: time(&n.last_seen),
                alive: n.is_alive(now),
            })
            .collect(),
    }
}

/// A job as the Jobs page lists it; with `messages` when shown on its own.
pub fn job(job: &Job, messages: Option<&[JobMessage]>) -> api::JobView {
    let (done, total) = job.progress.fraction();
    // Step counts are a handful (at most eight steps), so they fit.
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    api::JobView {
        id: job.id.to_string(),
        kind: job.kind.label().to_owned(),
        title: job.kind.title().to_owned(),
        summary: job.summary(),
        target: job.kind.target(),
        group: job.kind.group().to_string(),
        status: job.status.as_str().to_owned(),
        users: job.initiator.users().to_owned(),
        steps_done: count(done),
        steps_total: count(total),
        // The step running or next to run; for a failed job the one that
        // failed (a retry resumes there). The stable name, not the prose:
        // the prose is in the messages.
        current_step: job.progress.next_step().map(|s| s.as_str().to_owned()),
        created_at: time(&job.created_at),
        started_at: job.started_at.as_ref().map(time),
        finished_at: job.finished_at.as_ref().map(time),
        error: job.error.clone(),
        attempts: job.attempts,
        kms_key_id: job.progress.kms_key_id.as_ref().map(ToString::to_string),
        wrapping_algorithm: job.progress.wrapping.map(|w| w.aws_name().to_owned()),
        messages: messages.map(|all| {
            all.iter()
                .map(|m| api::JobMessageView {
                    time: time(&m.time),
                    text: m.text.clone(),
                })
                .collect()
        }),
    }
}

/// An external key store with its credentials (access key ids only, never
/// secrets), oldest first, and how many keys it holds. `credentials` may
/// hold other stores' too: only this store's are shown.
pub fn xks_store(
    store: &XksStore,
    credentials: &[XksCredential],
    key_count: usize,
) -> api::XksStoreView {
    let mut own: Vec<&XksCredential> = credentials
        .iter()
        .filter(|c| c.store_id == store.id)
        .collect();
    own.sort_by_key(|c| c.created_at);
    api::XksStoreView {
        name: store.name.to_string(),
        path_prefix: store.path_prefix.to_string(),
        uri_path: store.path_prefix.uri_path(),
        quota_per_second: store.quota_per_second,
        mtls: store.mtls.as_ref().map(xks_mtls),
        credentials: own
            .into_iter()
            .map(|c| api::XksCredentialView {
                access_key_id: c.access_key_id.to_string(),
                created_at: time(&c.created_at),
            })
            .collect(),
        key_count: u32::try_from(key_count).unwrap_or(u32::MAX),
        created_at: time(&store.created_at),
        updated_at: time(&store.updated_at),
    }
}

/// A mutual-TLS rule with each CA certificate's fingerprint, which people
/// compare more easily than PEM text. The PEM was checked when it was set.
fn xks_mtls(rule: &MtlsRule) -> api::XksMtlsView {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    api::XksMtlsView {
        subject: rule.subject.clone(),
        ca_sha256: CertificateDer::pem_slice_iter(rule.ca_pem.as_bytes())
            .filter_map(Result::ok)
            .map(|der| hex::encode(sha2::Sha256::digest(der.as_ref())))
            .collect(),
        ca_pem: rule.ca_pem.clone(),
    }
}

/// A credential just issued: its secret, shown this once, and the file the
/// AWS KMS console takes (the fields of `keyhold_core::xks::kms_console_file`).
pub fn xks_issued(
    store: api::XksStoreView,
    access_key_id: &XksAccessKeyId,
    secret: &XksSecret,
) -> api::IssuedXksCredentialView {
    api::IssuedXksCredentialView {
        kms_console_file: api::KmsConsoleFile {
            xks_proxy_uri_path: store.uri_path.clone(),
            xks_proxy_authentication_credential: api::KmsConsoleCredential {
                access_key_id: access_key_id.to_string(),
                raw_secret_access_key: secret.expose().to_owned(),
            },
        },
        store,
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret.expose().to_owned(),
    }
}

/// An XKS key of `store`, with the values AWS KMS needs for it.
pub fn xks_key(key: &XksKey, store: &XksStore) -> api::XksKeyView {
    let id = key.id.hyphenated().to_string();
    let patterns = |list: &[Pattern]| list.iter().map(ToString::to_string).collect();
    api::XksKeyView {
        store: store.name.to_string(),
        description: key.description.clone(),
        usage: key.usage.as_str().to_owned(),
        enabled: key.enabled,
        rule: api::XksRuleView {
            principals: patterns(&key.rule.principals),
            kms_key_arns: patterns(&key.rule.kms_key_arns),
            kms_operations: patterns(&key.rule.kms_operations),
            source_vpcs: patterns(&key.rule.source_vpcs),
        },
        check_digits: key.check_digits.to_string(),
        created_at: time(&key.created_at),
        updated_at: time(&key.updated_at),
        aws: api::XksKeyAwsView {
            xks_key_id: id.clone(),
            xks_proxy_uri_path: store.path_prefix.uri_path(),
            // KMS keys in an external key store are symmetric and encrypt
            // and decrypt: the only spec and usage CreateKey accepts there.
            create_key_command: format!(
                "aws kms create-key --origin EXTERNAL_KEY_STORE --custom-key-store-id <custom-key-store-id> --xks-key-id {id} --key-spec SYMMETRIC_DEFAULT --key-usage ENCRYPT_DECRYPT"
            ),
        },
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::cloud::WrappingAlgorithm;
    use keyhold_core::cloud::aws::KmsKeyId;
    use keyhold_core::drift::DriftKind;
    use keyhold_core::job::{Initiator, JobKind, JobProgress, JobStatus, Step, SyncOptions};
    use keyhold_core::names::GroupName;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn rotation() -> Job {
        let mut progress = JobProgress::new(Step::ROTATE.to_vec());
        progress.done = vec![Step::GenerateKey, Step::CreateKmsKey];
        progress.kms_key_id =
            Some(KmsKeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap());
        progress.wrapping = Some(WrappingAlgorithm::RsaesOaepSha256);
        Job {
            id: uuid::Uuid::new_v4(),
            kind: JobKind::Rotate {
                group: GroupName::parse("ig-demo").unwrap(),
            },
            status: JobStatus::Running,
            initiator: Initiator::Officers("Admin1, Admin2".into()),
            created_at: at(0),
            started_at: Some(at(1)),
            finished_at: None,
            progress,
            error: None,
            attempts: 1,
        }
    }

    #[test]
    fn a_running_rotation_shows_its_progress() {
        let job = rotation();
        let view = super::job(&job, None);
        assert_eq!(view.id, job.id.to_string());
        assert_eq!(
            (view.kind.as_str(), view.title.as_str()),
            ("rotate", "Rotate HSM protected keys")
        );
        assert_eq!(view.summary, "new key for key group ig-demo");
        assert_eq!(
            (view.target.as_str(), view.group.as_str()),
            ("ig-demo", "ig-demo")
        );
        assert_eq!(view.status, "running");
        assert_eq!((view.steps_done, view.steps_total), (2, 6));
        assert_eq!(view.current_step.as_deref(), Some("import_material"));
        assert_eq!(
            view.kms_key_id.as_deref(),
            Some("1234abcd-12ab-34cd-56ef-1234567890ab")
        );
        assert_eq!(
            view.wrapping_algorithm.as_deref(),
            Some("RSAES_OAEP_SHA_256")
        );
        assert_eq!(view.created_at, format_timestamp(&at(0)));
        assert_eq!(view.started_at, Some(format_timestamp(&at(1))));
        assert_eq!(view.finished_at, None);
        assert!(view.messages.is_none());
        // A list entry has no `messages` key at all.
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("messages").is_none(), "{json}");
    }

    #[test]
    fn a_finished_synchronization_shows_its_key_and_messages() {
        let options = SyncOptions {
            update_policy: true,
            import_material: false,
            delete_material: true,
        };
        let mut job = rotation();
        job.kind = JobKind::Synchronize {
            key_id: uuid::Uuid::new_v4(),
            key_name: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            group: GroupName::parse("ig-demo").unwrap(),
            options,
        };
        job.progress = JobProgress::new(Step::synchronize(options));
        job.progress.done = Step::synchronize(options);
        job.status = JobStatus::Succeeded;
        job.finished_at = Some(at(9));
        let messages = vec![
            JobMessage {
                job_id: job.id,
                time: at(2),
                text: "Started (attempt 1)".into(),
            },
            JobMessage {
                job_id: job.id,
                time: at(3),
                text: "Step 1 of 2: deleted".into(),
            },
        ];
        let view = super::job(&job, Some(&messages));
        assert_eq!(
            (view.kind.as_str(), view.title.as_str()),
            ("synchronize", "Synchronize HSM protected keys")
        );
        assert_eq!(view.summary, "update policy, delete key material");
        assert_eq!(view.target, "1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_eq!(view.group, "ig-demo");
        assert_eq!(
            (view.steps_done, view.steps_total, view.current_step),
            (2, 2, None)
        );
        assert_eq!(view.finished_at, Some(format_timestamp(&at(9))));
        let shown = view.messages.unwrap();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].text, "Started (attempt 1)");
        assert_eq!(shown[1].time, format_timestamp(&at(3)));
    }

    const KMS: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
    const OTHER_KMS: &str = "9999abcd-12ab-34cd-56ef-1234567890ab";

    fn finding(kind: DriftKind, repair: Option<Repair>) -> Finding {
        Finding {
            id: uuid::Uuid::new_v4(),
            group: GroupName::parse("ig-demo").unwrap(),
            kind,
            subject: KMS.into(),
            key_id: None,
            kms_key_id: Some(KmsKeyId::parse(KMS).unwrap()),
            detail: "The key policy differs".into(),
            repair,
            first_seen: at(0),
            last_seen: at(60),
            cleared_at: None,
        }
    }

    fn key_in(kms: Option<&str>) -> Key {
        Key {
            id: uuid::Uuid::new_v4(),
            group: GroupName::parse("ig-demo").unwrap(),
            version: 1,
            kms_key_id: kms.map(|k| KmsKeyId::parse(k).unwrap()),
            check_digits: keyhold_core::key::CheckDigits::parse("3F2A").unwrap(),
            valid_from: at(0),
            valid_to: None,
            state: keyhold_core::key::KeyState::Enabled,
            kms_material_id: None,
            material_state: keyhold_core::key::MaterialState::Current,
            rotated_in: false,
            keystore_handle: Vec::new(),
            created_at: at(0),
        }
    }

    #[test]
    fn a_finding_shows_its_kind_repair_and_times() {
        let kms = KmsKeyId::parse(KMS).unwrap();
        let open = finding(
            DriftKind::PolicyDiffers,
            Some(Repair::PutPolicy {
                kms_key_id: kms.clone(),
            }),
        );
        let view = drift_finding(&open);
        assert_eq!(view.id, open.id.to_string());
        assert_eq!(
            (view.kind.as_str(), view.title.as_str()),
            ("policy_differs", "key policy differs")
        );
        assert_eq!(view.kms_key_id.as_deref(), Some(KMS));
        assert_eq!(view.key_id, None);
        let repair = view.repair.unwrap();
        assert_eq!(repair.action, "put_policy");
        assert_eq!(repair.kms_key_id, KMS);
        assert!(repair.safe);
        assert!(repair.description.contains(KMS), "{}", repair.description);
        assert_eq!(view.first_seen, format_timestamp(&at(0)));
        assert_eq!(view.last_seen, format_timestamp(&at(60)));
        assert_eq!(view.cleared_at, None);

        let cleared = Finding {
            cleared_at: Some(at(120)),
            repair: None,
            ..finding(DriftKind::UnknownKey, None)
        };
        let view = drift_finding(&cleared);
        assert!(view.repair.is_none());
        assert_eq!(view.cleared_at, Some(format_timestamp(&at(120))));
        let unsafe_repair = drift_repair(&Repair::EnableKey { kms_key_id: kms });
        assert!(!unsafe_repair.safe);
    }

    #[test]
    fn a_plan_lists_its_repairs_with_their_findings_and_what_is_left() {
        let kms = KmsKeyId::parse(KMS).unwrap();
        let policy = finding(
            DriftKind::PolicyDiffers,
            Some(Repair::PutPolicy {
                kms_key_id: kms.clone(),
            }),
        );
        let unknown = finding(DriftKind::UnknownKey, None);
        let plan = Plan::of(&[policy.clone(), unknown.clone()], false);
        let group_plan = GroupPlan {
            group: GroupName::parse("ig-demo").unwrap(),
            digest: plan.digest(),
            plan,
        };
        let view = drift_plan(&group_plan);
        assert_eq!(view.group, "ig-demo");
        assert_eq!(view.digest.len(), 64);
        assert_eq!(view.actions.len(), 1);
        assert_eq!(view.actions[0].repair.action, "put_policy");
        assert_eq!(view.actions[0].findings, vec![policy.id.to_string()]);
        assert_eq!(view.unresolved.len(), 1);
        assert_eq!(view.unresolved[0].id, unknown.id.to_string());
    }

    #[test]
    fn a_key_counts_its_own_findings_and_its_kms_keys() {
        let key = key_in(Some(KMS));
        let mine = Finding {
            key_id: Some(key.id),
            kms_key_id: None,
            ..finding(DriftKind::MaterialDeleted, None)
        };
        let of_kms_key = finding(DriftKind::PolicyDiffers, None);
        let elsewhere = Finding {
            kms_key_id: Some(KmsKeyId::parse(OTHER_KMS).unwrap()),
            ..finding(DriftKind::UnknownKey, None)
        };
        let cleared = Finding {
            cleared_at: Some(at(9)),
            ..finding(DriftKind::TagsMissing, None)
        };
        let open = [mine, of_kms_key, elsewhere, cleared];
        assert_eq!(drift_of_key(&key, &open), 2);
        // A key AWS does not know yet shares no KMS key with anything.
        let local = key_in(None);
        let no_kms = Finding {
            kms_key_id: None,
            ..finding(DriftKind::AliasMissing, None)
        };
        assert_eq!(drift_of_key(&local, &[no_kms]), 0);
    }

    #[test]
    fn drift_jobs_show_their_kind_and_group() {
        let group = GroupName::parse("ig-demo").unwrap();
        let mut job = rotation();
        job.kind = JobKind::CheckDrift {
            group: group.clone(),
        };
        job.progress = JobProgress::new(vec![Step::CheckDrift]);
        let view = super::job(&job, None);
        assert_eq!(
            (view.kind.as_str(), view.title.as_str()),
            ("check_drift", "Check HSM protected keys")
        );
        assert_eq!(view.summary, "drift check of key group ig-demo");
        assert_eq!(
            (view.target.as_str(), view.group.as_str()),
            ("ig-demo", "ig-demo")
        );
        assert_eq!(view.current_step.as_deref(), Some("check_drift"));

        job.kind = JobKind::Reconcile { group };
        job.progress = JobProgress::new(Step::reconcile(2));
        job.progress.repairs = vec![
            Repair::EnableKey {
                kms_key_id: KmsKeyId::parse(KMS).unwrap(),
            };
            2
        ];
        let view = super::job(&job, None);
        assert_eq!(
            (view.kind.as_str(), view.title.as_str()),
            ("reconcile", "Reconcile HSM protected keys")
        );
        assert_eq!(
            view.summary,
            "2 repair(s) of key group ig-demo's drift in AWS"
        );
        assert_eq!(view.target, "ig-demo");
        assert_eq!((view.steps_done, view.steps_total), (0, 3));
        assert_eq!(view.current_step.as_deref(), Some("repair"));
    }

    #[test]
    fn the_overview_shows_each_groups_last_check() {
        use keyhold_core::service::GroupDrift;
        let job_id = uuid::Uuid::new_v4();
        let overview = DriftOverview {
            groups: vec![
                GroupDrift {
                    group: GroupName::parse("a").unwrap(),
                    last_check: Some(DriftCheck {
                        group: GroupName::parse("a").unwrap(),
                        checked_at: at(5),
                        job_id,
                        open: 2,
                    }),
                    open: 2,
                    self_heal: true,
                },
                GroupDrift {
                    group: GroupName::parse("b").unwrap(),
                    last_check: None,
                    open: 0,
                    self_heal: false,
                },
            ],
            check_hours: 24,
            expiry_days: 30,
        };
        let view = drift_overview(&overview);
        assert_eq!((view.check_hours, view.expiry_days), (24, 30));
        let a = &view.groups[0];
        assert_eq!(a.checked_at, Some(format_timestamp(&at(5))));
        assert_eq!(a.check_job, Some(job_id.to_string()));
        assert_eq!((a.open, a.self_heal), (2, true));
        let b = &view.groups[1];
        assert_eq!((b.checked_at.as_ref(), b.check_job.as_ref()), (None, None));
    }

    #[test]
    fn a_failed_job_points_at_the_step_that_failed() {
        let mut job = rotation();
        job.status = JobStatus::Failed;
        job.error = Some("step 3 of 6, wrap and import the key material, failed: …".into());
        let view = super::job(&job, Some(&[]));
        assert_eq!(view.status, "failed");
        assert_eq!(view.current_step.as_deref(), Some("import_material"));
        assert_eq!(view.error, job.error);
        assert_eq!(view.messages.map(|m| m.len()), Some(0));
    }
}
