//! Mutual TLS for external key stores.
//!
//! The specification: a proxy that supports mTLS lets the customer set the
//! client certificate's subject name and root CA, and MUST terminate the
//! handshake when a client presents a certificate with another subject or
//! chained to another CA. keyhold serves the XKS API on the same listener
//! as its API and UI, whose clients present no certificate, so:
//! - While some store has an mTLS rule, the listener asks every client for
//!   a certificate, never requiring one. A client that presents one must
//!   match one of the rules (chain to its CA, common name matching its
//!   subject), or the handshake fails. While no store has a rule, no
//!   client is asked.
//! - Which rules a connection's certificate satisfied is worked out once,
//!   after its handshake ([`MtlsRules::identify`]), and rides on each of
//!   its requests ([`ClientIdentity`]). The proxy then holds a store with a
//!   rule to its own rule: a certificate that matched another store's rule,
//!   or none at all, gets `AuthenticationFailedException` there. Stores
//!   without a rule ignore certificates.
//! - The rules are the directory's (reloaded with it); each is compiled
//!   once into a webpki verifier for its CA. A rule whose CA cannot be
//!   read matches nothing: its store fails closed.

use std::sync::{Arc, PoisonError, RwLock};

use keyhold_core::xks::{MtlsRule, Pattern};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Identifies a rule by its content (subject and CA): a rule that changes
/// is another rule, so connections that satisfied the old one do not
/// satisfy the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId([u8; 32]);

impl RuleId {
    pub fn of(rule: &MtlsRule) -> Self {
        let mut hash = Sha256::new();
        hash.update(rule.subject.as_bytes());
        hash.update([0]);
        hash.update(rule.ca_pem.as_bytes());
        Self(hash.finalize().into())
    }
}

/// What a connection's client certificate was found to be, after its
/// handshake: its common name (for logs) and the rules it satisfies.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub common_name: Option<String>,
    matched: Vec<RuleId>,
}

impl ClientIdentity {
    pub fn satisfies(&self, rule: RuleId) -> bool {
        self.matched.contains(&rule)
    }
}

/// The stores' mTLS rules as the listener applies them; replaced whole at
/// each directory reload.
pub struct MtlsRules {
    current: RwLock<Arc<Vec<CompiledRule>>>,
    provider: Arc<CryptoProvider>,
}

struct CompiledRule {
    id: RuleId,
    subject: Option<Pattern>,
    /// `None` when the CA could not be read: the rule matches nothing.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for MtlsRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsRules")
            .field("rules", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

impl MtlsRules {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(Vec::new())),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    fn snapshot(&self) -> Arc<Vec<CompiledRule>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the rules; rules unchanged keep their compiled verifier.
    pub fn replace<'a>(&self, rules: impl IntoIterator<Item = &'a MtlsRule>) {
        let previous = self.snapshot();
        let mut next: Vec<CompiledRule> = Vec::new();
        for rule in rules {
            let id = RuleId::of(rule);
            if next.iter().any(|r| r.id == id) {
                continue;
            }
            let compiled = match previous.iter().find(|r| r.id == id) {
                Some(known) => CompiledRule {
                    id,
                    subject: known.subject.clone(),
                    verifier: known.verifier.clone(),
                },
                None => self.compile(id, rule),
            };
            next.push(compiled);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
    }

    fn compile(&self, id: RuleId, rule: &MtlsRule) -> CompiledRule {
        let subject = Pattern::parse(&rule.subject)
            .inspect_err(|e| tracing::error!(subject = %rule.subject, error = %e, "an XKS store's mTLS subject cannot be used; the store refuses every request until it is corrected"))
            .ok();
        let verifier = self
            .verifier_for(&rule.ca_pem)
            .inspect_err(|e| tracing::error!(error = %e, "an XKS store's mTLS CA cannot be used; the store refuses every request until it is corrected"))
            .ok();
        CompiledRule {
            id,
            subject,
            verifier,
        }
    }

    fn verifier_for(&self, ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let certificate = certificate.map_err(|e| format!("the CA PEM: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("a CA certificate: {e}"))?;
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| format!("the CA certificates: {e}"))
    }

    /// The listener's verifier, reading these rules at each handshake.
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(MtlsVerifier {
            rules: self.clone(),
        })
    }

    /// The rules `chain` (end entity first) satisfies now; `None` for an
    /// empty chain.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Option<ClientIdentity> {
        let (end_entity, intermediates) = chain.split_first()?;
        let common_name = common_name(end_entity);
        let now = UnixTime::now();
        let matched = self
            .snapshot()
            .iter()
            .filter(|rule| rule.admits(end_entity, intermediates, common_name.as_deref(), now))
            .map(|rule| rule.id)
            .collect();
        Some(ClientIdentity {
            common_name,
            matched,
        })
    }
}

