-- keyhold's schema for PostgreSQL: the tables, columns and constraints of
-- migrations/sqlite/0001_initial.sql, in PostgreSQL's types, so that the
-- shared queries and row conversions read both backends alike. Timestamps
-- are text in one fixed form (keyhold_core::clock::format_timestamp:
-- 2025-01-31T12:00:00.000000Z), ids are lower-case hyphenated UUIDs as text,
-- integers are BIGINT, flags BOOLEAN and bytes BYTEA.
--
-- Every text column uses the "C" collation: text compares and sorts byte by
-- byte, as in SQLite, whatever the database's default collation is, so text
-- order is time order for timestamps and lists sort the same on both backends.

CREATE TABLE identities (
    name                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    role                 TEXT COLLATE "C" NOT NULL,
    password_hash        TEXT COLLATE "C" NOT NULL,
    must_change_password BOOLEAN          NOT NULL,
    failed_logins        BIGINT           NOT NULL,
    locked_until         TEXT COLLATE "C",
    created_at           TEXT COLLATE "C" NOT NULL
);

-- identities: JSON array of {"name": …, "role": …}, in login order.
CREATE TABLE sessions (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    identities TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    last_seen  TEXT COLLATE "C" NOT NULL
);

CREATE TABLE credentials (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    service       TEXT COLLATE "C" NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL,
    access_key_id TEXT COLLATE "C" NOT NULL,
    -- The secret access key sealed by the keystore; never plaintext.
    sealed_secret BYTEA            NOT NULL,
    endpoint      TEXT COLLATE "C",
    created_at    TEXT COLLATE "C" NOT NULL
);

-- References refuse to delete a referenced row (NO ACTION, not deferred):
-- the refusal is a foreign key violation, which maps to "in use".
CREATE TABLE key_groups (
    id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                 TEXT COLLATE "C" NOT NULL UNIQUE,
    service              TEXT COLLATE "C" NOT NULL,
    credential_name      TEXT COLLATE "C" NOT NULL
        REFERENCES credentials (name) ON DELETE NO ACTION,
    rotate_every         TEXT COLLATE "C",
    valid_for            TEXT COLLATE "C",
    info_owner           TEXT COLLATE "C" NOT NULL,
    info_notes           TEXT COLLATE "C" NOT NULL,
    alias                TEXT COLLATE "C" NOT NULL,
    description          TEXT COLLATE "C" NOT NULL,
    region               TEXT COLLATE "C" NOT NULL,
    active_key_id        TEXT COLLATE "C",
    policy               TEXT COLLATE "C",
    disable_after_rotate BOOLEAN          NOT NULL,
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL,
    next_rotation_at     TEXT COLLATE "C"
);

-- Deleting a credential looks up the groups that use it.
CREATE INDEX key_groups_credential_name ON key_groups (credential_name);
-- The scheduler asks which groups are due.
CREATE INDEX key_groups_next_rotation_at ON key_groups (next_rotation_at);

CREATE TABLE keys (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- A group cannot be deleted while it has keys, whose material AWS may
    -- still need.
    group_name      TEXT COLLATE "C" NOT NULL
        REFERENCES key_groups (name) ON DELETE NO ACTION,
    version         BIGINT           NOT NULL,
    kms_key_id      TEXT COLLATE "C" UNIQUE,
    check_digits    TEXT COLLATE "C" NOT NULL,
    valid_from      TEXT COLLATE "C" NOT NULL,
    valid_to        TEXT COLLATE "C",
    state           TEXT COLLATE "C" NOT NULL,
    keystore_handle BYTEA            NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    UNIQUE (group_name, version)
);

-- One row: the JSON of keyhold_core::settings::Settings.
CREATE TABLE settings (
    id   INTEGER          NOT NULL PRIMARY KEY CHECK (id = 1),
    body TEXT COLLATE "C" NOT NULL
);

-- seq is given by the writer, which holds keyhold's advisory lock while it
-- reads the chain head and inserts the next entry (see src/postgres.rs); the
-- primary key refuses a second entry in one place of the chain all the same.
CREATE TABLE audit_log (
    seq       BIGINT           NOT NULL PRIMARY KEY,
    time      TEXT COLLATE "C" NOT NULL,
    users     TEXT COLLATE "C" NOT NULL,
    summary   TEXT COLLATE "C" NOT NULL,
    details   TEXT COLLATE "C" NOT NULL,
    archived  BOOLEAN          NOT NULL DEFAULT FALSE,
    prev_hash BYTEA            NOT NULL,
    hash      BYTEA            NOT NULL,
    mac       BYTEA            NOT NULL
);

CREATE INDEX audit_log_time ON audit_log (time);

-- Append-only: the chain would reveal an edit or deletion anyway, but keyhold
-- itself must never make one. Only the archived flag, outside the chain, may change.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_edit
BEFORE UPDATE OF seq, time, users, summary, details, prev_hash, hash, mac ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
