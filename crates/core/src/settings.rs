//! Server-wide settings an administrator changes under dual control
//! (*Administration → Configuration*).

use serde::{Deserialize, Serialize};

use crate::approval::ApprovalPolicies;
use crate::cluster::RotatorChoice;
use crate::error::InvalidInput;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether the operations marked dual-control need two identities.
    pub dual_control: bool,
    /// Failed logins in a row before an identity is locked.
    pub lockout_threshold: u32,
    /// How long a locked identity stays locked.
    pub lockout_minutes: u32,
    /// A session unused this long must log in again.
    pub session_idle_minutes: u32,
    /// A session ends this long after it started, however busy.
    pub session_max_hours: u32,
    /// *HSM Protected Key Options*: which node rotates (settings written
    /// before clusters existed have none: automatic).
    #[serde(default)]
    pub designated_rotator: RotatorChoice,
    /// The quorum each class of sensitive operation needs, if any; changed
    /// on their own (`Keyhold::change_approval_policies`), never through a
    /// [`SettingsChange`].
    #[serde(default)]
    pub approval_policies: ApprovalPolicies,
    /// How many on-demand rotations keyhold makes of one KMS key before a
    /// `new_material` group does what its `at_rotation_limit` says. AWS's
    /// documented limit by default; lower it where AWS enforces less (its
    /// API reference once said 10, and LocalStack enforces 10).
    #[serde(default = "default_on_demand_rotation_limit")]
    pub on_demand_rotation_limit: u32,
    /// How often every group's drift is checked, in hours; 0 checks only
    /// when asked.
    #[serde(default = "default_drift_check_hours")]
    pub drift_check_hours: u32,
    /// Material that expires within this many days, with no rotation due
    /// before, is drift.
    #[serde(default = "default_drift_expiry_days")]
    pub drift_expiry_days: u32,
    /// Who holds the shares of backups' keys; none until set (then no
    /// backup can be made). Changed on its own
    /// (`Keyhold::set_custodians`), never through a [`SettingsChange`].
    #[serde(default)]
    pub backup_custodians: Option<crate::backup::CustodianSet>,
    /// How often a backup is made, in hours; 0 makes them only when asked.
    #[serde(default)]
    pub backup_every_hours: u32,
    /// How many scheduled backups are kept in the backup directory (older
    /// ones are removed after a new one succeeds); 0 keeps all.
    #[serde(default = "default_backup_keep")]
    pub backup_keep: u32,
    /// Audit entries older than this many days are archived (written to a
    /// signed archive file and marked archived) once a day; 0 archives
    /// only when asked.
    #[serde(default)]
    pub audit_archive_after_days: u32,
}

fn default_backup_keep() -> u32 {
    7
}

fn default_drift_check_hours() -> u32 {
    24
}

fn default_drift_expiry_days() -> u32 {
    30
}

impl Settings {
    /// The scheduled checks' interval, if they run.
    pub fn drift_check_interval(&self) -> Option<chrono::Duration> {
        (self.drift_check_hours > 0).then(|| chrono::Duration::hours(self.drift_check_hours.into()))
    }

    /// The scheduled backups' interval, if they run.
    pub fn backup_interval(&self) -> Option<chrono::Duration> {
        (self.backup_every_hours > 0)
            .then(|| chrono::Duration::hours(self.backup_every_hours.into()))
    }

    /// How old an entry gets before the daily pass archives it, if it does.
    pub fn audit_archive_age(&self) -> Option<chrono::Duration> {
        (self.audit_archive_after_days > 0)
            .then(|| chrono::Duration::days(self.audit_archive_after_days.into()))
    }
}

fn default_on_demand_rotation_limit() -> u32 {
    crate::cloud::aws::ON_DEMAND_ROTATION_LIMIT
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dual_control: true,
            lockout_threshold: 5,
            lockout_minutes: 15,
            session_idle_minutes: 15,
            session_max_hours: 12,
            designated_rotator: RotatorChoice::Automatic,
            approval_policies: ApprovalPolicies::default(),
            on_demand_rotation_limit: default_on_demand_rotation_limit(),
            drift_check_hours: default_drift_check_hours(),
            drift_expiry_days: default_drift_expiry_days(),
            backup_custodians: None,
            backup_every_hours: 0,
            backup_keep: default_backup_keep(),
            audit_archive_after_days: 0,
        }
    }
}

