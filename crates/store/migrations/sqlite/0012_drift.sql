-- Drift (keyhold_core::drift): where AWS no longer holds what keyhold's
-- record says, found by drift check jobs and put right by reconcile jobs.
--
-- key_groups.self_heal: 1 when a drift check runs the safe repairs itself
--                       (keyhold_core::group::AwsProperties::self_heal).
ALTER TABLE key_groups ADD COLUMN self_heal INTEGER NOT NULL DEFAULT 0;

-- One row per finding, open or cleared. A finding is never deleted while its
-- group exists (a cleared one is the record of what happened); deleting the
-- group deletes its findings, and the audit log keeps their history.
--
-- kind:       DriftKind::as_str.
-- subject:    what drifted: a KMS key id, `KMS-KEY-ID vN`, or an alias.
-- key_id:     the keyhold key concerned, when there is one. Not a foreign
--             key: a finding's record outlives the key (as jobs do).
-- kms_key_id: the KMS key concerned, when there is one.
-- detail:     what keyhold expected and what AWS holds, readably.
-- repair:     JSON of keyhold_core::drift::Repair (tagged by "action"), or
--             NULL when only officers can decide, outside keyhold.
-- first_seen,
-- last_seen:  the first and the latest check that saw it.
-- cleared_at: when a check no longer saw it; NULL while it is open.
CREATE TABLE drift_findings (
    id         TEXT NOT NULL PRIMARY KEY,
    group_name TEXT NOT NULL REFERENCES key_groups (name) ON DELETE NO ACTION,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    key_id     TEXT,
    kms_key_id TEXT,
    detail     TEXT NOT NULL,
    repair     TEXT,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    cleared_at TEXT
) STRICT;

-- One open finding per group, kind and subject: a check that saw one again
-- keeps its id, and two checks racing cannot both open it. The index also
-- serves the listing of open findings by group.
CREATE UNIQUE INDEX drift_findings_one_open ON drift_findings (group_name, kind, subject)
    WHERE cleared_at IS NULL;
-- Cleared findings are listed newest cleared first, of all groups or of one.
CREATE INDEX drift_findings_cleared_at ON drift_findings (cleared_at)
    WHERE cleared_at IS NOT NULL;
CREATE INDEX drift_findings_group_cleared_at ON drift_findings (group_name, cleared_at)
    WHERE cleared_at IS NOT NULL;
-- A key's page lists the findings on it.
CREATE INDEX drift_findings_key_id ON drift_findings (key_id);

-- Each group's last drift check (groups never checked have no row).
-- job_id:        the job that checked (or reconciled and checked again).
-- open_findings: the group's open findings after that check.
CREATE TABLE drift_checks (
    group_name    TEXT    NOT NULL PRIMARY KEY REFERENCES key_groups (name) ON DELETE NO ACTION,
    checked_at    TEXT    NOT NULL,
    job_id        TEXT    NOT NULL,
    open_findings INTEGER NOT NULL CHECK (open_findings >= 0)
) STRICT;
