//! The request quotas keyhold paces itself under, as the operator gives
//! them: per AWS KMS operation, for every credential (`kms_quotas`) or for
//! one (`kms_credential_quotas`), AWS's defaults for the rest.
//!
//! Every AWS KMS request quota can be raised through Service Quotas, and
//! accounts differ: a team whose quotas were raised can let keyhold go
//! faster, and an account whose quota other tools use heavily can hold
//! keyhold to a share of it. Entries are `Operation=RATE` (`*=RATE` for
//! every operation at once), RATE in requests per second with at most three
//! decimals, so that quotas below one a second (0.25: one request every four
//! seconds) are exact.

use std::collections::BTreeMap;
use std::time::Duration;

use keyhold_core::names::CredentialName;

/// The most requests per second a quota may be set to. AWS's largest
/// quotas (the cryptographic operations' shared one) are 100,000/s in a
/// few Regions; a larger figure is a typo rather than an account's quota.
pub const MAX_REQUESTS_PER_SECOND: u32 = 100_000;

/// Decimals a rate may have: 0.001/s (one request every 1,000 s) is the finest.
const RATE_DECIMALS: u32 = 3;
const THOUSANDTHS: u32 = 10u32.pow(RATE_DECIMALS);

/// A request rate in requests per second, exact to a thousandth (kept as
/// thousandths of a request per second), between 0.001/s and
/// [`MAX_REQUESTS_PER_SECOND`]. Parsed from `1`, `0.25`, `12.5`; shown the
/// same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    thousandths: u32,
}

impl Rate {
    /// `requests` per second (at least 1, at most [`MAX_REQUESTS_PER_SECOND`]).
    pub const fn per_second(requests: u32) -> Self {
        let requests = if requests == 0 {
            1
        } else if requests > MAX_REQUESTS_PER_SECOND {
            MAX_REQUESTS_PER_SECOND
        } else {
            requests
        };
        Self {
            thousandths: requests * THOUSANDTHS,
        }
    }

    /// A rate as written in the configuration: digits, and at most three
    /// decimals after a point; more than 0, at most [`MAX_REQUESTS_PER_SECOND`].
    pub fn parse(raw: &str) -> Result<Self, RateError> {
        let raw = raw.trim();
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || raw.ends_with('.') {
            return Err(RateError::NotANumber);
        }
        if fraction.len() > RATE_DECIMALS as usize {
            return Err(RateError::TooFine);
        }
        // Too many digits for a u64 is over the maximum anyway.
        let whole: u64 = whole.parse().map_err(|_| RateError::TooHigh)?;
        let mut fraction_thousandths: u64 = 0;
        for (place, digit) in fraction.chars().enumerate() {
            let digit = u64::from(digit.to_digit(10).unwrap_or(0));
            fraction_thousandths += digit * 10u64.pow(RATE_DECIMALS - 1 - place as u32);
        }
        let thousandths = whole
            .checked_mul(u64::from(THOUSANDTHS))
            .and_then(|w| w.checked_add(fraction_thousandths))
            .ok_or(RateError::TooHigh)?;
        if thousandths == 0 {
            return Err(RateError::Zero);
        }
        if thousandths > u64::from(MAX_REQUESTS_PER_SECOND * THOUSANDTHS) {
            return Err(RateError::TooHigh);
        }
        u32::try_from(thousandths)
            .map(|thousandths| Self { thousandths })
            .map_err(|_| RateError::TooHigh)
    }

    pub fn requests_per_second(self) -> f64 {
        f64::from(self.thousandths) / f64::from(THOUSANDTHS)
    }

    /// The time between two requests at exactly this rate.
    pub fn interval(self) -> Duration {
        Duration::from_secs(u64::from(THOUSANDTHS)) / self.thousandths.max(1)
    }

    /// A `divisor`th of this rate (0.001/s at the least): background work
    /// leaves most of a quota to others.
    pub(crate) fn share(self, divisor: u32) -> Self {
        Self {
            thousandths: (self.thousandths / divisor.max(1)).max(1),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.thousandths / THOUSANDTHS;
        let fraction = self.thousandths % THOUSANDTHS;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let decimals = format!("{fraction:03}");
            write!(f, "{whole}.{}", decimals.trim_end_matches('0'))
        }
    }
}

