-- Backups with M-of-N custodians, and the signed files the audit log is
-- archived into: migrations/sqlite/0013_backups.sql in PostgreSQL's types
-- (what each column holds is explained there).

CREATE TABLE backups (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    trigger_kind TEXT COLLATE "C" NOT NULL CHECK (trigger_kind IN ('manual', 'scheduled')),
    initiated_by TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at   TEXT COLLATE "C" NOT NULL,
    finished_at  TEXT COLLATE "C",
    file         TEXT COLLATE "C" NOT NULL UNIQUE,
    size_bytes   BIGINT           CHECK (size_bytes >= 0),
    sha256       TEXT COLLATE "C",
    key_count    BIGINT           CHECK (key_count >= 0),
    threshold    BIGINT           NOT NULL CHECK (threshold >= 1),
    custodians   TEXT COLLATE "C" NOT NULL,
    shares       TEXT COLLATE "C" NOT NULL,
    error        TEXT COLLATE "C",
    node         TEXT COLLATE "C" NOT NULL
);

-- One backup runs at a time, on any node (a second start is a duplicate).
CREATE UNIQUE INDEX backups_one_running ON backups (status) WHERE status = 'running';
-- Lists show the newest first.
CREATE INDEX backups_started_at ON backups (started_at);

CREATE TABLE audit_archives (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    file       TEXT COLLATE "C" NOT NULL UNIQUE,
    first_seq  BIGINT           NOT NULL CHECK (first_seq >= 1),
    last_seq   BIGINT           NOT NULL CHECK (last_seq >= first_seq),
    created_at TEXT COLLATE "C" NOT NULL,
    sha256     TEXT COLLATE "C" NOT NULL
);

CREATE INDEX audit_archives_first_seq ON audit_archives (first_seq);
