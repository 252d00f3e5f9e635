//! The backup format, sharing and custodians through the public API.
// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use keyhold_backup::{
    BackupError, BackupKey, BackupReader, BackupWriter, CustodianSecret, Header, HeaderInfo,
    Record, ShareFile, combine, custodian_from_passphrase, generate_custodian_key,
    passphrase_kdf_for_tests, split, verify_file,
};
use keyhold_core::audit::{AuditSigner, SoftwareSigningKey};
use keyhold_core::backup::{
    Custodian, CustodianName, CustodianSet, SnapshotValue, WrappedAuditKeys,
};
use proptest::prelude::*;
use secrecy::SecretString;
use uuid::Uuid;
use zeroize::Zeroizing;

static SIGNER: LazyLock<SoftwareSigningKey> =
    LazyLock::new(|| SoftwareSigningKey::generate().unwrap());

fn custodians(n: usize, threshold: u8) -> (CustodianSet, Vec<CustodianSecret>) {
    let (secrets, publics): (Vec<_>, Vec<_>) =
        (0..n).map(|_| generate_custodian_key().unwrap()).unzip();
    let list = publics
        .into_iter()
        .enumerate()
        .map(|(i, public_key)| Custodian {
            name: CustodianName::parse(&format!("custodian{i}")).unwrap(),
            public_key,
            kdf: None,
        })
        .collect();
    (CustodianSet::new(threshold, list).unwrap(), secrets)
}

fn header_for(key: &BackupKey, set: &CustodianSet) -> Header {
    Header::new(
        HeaderInfo {
            backup_id: Uuid::new_v4(),
            created_at: "2030-01-02T03:04:05Z".into(),
            created_by: "Admin1,Admin2".into(),
            node: "node-a".into(),
            keystore: "software".into(),
            database: "sqlite".into(),
            schema_version: 13,
        },
        set,
        &SIGNER.audit_public_key().unwrap(),
        key,
    )
    .unwrap()
}

fn audit_keys() -> Record {
    Record::AuditKeys(WrappedAuditKeys {
        mac: vec![1; 40],
        signing: vec![2; 150],
        signing_public: SIGNER.audit_public_key().unwrap().to_spki_der(),
    })
}

fn write(key: &BackupKey, header: &Header, records: &[Record]) -> Vec<u8> {
    let mut writer = BackupWriter::new(Vec::new(), header, key).unwrap();
    for record in records {
        writer.write(record).unwrap();
    }
    let (bytes, summary) = writer.finish(&*SIGNER).unwrap();
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(summary.records, records.len() as u64);
    bytes
}

fn read_all(bytes: &[u8], key: &BackupKey) -> Result<Vec<Record>, BackupError> {
    let mut reader = BackupReader::open(bytes)?;
    reader.unlock(key)?;
    let mut out = Vec::new();
    while let Some(record) = reader.next_record()? {
        out.push(record);
    }
    Ok(out)
}

/// A backup of a few records, in one segment.
struct Fixture {
    key: BackupKey,
    bytes: Vec<u8>,
}

fn fixture(records: &[Record]) -> Fixture {
    let key = BackupKey::generate().unwrap();
    let (set, _) = custodians(3, 2);
    let header = header_for(&key, &set);
    let bytes = write(&key, &header, records);
    Fixture { key, bytes }
}

fn small_records() -> Vec<Record> {
    vec![
        audit_keys(),
        Record::Table {
            name: "keys".into(),
            columns: vec!["id".into(), "keystore_handle".into()],
        },
        Record::KeyMaterial {
            key_id: Uuid::nil(),
            wrapped: vec![7; 40],
        },
        Record::Row {
            values: vec![SnapshotValue::Text("k1".into()), SnapshotValue::Null],
        },
        Record::CredentialSecret {
            id: Uuid::nil(),
            secret: b"aws secret".to_vec().into(),
        },
    ]
}

static SMALL: LazyLock<Fixture> = LazyLock::new(|| fixture(&small_records()));

/// Several segments: rows, then an archive file larger than a segment.
static LARGE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut records = small_records();
    records.extend((0..1500).map(|i| Record::Row {
        values: vec![
            SnapshotValue::Integer(i),
            SnapshotValue::Real(i as f64 / 3.0),
            SnapshotValue::Bool(i % 2 == 0),
            SnapshotValue::Bytes(vec![i as u8; 17]),
        ],
    }));
    records.push(Record::AuditArchive {
        file: "audit-1-100.jsonl".into(),
        bytes: (0..100_000u32).map(|i| (i % 251) as u8).collect(),
    });
    fixture(&records)
});

