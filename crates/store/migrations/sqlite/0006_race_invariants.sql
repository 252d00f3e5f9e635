-- Invariants that parallel requests must not break, held by the database
-- rather than by a read before the write (docs/reliability.md, "Invariants
-- under racing requests").
--
-- Databases written before this migration may already break them (two
-- officers' Force Rotates, or two group creations, that raced). The
-- migration must not fail on such a database, and must not lose anything an
-- officer has to see, so it first settles the duplicates:
--
-- 1. At most one unfinished (queued or running) job per key group. Of a
--    group's unfinished jobs the oldest stays; every later one is marked
--    failed with an error that says why, and a message in its log. A failed
--    job is what an officer already reviews (and retries once the group is
--    free, or cancels): a key it may have created in KMS stays listed, never
--    silently dropped, as a cancellation by the upgrade could hide it.
UPDATE jobs SET
    status = 'failed',
    finished_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z',
    error = 'stopped by the upgrade to one unfinished job per key group: another job of the group was already unfinished; retry this job once that one has finished, or cancel it'
WHERE status IN ('queued', 'running')
  AND group_name IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM jobs AS older
      WHERE older.group_name = jobs.group_name
        AND older.status IN ('queued', 'running')
        AND (older.created_at < jobs.created_at
             OR (older.created_at = jobs.created_at AND older.rowid < jobs.rowid)));

INSERT INTO job_messages (job_id, time, text)
SELECT id, finished_at, 'Failed: ' || error FROM jobs
WHERE status = 'failed' AND error LIKE 'stopped by the upgrade to one unfinished job per key group:%';

CREATE UNIQUE INDEX jobs_one_unfinished_per_group ON jobs (group_name)
    WHERE status IN ('queued', 'running');

-- 2. One alias per region: the group that moves the alias on each rotation
--    owns it. This is the rule keyhold already applied (any credential, so
--    any account: a credential's account is not stored, and the same alias
--    name in one region through two credentials of one account would be one
--    alias moved back and forth). Of groups sharing an alias in a region
--    the oldest keeps it; each later one gets the alias with "-" and the
--    first 8 characters of its id appended (still a valid alias name), so
--    its next rotation creates its own alias instead of taking the other's.
--    The suffix shows in the group's alias; an officer renames it if wanted.
UPDATE key_groups SET
    alias = substr(alias, 1, 240) || '-' || substr(id, 1, 8)
WHERE EXISTS (
    SELECT 1 FROM key_groups AS older
    WHERE older.region = key_groups.region
      AND older.alias = key_groups.alias
      AND (older.created_at < key_groups.created_at
           OR (older.created_at = key_groups.created_at AND older.name < key_groups.name)));

CREATE UNIQUE INDEX key_groups_region_alias ON key_groups (region, alias);
