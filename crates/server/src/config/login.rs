//! Throttling password attempts per client address (see
//! `crate::login_throttle`). Rule: the defaults stop one address before it
//! reaches the default lockout threshold, so no single address can lock an
//! identity out by itself.

use super::layering::settings_area;
use super::{ConfigError, in_range};
use crate::client_address::TrustedProxies;
use crate::login_throttle::{
    DEFAULT_FAILURES, DEFAULT_MAX_ADDRESSES, DEFAULT_WINDOW_MINUTES, ThrottleSettings,
};

settings_area! {
    /// The per-address login throttle.
    pub struct LoginArgs {
        /// Failed logins and password changes from one client address within
        /// --login-throttle-minutes after which its attempts are refused (429)
        /// before any password is checked: 1 to 10000 [default: 3].
        #[arg(long, env = "KEYHOLD_LOGIN_THROTTLE_FAILURES", value_name = "N")]
        pub login_throttle_failures: Option<u32>,
        /// The window in which an address's failures count, in minutes:
        /// 1 to 1440 [default: 15].
        #[arg(long, env = "KEYHOLD_LOGIN_THROTTLE_MINUTES", value_name = "MINUTES")]
        pub login_throttle_minutes: Option<u32>,
        /// Client addresses the throttle remembers at most (the least recently
        /// seen are forgotten first): 100 to 1000000 [default: 10000].
        #[arg(long, env = "KEYHOLD_LOGIN_THROTTLE_ADDRESSES", value_name = "N")]
        pub login_throttle_addresses: Option<u32>,
        /// Reverse proxies in front of keyhold (addresses or networks such as
        /// 10.0.0.0/8) whose X-Forwarded-For names the client the throttle
        /// counts; from any other peer the header is ignored [default: none].
        #[arg(
            long,
            env = "KEYHOLD_LOGIN_TRUSTED_PROXIES",
            value_name = "ADDRESS",
            value_delimiter = ','
        )]
        pub login_trusted_proxies: Option<Vec<String>>,
    }
}

impl LoginArgs {
    pub fn resolve(self) -> Result<(ThrottleSettings, TrustedProxies), ConfigError> {
        let proxies = TrustedProxies::parse(&self.login_trusted_proxies.unwrap_or_default())
            .map_err(|e| {
                ConfigError(format!(
                    "login_trusted_proxies: {e} (set --login-trusted-proxies or KEYHOLD_LOGIN_TRUSTED_PROXIES)"
                ))
            })?;
        let throttle = ThrottleSettings {
            failures: in_range(
                "login_throttle_failures",
                self.login_throttle_failures,
                DEFAULT_FAILURES,
                1..=10_000,
                "failed attempts per client address",
            )?,
            window_minutes: in_range(
                "login_throttle_minutes",
                self.login_throttle_minutes,
                DEFAULT_WINDOW_MINUTES,
                1..=1440,
                "throttle's window in minutes",
            )?,
            max_addresses: in_range(
                "login_throttle_addresses",
                self.login_throttle_addresses,
                DEFAULT_MAX_ADDRESSES,
                100..=1_000_000,
                "client addresses remembered",
            )?,
        };
        Ok((throttle, proxies))
    }
}
