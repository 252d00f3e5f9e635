//! Splitting a backup key among custodians (Shamir over GF(256), the
//! `blahaj` crate) and putting it back together.

use blahaj::Sharks;
use keyhold_core::backup::CustodianSet;
use zeroize::Zeroizing;

use crate::custodian::{key_fingerprint, parse_public_key};
use crate::error::{BackupError, Result};
use crate::header::Header;
use crate::key::{BackupKey, KEY_LEN};
use crate::share::{Recipient, SHARE_LEN, Share, ShareFile};

/// One share file per custodian, in `custodians` order (share `i + 1` is
/// custodian `i`'s), each encrypted to that custodian's key.
pub fn split(
    key: &BackupKey,
    header: &Header,
    custodians: &CustodianSet,
) -> Result<Vec<ShareFile>> {
    if header.threshold != custodians.threshold || header.custodians != custodians.names() {
        return Err(BackupError::Invalid(
            "the custodians are not those the backup's header names: make the header from the same custodian set".into(),
        ));
    }
    if !header.matches(key) {
        return Err(BackupError::Invalid(
            "the header's key_check is not this backup key's".into(),
        ));
    }
    let count = u8::try_from(custodians.custodians.len())
        .map_err(|_| BackupError::Invalid("too many custodians".into()))?;
    // Every recipient key is checked before any share exists.
    let public_keys = custodians
        .custodians
        .iter()
        .map(|c| parse_public_key(c.name.as_str(), &c.public_key))
        .collect::<Result<Vec<_>>>()?;
    let dealer = Sharks(custodians.threshold).dealer(key.expose());
    let mut files = Vec::with_capacity(custodians.custodians.len());
    for (((custodian, public_key), share), index) in custodians
        .custodians
        .iter()
        .zip(&public_keys)
        .zip(dealer)
        .zip(1..=count)
    {
        let bytes = Zeroizing::new(Vec::from(&share));
        if bytes.len() != SHARE_LEN || bytes.first() != Some(&index) {
            return Err(BackupError::Invalid(
                "the secret sharing library returned shares in an unexpected form".into(),
            ));
        }
        let name = custodian.name.to_string();
        files.push(ShareFile::seal(
            header.backup_id,
            index,
            custodians.threshold,
            count,
            Recipient {
                name: &name,
                public_key,
                key_fingerprint: key_fingerprint(&custodian.public_key).unwrap_or_default(),
                kdf: custodian.kdf.clone(),
            },
            &bytes,
        )?);
    }
    Ok(files)
}

/// The backup key from at least `threshold` opened shares of this backup.
pub fn combine(header: &Header, shares: &[Share]) -> Result<BackupKey> {
    let needed = usize::from(header.threshold);
    let count = header.custodians.len();
    let mut seen: Vec<&Share> = Vec::with_capacity(shares.len());
    for share in shares {
        if share.backup_id != header.backup_id {
            return Err(BackupError::Shares(format!(
                "custodian '{}''s share is of backup {}, not of this backup {}",
                share.custodian, share.backup_id, header.backup_id
            )));
        }
        let named = usize::from(share.index)
            .checked_sub(1)
            .and_then(|i| header.custodians.get(i));
        if share.threshold != header.threshold
            || usize::from(share.count) != count
            || named != Some(&share.custodian)
        {
            return Err(BackupError::Shares(format!(
                "custodian '{}''s share (number {}) does not match this backup's custodians",
                share.custodian, share.index
            )));
        }
        if seen.iter().any(|s| s.index == share.index) {
            return Err(BackupError::Shares(format!(
                "custodian '{}''s share is given twice: give each custodian's share once",
                share.custodian
            )));
        }
        seen.push(share);
    }
    if seen.len() < needed {
        let missing: Vec<&str> = header
            .custodians
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.iter().any(|s| usize::from(s.index) == i + 1))
            .map(|(_, name)| name.as_str())
            .collect();
        return Err(BackupError::Shares(format!(
            "{} share(s) given, this backup needs {needed} of its {count} custodians': add shares from {} more of {}",
            seen.len(),
            needed - seen.len(),
            missing.join(", ")
        )));
    }
    let parsed = seen
        .iter()
        .map(|s| blahaj::Share::try_from(s.bytes.as_slice()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| BackupError::Shares(format!("a share is malformed: {e}")))?;
    let secret = Zeroizing::new(
        Sharks(header.threshold)
            .recover(&parsed)
            .map_err(|e| BackupError::Shares(e.to_string()))?,
    );
    if secret.len() != KEY_LEN {
        return Err(BackupError::Shares(
            "they recombine to a key of the wrong length".into(),
        ));
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&secret);
    let key = BackupKey::from_bytes(bytes);
    if !header.matches(&key) {
        return Err(BackupError::Shares(
            "they recombine to a key that is not this backup's: one of them is damaged or from another backup; try another combination of custodians".into(),
        ));
    }
    Ok(key)
}
