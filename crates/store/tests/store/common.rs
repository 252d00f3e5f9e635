use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::DateTime;
use keyhold_core::audit::{AuditEntry, AuditMac, AuditRecord, ChainVerifier, hmac_sha256};
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::{Alias, Description, KeyPolicy, KmsKeyId, Region};
use keyhold_core::credential::{
    AccessKeyId, CloudService, Credential, CredentialKind, Endpoint, RoleArn,
};
use keyhold_core::error::KeystoreError;
use keyhold_core::group::{
    AtRotationLimit, AwsProperties, GroupInfo, KeyGroup, KeySpec, RotationStrategy,
};
use keyhold_core::identity::{Identity, Role};
use keyhold_core::interval::Interval;
use keyhold_core::key::{CheckDigits, Key, KeyState, MaterialState};
use keyhold_core::names::{CredentialName, GroupName, IdentityName};
use keyhold_core::xks::{
    AuthorizationRule, MtlsRule, PathPrefix, Pattern, XksCredential, XksKey, XksKeyUsage, XksStore,
    XksStoreName,
};
use keyhold_store::testing::{RawConnection, TestDatabase};
use keyhold_store::{DatabaseKind, SqlStore};

pub const MAC_KEY: &[u8] = b"keyhold store test audit key";

/// HMAC-SHA256 over a fixed key; refuses while `failing` is set, as a
/// keystore whose token was pulled would.
#[derive(Default)]
pub struct TestMac {
    pub failing: AtomicBool,
}

impl TestMac {
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}

impl AuditMac for TestMac {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(KeystoreError::Unavailable("token removed".into()));
        }
        hmac_sha256(MAC_KEY, data)
    }
}

/// One test's store, on the backend of the run (`KEYHOLD_TEST_DATABASE`):
/// a SQLite file in a temporary directory, or a fresh PostgreSQL database.
pub struct Fixture {
    pub store: Arc<dyn SqlStore>,
    pub mac: Arc<TestMac>,
    // After the store: a PostgreSQL database is dropped once the store is.
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create().await.unwrap();
        let mac = Arc::new(TestMac::default());
        let store = connect(&db.url(&dir.path().join("keyhold.db")), &mac).await;
        Self {
            store,
            mac,
            db,
            dir,
        }
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("keyhold.db")
    }

    pub fn url(&self) -> String {
        self.db.url(&self.db_path())
    }

    /// Another store on the same database, as another process or node would open it.
    pub async fn open(&self) -> Arc<dyn SqlStore> {
        connect(&self.url(), &self.mac).await
    }

    /// A connection of its own, behind the store's back.
    pub async fn raw(&self) -> RawConnection {
        self.db.raw(&self.db_path()).await.unwrap()
    }

    pub fn is_postgres(&self) -> bool {
        self.db.kind() == DatabaseKind::Postgres
    }

    pub async fn audit_count(&self) -> usize {
        self.store.audit_page(0, 1_000_000).await.unwrap().len()
    }
}

pub async fn connect(url: &str, mac: &Arc<TestMac>) -> Arc<dyn SqlStore> {
    keyhold_store::connect(url, mac.clone()).await.unwrap()
}

/// A store on the SQLite file at `path`, whatever the run's backend: for the
/// tests of what only SQLite has (files, WAL, its own migration 0003).
pub async fn open_sqlite(path: &Path, mac: &Arc<TestMac>) -> Arc<dyn SqlStore> {
    connect(&format!("sqlite://{}?mode=rwc", path.display()), mac).await
}

/// Walks the whole chain as `keyhold audit verify` does; returns the entries checked.
pub async fn verify_chain(store: &Arc<dyn SqlStore>) -> u64 {
    let mut verifier = ChainVerifier::new(Arc::new(TestMac::default()));
    let mut after = 0;
    loop {
        let page: Vec<AuditEntry> = store.audit_page(after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            verifier
                .push(entry)
                .unwrap_or_else(|b| panic!("entry {}: {}", entry.seq, b.describe()));
        }
    }
    verifier.checked()
}

/// A time with whole microseconds: the stored form keeps no more.
pub fn at(secs: i64) -> Timestamp {
    DateTime::from_timestamp(1_750_000_000 + secs, 123_456_000).unwrap()
}

pub fn record(summary: &str) -> AuditRecord {
    AuditRecord::new(at(0), "Admin1,Admin2", summary)
}

pub fn identity(name: &str) -> Identity {
    Identity {
        name: IdentityName::parse(name).unwrap(),
        role: Role::KeyOfficer,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        must_change_password: true,
        failed_logins: 0,
        locked_until: None,
        created_at: at(1),
    }
}

