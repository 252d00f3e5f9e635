-- Rotation in place (keyhold_core::group::RotationStrategy::NewMaterial):
-- a group may rotate by importing new material into the same KMS key, so
-- several keys (versions) now share one KMS key id, each naming its own
-- material there.
--
-- key_groups.rotation_strategy:  RotationStrategy::as_str (new_key | new_material).
-- key_groups.at_rotation_limit:  AtRotationLimit::as_str (new_key | refuse).
-- keys.kms_material_id:          AWS's KeyMaterialId, once an import answered it.
-- keys.material_state:           MaterialState::as_str (current | non_current |
--                                pending_rotation).
-- keys.rotated_in:               1 for a version imported as new material into a
--                                KMS key that held an earlier one.
ALTER TABLE key_groups ADD COLUMN rotation_strategy TEXT NOT NULL DEFAULT 'new_key';
ALTER TABLE key_groups ADD COLUMN at_rotation_limit TEXT NOT NULL DEFAULT 'new_key';

-- SQLite cannot drop a column's UNIQUE constraint: the table is rebuilt.
-- Nothing references keys by foreign key (jobs name keys in JSON only).
CREATE TABLE keys_new (
    id              TEXT    NOT NULL PRIMARY KEY,
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
    UNIQUE (group_name, version)
) STRICT;
INSERT INTO keys_new (id, group_name, version, kms_key_id, check_digits, valid_from,
                      valid_to, state, keystore_handle, created_at)
    SELECT id, group_name, version, kms_key_id, check_digits, valid_from,
           valid_to, state, keystore_handle, created_at FROM keys;
DROP TABLE keys;
ALTER TABLE keys_new RENAME TO keys;

-- What UNIQUE (kms_key_id) held before, for versions sharing a KMS key: one
-- key first imported into each KMS key, and each material in it once.
CREATE UNIQUE INDEX keys_first_in_kms_key ON keys (kms_key_id) WHERE rotated_in = 0;
CREATE UNIQUE INDEX keys_kms_material ON keys (kms_key_id, kms_material_id);
