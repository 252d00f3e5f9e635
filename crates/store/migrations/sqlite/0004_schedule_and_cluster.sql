-- Scheduled rotation, and a cluster of nodes with one designated rotator.

-- Jobs name their key group in a column of their own, so "the latest
-- rotation of this group" is an index lookup instead of a walk through the
-- history. Older rows take it from their spec.
ALTER TABLE jobs ADD COLUMN group_name TEXT;
UPDATE jobs SET group_name = json_extract(spec, '$.group');
CREATE INDEX jobs_group_name_created_at ON jobs (group_name, created_at);

-- Every node writes its row at each scheduler tick; the designated
-- rotator must name one of them.
-- role: keyhold_core::cluster::NodeRole::as_str.
CREATE TABLE nodes (
    id         TEXT NOT NULL PRIMARY KEY,
    started_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('rotator', 'standby'))
) STRICT;

-- Leases (one: 'rotator'). The holder renews before expires_at; another
-- node takes it only after that, with token + 1. Job commits name the
-- token they run under and are refused once it is not current.
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL CHECK (token > 0),
    expires_at TEXT    NOT NULL
) STRICT;
