-- Who started a job, apart from the name it shows:
-- migrations/sqlite/0005_job_initiator.sql in PostgreSQL's types.
-- initiator: keyhold_core::job::Initiator::as_str.
-- Older rows keep the reading they had: "System" was the scheduler.
ALTER TABLE jobs ADD COLUMN initiator TEXT COLLATE "C" NOT NULL DEFAULT 'officers'
    CHECK (initiator IN ('scheduler', 'officers'));
UPDATE jobs SET initiator = 'scheduler' WHERE users = 'System';
