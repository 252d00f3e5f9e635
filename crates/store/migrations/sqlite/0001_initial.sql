-- keyhold's schema for SQLite. Timestamps are text in one fixed form
-- (keyhold_core::clock::format_timestamp: 2025-01-31T12:00:00.000000Z), so
-- text order is time order. Ids are lower-case hyphenated UUIDs. STRICT
-- tables refuse values of the wrong type instead of storing them.

CREATE TABLE identities (
    name                 TEXT    NOT NULL PRIMARY KEY,
    role                 TEXT    NOT NULL,
    password_hash        TEXT    NOT NULL,
    must_change_password INTEGER NOT NULL,
    failed_logins        INTEGER NOT NULL,
    locked_until         TEXT,
    created_at           TEXT    NOT NULL
) STRICT;

-- identities: JSON array of {"name": …, "role": …}, in login order.
CREATE TABLE sessions (
    id         TEXT NOT NULL PRIMARY KEY,
    identities TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) STRICT;

CREATE TABLE credentials (
    id            TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    service       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    access_key_id TEXT NOT NULL,
    -- The secret access key sealed by the keystore; never plaintext.
    sealed_secret BLOB NOT NULL,
    endpoint      TEXT,
    created_at    TEXT NOT NULL
) STRICT;

-- References refuse to delete a referenced row with NO ACTION, not RESTRICT:
-- both refuse (constraints here are not deferred), but SQLite reports a
-- RESTRICT refusal as a trigger failure (SQLITE_CONSTRAINT_TRIGGER), which
-- drivers cannot tell from other errors, and NO ACTION as a foreign key
-- violation (SQLITE_CONSTRAINT_FOREIGNKEY), which maps to "in use".
CREATE TABLE key_groups (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE,
    service              TEXT    NOT NULL,
    credential_name      TEXT    NOT NULL REFERENCES credentials (name) ON DELETE NO ACTION,
    rotate_every         TEXT,
    valid_for            TEXT,
    info_owner           TEXT    NOT NULL,
    info_notes           TEXT    NOT NULL,
    alias                TEXT    NOT NULL,
    description          TEXT    NOT NULL,
    region               TEXT    NOT NULL,
    active_key_id        TEXT,
    policy               TEXT,
    disable_after_rotate INTEGER NOT NULL,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL,
    next_rotation_at     TEXT
) STRICT;

-- Deleting a credential looks up the groups that use it.
CREATE INDEX key_groups_credential_name ON key_groups (credential_name);
-- The scheduler asks which groups are due.
CREATE INDEX key_groups_next_rotation_at ON key_groups (next_rotation_at);

CREATE TABLE keys (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- A group cannot be deleted while it has keys, whose material AWS may
    -- still need.
    group_name      TEXT    NOT NULL REFERENCES key_groups (name) ON DELETE NO ACTION,
    version         INTEGER NOT NULL,
    kms_key_id      TEXT UNIQUE,
    check_digits    TEXT    NOT NULL,
    valid_from      TEXT    NOT NULL,
    valid_to        TEXT,
    state           TEXT    NOT NULL,
    keystore_handle BLOB    NOT NULL,
    created_at      TEXT    NOT NULL,
    UNIQUE (group_name, version)
) STRICT;

-- One row: the JSON of keyhold_core::settings::Settings.
CREATE TABLE settings (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    body TEXT    NOT NULL
) STRICT;

-- seq is the rowid: newest-first and oldest-first walks use the primary key.
CREATE TABLE audit_log (
    seq       INTEGER NOT NULL PRIMARY KEY,
    time      TEXT    NOT NULL,
    users     TEXT    NOT NULL,
    summary   TEXT    NOT NULL,
    details   TEXT    NOT NULL,
    archived  INTEGER NOT NULL DEFAULT 0,
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL,
    mac       BLOB    NOT NULL
) STRICT;

CREATE INDEX audit_log_time ON audit_log (time);

-- Append-only: the chain would reveal an edit or deletion anyway, but keyhold
-- itself must never make one. Only the archived flag, outside the chain, may change.
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_edit
BEFORE UPDATE OF seq, time, users, summary, details, prev_hash, hash, mac ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
