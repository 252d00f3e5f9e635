//! Helpers shared by the test files (each file compiles its own copy).
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kms::config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use keyhold_aws::{AwsCredentials, AwsKms, AwsKmsSettings, WrappingKeySpec};
use keyhold_core::cloud::aws::Region;

pub const REGION: &str = "us-east-1";

/// The AWS KMS peer (LocalStack). Missing is a failure, never a skip: a green
/// run must mean the adapter was exercised against a real KMS.
pub fn kms_endpoint() -> String {
    for var in ["AWS_ENDPOINT_URL_KMS", "KEYHOLD_TEST_KMS_ENDPOINT"] {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            return value;
        }
    }
    panic!(
        "these tests need a real AWS KMS peer and neither AWS_ENDPOINT_URL_KMS nor \
         KEYHOLD_TEST_KMS_ENDPOINT is set. Start LocalStack with \
         `eval \"$(scripts/localstack start)\"` (run `scripts/localstack install` first on a \
         fresh machine), then run the tests again in that shell."
    );
}

pub fn static_credentials() -> AwsCredentials {
    AwsCredentials::Static {
        // LocalStack accepts any access key; this one is shaped like AWS's.
        access_key_id: "AKIAKEYHOLDTESTKEY01".to_owned(),
        secret_access_key: "keyhold-test-secret-do-not-print".to_owned().into(),
    }
}

pub fn settings(endpoint: &str) -> AwsKmsSettings {
    let mut s = AwsKmsSettings::new(Region::parse(REGION).unwrap(), static_credentials());
    s.endpoint = Some(endpoint.to_owned());
    // LocalStack makes a fresh RSA key pair per call: 2048 bits keeps tests fast.
    s.wrapping_key_spec = WrappingKeySpec::Rsa2048;
    s
}

pub async fn adapter(endpoint: &str) -> AwsKms {
    AwsKms::new(settings(endpoint)).await.unwrap()
}

/// A plain SDK client, to check from the outside what the adapter did.
pub fn raw_client(endpoint: &str) -> aws_sdk_kms::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// Runs one `#[ignore]`d test of this binary in a child process with a
/// controlled environment (the SDK reads the process environment, which
/// tests cannot change safely in-process).
pub fn run_child_test(name: &str, set: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent/keyhold-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyhold-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KEYHOLD_CHILD_TEST", name);
    for (key, value) in set {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child test {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child test {name} did not run:\n{stdout}\n{stderr}"
    );
}

/// Guards an `#[ignore]`d child test against being run by hand without the
/// environment its parent sets up.
pub fn assert_in_child(name: &str) {
    assert_eq!(
        std::env::var("KEYHOLD_CHILD_TEST").as_deref(),
        Ok(name),
        "run this test through its parent test, which sets up its environment"
    );
}

pub fn short_timeouts(settings: &mut AwsKmsSettings, attempts: u32) {
    settings.retry.max_attempts = attempts;
    settings.timeouts.connect = Duration::from_secs(1);
    settings.timeouts.attempt = Duration::from_secs(2);
    settings.timeouts.operation = Duration::from_secs(8);
}
