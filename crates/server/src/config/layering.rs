//! How the layers of one area's settings combine. Rules:
//! - Each setting is declared once, as a field of its area's struct: the
//!   field's name is its key in the configuration file, its `#[arg]` gives
//!   the flag and the `KEYHOLD_*` variable, its doc comment the help text.
//! - [`settings_area!`] derives the rest from that one declaration: the
//!   file's keys, reading them, and laying one layer over another.
//! - A value given in a higher layer hides the one below; a switch
//!   (`bool`) is on when any layer turns it on.
//!
//! The file keeps its keys at the top level (`listen = …`,
//! `kms_max_attempts = …`), so it is read key by key and each key is handed
//! to the area that owns it. (`#[serde(flatten)]` would also split a flat
//! file into areas, but its errors lose the line and column of the bad value.)

/// One layer of a setting laid over the layer below it.
pub(super) trait Layer {
    fn over(self, lower: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// A switch is on when any layer turns it on.
impl Layer for bool {
    fn over(self, lower: Self) -> Self {
        self || lower
    }
}

/// Declares one area's settings: a struct that is both flags (with their
/// environment variables, through `#[command(flatten)]`) and the area's keys
/// of the configuration file, with `KEYS`, `read_key` and `over` derived from
/// its fields.
macro_rules! settings_area {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )+
        }

        impl $name {
            /// This area's keys in the configuration file.
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// Reads the value of `key` when the key is this area's; false otherwise.
            pub(super) fn read_key<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($field) => self.$field = map.next_value()?,)+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// These settings laid over `lower`'s, setting by setting.
            pub(super) fn over(self, lower: Self) -> Self {
                Self {
                    $($field: super::layering::Layer::over(self.$field, lower.$field),)+
                }
            }
        }
    };
}

pub(super) use settings_area;
