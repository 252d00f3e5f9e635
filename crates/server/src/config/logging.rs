//! What the server logs.

use super::layering::settings_area;

settings_area! {
    /// The log filter.
    pub struct LogArgs {
        /// Log filter, such as `info` or `keyhold_server=debug` [default: info].
        #[arg(long, env = "KEYHOLD_LOG")]
        pub log: Option<String>,
    }
}

impl LogArgs {
    /// The log filter (an invalid one falls back to `info` when logging starts).
    pub fn resolve(self) -> String {
        self.log.unwrap_or_else(|| "info".to_owned())
    }
}
