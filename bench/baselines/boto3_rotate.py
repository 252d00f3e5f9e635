#!/usr/bin/env python3
"""Baseline: the same rotation as bench/baselines/aws-cli.sh in one boto3
program (AWS's documented import steps: CreateKey with Origin EXTERNAL,
GetParametersForImport, RSA-OAEP-SHA-256 wrap, ImportKeyMaterial; then the
alias moved and the previous key disabled), serially or on a thread pool.

    boto3_rotate.py ENDPOINT PREFIX COUNT STATE_FILE [THREADS]

The wrap uses the `cryptography` package (what a Python program would use
instead of shelling out to openssl). STATE_FILE (JSON) remembers each
group's current key between passes. boto3 clients are thread-safe; one is
shared, as the boto3 documentation suggests for threads.

The last line of output times the rotations alone, from the first request
to the last answer (`rotations=N seconds=S cpu_seconds=C`, CPU time of the
whole process over that stretch): the interpreter's start and the client's
set-up, which a long-running program pays once, are left out.
"""
import datetime
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "root", "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}]})


def rotate(kms, name, previous):
    key_id = kms.create_key(Origin="EXTERNAL", KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT",
                            Description="benchmark data key", Policy=POLICY,
                            Tags=[{"TagKey": "keyhold-group", "TagValue": name}])["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    public_key = serialization.load_der_public_key(params["PublicKey"])
    material = os.urandom(32)
    wrapped = public_key.encrypt(material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                        algorithm=hashes.SHA256(), label=None))
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                            ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    if previous:
        kms.update_alias(AliasName=f"alias/{name}", TargetKeyId=key_id)
        kms.disable_key(KeyId=previous)
    else:
        kms.create_alias(AliasName=f"alias/{name}", TargetKeyId=key_id)
    return name, key_id


def main():
    endpoint, prefix, count, state_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    state = {}
    if os.path.exists(state_file):
        with open(state_file) as f:
            state = json.load(f)
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "eu-west-1"))
    names = [f"{prefix}-{i:05d}" for i in range(count)]
    started, cpu_started = time.monotonic(), time.process_time()
    if threads <= 1:
        results = [rotate(kms, n, state.get(n)) for n in names]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda n: rotate(kms, n, state.get(n)), names))
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    state.update(dict(results))
    with open(state_file, "w") as f:
        json.dump(state, f)
    print(f"rotations={len(results)} seconds={seconds:.6f} cpu_seconds={cpu_seconds:.6f}")


if __name__ == "__main__":
    main()
