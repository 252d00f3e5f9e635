//! Bringing material from another keystore into the token (`keyhold keystore
//! migrate`). Generated keys cannot be re-created, so their material has to
//! travel: the token makes an ephemeral RSA transport key pair (session
//! objects), the source keystore wraps the material under the public half
//! with RSA-OAEP, and `C_UnwrapKey` creates the token object. The token's
//! private half never leaves it and is destroyed right after.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use rsa::pkcs8::EncodePublicKey;
use rsa::{BigUint, RsaPublicKey};

use super::error::Fail;
use super::wrap::{self, OaepHash};

/// The transport key lives for one unwrap; 3072 bits match AES-128-level
/// strength at least, as NIST asks for keys protecting AES-256 material in transit.
const TRANSPORT_RSA_BITS: u64 = 3072;

/// Wraps the material being moved under the transport public key (DER
/// SubjectPublicKeyInfo) with the given algorithm: the source keystore's part.
pub type WrapForTransport<'a> =
    &'a dyn Fn(&[u8], WrappingAlgorithm) -> Result<Vec<u8>, KeystoreError>;

/// Creates the object described by `template` from material the source wraps.
/// `template` must not carry `CKA_VALUE_LEN` (PKCS#11 forbids it on unwrap).
pub(super) fn unwrap_into_token(
    session: &Session,
    hash: OaepHash,
    template: &[Attribute],
    wrap_material: WrapForTransport<'_>,
) -> Result<ObjectHandle, Fail> {
    let (public, private) = session.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(TRANSPORT_RSA_BITS.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Verify(false),
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )?;
    let result = (|| {
        let der = public_key_der(session, public)?;
        let algorithm = match hash {
            OaepHash::Sha256 => WrappingAlgorithm::RsaesOaepSha256,
            OaepHash::Sha1 => WrappingAlgorithm::RsaesOaepSha1,
        };
        let wrapped = wrap_material(&der, algorithm).map_err(Fail::Verdict)?;
        Ok(session.unwrap_key(&wrap::oaep(hash), private, &wrapped, template)?)
    })();
    wrap::destroy(session, public);
    wrap::destroy(session, private);
    result
}

fn public_key_der(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, Fail> {
    let mut modulus = None;
    let mut exponent = None;
    for attribute in session.get_attributes(
        public,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )? {
        match attribute {
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    let (Some(n), Some(e)) = (modulus, exponent) else {
        return Err(Fail::Verdict(KeystoreError::Internal(
            "the token did not return the transport key's modulus and exponent".into(),
        )));
    };
    let key = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
        .map_err(|e| Fail::Verdict(KeystoreError::Internal(format!("transport key: {e}"))))?;
    let der = key
        .to_public_key_der()
        .map_err(|e| Fail::Verdict(KeystoreError::Internal(format!("transport key: {e}"))))?;
    Ok(der.as_bytes().to_vec())
}
