-- Where each audit stream to a SIEM (syslog) stands: the seq of the last
-- entry it delivered. Moved only after a delivery succeeded, and only from
-- the value the streamer read, so a restart resumes after it and two nodes
-- never both move it. `node` and `updated_at` say who delivered it, when.
CREATE TABLE audit_stream_cursors (
    sink TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