impl CompiledRule {
    fn admits(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        common_name: Option<&str>,
        now: UnixTime,
    ) -> bool {
        let (Some(verifier), Some(subject), Some(name)) =
            (&self.verifier, &self.subject, common_name)
        else {
            return false;
        };
        subject.matches(name)
            && verifier
                .verify_client_cert(end_entity, intermediates, now)
                .is_ok()
    }
}

/// The listener's client certificate verifier (see the module's rules).
struct MtlsVerifier {
    rules: Arc<MtlsRules>,
}

impl std::fmt::Debug for MtlsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for MtlsVerifier {
    fn offer_client_auth(&self) -> bool {
        !self.rules.snapshot().is_empty()
    }

    fn client_auth_mandatory(&self) -> bool {
        // The API and the UI share the listener: their clients have none.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The rules change under a lock this cannot lend out; an empty list
        // lets the client choose (curl and KMS send the one they have).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let name = common_name(end_entity);
        let rules = self.rules.snapshot();
        if rules
            .iter()
            .any(|rule| rule.admits(end_entity, intermediates, name.as_deref(), now))
        {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::debug!(
                common_name = name.as_deref().unwrap_or("(none)"),
                "a client certificate matching no XKS store's mTLS rule: handshake refused"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.rules.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.rules.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.rules
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The subject common name of a DER certificate; `None` when it has none,
/// more than one, or cannot be read. Certificates reach this only from a
/// TLS handshake; a rule's verifier checks them in full before any name
/// read here admits them.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const VERSION: u8 = 0xa0;
    /// id-at-commonName, 2.5.4.3.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    let (certificate, _) = der::expect(certificate, SEQUENCE)?;
    let (tbs, _) = der::expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = der::any(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = der::any(rest)?.2;
    }
    let (mut subject, _) = der::expect(rest, SEQUENCE)?;
    let mut found: Option<String> = None;
    while !subject.is_empty() {
        let (mut rdn, after) = der::expect(subject, SET)?;
        subject = after;
        while !rdn.is_empty() {
            let (attribute, after) = der::expect(rdn, SEQUENCE)?;
            rdn = after;
            let (oid, value) = der::expect(attribute, 0x06)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = der::any(value)?;
            let text = der::string(tag, text)?;
            if found.replace(text).is_some() {
                return None;
            }
        }
    }
    found
}

/// Just enough DER to walk to a certificate's subject.
mod der {
    /// One element: its tag, its contents and what follows it.
    pub fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *input.first()?;
        // High tag numbers (0x1f) never occur on the way to the subject.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let first = *input.get(1)?;
        let (length, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let bytes = input.get(2..2 + count)?;
            let length = bytes
                .iter()
                .fold(0usize, |length, &b| (length << 8) | usize::from(b));
            (length, 2 + count)
        };
        let end = header.checked_add(length)?;
        Some((tag, input.get(header..end)?, input.get(end..)?))
    }

    /// The next element, which must have `tag`: its contents and the rest.
    pub fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (found, contents, rest) = any(input)?;
        (found == tag).then_some((contents, rest))
    }

    /// A directory string's text: UTF8String, PrintableString, IA5String
    /// or TeletexString read as UTF-8, BMPString as UTF-16.
    pub fn string(tag: u8, contents: &[u8]) -> Option<String> {
        match tag {
            0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(contents).ok().map(str::to_owned),
            0x1e => {
                if !contents.len().is_multiple_of(2) {
                    return None;
                }
                let units: Vec<u16> = contents
                    .chunks_exact(2)
                    .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                    .collect();
                String::from_utf16(&units).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("testdata/ca.pem");
    const OTHER_CA: &str = include_str!("testdata/other.pem");
    /// CN=cks.kms.eu-west-1.amazonaws.com, issued by CA.
    const KMS: &str = include_str!("testdata/kms.pem");
    /// CN=someone.example.com, issued by CA.
    const STRANGER: &str = include_str!("testdata/stranger.pem");
    /// CN=cks.kms.eu-west-1.amazonaws.com, issued by OTHER_CA.
    const FORGED: &str = include_str!("testdata/forged.pem");

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn rule(subject: &str, ca: &str) -> MtlsRule {
        MtlsRule::new(subject, ca).unwrap()
    }

    #[test]
    fn common_names_are_read_from_the_subject_not_the_issuer() {
        assert_eq!(
            common_name(&der(KMS)).as_deref(),
            Some("cks.kms.eu-west-1.amazonaws.com")
        );
        assert_eq!(common_name(&der(CA)).as_deref(), Some("Test KMS Root"));
        assert_eq!(
            common_name(&der(STRANGER)).as_deref(),
            Some("someone.example.com")
        );
        // Garbage and truncations are refused, never a panic.
        let whole = der(KMS);
        for cut in 0..whole.len() {
            let _ = common_name(&whole[..cut]);
        }
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn a_certificate_satisfies_only_rules_whose_ca_and_subject_it_matches() {
        let rules = MtlsRules::new();
        let kms_rule = rule("cks.kms.eu-west-1.amazonaws.com", CA);
        let any_region = rule("cks.kms.*.amazonaws.com", CA);
        let other_rule = rule("cks.kms.eu-west-1.amazonaws.com", OTHER_CA);
        let verifier = rules.verifier();
        assert!(!verifier.offer_client_auth());
        rules.replace([&kms_rule, &any_region, &kms_rule]);
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        let now = UnixTime::now();

        let kms = rules.identify(&[der(KMS)]).unwrap();
        assert!(kms.satisfies(RuleId::of(&kms_rule)));
        assert!(kms.satisfies(RuleId::of(&any_region)));
        assert!(!kms.satisfies(RuleId::of(&other_rule)));
        assert!(verifier.verify_client_cert(&der(KMS), &[], now).is_ok());

        // Right CA, wrong subject; right subject, wrong CA: refused.
        assert!(
            verifier
                .verify_client_cert(&der(STRANGER), &[], now)
                .is_err()
        );
        assert!(verifier.verify_client_cert(&der(FORGED), &[], now).is_err());
        let forged = rules.identify(&[der(FORGED)]).unwrap();
        assert!(!forged.satisfies(RuleId::of(&kms_rule)));

        // The rule changed (its CA replaced): the old identity no longer counts.
        rules.replace([&other_rule]);
        assert!(verifier.verify_client_cert(&der(FORGED), &[], now).is_ok());
        assert!(verifier.verify_client_cert(&der(KMS), &[], now).is_err());
        assert!(
            rules
                .identify(&[der(FORGED)])
                .unwrap()
                .satisfies(RuleId::of(&other_rule))
        );
        assert!(rules.identify(&[]).is_none());
    }

    #[test]
    fn a_rule_with_an_unreadable_ca_matches_nothing() {
        let rules = MtlsRules::new();
        let broken = MtlsRule {
            subject: "cks.kms.eu-west-1.amazonaws.com".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        };
        rules.replace([&broken]);
        let verifier = rules.verifier();
        assert!(verifier.offer_client_auth());
        assert!(
            verifier
                .verify_client_cert(&der(KMS), &[], UnixTime::now())
                .is_err()
        );
        assert!(
            !rules
                .identify(&[der(KMS)])
                .unwrap()
                .satisfies(RuleId::of(&broken))
        );
    }
}
