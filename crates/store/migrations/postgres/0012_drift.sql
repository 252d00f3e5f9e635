-- Drift (keyhold_core::drift): migrations/sqlite/0012_drift.sql in
-- PostgreSQL's types (what each column holds is explained there).
--
-- key_groups.self_heal: TRUE when a drift check runs the safe repairs itself.
ALTER TABLE key_groups ADD COLUMN self_heal BOOLEAN NOT NULL DEFAULT FALSE;

-- One row per finding, open or cleared; deleting the group deletes its
-- findings, and the audit log keeps their history.
-- kind:       DriftKind::as_str.
-- repair:     JSON of keyhold_core::drift::Repair, or NULL.
-- cleared_at: NULL while the finding is open.
CREATE TABLE drift_findings (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    group_name TEXT COLLATE "C" NOT NULL REFERENCES key_groups (name) ON DELETE NO ACTION,
    kind       TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    key_id     TEXT COLLATE "C",
    kms_key_id TEXT COLLATE "C",
    detail     TEXT COLLATE "C" NOT NULL,
    repair     TEXT COLLATE "C",
    first_seen TEXT COLLATE "C" NOT NULL,
    last_seen  TEXT COLLATE "C" NOT NULL,
    cleared_at TEXT COLLATE "C"
);

-- One open finding per group, kind and subject (also the listing of open
-- findings by group).
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
CREATE TABLE drift_checks (
    group_name    TEXT COLLATE "C" NOT NULL PRIMARY KEY
        REFERENCES key_groups (name) ON DELETE NO ACTION,
    checked_at    TEXT COLLATE "C" NOT NULL,
    job_id        TEXT COLLATE "C" NOT NULL,
    open_findings BIGINT           NOT NULL CHECK (open_findings >= 0)
);
