-- The keys, stored in the order they are listed: by group, then version.
-- A page of the listing walked the (group_name, version) index and then
-- fetched each key's row by rowid, and rows lie in the order they were
-- inserted (a group's versions come years apart), so a page of 100 keys
-- read up to 100 table pages. A table without rowid is kept in its primary
-- key's order, so a page's keys lie together in a few. A key is still
-- found by its id through the id's unique index.
--
-- The columns, their order and the other indexes are as before.
CREATE TABLE keys_new (
    id              TEXT    NOT NULL UNIQUE,
    group_name      TEXT    NOT NULL REFERENCES key_groups (name) ON DELETE NO ACTION,
    version         INTEGER NOT NULL,
    kms_key_id      TEXT,
    check_digits    TEXT    NOT NULL,
    valid_from      TEXT    NOT NULL,
    valid_to        TEXT,
    state           TEXT    NOT NULL,
    keystore_handle BLOB    NOT NULL,
    created_at      TEXT    NOT NULL,
    kms_material_id TEXT,
    material_state  TEXT    NOT NULL DEFAULT 'current',
    rotated_in      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_name, version)
) STRICT, WITHOUT ROWID;
INSERT INTO keys_new (id, group_name, version, kms_key_id, check_digits, valid_from,
                      valid_to, state, keystore_handle, created_at, kms_material_id,
                      material_state, rotated_in)
    SELECT id, group_name, version, kms_key_id, check_digits, valid_from,
           valid_to, state, keystore_handle, created_at, kms_material_id,
           material_state, rotated_in FROM keys;
DROP TABLE keys;
ALTER TABLE keys_new RENAME TO keys;

CREATE UNIQUE INDEX keys_first_in_kms_key ON keys (kms_key_id) WHERE rotated_in = 0;
CREATE UNIQUE INDEX keys_kms_material ON keys (kms_key_id, kms_material_id);
