-- External key stores (keyhold_core::xks): keyhold as the AWS KMS XKS proxy.
-- A store is a path prefix KMS calls, with its SigV4 credentials, an
-- optional mutual-TLS rule and a request quota; its keys are AES-256 keys
-- in the keystore whose ids are the XksKeyId KMS is given. Every change
-- also moves xks_revision, in the same transaction, so nodes that serve
-- the proxy from a cache reload when (and only when) something changed.

-- One row per external key store.
-- name:             XksStoreName, unique.
-- path_prefix:      PathPrefix (`/xks/payments`): what KMS's XksProxyUriPath
--                   starts with, so no two stores may share one.
-- quota_per_second: requests served per second, per node (1 and up;
--                   keyhold_core::xks::parse_quota bounds it above).
-- mtls_subject,
-- mtls_ca_pem:      the MtlsRule: the common name KMS's client certificate
--                   carries and the PEM of the CA it chains to. Both, or
--                   neither (no mutual TLS).
CREATE TABLE xks_stores (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    path_prefix      TEXT    NOT NULL UNIQUE,
    quota_per_second INTEGER NOT NULL CHECK (quota_per_second >= 1),
    mtls_subject     TEXT,
    mtls_ca_pem      TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    CHECK ((mtls_subject IS NULL) = (mtls_ca_pem IS NULL))
) STRICT;

-- A store's SigV4 credentials: at most two at a time, which the insert
-- counts under the write lock (a limit no constraint can express). A
-- store's deletion deletes its credentials first, in its transaction; the
-- reference (NO ACTION, see 0001) refuses to leave one without its store.
-- access_key_id: XksAccessKeyId, unique among all stores: the proxy finds
--                the credential (and so the store) of a request by it.
-- sealed_secret: the secret access key sealed by the keystore under
--                keyhold_core::xks::secret_context(id); never plaintext.
CREATE TABLE xks_credentials (
    id            TEXT NOT NULL PRIMARY KEY,
    store_id      TEXT NOT NULL REFERENCES xks_stores (id) ON DELETE NO ACTION,
    access_key_id TEXT NOT NULL UNIQUE,
    sealed_secret BLOB NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

-- Counting a store's credentials, and listing them oldest first.
CREATE INDEX xks_credentials_store_id ON xks_credentials (store_id, created_at);
-- Every store's credentials, oldest first (the proxy's reload).
CREATE INDEX xks_credentials_created_at ON xks_credentials (created_at);

-- One row per XKS key. A store cannot be deleted while it has keys, whose
-- material KMS may still need to open what it sealed.
-- description:     printable, at most 256 characters.
-- usage:           XksKeyUsage::as_str.
-- enabled:         1 while the proxy serves it, 0 once disabled.
-- rule:            JSON of keyhold_core::xks::AuthorizationRule.
-- keystore_handle: the keystore's opaque reference to the key's material
--                  (a backup wraps it as it does keys.keystore_handle).
-- check_digits:    four hex digits identifying the material, like keys'.
CREATE TABLE xks_keys (
    id              TEXT    NOT NULL PRIMARY KEY,
    store_id        TEXT    NOT NULL REFERENCES xks_stores (id) ON DELETE NO ACTION,
    description     TEXT    NOT NULL,
    usage           TEXT    NOT NULL CHECK (usage IN ('encrypt_decrypt', 'encrypt', 'decrypt')),
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    rule            TEXT    NOT NULL,
    keystore_handle BLOB    NOT NULL,
    check_digits    TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
) STRICT;

-- A store's keys, oldest first (and the store's deletion looking for any).
CREATE INDEX xks_keys_store_id ON xks_keys (store_id, created_at);
-- Every store's keys, oldest first.
CREATE INDEX xks_keys_created_at ON xks_keys (created_at);

-- One row: a number every XKS write raises by one in its transaction.
-- Nodes poll it (one cheap read) and reload stores, credentials and keys
-- when it moved. A backup does not carry it (see src/snapshot.rs): a
-- restored database starts again from 0, here.
CREATE TABLE xks_revision (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL CHECK (revision >= 0)
) STRICT;

INSERT INTO xks_revision (id, revision) VALUES (1, 0);
