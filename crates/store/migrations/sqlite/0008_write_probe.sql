-- Where readiness probes whether the database records changes again after
-- it refused one (its storage full, say): a row with room for a large audit
-- entry is inserted and deleted in one committed transaction, so the probe
-- needs new pages and a write to the log as a real change would, and leaves
-- nothing behind. Empty between probes.
CREATE TABLE write_probe (
    id TEXT PRIMARY KEY NOT NULL,
    padding BLOB NOT NULL
);
