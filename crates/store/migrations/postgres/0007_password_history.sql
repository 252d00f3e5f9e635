-- The hashes of an identity's earlier passwords: migrations/sqlite/
-- 0007_password_history.sql in PostgreSQL's terms (the reasons are there).
CREATE TABLE password_history (
    identity      TEXT COLLATE "C" NOT NULL REFERENCES identities (name) ON DELETE CASCADE,
    seq           BIGINT           NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    replaced_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (identity, seq)
);
