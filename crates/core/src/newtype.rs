//! The conversions every parsed string type shares: it is built only through
//! its `parse`, and turns back into the text it was parsed from.

/// Implements `as_str`, `Display`, `FromStr`, `TryFrom<String>` (through
/// `parse`, so serde's `try_from` validates) and `From<T> for String`.
macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $ty {
            type Error = $crate::error::InvalidInput;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $crate::error::InvalidInput;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }
    };
}
