-- A second kind of cloud credential: the server's AWS default credential
-- chain, with an optional IAM role to assume through STS. It has no access
-- key and no secret, so those columns become NULL-able, and role_arn is added.
-- The CHECK keeps each row whole for its kind.
--
-- SQLite cannot drop NOT NULL in place: the table is rebuilt as its
-- documentation prescribes (https://www.sqlite.org/lang_altertable.html#otheralter):
-- create the new table, drop the old one, rename the new one into its place,
-- with the rows carried across. The columns, UNIQUE name and STRICT are kept;
-- the table has no other index, trigger or view.
--
-- key_groups.credential_name references credentials (name). sqlx runs a
-- migration in a transaction, where PRAGMA foreign_keys cannot change, so the
-- checks are deferred to the commit instead. Dropping the old table deletes
-- its rows first, which counts one deferred violation per group using a
-- credential, and SQLite takes such a count back only when a matching parent
-- row is inserted (a rename does not): copied before the drop, the rows would
-- leave the count up and the commit would fail. So the rows are set aside and
-- inserted into the new table once it bears the name the groups reference;
-- the count returns to zero, and a group left pointing nowhere fails the commit.

PRAGMA defer_foreign_keys = ON;

CREATE TABLE credentials_new (
    id            TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    service       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- access_key: the access key id, and the secret access key sealed by the
    -- keystore (never plaintext). default_chain: both NULL.
    access_key_id TEXT,
    sealed_secret BLOB,
    -- default_chain: the IAM role assumed through STS, if any. access_key: NULL.
    role_arn      TEXT,
    endpoint      TEXT,
    created_at    TEXT NOT NULL,
    CHECK (
        (kind = 'access_key'
            AND access_key_id IS NOT NULL AND sealed_secret IS NOT NULL AND role_arn IS NULL)
        OR (kind = 'default_chain'
            AND access_key_id IS NULL AND sealed_secret IS NULL)
    )
) STRICT;

-- The rows, set aside while the old table is dropped.
CREATE TEMP TABLE credentials_copy AS
SELECT id, name, service, kind, access_key_id, sealed_secret, endpoint, created_at
FROM main.credentials;

DROP TABLE main.credentials;

ALTER TABLE credentials_new RENAME TO credentials;

INSERT INTO main.credentials
    (id, name, service, kind, access_key_id, sealed_secret, role_arn, endpoint, created_at)
SELECT id, name, service, kind, access_key_id, sealed_secret, NULL, endpoint, created_at
FROM temp.credentials_copy;

DROP TABLE temp.credentials_copy;
