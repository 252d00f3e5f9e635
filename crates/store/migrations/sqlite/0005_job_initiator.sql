-- Who started a job, apart from the name it shows: the scheduler's jobs
-- show as "System", a name an identity may also bear, so the text alone
-- cannot tell a scheduled rotation (retried by the scheduler) from one an
-- officer named System started (which waits for an officer).
-- initiator: keyhold_core::job::Initiator::as_str.
-- Older rows keep the reading they had: "System" was the scheduler.
ALTER TABLE jobs ADD COLUMN initiator TEXT NOT NULL DEFAULT 'officers'
    CHECK (initiator IN ('scheduler', 'officers'));
UPDATE jobs SET initiator = 'scheduler' WHERE users = 'System';