fn refused(bytes: &[u8], key: &BackupKey) -> bool {
    read_all(bytes, key).is_err() && verify_file(bytes, None).is_err()
}

#[test]
fn a_backup_reads_back_record_for_record_and_verifies_without_its_key() {
    let key = BackupKey::generate().unwrap();
    let (set, _) = custodians(3, 2);
    let header = header_for(&key, &set);
    let records = small_records();
    let bytes = write(&key, &header, &records);
    assert_eq!(read_all(&bytes, &key).unwrap(), records);
    let verified = verify_file(&bytes[..], Some(&SIGNER.audit_public_key().unwrap())).unwrap();
    assert_eq!(verified.header, header);
    assert_eq!(verified.size, bytes.len() as u64);
    let reader = BackupReader::open(&bytes[..]).unwrap();
    assert_eq!(reader.header(), &header);
    // The records are encrypted: the secret is not in the file.
    assert!(!bytes.windows(10).any(|w| w == b"aws secret"));
}

#[test]
fn records_larger_than_a_segment_cross_segments() {
    let records = read_all(&LARGE.bytes, &LARGE.key).unwrap();
    assert_eq!(records.len(), 5 + 1500 + 1);
    assert!(LARGE.bytes.len() > 3 * 64 * 1024);
    verify_file(&LARGE.bytes[..], None).unwrap();
}

