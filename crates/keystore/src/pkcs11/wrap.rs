//! Wrapping key material inside the token for AWS KMS `ImportKeyMaterial`,
//! and finding out which of AWS's wrapping algorithms the token can produce.
//!
//! - `RSAES_OAEP_SHA_256` / `RSAES_OAEP_SHA_1`: `C_WrapKey` with
//!   `CKM_RSA_PKCS_OAEP` (hash and MGF1 of the same SHA, empty label).
//! - `RSA_AES_KEY_WRAP_SHA_256`: what `CKM_RSA_AES_KEY_WRAP` computes, done
//!   in two token steps because cryptoki 0.12 has no way to name that
//!   mechanism without unsafe code: an ephemeral AES-256 session key is wrapped
//!   with RSA-OAEP-SHA-256, then wraps the material with `CKM_AES_KEY_WRAP_PAD`.
//!   The result, `OAEP(ephemeral) || KWP(material)`, is the format AWS expects.
//!   It is offered only when the token's `CKM_AES_KEY_WRAP_PAD` is RFC 5649
//!   (older PKCS#11 texts define it as PKCS#7 padding + RFC 3394, which KMS
//!   would refuse), checked against a known answer at open.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

use super::error::{Class, Fail, classify, describe};
use super::objects::AES_256_LEN;
use super::session::Ctx;

/// KMS offers RSA_2048 and up; anything smaller would protect the material
/// less than AES-256 does.
const MIN_RSA_BITS: usize = 2048;
const PROBE_RSA_BITS: u64 = 2048;

/// The hash of an RSA-OAEP wrap (also its MGF1 hash; the label is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OaepHash {
    Sha1,
    Sha256,
}

pub(super) fn oaep(hash: OaepHash) -> Mechanism<'static> {
    let (hash_alg, mgf) = match hash {
        OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash_alg, mgf, PkcsOaepSource::empty()))
}

/// A KMS wrapping public key, parsed before the token is touched.
pub(super) struct WrappingKey {
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl WrappingKey {
    pub(super) fn from_der(der: &[u8]) -> Result<Self, KeystoreError> {
        let key = RsaPublicKey::from_public_key_der(der).map_err(|e| {
            KeystoreError::Unsupported(format!(
                "the wrapping public key is not a DER SubjectPublicKeyInfo RSA key: {e}"
            ))
        })?;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(KeystoreError::Unsupported(format!(
                "the wrapping public key has {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        Ok(Self {
            modulus: key.n().to_bytes_be(),
            exponent: key.e().to_bytes_be(),
        })
    }

    /// A session object (gone with the session at the latest), allowed to wrap only.
    pub(super) fn create(&self, session: &Session) -> Result<ObjectHandle, Fail> {
        Ok(session.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Modulus(self.modulus.clone()),
            Attribute::PublicExponent(self.exponent.clone()),
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Label(b"keyhold:kms-wrapping-key".to_vec()),
        ])?)
    }
}

/// Wraps `target` under the KMS public key with `algorithm`.
pub(super) fn wrap(
    session: &Session,
    target: ObjectHandle,
    wrapping_key: &WrappingKey,
    algorithm: WrappingAlgorithm,
) -> Result<Vec<u8>, Fail> {
    let public = wrapping_key.create(session)?;
    let wrapped = match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 => session
            .wrap_key(&oaep(OaepHash::Sha256), public, target)
            .map_err(Fail::from),
        WrappingAlgorithm::RsaesOaepSha1 => session
            .wrap_key(&oaep(OaepHash::Sha1), public, target)
            .map_err(Fail::from),
        WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            rsa_aes_key_wrap(session, public, target, OaepHash::Sha256)
        }
    };
    destroy(session, public);
    wrapped
}

/// `OAEP(ephemeral AES-256 key) || AES-KWP(ephemeral, target)`, all in the token.
/// Production always uses SHA-256 (AWS's `RSA_AES_KEY_WRAP_SHA_256`); the
/// tests run it with SHA-1 on tokens that cannot wrap with OAEP-SHA-256.
pub(super) fn rsa_aes_key_wrap(
    session: &Session,
    public: ObjectHandle,
    target: ObjectHandle,
    hash: OaepHash,
) -> Result<Vec<u8>, Fail> {
    let ephemeral = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(AES_256_LEN.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Label(b"keyhold:ephemeral".to_vec()),
        ],
    )?;
    let result = (|| {
        let mut out = session.wrap_key(&oaep(hash), public, ephemeral)?;
        out.extend_from_slice(&session.wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, target)?);
        Ok(out)
    })();
    destroy(session, ephemeral);
    result
}

pub(super) fn destroy(session: &Session, object: ObjectHandle) {
    // Session objects vanish with the session anyway; a failure here is no reason to fail the call.
    if let Err(e) = session.destroy_object(object) {
        tracing::debug!(error = %describe(&e), "destroying a PKCS#11 session object failed");
    }
}

