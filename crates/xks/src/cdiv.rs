//! The ciphertext data integrity value (Appendix C): what lets KMS check
//! that the answer to an Encrypt is what keyhold sealed, before it throws
//! the data key's plaintext away.

use sha2::{Digest, Sha256};

/// SHA-256 over `aad || ciphertext_metadata || iv || ciphertext || tag`
/// (absent fields are empty). The lengths are deliberately not included:
/// the specification defines it this way, to catch bit flips, not forgery.
///
/// Compute it from the keystore's output *before* the check decryption
/// Appendix C asks for, so a corruption after the check cannot go unseen.
pub fn cdiv(
    aad: &[u8],
    ciphertext_metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [aad, ciphertext_metadata, iv, ciphertext, tag] {
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// Appendix C's example: 33 bytes of AAD, 13 of ciphertext metadata, a
    /// 12-byte IV, 12 bytes of ciphertext and the 16-byte tag.
    #[test]
    fn the_specifications_example_gives_its_value() {
        let aad = b"project=nile,department=marketing";
        let metadata = b"key_version=1";
        let iv = hex::decode("1ccae5470f39700254779031").unwrap();
        let ciphertext = hex::decode("821c642b5b71783367deaf18").unwrap();
        let tag = hex::decode("bc1c4dda7707d6812447c5955e99b261").unwrap();
        assert_eq!(
            aad.len() + metadata.len() + iv.len() + ciphertext.len() + tag.len(),
            86
        );
        // The same fields as the Encrypt example's Base64.
        assert_eq!(STANDARD.encode(&iv), "HMrlRw85cAJUd5Ax");
        assert_eq!(STANDARD.encode(&ciphertext), "ghxkK1txeDNn3q8Y");
        assert_eq!(STANDARD.encode(&tag), "vBxN2ncH1oEkR8WVXpmyYQ==");
        assert_eq!(STANDARD.encode(metadata), "a2V5X3ZlcnNpb249MQ==");

        let value = cdiv(aad, metadata, &iv, &ciphertext, &tag);
        assert_eq!(
            hex::encode(value),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
        assert_eq!(
            STANDARD.encode(value),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
        );
    }

    #[test]
    fn absent_fields_count_as_empty() {
        let value = cdiv(b"", b"", b"iv", b"ct", b"tag");
        assert_eq!(value, <[u8; 32]>::from(Sha256::digest(b"ivcttag")));
        assert_ne!(value, cdiv(b"a", b"", b"iv", b"ct", b"tag"));
    }
}
