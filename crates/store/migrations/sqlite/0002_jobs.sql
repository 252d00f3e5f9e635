-- Jobs (Force Rotate, Synchronize) as persisted step machines, and their logs.
--
-- A job names the keys and group it acts on only inside `spec` and
-- `progress` (JSON), never by foreign key: a job's record outlives the keys
-- it rotated or synchronized, and deleting a key must not be refused, nor
-- cascade into the history, because a job once touched it.

-- kind:     JobKind::label, for lists and filters without decoding spec.
-- spec:     JSON of keyhold_core::job::JobKind (tagged by "kind").
-- users:    who started it (comma-separated identities, or System).
-- progress: JSON of keyhold_core::job::JobProgress, rewritten by every step.
CREATE TABLE jobs (
    id          TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    status      TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    users       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    progress    TEXT    NOT NULL,
    error       TEXT,
    attempts    INTEGER NOT NULL CHECK (attempts >= 0)
) STRICT;

-- A restart asks for the unfinished jobs, oldest first.
CREATE INDEX jobs_status_created_at ON jobs (status, created_at);
-- Lists show the newest first.
CREATE INDEX jobs_created_at ON jobs (created_at);

-- id is the rowid: insertion order is the order the steps committed.
CREATE TABLE job_messages (
    id     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    job_id TEXT    NOT NULL REFERENCES jobs (id) ON DELETE NO ACTION,
    time   TEXT    NOT NULL,
    text   TEXT    NOT NULL
) STRICT;

CREATE INDEX job_messages_job_id ON job_messages (job_id);
