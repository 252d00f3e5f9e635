-- Schema 15 stores SQLite's keys in the order they are listed (see
-- migrations/sqlite/0015_keys_clustered.sql). PostgreSQL has no lasting
-- order for a table's rows to set (CLUSTER rewrites it once), so nothing
-- changes here; the migration keeps both backends at the same schema
-- version, which a backup made on one and restored on the other needs.
SELECT 1;
