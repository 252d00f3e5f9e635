-- Quorum approvals (keyhold_core::approval): migrations/sqlite/0010_approvals.sql
-- in PostgreSQL's types (what each column holds is explained there).
-- The votes are rows of their own, one per identity, so the primary key (not
-- a read before the insert) is what holds "one vote per identity" under any
-- concurrency. A request is never deleted.

-- class:               OperationClass::as_str.
-- operation:           JSON of the operation's exact parameters. Never a secret.
-- params_hash:         SHA-256 (hex) of `operation` in canonical form.
-- requested_by:        the identities of the session that asked (comma-separated).
-- approvals_needed,
-- approver_role,
-- expires_after_hours: the quorum as it was when the request was made.
-- status:              ApprovalStatus::as_str, moved only by the store's
--                      guarded updates (approved to executed by the write
--                      that runs the operation, in the same transaction).
-- decided_at:          when it was executed, failed, denied or expired.
-- outcome:             its audit summary, or a failure's reason.
-- sealed_result:       the requester's sealed result; NULL once collected.
-- insert_order:        the order of insertion, which SQLite keeps as the
--                      rowid; it orders requests made in the same microsecond.
CREATE TABLE approval_requests (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    class               TEXT COLLATE "C" NOT NULL,
    operation           TEXT COLLATE "C" NOT NULL,
    params_hash         TEXT COLLATE "C" NOT NULL,
    summary             TEXT COLLATE "C" NOT NULL,
    requested_by        TEXT COLLATE "C" NOT NULL,
    requested_at        TEXT COLLATE "C" NOT NULL,
    expires_at          TEXT COLLATE "C" NOT NULL,
    approvals_needed    BIGINT           NOT NULL CHECK (approvals_needed >= 1),
    approver_role       TEXT COLLATE "C" NOT NULL,
    expires_after_hours BIGINT           NOT NULL CHECK (expires_after_hours >= 1),
    status              TEXT COLLATE "C" NOT NULL
        CHECK (status IN ('pending', 'approved', 'executed', 'failed', 'denied', 'expired')),
    decided_at          TEXT COLLATE "C",
    outcome             TEXT COLLATE "C",
    sealed_result       BYTEA,
    insert_order        BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- Lists show the newest first, all of them or those of one status.
CREATE INDEX approval_requests_requested_at ON approval_requests (requested_at);
CREATE INDEX approval_requests_status_requested_at ON approval_requests (status, requested_at);

-- One identity's answer to a request.
-- identity:     the IdentityName that answered; role: the Role it held then.
-- approve:      TRUE for an approval, FALSE for a denial (which ends the request).
-- voted_at:     when it answered.
-- reason:       why, when denied; NULL otherwise.
-- insert_order: the order the answers came in (SQLite's rowid).
CREATE TABLE approval_votes (
    request_id   TEXT COLLATE "C" NOT NULL REFERENCES approval_requests (id) ON DELETE NO ACTION,
    identity     TEXT COLLATE "C" NOT NULL,
    role         TEXT COLLATE "C" NOT NULL,
    approve      BOOLEAN          NOT NULL,
    voted_at     TEXT COLLATE "C" NOT NULL,
    reason       TEXT COLLATE "C",
    insert_order BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (request_id, identity)
);