pub fn credential(name: &str) -> Credential {
    Credential {
        id: uuid::Uuid::new_v4(),
        name: CredentialName::parse(name).unwrap(),
        service: CloudService::Aws,
        kind: CredentialKind::AccessKey {
            access_key_id: AccessKeyId::parse("AKIAIOSFODNN7EXAMPLE").unwrap(),
            sealed_secret: vec![0, 1, 2, 254, 255],
        },
        endpoint: Some(Endpoint::parse("http://127.0.0.1:4566").unwrap()),
        created_at: at(2),
    }
}

/// A credential on the server's default chain, assuming `role` when given.
pub fn chain_credential(name: &str, role: Option<&str>) -> Credential {
    Credential {
        id: uuid::Uuid::new_v4(),
        name: CredentialName::parse(name).unwrap(),
        service: CloudService::Aws,
        kind: CredentialKind::DefaultChain {
            role_arn: role.map(|r| RoleArn::parse(r).unwrap()),
        },
        endpoint: None,
        created_at: at(2),
    }
}

pub fn group(name: &str, credential: &str) -> KeyGroup {
    KeyGroup {
        id: uuid::Uuid::new_v4(),
        name: GroupName::parse(name).unwrap(),
        service: CloudService::Aws,
        credential: CredentialName::parse(credential).unwrap(),
        spec: KeySpec,
        rotate_every: Some(Interval::parse("30d").unwrap()),
        valid_for: Some(Interval::parse("1y").unwrap()),
        info: GroupInfo::parse("payments team", "line one\nline two").unwrap(),
        aws: AwsProperties {
            alias: Alias::parse(&format!("alias/{name}")).unwrap(),
            description: Description::parse("demo key").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            active_key_id: Some(KmsKeyId::parse("bbb61d9f-0fba-4585-8c31-988cbc999849").unwrap()),
            policy: Some(
                KeyPolicy::parse(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#)
                    .unwrap(),
            ),
            disable_after_rotate: true,
            rotation: RotationStrategy::NewMaterial,
            at_rotation_limit: AtRotationLimit::Refuse,
            self_heal: false,
        },
        created_at: at(3),
        updated_at: at(4),
        next_rotation_at: Some(at(3 + 30 * 86_400)),
    }
}

pub fn key(group: &str, version: u32) -> Key {
    Key {
        id: uuid::Uuid::new_v4(),
        group: GroupName::parse(group).unwrap(),
        version,
        kms_key_id: Some(KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()),
        check_digits: CheckDigits::parse("57CF").unwrap(),
        valid_from: at(5),
        valid_to: Some(at(5 + 365 * 86_400)),
        state: KeyState::Enabled,
        kms_material_id: None,
        material_state: MaterialState::Current,
        rotated_in: false,
        keystore_handle: b"sealed handle bytes".to_vec(),
        created_at: at(5),
    }
}

pub const CA_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUdGVzdA==\n-----END CERTIFICATE-----\n";

/// An external key store named `name` at `/xks/<name>`, with mutual TLS.
pub fn xks_store(name: &str) -> XksStore {
    let name = XksStoreName::parse(name).unwrap();
    XksStore {
        id: uuid::Uuid::new_v4(),
        path_prefix: PathPrefix::for_store(&name).unwrap(),
        name,
        quota_per_second: 1800,
        mtls: Some(MtlsRule::new("cks.kms.eu-west-1.amazonaws.com", CA_PEM).unwrap()),
        created_at: at(1),
        updated_at: at(1),
    }
}

/// A credential of `store`, with a fresh access key id.
pub fn xks_credential(store: &XksStore, created: i64) -> XksCredential {
    let (access_key_id, _) = keyhold_core::xks::generate_credential().unwrap();
    XksCredential {
        id: uuid::Uuid::new_v4(),
        store_id: store.id,
        access_key_id,
        sealed_secret: vec![0, 1, 2, 253, 254, 255],
        created_at: at(created),
    }
}

/// An enabled key of `store` admitting one role family's decryptions.
pub fn xks_key(store: &XksStore, created: i64) -> XksKey {
    XksKey {
        id: uuid::Uuid::new_v4(),
        store_id: store.id,
        description: "payments ledger".into(),
        usage: XksKeyUsage::EncryptDecrypt,
        enabled: true,
        rule: AuthorizationRule {
            principals: vec![Pattern::parse("arn:aws:iam::111122223333:role/app-*").unwrap()],
            kms_operations: vec![Pattern::parse("Decrypt").unwrap()],
            ..AuthorizationRule::default()
        },
        handle: b"xks handle bytes".to_vec(),
        check_digits: CheckDigits::parse("A1B2").unwrap(),
        created_at: at(created),
        updated_at: at(created),
    }
}
