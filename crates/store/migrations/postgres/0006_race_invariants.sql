-- Invariants that parallel requests must not break, held by the database:
-- migrations/sqlite/0006_race_invariants.sql in PostgreSQL's terms (the
-- reasons, and how duplicates written before it are settled, are there).

-- 1. At most one unfinished job per key group; later duplicates fail.
UPDATE jobs SET
    status = 'failed',
    finished_at = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    error = 'stopped by the upgrade to one unfinished job per key group: another job of the group was already unfinished; retry this job once that one has finished, or cancel it'
WHERE status IN ('queued', 'running')
  AND group_name IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM jobs AS older
      WHERE older.group_name = jobs.group_name
        AND older.status IN ('queued', 'running')
        AND (older.created_at < jobs.created_at
             OR (older.created_at = jobs.created_at AND older.insert_order < jobs.insert_order)));

INSERT INTO job_messages (job_id, time, text)
SELECT id, finished_at, 'Failed: ' || error FROM jobs
WHERE status = 'failed' AND error LIKE 'stopped by the upgrade to one unfinished job per key group:%'
ORDER BY insert_order;

CREATE UNIQUE INDEX jobs_one_unfinished_per_group ON jobs (group_name)
    WHERE status IN ('queued', 'running');

-- 2. One alias per region; later groups sharing one get a suffixed alias.
UPDATE key_groups SET
    alias = substr(alias, 1, 240) || '-' || substr(id, 1, 8)
WHERE EXISTS (
    SELECT 1 FROM key_groups AS older
    WHERE older.region = key_groups.region
      AND older.alias = key_groups.alias
      AND (older.created_at < key_groups.created_at
           OR (older.created_at = key_groups.created_at AND older.name < key_groups.name)));

CREATE UNIQUE INDEX key_groups_region_alias ON key_groups (region, alias);
