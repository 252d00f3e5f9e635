-- Jobs (Force Rotate, Synchronize) as persisted step machines, and their
-- logs: migrations/sqlite/0002_jobs.sql in PostgreSQL's types.
--
-- A job names the keys and group it acts on only inside `spec` and
-- `progress` (JSON), never by foreign key: a job's record outlives the keys
-- it rotated or synchronized, and deleting a key must not be refused, nor
-- cascade into the history, because a job once touched it.

-- kind:         JobKind::label, for lists and filters without decoding spec.
-- spec:         JSON of keyhold_core::job::JobKind (tagged by "kind").
-- users:        who started it (comma-separated identities, or System).
-- progress:     JSON of keyhold_core::job::JobProgress, rewritten by every step.
-- insert_order: the order of insertion, which SQLite keeps as the rowid; it
--               orders jobs created in the same microsecond.
CREATE TABLE jobs (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind         TEXT COLLATE "C" NOT NULL,
    spec         TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    users        TEXT COLLATE "C" NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    started_at   TEXT COLLATE "C",
    finished_at  TEXT COLLATE "C",
    progress     TEXT COLLATE "C" NOT NULL,
    error        TEXT COLLATE "C",
    attempts     BIGINT           NOT NULL CHECK (attempts >= 0),
    insert_order BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- A restart asks for the unfinished jobs, oldest first.
CREATE INDEX jobs_status_created_at ON jobs (status, created_at);
-- Lists show the newest first.
CREATE INDEX jobs_created_at ON jobs (created_at);

-- id orders the messages as the steps committed them.
CREATE TABLE job_messages (
    id     BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE NO ACTION,
    time   TEXT COLLATE "C" NOT NULL,
    text   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX job_messages_job_id ON job_messages (job_id);