/// What is wrong with a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error(
        "a rate is requests per second, written with digits and at most one decimal point (1, 0.25, 12.5)"
    )]
    NotANumber,
    #[error("a rate must be more than 0 requests per second")]
    Zero,
    #[error("a rate may have at most 3 decimals (0.001 requests per second is the finest)")]
    TooFine,
    #[error("a rate may be at most {MAX_REQUESTS_PER_SECOND} requests per second")]
    TooHigh,
}

/// The AWS KMS API operations keyhold sends, by AWS's names: the operations
/// a quota can be given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KmsOperation {
    CreateKey,
    DescribeKey,
    GetParametersForImport,
    ImportKeyMaterial,
    DeleteImportedKeyMaterial,
    CreateAlias,
    UpdateAlias,
    DisableKey,
    PutKeyPolicy,
    RotateKeyOnDemand,
    ListKeyRotations,
    ListKeys,
    ListResourceTags,
    GetKeyPolicy,
    ListAliases,
    TagResource,
    EnableKey,
    CancelKeyDeletion,
}

impl KmsOperation {
    pub const ALL: [Self; 18] = [
        Self::CreateKey,
        Self::DescribeKey,
        Self::GetParametersForImport,
        Self::ImportKeyMaterial,
        Self::DeleteImportedKeyMaterial,
        Self::CreateAlias,
        Self::UpdateAlias,
        Self::DisableKey,
        Self::PutKeyPolicy,
        Self::RotateKeyOnDemand,
        Self::ListKeyRotations,
        Self::ListKeys,
        Self::ListResourceTags,
        Self::GetKeyPolicy,
        Self::ListAliases,
        Self::TagResource,
        Self::EnableKey,
        Self::CancelKeyDeletion,
    ];

    /// The operation's name in AWS's API (and in Service Quotas).
    pub fn aws_name(self) -> &'static str {
        match self {
            Self::CreateKey => "CreateKey",
            Self::DescribeKey => "DescribeKey",
            Self::GetParametersForImport => "GetParametersForImport",
            Self::ImportKeyMaterial => "ImportKeyMaterial",
            Self::DeleteImportedKeyMaterial => "DeleteImportedKeyMaterial",
            Self::CreateAlias => "CreateAlias",
            Self::UpdateAlias => "UpdateAlias",
            Self::DisableKey => "DisableKey",
            Self::PutKeyPolicy => "PutKeyPolicy",
            Self::RotateKeyOnDemand => "RotateKeyOnDemand",
            Self::ListKeyRotations => "ListKeyRotations",
            Self::ListKeys => "ListKeys",
            Self::ListResourceTags => "ListResourceTags",
            Self::GetKeyPolicy => "GetKeyPolicy",
            Self::ListAliases => "ListAliases",
            Self::TagResource => "TagResource",
            Self::EnableKey => "EnableKey",
            Self::CancelKeyDeletion => "CancelKeyDeletion",
        }
    }

    /// AWS KMS's default request quota (requests per second, per account
    /// and Region), from
    /// <https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>
    /// (table "Request quotas for each AWS KMS API operation").
    /// GetParametersForImport: earlier editions of the page gave 0.25 (one
    /// every 4 s); accounts with that quota see a few throttles, which the
    /// pacer answers by slowing down, or set `GetParametersForImport=0.25`.
    pub fn aws_default_quota(self) -> Rate {
        Rate::per_second(match self {
            Self::CreateKey => 5,
            Self::DescribeKey => 2000,
            Self::GetParametersForImport => 1,
            Self::ImportKeyMaterial => 15,
            Self::DeleteImportedKeyMaterial => 15,
            Self::CreateAlias => 5,
            Self::UpdateAlias => 5,
            Self::DisableKey => 5,
            Self::PutKeyPolicy => 15,
            Self::RotateKeyOnDemand => 5,
            Self::ListKeyRotations => 100,
            Self::ListKeys => 500,
            Self::ListResourceTags => 2000,
            Self::GetKeyPolicy => 1000,
            Self::ListAliases => 500,
            Self::TagResource => 10,
            Self::EnableKey => 5,
            Self::CancelKeyDeletion => 5,
        })
    }

    /// The operation AWS names `name` (any case: a quota is easily copied
    /// from a console in another case).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.aws_name().eq_ignore_ascii_case(name.trim()))
    }

    /// Every name, comma-separated, for error messages.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|op| op.aws_name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for KmsOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.aws_name())
    }
}