/// A change to the settings; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub dual_control: Option<bool>,
    pub lockout_threshold: Option<u32>,
    pub lockout_minutes: Option<u32>,
    pub session_idle_minutes: Option<u32>,
    pub session_max_hours: Option<u32>,
    pub designated_rotator: Option<RotatorChoice>,
    pub on_demand_rotation_limit: Option<u32>,
    pub drift_check_hours: Option<u32>,
    pub drift_expiry_days: Option<u32>,
    pub backup_every_hours: Option<u32>,
    pub backup_keep: Option<u32>,
    pub audit_archive_after_days: Option<u32>,
}

impl SettingsChange {
    pub fn apply(self, current: &Settings) -> Result<Settings, InvalidInput> {
        let Self {
            dual_control,
            lockout_threshold,
            lockout_minutes,
            session_idle_minutes,
            session_max_hours,
            designated_rotator,
            on_demand_rotation_limit,
            drift_check_hours,
            drift_expiry_days,
            backup_every_hours,
            backup_keep,
            audit_archive_after_days,
        } = &self;
        if dual_control.is_none()
            && lockout_threshold.is_none()
            && lockout_minutes.is_none()
            && session_idle_minutes.is_none()
            && session_max_hours.is_none()
            && designated_rotator.is_none()
            && on_demand_rotation_limit.is_none()
            && drift_check_hours.is_none()
            && drift_expiry_days.is_none()
            && backup_every_hours.is_none()
            && backup_keep.is_none()
            && audit_archive_after_days.is_none()
        {
            return Err(InvalidInput::new(
                "body",
                "nothing to change: give at least one setting",
            ));
        }
        let mut next = current.clone();
        if let Some(v) = self.dual_control {
            next.dual_control = v;
        }
        if let Some(v) = self.lockout_threshold {
            next.lockout_threshold = in_range("lockout_threshold", v, 1, 100)?;
        }
        if let Some(v) = self.lockout_minutes {
            next.lockout_minutes = in_range("lockout_minutes", v, 1, 24 * 60)?;
        }
        if let Some(v) = self.session_idle_minutes {
            next.session_idle_minutes = in_range("session_idle_minutes", v, 1, 24 * 60)?;
        }
        if let Some(v) = self.session_max_hours {
            next.session_max_hours = in_range("session_max_hours", v, 1, 7 * 24)?;
        }
        if let Some(v) = self.designated_rotator {
            next.designated_rotator = v;
        }
        if let Some(v) = self.on_demand_rotation_limit {
            next.on_demand_rotation_limit = in_range(
                "on_demand_rotation_limit",
                v,
                1,
                crate::cloud::aws::ON_DEMAND_ROTATION_LIMIT,
            )?;
        }
        if let Some(v) = self.drift_check_hours {
            next.drift_check_hours = in_range("drift_check_hours", v, 0, 24 * 31)?;
        }
        if let Some(v) = self.drift_expiry_days {
            next.drift_expiry_days = in_range("drift_expiry_days", v, 1, 366)?;
        }
        if let Some(v) = self.backup_every_hours {
            next.backup_every_hours = in_range("backup_every_hours", v, 0, 24 * 31)?;
            if v > 0 && next.backup_custodians.is_none() {
                return Err(InvalidInput::new(
                    "backup_every_hours",
                    "scheduled backups need custodians to hold their keys: set them first (PUT /api/v1/backups/custodians, `keyhold backup custodians set`)",
                ));
            }
        }
        if let Some(v) = self.backup_keep {
            next.backup_keep = in_range("backup_keep", v, 0, 10_000)?;
        }
        if let Some(v) = self.audit_archive_after_days {
            next.audit_archive_after_days = in_range("audit_archive_after_days", v, 0, 36_500)?;
        }
        Ok(next)
    }
}

fn in_range(field: &'static str, v: u32, min: u32, max: u32) -> Result<u32, InvalidInput> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(InvalidInput::new(
            field,
            format!("{field} must be between {min} and {max}"),
        ))
    }
}
