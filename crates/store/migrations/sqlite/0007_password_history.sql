-- The hashes of an identity's earlier passwords, so that a new password can
-- be refused when it was used recently (keyhold_core::identity::
-- PASSWORD_HISTORY). Each row is a password the identity had before a change:
-- written in the change's own transaction, with the oldest rows beyond the
-- kept number deleted there too. Argon2id hashes only, never a password.
-- An identity's rows go with it.
CREATE TABLE password_history (
    identity      TEXT    NOT NULL REFERENCES identities (name) ON DELETE CASCADE,
    -- 1, 2, 3, … per identity: the order of the changes.
    seq           INTEGER NOT NULL,
    password_hash TEXT    NOT NULL,
    replaced_at   TEXT    NOT NULL,
    PRIMARY KEY (identity, seq)
) STRICT;
