//! Reading KMS state back through the AWS API (the LocalStack peer), never
//! through keyhold: what AWS holds is what the tests assert.

use aws_sdk_kms::primitives::Blob;

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_KMS")
        .or_else(|_| std::env::var("KEYHOLD_TEST_KMS_ENDPOINT"))
        .expect("no KMS peer: run the suite with ./scripts/test, or `eval \"$(scripts/localstack start)\"` first (AWS_ENDPOINT_URL_KMS is unset)")
}

pub struct Kms {
    pub client: aws_sdk_kms::Client,
}

impl Kms {
    pub async fn connect() -> Self {
        Self::at(&endpoint()).await
    }

    pub async fn at(endpoint: &str) -> Self {
        Self::in_region(endpoint, "eu-west-1").await
    }

    /// KMS in another region of the peer: each region holds its own keys, so
    /// a test there sees (and scans) only its own.
    pub async fn in_region(endpoint: &str, region: &'static str) -> Self {
        let creds =
            aws_credential_types::Credentials::new("test", "test", None, None, "keyhold-tests");
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_kms::Config::builder()
            .http_client(http)
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(region))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .build();
        Self {
            client: aws_sdk_kms::Client::from_conf(config),
        }
    }

    /// Every KMS key keyhold tagged with this group name.
    pub async fn keys_of_group(&self, group: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_keys()
                .set_marker(marker.clone())
                .limit(1000)
                .send()
                .await
                .unwrap();
            for key in page.keys() {
                let id = key.key_id().unwrap().to_owned();
                let tags = self
                    .client
                    .list_resource_tags()
                    .key_id(&id)
                    .send()
                    .await
                    .unwrap();
                if tags
                    .tags()
                    .iter()
                    .any(|t| t.tag_key() == "keyhold:group" && t.tag_value() == group)
                {
                    found.push(id);
                }
            }
            if page.truncated() {
                marker = page.next_marker().map(ToOwned::to_owned);
            } else {
                return found;
            }
        }
    }

    /// The key an alias points at, through every page of aliases (one
    /// LocalStack serves the whole run, so there are many).
    pub async fn alias_target(&self, alias: &str) -> Option<String> {
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_aliases()
                .set_marker(marker.clone())
                .limit(100)
                .send()
                .await
                .unwrap();
            if let Some(found) = page
                .aliases()
                .iter()
                .find(|a| a.alias_name() == Some(alias))
            {
                return found.target_key_id().map(ToOwned::to_owned);
            }
            if !page.truncated() {
                return None;
            }
            marker = page.next_marker().map(ToOwned::to_owned);
        }
    }

    pub async fn state(&self, key_id: &str) -> String {
        let meta = self.describe(key_id).await;
        meta.key_state().unwrap().as_str().to_owned()
    }

    pub async fn describe(&self, key_id: &str) -> aws_sdk_kms::types::KeyMetadata {
        self.client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .clone()
    }

    pub async fn encrypt(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        let out = self
            .client
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(plaintext))
            .send()
            .await
            .unwrap();
        out.ciphertext_blob().unwrap().as_ref().to_vec()
    }

    pub async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        match self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .send()
            .await
        {
            Ok(out) => Ok(out.plaintext().unwrap().as_ref().to_vec()),
            Err(e) => Err(format!("{:?}", e.into_service_error())),
        }
    }

    pub async fn policy(&self, key_id: &str) -> serde_json::Value {
        let out = self
            .client
            .get_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        serde_json::from_str(out.policy().unwrap()).unwrap()
    }

    /// The placeholder a user creates in the console: origin External, no material.
    pub async fn create_placeholder(&self) -> String {
        let out = self
            .client
            .create_key()
            .origin(aws_sdk_kms::types::OriginType::External)
            .description("placeholder made in the console")
            .send()
            .await
            .unwrap();
        out.key_metadata().unwrap().key_id().to_owned()
    }
}
