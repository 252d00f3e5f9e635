-- Backups with M-of-N custodians (keyhold_core::backup), and the signed
-- files the audit log is archived into.
--
-- One row per backup keyhold made or is making. The file itself is in the
-- backup directory; its key is never stored, only its shares, each
-- encrypted for one custodian (useless to anyone else), so they can be
-- handed out again.
--
-- trigger_kind: BackupTrigger::as_str (manual | scheduled).
-- initiated_by: `Admin1,Admin2`, or System for the schedule.
-- status:       BackupStatus::as_str; only a running backup is finished
--               (a guarded update), so two nodes never both record its end.
-- file:         the file's name in the backup directory (no path).
-- size_bytes,
-- sha256,
-- key_count:    the file's size, its SHA-256 (hex) and the keys it holds,
--               once finished.
-- custodians:   JSON array of the custodians' names, in share order.
-- shares:       JSON array of the share files' text, one per custodian.
-- error:        why it failed.
-- node:         the node that made it.
CREATE TABLE backups (
    id           TEXT    NOT NULL PRIMARY KEY,
    trigger_kind TEXT    NOT NULL CHECK (trigger_kind IN ('manual', 'scheduled')),
    initiated_by TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    file         TEXT    NOT NULL UNIQUE,
    size_bytes   INTEGER CHECK (size_bytes >= 0),
    sha256       TEXT,
    key_count    INTEGER CHECK (key_count >= 0),
    threshold    INTEGER NOT NULL CHECK (threshold >= 1),
    custodians   TEXT    NOT NULL,
    shares       TEXT    NOT NULL,
    error        TEXT,
    node         TEXT    NOT NULL
) STRICT;

-- One backup runs at a time, on any node: a second start is refused by the
-- index (a duplicate), not by a read before the insert.
CREATE UNIQUE INDEX backups_one_running ON backups (status) WHERE status = 'running';
-- Lists show the newest first.
CREATE INDEX backups_started_at ON backups (started_at);

-- One row per archive file written: entries first_seq..=last_seq, which
-- stay in audit_log marked archived (the only change its triggers allow).
-- file:   the file's name in the archive directory (no path).
-- sha256: of the whole file, hex.
CREATE TABLE audit_archives (
    id         TEXT    NOT NULL PRIMARY KEY,
    file       TEXT    NOT NULL UNIQUE,
    first_seq  INTEGER NOT NULL CHECK (first_seq >= 1),
    last_seq   INTEGER NOT NULL CHECK (last_seq >= first_seq),
    created_at TEXT    NOT NULL,
    sha256     TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_archives_first_seq ON audit_archives (first_seq);