/// What is wrong with a quota entry. The entry is quoted cleaned of
/// control characters and cut short, as it came from a file or variable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "'{entry}' is not OPERATION=RATE (for example GetParametersForImport=10, or *=50 for every operation)"
    )]
    NotAnEntry { entry: String },
    #[error(
        "'{entry}' is not CREDENTIAL:OPERATION=RATE (for example prod:GetParametersForImport=10, or prod:*=50)"
    )]
    NoCredential { entry: String },
    #[error("'{entry}': {reason}")]
    BadCredential { entry: String, reason: String },
    #[error(
        "'{name}' is not an AWS KMS operation keyhold sends; use one of {}, or * for every operation",
        KmsOperation::names()
    )]
    UnknownOperation { name: String },
    #[error("'{entry}': {reason}")]
    BadRate { entry: String, reason: RateError },
    #[error("'{entry}': {what} is given more than once")]
    Repeated { entry: String, what: String },
}

/// An entry as it may be shown back: no control characters, 60 at most.
fn shown(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(60).collect()
}

/// Request quotas given for some operations (and perhaps, with `*`, for
/// all); the others keep what the layer below says, in the end AWS's
/// default quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KmsQuotas {
    /// `*=RATE`: every operation not named on its own.
    every: Option<Rate>,
    each: BTreeMap<KmsOperation, Rate>,
}

impl KmsQuotas {
    /// Entries `Operation=RATE` or `*=RATE`. An operation named on its own
    /// wins over `*`, whatever their order; the same operation (or `*`)
    /// twice is refused as ambiguous.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, QuotaError> {
        let mut quotas = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            quotas.add(entry, entry)?;
        }
        Ok(quotas)
    }

    /// Adds `Operation=RATE` (`quota`), quoting `entry` (the whole
    /// configuration entry it came from) when it is wrong.
    fn add(&mut self, entry: &str, quota: &str) -> Result<(), QuotaError> {
        let Some((name, rate)) = quota.split_once('=') else {
            return Err(QuotaError::NotAnEntry {
                entry: shown(entry),
            });
        };
        let rate = Rate::parse(rate).map_err(|reason| QuotaError::BadRate {
            entry: shown(entry),
            reason,
        })?;
        let repeated = |what: &str| QuotaError::Repeated {
            entry: shown(entry),
            what: what.to_owned(),
        };
        let name = name.trim();
        if name == "*" {
            if self.every.replace(rate).is_some() {
                return Err(repeated("*"));
            }
            return Ok(());
        }
        let operation = KmsOperation::parse(name)
            .ok_or_else(|| QuotaError::UnknownOperation { name: shown(name) })?;
        if self.each.insert(operation, rate).is_some() {
            return Err(repeated(operation.aws_name()));
        }
        Ok(())
    }

    /// The quota given for `operation` here: its own, else `*`'s.
    pub fn given(&self, operation: KmsOperation) -> Option<Rate> {
        self.each.get(&operation).copied().or(self.every)
    }

    /// The quota keyhold paces `operation` under: the one given, else AWS's default.
    pub fn rate(&self, operation: KmsOperation) -> Rate {
        self.given(operation)
            .unwrap_or_else(|| operation.aws_default_quota())
    }

    /// These quotas laid over `lower`: whatever these give wins, `lower`
    /// fills in the rest. A credential's `*` thus overrides every quota of
    /// `kms_quotas` for that credential, and its `Operation=RATE` that
    /// operation's.
    pub fn over(&self, lower: &Self) -> Self {
        if self.every.is_some() {
            return self.clone();
        }
        let mut each = lower.each.clone();
        each.extend(self.each.iter().map(|(op, rate)| (*op, *rate)));
        Self {
            every: lower.every,
            each,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.every.is_none() && self.each.is_empty()
    }
}

