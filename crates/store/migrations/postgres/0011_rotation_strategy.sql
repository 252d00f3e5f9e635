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
-- keys.rotated_in:               true for a version imported as new material into a
--                                KMS key that held an earlier one.
ALTER TABLE key_groups ADD COLUMN rotation_strategy TEXT COLLATE "C" NOT NULL DEFAULT 'new_key';
ALTER TABLE key_groups ADD COLUMN at_rotation_limit TEXT COLLATE "C" NOT NULL DEFAULT 'new_key';

ALTER TABLE keys ADD COLUMN kms_material_id TEXT COLLATE "C";
ALTER TABLE keys ADD COLUMN material_state TEXT COLLATE "C" NOT NULL DEFAULT 'current';
ALTER TABLE keys ADD COLUMN rotated_in BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE keys DROP CONSTRAINT keys_kms_key_id_key;

-- What UNIQUE (kms_key_id) held before, for versions sharing a KMS key: one
-- key first imported into each KMS key, and each material in it once.
CREATE UNIQUE INDEX keys_first_in_kms_key ON keys (kms_key_id) WHERE NOT rotated_in;
CREATE UNIQUE INDEX keys_kms_material ON keys (kms_key_id, kms_material_id);
