//! How key material is wrapped (encrypted under the cloud's wrapping public
//! key) for import. The algorithms are the target's choice and the
//! keystore's ability; each target names them in its own terms (AWS's names,
//! which are also the stored form, are in [`super::aws`]).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrappingAlgorithm {
    /// RSAES-OAEP with SHA-256 (material wrapped directly under the RSA key).
    RsaesOaepSha256,
    /// RSAES-OAEP with SHA-1.
    RsaesOaepSha1,
    /// RSA-OAEP-SHA-256 of an ephemeral AES key, then AES key wrap (RFC 5649) of the material.
    RsaAesKeyWrapSha256,
}