/// The quotas given, as the configuration writes them (`*=50,
/// GetParametersForImport=100`), or `AWS defaults` when none are.
impl std::fmt::Display for KmsQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("AWS defaults");
        }
        let entries: Vec<String> = self
            .every
            .map(|rate| format!("*={rate}"))
            .into_iter()
            .chain(self.each.iter().map(|(op, rate)| format!("{op}={rate}")))
            .collect();
        f.write_str(&entries.join(","))
    }
}

/// Quotas for named credentials (`CREDENTIAL:Operation=RATE` entries), each
/// over the quotas every credential gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialQuotas {
    by_credential: BTreeMap<CredentialName, KmsQuotas>,
}

impl CredentialQuotas {
    /// Entries `CREDENTIAL:Operation=RATE` or `CREDENTIAL:*=RATE`, with the
    /// rules of [`KmsQuotas::parse`] per credential. A credential named
    /// here that does not exist (yet) is no error: credentials come and go
    /// at run time, the configuration is read at start-up.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, QuotaError> {
        let mut quotas = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let Some((credential, quota)) = entry.split_once(':') else {
                return Err(QuotaError::NoCredential {
                    entry: shown(entry),
                });
            };
            let credential = CredentialName::parse(credential.trim()).map_err(|e| {
                QuotaError::BadCredential {
                    entry: shown(entry),
                    reason: e.message,
                }
            })?;
            quotas
                .by_credential
                .entry(credential)
                .or_default()
                .add(entry, quota)?;
        }
        Ok(quotas)
    }

    /// The quotas `credential` is paced under: its own over `every_credential`'s.
    pub fn for_credential(
        &self,
        credential: &CredentialName,
        every_credential: &KmsQuotas,
    ) -> KmsQuotas {
        match self.by_credential.get(credential) {
            Some(own) => own.over(every_credential),
            None => every_credential.clone(),
        }
    }

    /// The credentials given quotas of their own.
    pub fn credentials(&self) -> impl Iterator<Item = &CredentialName> {
        self.by_credential.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_exactly_to_a_thousandth() {
        for (raw, per_second, interval_ms) in [
            ("1", 1.0, 1000),
            ("0.25", 0.25, 4000),
            (" 12.5 ", 12.5, 80),
            ("100000", 100_000.0, 0),
            ("0.001", 0.001, 1_000_000),
            ("007", 7.0, 142),
            ("2.000", 2.0, 500),
        ] {
            let rate = Rate::parse(raw).unwrap();
            assert_eq!(rate.requests_per_second(), per_second, "{raw}");
            assert_eq!(rate.interval().as_millis(), interval_ms, "{raw}");
        }
        // Exact: a quarter is an interval of 4 s to the nanosecond.
        assert_eq!(
            Rate::parse("0.25").unwrap().interval(),
            Duration::from_secs(4)
        );
        assert_eq!(
            Rate::parse("100000").unwrap().interval(),
            Duration::from_micros(10)
        );
        assert_eq!(Rate::parse("5").unwrap(), Rate::per_second(5));
    }

    #[test]
    fn rates_that_are_not_positive_finite_decimals_are_refused() {
        for (raw, error) in [
            ("", RateError::NotANumber),
            ("fast", RateError::NotANumber),
            ("-1", RateError::NotANumber),
            ("+1", RateError::NotANumber),
            ("1e3", RateError::NotANumber),
            ("1.", RateError::NotANumber),
            (".5", RateError::NotANumber),
            ("1.2.3", RateError::NotANumber),
            ("1,5", RateError::NotANumber),
            ("NaN", RateError::NotANumber),
            ("inf", RateError::NotANumber),
            ("0", RateError::Zero),
            ("0.000", RateError::Zero),
            ("0.0001", RateError::TooFine),
            ("100000.001", RateError::TooHigh),
            ("100001", RateError::TooHigh),
            ("99999999999999999999999", RateError::TooHigh),
        ] {
            assert_eq!(Rate::parse(raw), Err(error), "{raw:?}");
        }
    }

    /// Every rate shows as it parses, and parses back to itself, across
    /// the range (a sweep: the crate has no property-test dependency).
    #[test]
    fn rates_round_trip_through_their_text() {
        // Every rate up to 20/s, then steps of a half across the range.
        let steps = std::iter::successors(Some(20_000u32), |t| Some(t + t / 2 + 1))
            .take_while(|t| *t <= MAX_REQUESTS_PER_SECOND * THOUSANDTHS);
        for thousandths in (1..20_000).chain(steps) {
            let rate = Rate { thousandths };
            let text = rate.to_string();
            assert_eq!(Rate::parse(&text), Ok(rate), "{text}");
            assert!(!text.ends_with('0') || !text.contains('.'), "{text}");
        }
        assert_eq!(Rate::parse("0.25").unwrap().to_string(), "0.25");
        assert_eq!(Rate::parse("1.500").unwrap().to_string(), "1.5");
        assert_eq!(Rate::per_second(2000).to_string(), "2000");
    }

    #[test]
    fn shares_and_clamped_constructors_stay_in_range() {
        assert_eq!(Rate::per_second(1000).share(10), Rate::per_second(100));
        assert_eq!(Rate::parse("0.005").unwrap().share(10).to_string(), "0.001");
        assert_eq!(Rate::per_second(0), Rate::per_second(1));
        assert_eq!(
            Rate::per_second(u32::MAX),
            Rate::per_second(MAX_REQUESTS_PER_SECOND)
        );
    }

    #[test]
    fn operations_parse_by_aws_name_in_any_case() {
        for op in KmsOperation::ALL {
            assert_eq!(KmsOperation::parse(op.aws_name()), Some(op));
            assert_eq!(
                KmsOperation::parse(&op.aws_name().to_ascii_lowercase()),
                Some(op)
            );
        }
        assert_eq!(KmsOperation::parse("Encrypt"), None);
    }

    #[test]
    fn quotas_name_operations_or_all_of_them() {
        let quotas =
            KmsQuotas::parse(&["GetParametersForImport=100", " CreateKey = 0.5 "]).unwrap();
        assert_eq!(
            quotas.rate(KmsOperation::GetParametersForImport),
            Rate::per_second(100)
        );
        assert_eq!(
            quotas.rate(KmsOperation::CreateKey),
            Rate::parse("0.5").unwrap()
        );
        // The rest keep AWS's default.
        assert_eq!(
            quotas.rate(KmsOperation::DescribeKey),
            Rate::per_second(2000)
        );
        assert_eq!(quotas.given(KmsOperation::DescribeKey), None);

        // An operation named on its own wins over *, in either order.
        for entries in [["*=50", "CreateKey=7"], ["CreateKey=7", "*=50"]] {
            let quotas = KmsQuotas::parse(&entries).unwrap();
            assert_eq!(quotas.rate(KmsOperation::CreateKey), Rate::per_second(7));
            for op in KmsOperation::ALL
                .into_iter()
                .filter(|op| *op != KmsOperation::CreateKey)
            {
                assert_eq!(quotas.rate(op), Rate::per_second(50), "{op}");
            }
        }
        let shown =
            KmsQuotas::parse(&["CreateKey=7", "*=50", "GetParametersForImport=0.25"]).unwrap();
        assert_eq!(
            shown.to_string(),
            "*=50,CreateKey=7,GetParametersForImport=0.25"
        );
        assert_eq!(
            KmsQuotas::parse(&[shown.to_string()]).ok(),
            None,
            "one entry per item"
        );
        let entries: Vec<String> = shown.to_string().split(',').map(str::to_owned).collect();
        assert_eq!(KmsQuotas::parse(&entries).unwrap(), shown);
        assert_eq!(KmsQuotas::default().to_string(), "AWS defaults");
        assert!(KmsQuotas::parse::<&str>(&[]).unwrap().is_empty());
        assert!(KmsQuotas::parse(&["", " "]).unwrap().is_empty());
    }

    #[test]
    fn bad_quota_entries_say_what_is_wrong_and_what_would_do() {
        let error = |entries: &[&str]| KmsQuotas::parse(entries).unwrap_err().to_string();
        let unknown = error(&["Encrypt=10"]);
        assert!(
            unknown.contains("'Encrypt' is not an AWS KMS operation keyhold sends"),
            "{unknown}"
        );
        for op in KmsOperation::ALL {
            assert!(unknown.contains(op.aws_name()), "{op}: {unknown}");
        }
        assert!(unknown.contains("or * for every operation"), "{unknown}");
        let missing = error(&["GetParametersForImport"]);
        assert!(missing.contains("is not OPERATION=RATE"), "{missing}");
        let zero = error(&["CreateKey=0"]);
        assert!(
            zero.contains("'CreateKey=0': a rate must be more than 0"),
            "{zero}"
        );
        let high = error(&["CreateKey=1000000"]);
        assert!(
            high.contains("at most 100000 requests per second"),
            "{high}"
        );
        let fine = error(&["CreateKey=0.0005"]);
        assert!(fine.contains("at most 3 decimals"), "{fine}");
        let twice = error(&["CreateKey=1", "createkey=2"]);
        assert!(
            twice.contains("CreateKey is given more than once"),
            "{twice}"
        );
        let every_twice = error(&["*=1", "*=2"]);
        assert!(
            every_twice.contains("* is given more than once"),
            "{every_twice}"
        );
        // What comes back is cleaned and cut short.
        let hostile = error(&[&format!("Create\u{1b}[31mKey{}=1", "x".repeat(200))]);
        assert!(!hostile.contains('\u{1b}'), "{hostile}");
        assert!(hostile.len() < 600, "{hostile}");
    }

    #[test]
    fn credential_quotas_override_the_global_ones_for_their_credential() {
        let global = KmsQuotas::parse(&["*=50", "CreateKey=10"]).unwrap();
        let credentials = CredentialQuotas::parse(&[
            "prod:GetParametersForImport=2",
            "shared:*=0.5",
            "prod:ImportKeyMaterial=30",
        ])
        .unwrap();
        let name = |raw| CredentialName::parse(raw).unwrap();
        let prod = credentials.for_credential(&name("prod"), &global);
        assert_eq!(
            prod.rate(KmsOperation::GetParametersForImport),
            Rate::per_second(2)
        );
        assert_eq!(
            prod.rate(KmsOperation::ImportKeyMaterial),
            Rate::per_second(30)
        );
        // What prod does not give comes from kms_quotas.
        assert_eq!(prod.rate(KmsOperation::CreateKey), Rate::per_second(10));
        assert_eq!(prod.rate(KmsOperation::DisableKey), Rate::per_second(50));
        // A credential's * overrides every global quota, named ones too.
        let shared = credentials.for_credential(&name("shared"), &global);
        for op in KmsOperation::ALL {
            assert_eq!(shared.rate(op), Rate::parse("0.5").unwrap(), "{op}");
        }
        // Any other credential gets the global quotas; with none, AWS's defaults.
        assert_eq!(credentials.for_credential(&name("other"), &global), global);
        let defaults =
            CredentialQuotas::default().for_credential(&name("other"), &KmsQuotas::default());
        for op in KmsOperation::ALL {
            assert_eq!(defaults.rate(op), op.aws_default_quota(), "{op}");
        }
        assert_eq!(
            credentials
                .credentials()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            ["prod", "shared"]
        );
    }

    #[test]
    fn bad_credential_entries_say_what_is_wrong() {
        let error = |entries: &[&str]| CredentialQuotas::parse(entries).unwrap_err().to_string();
        let no_credential = error(&["CreateKey=1"]);
        assert!(
            no_credential.contains("is not CREDENTIAL:OPERATION=RATE"),
            "{no_credential}"
        );
        let bad_name = error(&["bad name:CreateKey=1"]);
        assert!(bad_name.contains("credential name"), "{bad_name}");
        let unknown = error(&["prod:Sign=1"]);
        assert!(
            unknown.contains("'Sign' is not an AWS KMS operation"),
            "{unknown}"
        );
        let twice = error(&["prod:CreateKey=1", "prod:CreateKey=2"]);
        assert!(twice.contains("given more than once"), "{twice}");
        // The same operation for two credentials is fine.
        assert!(CredentialQuotas::parse(&["a:CreateKey=1", "b:CreateKey=2"]).is_ok());
    }
}