/// The wrapping algorithms the token can produce, best first (AWS's order of
/// preference: OAEP SHA-256, OAEP SHA-1, RSA-AES key wrap).
pub(super) fn probe(c: &Ctx<'_>) -> Result<Vec<WrappingAlgorithm>, Fail> {
    let info = match c
        .pkcs11
        .get_mechanism_info(c.slot, MechanismType::RSA_PKCS_OAEP)
    {
        Ok(info) => info,
        Err(e) if classify(&e) == Class::Other => {
            tracing::info!(error = %describe(&e), "the PKCS#11 token has no RSA-OAEP");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    if !info.wrap() {
        tracing::info!("the PKCS#11 token's RSA-OAEP cannot wrap keys");
        return Ok(Vec::new());
    }
    let session = c.session;
    let (public, private) = session.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(PROBE_RSA_BITS.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )?;
    let result = probe_with_pair(session, public);
    destroy(session, public);
    destroy(session, private);
    let supported = result?;
    let mut algorithms = Vec::new();
    if supported.oaep_sha256 {
        algorithms.push(WrappingAlgorithm::RsaesOaepSha256);
    }
    if supported.oaep_sha1 {
        algorithms.push(WrappingAlgorithm::RsaesOaepSha1);
    }
    // RSA-AES needs OAEP-SHA-256 for the ephemeral key and an RFC 5649 KWP for the material.
    if supported.oaep_sha256 && kwp_is_rfc5649(c)? {
        algorithms.push(WrappingAlgorithm::RsaAesKeyWrapSha256);
    }
    Ok(algorithms)
}

struct OaepSupport {
    oaep_sha256: bool,
    oaep_sha1: bool,
}

fn probe_with_pair(session: &Session, public: ObjectHandle) -> Result<OaepSupport, Fail> {
    // A throwaway key shaped like keyhold's keys (extractable AES-256).
    let target = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(AES_256_LEN.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ],
    )?;
    let result = (|| {
        Ok(OaepSupport {
            oaep_sha256: trial(
                "RSA-OAEP-SHA-256 wrap",
                session.wrap_key(&oaep(OaepHash::Sha256), public, target),
            )?,
            oaep_sha1: trial(
                "RSA-OAEP-SHA-1 wrap",
                session.wrap_key(&oaep(OaepHash::Sha1), public, target),
            )?,
        })
    })();
    destroy(session, target);
    result
}

/// Did a trial work? A refusal means "not supported"; a session or device
/// failure is not an answer and goes up.
fn trial<T>(what: &str, result: Result<T, cryptoki::error::Error>) -> Result<bool, Fail> {
    Ok(trial_value(what, result)?.is_some())
}

/// Known-answer test of `CKM_AES_KEY_WRAP_PAD` against RFC 5649 (the
/// `aes-kw` crate), with throwaway test keys created from known values.
pub(super) fn kwp_is_rfc5649(c: &Ctx<'_>) -> Result<bool, Fail> {
    match c
        .pkcs11
        .get_mechanism_info(c.slot, MechanismType::AES_KEY_WRAP_PAD)
    {
        Ok(info) if info.wrap() => {}
        Ok(_) => return Ok(false),
        Err(e) if classify(&e) == Class::Other => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Public test values, not secrets: only the token's algorithm is checked.
    let kek_value: Vec<u8> = (0u8..32).collect();
    let key_value: Vec<u8> = (32u8..64).collect();
    let Ok(kek) = aes_kw::KekAes256::try_from(kek_value.as_slice()) else {
        return Ok(false);
    };
    // RFC 5649 output: the input padded to 8 bytes, plus the 8-byte integrity block.
    let mut expected = vec![0u8; key_value.len().div_ceil(8) * 8 + 8];
    if kek.wrap_with_padding(&key_value, &mut expected).is_err() {
        return Ok(false);
    }
    let session = c.session;
    let test_key = |value: Vec<u8>, wrap: bool| {
        session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(value),
            Attribute::Wrap(wrap),
            Attribute::Extractable(!wrap),
            Attribute::Sensitive(false),
        ])
    };
    let Some(kek_object) = trial_value("creating a test AES key", test_key(kek_value, true))?
    else {
        return Ok(false);
    };
    let key_object = trial_value("creating a test AES key", test_key(key_value, false));
    let result = match key_object {
        Ok(Some(key_object)) => {
            let wrapped = trial_value(
                "AES key wrap with padding",
                session.wrap_key(&Mechanism::AesKeyWrapPad, kek_object, key_object),
            );
            destroy(session, key_object);
            wrapped.map(|w| w.is_some_and(|w| w == expected))
        }
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    destroy(session, kek_object);
    let rfc5649 = result?;
    if !rfc5649 {
        tracing::info!(
            "the PKCS#11 token's CKM_AES_KEY_WRAP_PAD is not RFC 5649: RSA_AES_KEY_WRAP_SHA_256 is not offered"
        );
    }
    Ok(rfc5649)
}

fn trial_value<T>(
    what: &str,
    result: Result<T, cryptoki::error::Error>,
) -> Result<Option<T>, Fail> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if classify(&e) == Class::Other => {
            tracing::info!(error = %describe(&e), "the PKCS#11 token refuses {what}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
