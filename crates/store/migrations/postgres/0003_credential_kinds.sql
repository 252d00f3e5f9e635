-- A second kind of cloud credential: the server's AWS default credential
-- chain, with an optional IAM role to assume through STS. It has no access
-- key and no secret, so those columns become NULL-able, and role_arn is added.
-- The CHECK keeps each row whole for its kind. PostgreSQL changes the table
-- in place: its rows and the key_groups reference to it stay as they are.

ALTER TABLE credentials
    -- access_key: the access key id, and the secret access key sealed by the
    -- keystore (never plaintext). default_chain: both NULL.
    ALTER COLUMN access_key_id DROP NOT NULL,
    ALTER COLUMN sealed_secret DROP NOT NULL,
    -- default_chain: the IAM role assumed through STS, if any. access_key: NULL.
    ADD COLUMN role_arn TEXT COLLATE "C",
    ADD CONSTRAINT credentials_kind_columns CHECK (
        (kind = 'access_key'
            AND access_key_id IS NOT NULL AND sealed_secret IS NOT NULL AND role_arn IS NULL)
        OR (kind = 'default_chain'
            AND access_key_id IS NULL AND sealed_secret IS NULL)
    );
