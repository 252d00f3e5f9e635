//! Micro-benchmarks of the pieces a rotation is made of: generating and
//! wrapping key material in the software keystore, sealing and verifying
//! audit entries, and the store's audited commit (SQLite).
//!
//! `cargo bench -p keyhold-bench --bench micro` (or `./scripts/bench --micro`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keyhold_core::audit::{AuditRecord, ChainHead, ChainVerifier, seal};
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::ports::{Keystore, SharedAuditMac};
use keyhold_keystore::{MasterKeySource, SoftKeystore};
use rsa::pkcs8::EncodePublicKey;

fn wrapping_key_der() -> Vec<u8> {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    private
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn keystore(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ks = SoftKeystore::init(&dir.path().join("keystore"), MasterKeySource::File).unwrap();
    let der = wrapping_key_der();
    let id = uuid::Uuid::new_v4();
    let key = ks.generate_key(id).unwrap();
    c.bench_function("keystore/generate AES-256 key (software)", |b| {
        b.iter(|| ks.generate_key(uuid::Uuid::new_v4()).unwrap())
    });
    c.bench_function(
        "keystore/wrap for import, RSAES_OAEP_SHA_256, RSA_2048 (software)",
        |b| {
            b.iter(|| {
                ks.wrap_key(id, &key.handle, &der, WrappingAlgorithm::RsaesOaepSha256)
                    .unwrap()
            })
        },
    );
}

fn audit_chain(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ks =
        Arc::new(SoftKeystore::init(&dir.path().join("keystore"), MasterKeySource::File).unwrap());
    let record = AuditRecord::new(
        keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock),
        "Admin1,Admin2",
        "Successfully rotated keys for HSM protected key group payments.",
    );
    c.bench_function("audit/seal one entry (SHA-256 + HMAC)", |b| {
        b.iter(|| seal(ChainHead::EMPTY, &record, ks.as_ref()).unwrap())
    });
    let mut head = ChainHead::EMPTY;
    let entries: Vec<_> = (0..1000)
        .map(|_| {
            let e = seal(head, &record, ks.as_ref()).unwrap();
            head = ChainHead {
                seq: e.seq,
                hash: e.hash,
            };
            e
        })
        .collect();
    c.bench_function("audit/verify 1,000 entries", |b| {
        b.iter(|| {
            let mut verifier = ChainVerifier::new(ks.clone());
            for e in &entries {
                verifier.push(e).unwrap();
            }
        })
    });
}

fn store_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ks = SoftKeystore::init(&dir.path().join("keystore"), MasterKeySource::File).unwrap();
    let mac: SharedAuditMac = Arc::new(ks);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("keyhold.db").display()
    );
    let store = runtime.block_on(keyhold_store::connect(&url, mac)).unwrap();
    let record = AuditRecord::new(
        keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock),
        "Admin1",
        "Benchmark commit.",
    );
    c.bench_function("store/audited commit, SQLite (append_audit)", |b| {
        b.iter(|| runtime.block_on(store.append_audit(&record)).unwrap())
    });
}

criterion_group!(benches, keystore, audit_chain, store_commit);
criterion_main!(benches);
