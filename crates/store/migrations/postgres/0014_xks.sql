-- External key stores (keyhold_core::xks): migrations/sqlite/0014_xks.sql in
-- PostgreSQL's types (what each column holds is explained there). Every
-- change also moves xks_revision, in the same transaction.

CREATE TABLE xks_stores (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL UNIQUE,
    path_prefix      TEXT COLLATE "C" NOT NULL UNIQUE,
    quota_per_second BIGINT           NOT NULL CHECK (quota_per_second >= 1),
    mtls_subject     TEXT COLLATE "C",
    mtls_ca_pem      TEXT COLLATE "C",
    created_at       TEXT COLLATE "C" NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL,
    CHECK ((mtls_subject IS NULL) = (mtls_ca_pem IS NULL))
);

-- insert_order: the order of insertion, which SQLite keeps as the rowid; it
--               orders credentials created in the same microsecond.
CREATE TABLE xks_credentials (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    store_id      TEXT COLLATE "C" NOT NULL REFERENCES xks_stores (id) ON DELETE NO ACTION,
    access_key_id TEXT COLLATE "C" NOT NULL UNIQUE,
    sealed_secret BYTEA            NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    insert_order  BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- Counting a store's credentials, and listing them oldest first.
CREATE INDEX xks_credentials_store_id ON xks_credentials (store_id, created_at);
-- Every store's credentials, oldest first (the proxy's reload).
CREATE INDEX xks_credentials_created_at ON xks_credentials (created_at);

-- enabled:      TRUE while the proxy serves the key.
-- insert_order: the order of insertion (SQLite's rowid), for keys created
--               in the same microsecond.
CREATE TABLE xks_keys (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    store_id        TEXT COLLATE "C" NOT NULL REFERENCES xks_stores (id) ON DELETE NO ACTION,
    description     TEXT COLLATE "C" NOT NULL,
    usage           TEXT COLLATE "C" NOT NULL
        CHECK (usage IN ('encrypt_decrypt', 'encrypt', 'decrypt')),
    enabled         BOOLEAN          NOT NULL,
    rule            TEXT COLLATE "C" NOT NULL,
    keystore_handle BYTEA            NOT NULL,
    check_digits    TEXT COLLATE "C" NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL,
    insert_order    BIGINT           NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- A store's keys, oldest first (and the store's deletion looking for any).
CREATE INDEX xks_keys_store_id ON xks_keys (store_id, created_at);
-- Every store's keys, oldest first.
CREATE INDEX xks_keys_created_at ON xks_keys (created_at);

-- One row, raised by one by every XKS write; not carried by a backup.
CREATE TABLE xks_revision (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL CHECK (revision >= 0)
);

INSERT INTO xks_revision (id, revision) VALUES (1, 0);
