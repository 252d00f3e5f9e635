-- Quorum approvals (keyhold_core::approval): a sensitive operation asked for
-- by one officer and run once M others approved it, each from their own
-- session. The request keeps the operation's exact parameters; the votes
-- are rows of their own, one per identity, so the primary key (not a read
-- before the insert) is what holds "one vote per identity" under any
-- concurrency. A request is never deleted: it is the record of who asked,
-- who approved and what running it gave.

-- class:               OperationClass::as_str.
-- operation:           JSON of the operation's exact parameters, as the edge
--                      that runs it reads them back. Never a secret in the clear.
-- params_hash:         SHA-256 (hex) of `operation` in canonical form
--                      (keyhold_core::approval::params_hash).
-- summary:             what will happen, in one sentence.
-- requested_by:        the identities of the session that asked
--                      (comma-separated, in login order): none may approve it.
-- expires_at:          no vote is taken at or after it.
-- approvals_needed,
-- approver_role,
-- expires_after_hours: the quorum (keyhold_core::approval::Quorum) as it was
--                      when the request was made; approver_role is
--                      Role::as_str.
-- status:              ApprovalStatus::as_str. Only the store's guarded
--                      updates move it: pending to approved or denied by a
--                      vote; approved to executed by the write that runs the
--                      operation (in the same transaction, only while still
--                      approved, so it runs once); to failed or expired by
--                      close. A pending request past expires_at reads as
--                      expired before it is closed.
-- decided_at:          when it was executed, failed, denied or expired.
-- outcome:             what running it gave: its audit summary, or a failure's reason.
-- sealed_result:       a result only the requester may read, sealed by the
--                      keystore (an added identity's one-time password);
--                      NULL once collected, or when there is none.
CREATE TABLE approval_requests (
    id                  TEXT    NOT NULL PRIMARY KEY,
    class               TEXT    NOT NULL,
    operation           TEXT    NOT NULL,
    params_hash         TEXT    NOT NULL,
    summary             TEXT    NOT NULL,
    requested_by        TEXT    NOT NULL,
    requested_at        TEXT    NOT NULL,
    expires_at          TEXT    NOT NULL,
    approvals_needed    INTEGER NOT NULL CHECK (approvals_needed >= 1),
    approver_role       TEXT    NOT NULL,
    expires_after_hours INTEGER NOT NULL CHECK (expires_after_hours >= 1),
    status              TEXT    NOT NULL
        CHECK (status IN ('pending', 'approved', 'executed', 'failed', 'denied', 'expired')),
    decided_at          TEXT,
    outcome             TEXT,
    sealed_result       BLOB
) STRICT;

-- Lists show the newest first, all of them or those of one status.
CREATE INDEX approval_requests_requested_at ON approval_requests (requested_at);
CREATE INDEX approval_requests_status_requested_at ON approval_requests (status, requested_at);

-- One identity's answer to a request; the rowid is the order they came in.
-- identity: the IdentityName that answered; role: the Role it held then
--           (Role::as_str).
-- approve:  1 for an approval, 0 for a denial (which ends the request).
-- voted_at: when it answered.
-- reason:   why, when denied (printable, bounded); NULL otherwise.
CREATE TABLE approval_votes (
    request_id TEXT    NOT NULL REFERENCES approval_requests (id) ON DELETE NO ACTION,
    identity   TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    approve    INTEGER NOT NULL CHECK (approve IN (0, 1)),
    voted_at   TEXT    NOT NULL,
    reason     TEXT,
    PRIMARY KEY (request_id, identity)
) STRICT;
