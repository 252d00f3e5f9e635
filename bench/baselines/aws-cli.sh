#!/usr/bin/env bash
# Baseline: rotating BYOK keys the way a team scripts it today, with the AWS
# CLI and OpenSSL, following AWS's documented import steps (AWS KMS Developer
# Guide, "Importing key material": create a key with --origin EXTERNAL,
# get-parameters-for-import, wrap with openssl pkeyutl RSA-OAEP-SHA-256,
# import-key-material), then point the alias at the new key and disable the
# previous one, as keyhold's rotation does.
#
#   aws-cli.sh ENDPOINT PREFIX COUNT STATE_DIR
#
# One group after the other. STATE_DIR remembers each group's current key
# (a script has no database), so a second pass moves the alias with
# update-alias and disables the old key. AWS_CLI names the aws binary.
set -euo pipefail
endpoint=$1 prefix=$2 count=$3 state=$4
aws=${AWS_CLI:-aws}
mkdir -p "$state"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
policy='{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}'
kms() { "$aws" --endpoint-url "$endpoint" --region "${AWS_REGION:-eu-west-1}" kms "$@"; }
valid_to=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)

for i in $(seq 0 $((count - 1))); do
  name=$(printf '%s-%05d' "$prefix" "$i")
  # 1. A KMS key without key material.
  key_id=$(kms create-key --origin EXTERNAL --key-spec SYMMETRIC_DEFAULT --key-usage ENCRYPT_DECRYPT \
    --description "benchmark data key" --policy "$policy" --tags TagKey=keyhold-group,TagValue="$name" \
    --query KeyMetadata.KeyId --output text)
  # 2. The wrapping public key and import token, base64 in the CLI's output.
  read -r public_key import_token < <(kms get-parameters-for-import --key-id "$key_id" \
    --wrapping-algorithm RSAES_OAEP_SHA_256 --wrapping-key-spec RSA_2048 \
    --query '[PublicKey,ImportToken]' --output text)
  printf '%s' "$public_key" | base64 -d > "$work/WrappingPublicKey.bin"
  printf '%s' "$import_token" | base64 -d > "$work/ImportToken.bin"
  # 3. 256 bits of key material, wrapped with RSAES_OAEP_SHA_256.
  openssl rand -out "$work/PlaintextKeyMaterial.bin" 32
  openssl pkeyutl -encrypt -in "$work/PlaintextKeyMaterial.bin" -out "$work/EncryptedKeyMaterial.bin" \
    -inkey "$work/WrappingPublicKey.bin" -keyform DER -pubin \
    -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
  rm -f "$work/PlaintextKeyMaterial.bin"
  # 4. Import, valid for a year.
  kms import-key-material --key-id "$key_id" \
    --encrypted-key-material "fileb://$work/EncryptedKeyMaterial.bin" \
    --import-token "fileb://$work/ImportToken.bin" \
    --expiration-model KEY_MATERIAL_EXPIRES --valid-to "$valid_to" >/dev/null
  # 5. The alias on the new key; the previous key disabled.
  if [ -f "$state/$name" ]; then
    old=$(cat "$state/$name")
    kms update-alias --alias-name "alias/$name" --target-key-id "$key_id"
    kms disable-key --key-id "$old"
  else
    kms create-alias --alias-name "alias/$name" --target-key-id "$key_id"
  fi
  printf '%s' "$key_id" > "$state/$name"
done
