//! The approval webhook (see `crate::approval_webhook`). Rules: the signing
//! secret comes from a file or the environment, never from a flag, and never
//! reaches Debug output or an error; a URL without a secret is refused, so
//! no event ever goes out unsigned.

use std::path::PathBuf;

use secrecy::SecretString;

use super::ConfigError;
use super::layering::settings_area;
use crate::approval_webhook::WebhookConfig;

/// Environment variable holding the webhook's signing secret (environment
/// only: a flag would show in `ps` and shell history).
pub const WEBHOOK_SECRET_ENV: &str = "KEYHOLD_APPROVAL_WEBHOOK_SECRET";

settings_area! {
    /// The approval webhook.
    pub struct ApprovalWebhookArgs {
        /// URL (http:// or https://) every approval request and decision is
        /// POSTed to, signed with HMAC-SHA256 under the webhook secret
        /// [default: none].
        #[arg(long, env = "KEYHOLD_APPROVAL_WEBHOOK_URL", value_name = "URL")]
        pub approval_webhook_url: Option<String>,
        /// File holding the webhook's signing secret. The secret may also
        /// come from the KEYHOLD_APPROVAL_WEBHOOK_SECRET variable; never from
        /// a flag. Needed with the URL.
        #[arg(long, env = "KEYHOLD_APPROVAL_WEBHOOK_SECRET_FILE", value_name = "PATH")]
        pub approval_webhook_secret_file: Option<PathBuf>,
    }
}

impl ApprovalWebhookArgs {
    pub fn resolve(
        self,
        secret: Option<SecretString>,
    ) -> Result<Option<WebhookConfig>, ConfigError> {
        let Some(raw) = self.approval_webhook_url.filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| {
            ConfigError(format!(
                "approval_webhook_url is not a URL ({e}): give an https:// (or http://) URL (set --approval-webhook-url or KEYHOLD_APPROVAL_WEBHOOK_URL)"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError(format!(
                "approval_webhook_url has the scheme '{}': give an https:// (or http://) URL with a host",
                url.scheme()
            )));
        }
        let secret = match (self.approval_webhook_secret_file, secret) {
            (Some(path), _) => super::keystore::read_secret_file("approval webhook secret", &path)?,
            (None, Some(secret)) => secret,
            (None, None) => {
                return Err(ConfigError(format!(
                    "approval_webhook_url is set but the webhook has no signing secret: set {WEBHOOK_SECRET_ENV} or approval_webhook_secret_file (never a flag)"
                )));
            }
        };
        Ok(Some(WebhookConfig { url, secret }))
    }
}
