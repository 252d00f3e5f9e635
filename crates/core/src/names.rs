//! Names people give to things: key groups, cloud credentials and identities.
//!
//! They appear in audit summaries, URLs and table columns, so they are kept to a
//! small, printable alphabet: nothing that could smuggle a control character,
//! a path separator or another line into a log.

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// Longest name accepted for any named object.
pub const MAX_NAME_LEN: usize = 64;

fn parse_name(field: &'static str, raw: &str) -> Result<String, InvalidInput> {
    let rule = "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit";
    if raw.is_empty() {
        return Err(InvalidInput::new(
            field,
            format!("{field} is empty: {rule}"),
        ));
    }
    if raw.chars().count() > MAX_NAME_LEN {
        return Err(InvalidInput::new(
            field,
            format!("{field} is longer than {MAX_NAME_LEN} characters: {rule}"),
        ));
    }
    let mut chars = raw.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(InvalidInput::new(
            field,
            format!("{field} contains characters that are not allowed: {rule}"),
        ));
    }
    Ok(raw.to_owned())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Parses a name, saying what is wrong with it when it is not acceptable.
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                parse_name($field, raw).map(Self)
            }
        }

        string_newtype!($ty);
    };
}

name_type!(
    /// Name of a key group, unique among groups.
    GroupName,
    "group name"
);
name_type!(
    /// Name of a cloud credential, unique among credentials.
    CredentialName,
    "credential name"
);
name_type!(
    /// Name of an identity (a person or service account that logs in), unique.
    IdentityName,
    "identity name"
);

name_type!(
    /// Name of an external key store (XKS), unique among them.
    XksStoreName,
    "external key store name"
);

name_type!(
    /// Name of a backup custodian (who holds one share of each backup's
    /// key), unique among custodians.
    CustodianName,
    "custodian name"
);

name_type!(
    /// Name of a keyhold node in a cluster (its host name by default),
    /// stable across restarts.
    NodeId,
    "node id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_reference_names() {
        for ok in ["ig-demo", "Admin1", "prod.payments_key", "a"] {
            assert!(GroupName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_names_with_a_reason() {
        let err = GroupName::parse("").unwrap_err();
        assert!(err.message.contains("empty"));
        let err = GroupName::parse(&"x".repeat(65)).unwrap_err();
        assert!(err.message.contains("longer than 64"));
        for bad in ["-lead", "a b", "../etc", "x\ny", "é", "a/b", ".hidden"] {
            assert!(GroupName::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsed_names_round_trip_and_stay_printable(raw in "\\PC{0,80}") {
            if let Ok(name) = IdentityName::parse(&raw) {
                prop_assert_eq!(name.as_str(), raw.as_str());
                prop_assert!(name.as_str().chars().all(|c| c.is_ascii_graphic()));
                prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
            }
        }

        #[test]
        fn names_from_the_alphabet_are_accepted(raw in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
            prop_assert!(CredentialName::parse(&raw).is_ok());
        }
    }
}
