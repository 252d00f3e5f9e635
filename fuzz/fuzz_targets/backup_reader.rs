//! Backup files, share files, custodian key files and audit archives as a
//! restore or `keyhold backup verify` reads them: files from outside,
//! possibly hostile.
//!
//! The first byte picks the case:
//! - raw bytes to every reader (a backup opened with a fixed key and read
//!   to its end, `verify_file`, a share file, a custodian key file, an
//!   archive): nothing panics, and an accepted share file prints as text
//!   that parses back equal;
//! - byte changes and a cut applied to a valid backup (or archive) made
//!   once per run: a file that differs from the valid one in any byte is
//!   refused by every reader, an unchanged one reads to its end.
#![no_main]

use std::sync::LazyLock;

use keyhold_backup::{
    BackupKey, BackupReader, BackupWriter, CustodianSecret, Header, HeaderInfo, Record, ShareFile,
    generate_custodian_key, read_archive, verify_file, write_archive,
};
use keyhold_core::KeystoreError;
use keyhold_core::audit::{
    AuditEntry, AuditMac, AuditRecord, AuditSigner, ChainHead, SoftwareSigningKey, hmac_sha256,
    seal,
};
use keyhold_core::backup::{Custodian, CustodianName, CustodianSet, SnapshotValue};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fn key() -> BackupKey {
    BackupKey::from_bytes(Zeroizing::new([0x42; 32]))
}

/// One signing key and one custodian key for the whole run: making them
/// per input would slow the fuzzer.
static SIGNER: LazyLock<SoftwareSigningKey> =
    LazyLock::new(|| SoftwareSigningKey::generate().expect("a P-256 key"));
static CUSTODIAN: LazyLock<(CustodianSecret, String)> =
    LazyLock::new(|| generate_custodian_key().expect("a custodian key"));

/// A valid backup under [`key`], two segments long.
static BACKUP: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let (_, other) = generate_custodian_key().expect("a custodian key");
    let set = CustodianSet::new(
        2,
        [("alice", CUSTODIAN.1.clone()), ("bob", other)]
            .into_iter()
            .map(|(name, public_key)| Custodian {
                name: CustodianName::parse(name).expect("a name"),
                public_key,
                kdf: None,
            })
            .collect(),
    )
    .expect("a custodian set");
    let key = key();
    let header = Header::new(
        HeaderInfo {
            backup_id: uuid::Uuid::nil(),
            created_at: "2030-01-01T00:00:00Z".into(),
            created_by: "Admin1,Admin2".into(),
            node: "node".into(),
            keystore: "software".into(),
            database: "sqlite".into(),
            schema_version: 13,
        },
        &set,
        &SIGNER.audit_public_key().expect("the public key"),
        &key,
    )
    .expect("a header");
    let mut writer = BackupWriter::new(Vec::new(), &header, &key).expect("a writer");
    writer
        .write(&Record::Table {
            name: "keys".into(),
            columns: vec!["id".into()],
        })
        .expect("a table");
    for i in 0..4 {
        writer
            .write(&Record::Row {
                values: vec![SnapshotValue::Integer(i), SnapshotValue::Text("x".into())],
            })
            .expect("a row");
    }
    writer
        .write(&Record::AuditArchive {
            file: "a".into(),
            bytes: vec![7; 70_000],
        })
        .expect("an archive record");
    writer.finish(&*SIGNER).expect("a backup").0
});

struct Mac;

impl AuditMac for Mac {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        hmac_sha256(b"fuzz", data)
    }
}

static ARCHIVE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut head = ChainHead::EMPTY;
    let entries: Vec<AuditEntry> = (0..4)
        .map(|i| {
            let record =
                AuditRecord::new(chrono::DateTime::UNIX_EPOCH, "System", format!("entry {i}"));
            let entry = seal(head, &record, &Mac).expect("an entry");
            head = ChainHead {
                seq: entry.seq,
                hash: entry.hash,
            };
            entry
        })
        .collect();
    write_archive(Vec::new(), &entries, "t".into(), &*SIGNER)
        .expect("an archive")
        .0
});

/// Whether the backup reads to its verified end under the fixed key.
fn backup_reads(bytes: &[u8]) -> bool {
    let Ok(mut reader) = BackupReader::open(bytes) else {
        return false;
    };
    if reader.unlock(&key()).is_err() {
        return false;
    }
    // Bounded: a valid file of a fuzzer's length holds few records.
    for _ in 0..100_000 {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
    false
}

fn archive_reads(bytes: &[u8]) -> bool {
    match read_archive(bytes, None) {
        Ok(reader) => reader.take(100_000).all(|e| e.is_ok()),
        Err(_) => false,
    }
}

/// `valid` with the input's (position, xor) pairs applied and cut at the
/// input's length, if it asks for one.
fn mutate(valid: &[u8], input: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    let (cut, patches) = input.split_at(input.len().min(3));
    for patch in patches.chunks_exact(4) {
        let at = u32::from_le_bytes([patch[0], patch[1], patch[2], 0]) as usize;
        if let Some(byte) = bytes.get_mut(at % valid.len()) {
            *byte ^= patch[3];
        }
    }
    if let [flag, lo, hi] = cut
        && flag & 1 == 1
    {
        bytes.truncate(usize::from(u16::from_le_bytes([*lo, *hi])) * 3);
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            let _ = backup_reads(rest);
            let _ = verify_file(rest, None);
            let text = String::from_utf8_lossy(rest);
            if let Ok(share) = ShareFile::parse(&text) {
                assert_eq!(ShareFile::parse(&share.to_text()).ok(), Some(share.clone()));
                let _ = share.open(&CUSTODIAN.0);
            }
            let _ = CustodianSecret::parse(&text);
            let _ = archive_reads(rest);
        }
        1 => {
            let bytes = mutate(&BACKUP, rest);
            let same = bytes == *BACKUP;
            assert_eq!(
                backup_reads(&bytes),
                same,
                "a changed backup must be refused"
            );
            assert_eq!(verify_file(&bytes[..], None).is_ok(), same);
        }
        _ => {
            let bytes = mutate(&ARCHIVE, rest);
            assert_eq!(
                archive_reads(&bytes),
                bytes == *ARCHIVE,
                "a changed archive must be refused"
            );
        }
    }
});
