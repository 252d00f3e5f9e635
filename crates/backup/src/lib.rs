//! keyhold's backups: the file format, the M-of-N sharing of each backup's
//! key among custodians, the custodians' keys, and signed audit archives.
//!
//! No database, keystore or async here: the server streams a snapshot into
//! a [`BackupWriter`], the restore reads a [`BackupReader`] into a loader.
//!
//! # A backup file
//!
//! | part      | bytes  | content                                                                         |
//! |-----------|--------|---------------------------------------------------------------------------------|
//! | magic     | 8      | `KHBACKUP`                                                                      |
//! | length    | 4      | u32 BE: the header's length (at most 64 KiB)                                    |
//! | header    | length | JSON [`Header`], in the clear: id, time, who, custodians, key check, audit key |
//! | segments  | …      | each: kind (1: `0x00` more, `0x01` last) ‖ length (4, u32 BE) ‖ ciphertext      |
//! | trailer   | 96     | SHA-256 of every byte before it (32) ‖ ECDSA P-256 signature r ‖ s (64)         |
//!
//! The segments are AES-256-GCM STREAM (`aead::stream`, big-endian 32-bit
//! counter, 7-byte nonce prefix `stream_nonce`), 64 KiB of plaintext each
//! (all but the last exactly). The stream key is HKDF-SHA256 of the backup
//! key, salted with the SHA-256 of the header's exact bytes. The plaintext
//! is a run of frames, each a u32 BE length and one JSON [`Record`]; the
//! last is [`Record::End`] with the number before it. The trailer is signed
//! by the audit signing key over `"keyhold-backup-v1 trailer" ‖ hash`.
//!
//! Inside: the audit keys and key material wrapped under
//! [`BackupKey::wrap_key`] (RFC 5649, so a PKCS#11 token unwraps them
//! without the material leaving it), every table's rows, credential
//! secrets in the clear (the stream encrypts them), audit archive files.
//!
//! # Threat model
//!
//! - The backup key exists only while a backup is made or restored; it is
//!   split into shares (Shamir, M of N, [`split`]) each encrypted to one
//!   custodian's X25519 key (HPKE, [`ShareFile`]). Fewer than M
//!   custodians, or whoever steals the files and the server's database,
//!   learn nothing but the header.
//! - Any change to a file (a flipped byte, a segment dropped, reordered or
//!   cut, a header edited) fails decryption, and [`verify_file`] catches it
//!   with the audit public key alone, without any share.
//! - Not covered: M custodians together can read everything (that is the
//!   point); whoever holds M shares and the audit signing key can forge a
//!   backup; an old but genuine backup can be passed off as the newest —
//!   compare its id and time with the server's list of backups.

pub mod archive;
mod custodian;
mod error;
mod format;
mod header;
mod io;
mod key;
mod reader;
mod record;
mod shamir;
mod share;
mod signature;
mod writer;

pub use archive::{
    ARCHIVE_FORMAT, ARCHIVE_VERSION, ArchiveHeader, ArchiveRange, ArchiveReader, ArchiveSummary,
    ArchiveWriter, read_archive, write_archive,
};
#[cfg(any(test, feature = "testing"))]
pub use custodian::passphrase_kdf_for_tests;
pub use custodian::{
    CustodianSecret, PASSPHRASE_ITERATIONS, PASSPHRASE_MEMORY_KIB, PASSPHRASE_PARALLELISM,
    SECRET_PREFIX, custodian_from_passphrase, generate_custodian_key, key_fingerprint,
    new_passphrase_kdf,
};
pub use error::{BackupError, Result};
pub use header::{BACKUP_FORMAT, BACKUP_VERSION, Header, HeaderInfo};
pub use io::HashingWriter;
pub use key::BackupKey;
pub use reader::{BackupReader, Verified, verify_file};
pub use record::{Record, SecretBytes};
pub use shamir::{combine, split};
pub use share::{SHARE_FORMAT, SHARE_VERSION, Share, ShareFile};
pub use writer::{BackupWriter, Summary};
