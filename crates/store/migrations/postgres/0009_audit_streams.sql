-- Where each audit stream to a SIEM (syslog) stands: the seq of the last
-- entry it delivered. Moved only after a delivery succeeded, and only from
-- the value the streamer read, so a restart resumes after it and two nodes
-- never both move it. `node` and `updated_at` say who delivered it, when.
CREATE TABLE audit_stream_cursors (
    sink TEXT COLLATE "C" PRIMARY KEY,
    seq BIGINT NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