#[test]
fn every_flipped_byte_and_every_truncation_of_a_small_backup_is_refused() {
    let Fixture { key, bytes } = &*SMALL;
    for i in 0..bytes.len() {
        for mask in [0x01, 0x20, 0x80] {
            let mut flipped = bytes.clone();
            flipped[i] ^= mask;
            assert!(
                refused(&flipped, key),
                "flip {mask:#x} at {i} of {}",
                bytes.len()
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(refused(&bytes[..len], key), "cut at {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(refused(&longer, key));
}

#[test]
fn a_wrong_key_or_a_locked_reader_reads_nothing() {
    let Fixture { key: _, bytes } = &*SMALL;
    let other = BackupKey::generate().unwrap();
    assert!(matches!(
        read_all(bytes, &other),
        Err(BackupError::WrongKey(_))
    ));
    let mut reader = BackupReader::open(&bytes[..]).unwrap();
    assert!(reader.next_record().is_err());
    let stranger = SoftwareSigningKey::generate()
        .unwrap()
        .audit_public_key()
        .unwrap();
    let err = verify_file(&bytes[..], Some(&stranger)).unwrap_err();
    assert!(err.to_string().contains("not the expected"), "{err}");
    assert!(matches!(
        BackupReader::open(&b"PK\x03\x04 not a backup"[..]),
        Err(BackupError::NotABackup(_))
    ));
}

#[test]
fn the_writer_refuses_a_foreign_signer_a_mismatched_key_and_unrepresentable_rows() {
    let key = BackupKey::generate().unwrap();
    let (set, _) = custodians(2, 2);
    let header = header_for(&key, &set);
    let other = BackupKey::generate().unwrap();
    assert!(BackupWriter::new(Vec::new(), &header, &other).is_err());
    let mut writer = BackupWriter::new(Vec::new(), &header, &key).unwrap();
    let nan = Record::Row {
        values: vec![SnapshotValue::Real(f64::NAN)],
    };
    assert!(writer.write(&nan).is_err());
    assert!(writer.write(&Record::End { records: 0 }).is_err());
    let stranger = SoftwareSigningKey::generate().unwrap();
    let err = writer.finish(&stranger).unwrap_err();
    assert!(err.to_string().contains("audit signing key"), "{err}");
}

#[test]
fn audit_keys_other_than_the_header_names_are_refused() {
    let stranger = SoftwareSigningKey::generate().unwrap();
    let fixture = fixture(&[Record::AuditKeys(WrappedAuditKeys {
        mac: vec![1],
        signing: vec![2],
        signing_public: stranger.audit_public_key().unwrap().to_spki_der(),
    })]);
    assert!(read_all(&fixture.bytes, &fixture.key).is_err());
}

#[test]
fn shares_open_only_with_their_custodian_key_and_refuse_relabelling() {
    let key = BackupKey::generate().unwrap();
    let (set, secrets) = custodians(3, 2);
    let header = header_for(&key, &set);
    let files = split(&key, &header, &set).unwrap();
    assert_eq!(files.len(), 3);
    let text = files[0].to_text();
    let parsed = ShareFile::parse(&text).unwrap();
    assert_eq!(parsed, files[0]);
    assert_eq!(parsed.custodian, "custodian0");
    let err = parsed.open(&secrets[1]).unwrap_err().to_string();
    assert!(err.contains("not for that key"), "{err}");
    // Relabelled as another custodian's (with that custodian's key fingerprint).
    let mut relabelled = files[0].clone();
    relabelled.custodian = "custodian1".into();
    relabelled.index = 2;
    relabelled.key_fingerprint = files[1].key_fingerprint.clone();
    assert!(relabelled.open(&secrets[1]).is_err());
    let mut moved = files[0].clone();
    moved.backup_id = Uuid::new_v4();
    assert!(moved.open(&secrets[0]).is_err());
    for bad in ["", "{}", "null", &text.replace("keyhold-backup-share", "x")] {
        assert!(ShareFile::parse(bad).is_err(), "{bad:?}");
    }
    assert!(ShareFile::parse(&" ".repeat(100_000)).is_err());
}

#[test]
fn combining_refuses_duplicates_strangers_and_shares_of_another_key() {
    let key = BackupKey::generate().unwrap();
    let (set, secrets) = custodians(3, 2);
    let header = header_for(&key, &set);
    let shares: Vec<_> = split(&key, &header, &set)
        .unwrap()
        .iter()
        .zip(&secrets)
        .map(|(f, s)| f.open(s).unwrap())
        .collect();
    let err = combine(&header, &[shares[0].clone(), shares[0].clone()]).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let err = combine(&header, &shares[..1]).unwrap_err();
    assert!(err.to_string().contains("needs 2"), "{err}");
    assert!(combine(&header, &[]).is_err());
    // Another backup's shares.
    let other_key = BackupKey::generate().unwrap();
    let other_header = header_for(&other_key, &set);
    let other: Vec<_> = split(&other_key, &other_header, &set)
        .unwrap()
        .iter()
        .zip(&secrets)
        .map(|(f, s)| f.open(s).unwrap())
        .collect();
    let err = combine(&header, &[shares[0].clone(), other[1].clone()]).unwrap_err();
    assert!(err.to_string().contains("of backup"), "{err}");
    // A split of another key under the same header: the key check catches it.
    let mut same_id = other_header.clone();
    same_id.backup_id = header.backup_id;
    same_id.key_check = other_key.key_check();
    let forged: Vec<_> = split(&other_key, &same_id, &set)
        .unwrap()
        .iter()
        .zip(&secrets)
        .map(|(f, s)| f.open(s).unwrap())
        .collect();
    let err = combine(&header, &[shares[0].clone(), forged[1].clone()]).unwrap_err();
    assert!(err.to_string().contains("not this backup's"), "{err}");
    let key_back = combine(&header, &shares[1..]).unwrap();
    assert_eq!(key_back.wrap_key().expose(), key.wrap_key().expose());
    assert!(!format!("{:?}", shares[0]).contains(&hex::encode(key.wrap_key().expose())));
}

#[test]
fn a_passphrase_custodian_opens_their_share_with_the_passphrase() {
    let kdf = passphrase_kdf_for_tests();
    let pass = SecretString::from("violet staircase at dawn");
    let secret = custodian_from_passphrase(&pass, &kdf).unwrap();
    let (_, other_public) = generate_custodian_key().unwrap();
    let set = CustodianSet::new(
        2,
        vec![
            Custodian {
                name: CustodianName::parse("alice").unwrap(),
                public_key: secret.public_key_hex(),
                kdf: Some(kdf.clone()),
            },
            Custodian {
                name: CustodianName::parse("bob").unwrap(),
                public_key: other_public,
                kdf: None,
            },
        ],
    )
    .unwrap();
    let key = BackupKey::generate().unwrap();
    let header = header_for(&key, &set);
    let files = split(&key, &header, &set).unwrap();
    let file = ShareFile::parse(&files[0].to_text()).unwrap();
    let kdf_in_file = file.kdf.clone().unwrap();
    let again = custodian_from_passphrase(&pass, &kdf_in_file).unwrap();
    assert_eq!(file.open(&again).unwrap().custodian(), "alice");
    let wrong = custodian_from_passphrase(
        &SecretString::from("violet staircase at dusk"),
        &kdf_in_file,
    )
    .unwrap();
    let err = file.open(&wrong).unwrap_err().to_string();
    assert!(err.contains("passphrase is wrong"), "{err}");
}

#[test]
fn custodian_key_files_round_trip() {
    let (secret, public) = generate_custodian_key().unwrap();
    let text = secret.to_text();
    assert!(text.starts_with("keyhold-custodian-secret-v1:"));
    assert_eq!(
        CustodianSecret::parse(&text).unwrap().public_key_hex(),
        public
    );
    let fixed = BackupKey::from_bytes(Zeroizing::new([3; 32]));
    assert_eq!(format!("{fixed:?}"), "BackupKey(<redacted>)");
}

fn snapshot_value() -> impl Strategy<Value = SnapshotValue> {
    prop_oneof![
        Just(SnapshotValue::Null),
        any::<i64>().prop_map(SnapshotValue::Integer),
        (-1e12f64..1e12).prop_map(SnapshotValue::Real),
        ".{0,40}".prop_map(SnapshotValue::Text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(SnapshotValue::Bytes),
        any::<bool>().prop_map(SnapshotValue::Bool),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            "[a-z_]{1,12}",
            proptest::collection::vec("[a-z_]{1,12}", 0..6)
        )
            .prop_map(|(name, columns)| Record::Table { name, columns }),
        proptest::collection::vec(snapshot_value(), 0..8).prop_map(|values| Record::Row { values }),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|wrapped| Record::KeyMaterial {
            key_id: Uuid::new_v4(),
            wrapped
        }),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|secret| Record::CredentialSecret {
            id: Uuid::new_v4(),
            secret: secret.into()
        }),
        (".{0,20}", proptest::collection::vec(any::<u8>(), 0..20_000))
            .prop_map(|(file, bytes)| Record::AuditArchive { file, bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(record(), 0..40)) {
        let key = BackupKey::generate().unwrap();
        let (set, _) = custodians(2, 2);
        let header = header_for(&key, &set);
        let bytes = write(&key, &header, &records);
        prop_assert_eq!(read_all(&bytes, &key).unwrap(), records);
        prop_assert!(verify_file(&bytes[..], None).is_ok());
    }

    #[test]
    fn any_flipped_byte_of_a_large_backup_is_refused(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let Fixture { key, bytes } = &*LARGE;
        let mut flipped = bytes.clone();
        flipped[at.index(bytes.len())] ^= mask;
        prop_assert!(refused(&flipped, key));
    }

    #[test]
    fn any_truncation_of_a_large_backup_is_refused(at in any::<prop::sample::Index>()) {
        let Fixture { key, bytes } = &*LARGE;
        prop_assert!(refused(&bytes[..at.index(bytes.len())], key));
    }

    #[test]
    fn any_m_of_n_shares_open_and_fewer_do_not(
        (n, m, order) in (2usize..=6).prop_flat_map(|n| (
            Just(n),
            2..=n,
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        ))
    ) {
        let (set, secrets) = custodians(n, m as u8);
        let key = BackupKey::generate().unwrap();
        let header = header_for(&key, &set);
        let files = split(&key, &header, &set).unwrap();
        let opened: Vec<_> = order
            .iter()
            .map(|&i| ShareFile::parse(&files[i].to_text()).unwrap().open(&secrets[i]).unwrap())
            .collect();
        let back = combine(&header, &opened[..m]).unwrap();
        prop_assert_eq!(*back.wrap_key().expose(), *key.wrap_key().expose());
        prop_assert!(combine(&header, &opened).is_ok());
        prop_assert!(matches!(combine(&header, &opened[..m - 1]), Err(BackupError::Shares(_))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn a_wrong_passphrase_is_refused(right in ".{1,24}", wrong in ".{1,24}") {
        prop_assume!(right != wrong);
        let kdf = passphrase_kdf_for_tests();
        let secret = custodian_from_passphrase(&SecretString::from(right), &kdf).unwrap();
        let (_, other_public) = generate_custodian_key().unwrap();
        let set = CustodianSet::new(2, vec![
            Custodian { name: CustodianName::parse("alice").unwrap(), public_key: secret.public_key_hex(), kdf: Some(kdf.clone()) },
            Custodian { name: CustodianName::parse("bob").unwrap(), public_key: other_public, kdf: None },
        ]).unwrap();
        let key = BackupKey::generate().unwrap();
        let header = header_for(&key, &set);
        let files = split(&key, &header, &set).unwrap();
        let guess = custodian_from_passphrase(&SecretString::from(wrong), &kdf).unwrap();
        prop_assert!(files[0].open(&guess).is_err());
        prop_assert!(files[0].open(&secret).is_ok());
    }
}
