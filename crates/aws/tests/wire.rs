//! The adapter seen through the real SDK and a real socket, where LocalStack
//! cannot help: nothing listening, a hand-written HTTP peer answering the
//! error bodies AWS KMS sends, and the exact requests the adapter makes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{run_child_test, settings, short_timeouts};
use keyhold_aws::{AwsCredentials, AwsKms, KmsRateLimiter, RateLimitedKms};
use keyhold_core::cloud::aws::{KeyMaterialId, KmsKeyId};
use keyhold_core::cloud::{CloudError, CloudKms, MaterialImport, WrappingAlgorithm};
use keyhold_core::key::MaterialState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SOME_KEY: &str = "0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11";

fn some_key() -> KmsKeyId {
    KmsKeyId::parse(SOME_KEY).unwrap()
}

/// One request as the stub saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// Request line and headers, lower-cased.
    head: String,
    raw_body: String,
    body: serde_json::Value,
}

impl Seen {
    fn target(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-target:"))
            .map(str::trim)
    }
}

type Requests = Arc<Mutex<Vec<Seen>>>;

/// An HTTP/1.1 server that answers every request with `status` and `body`,
/// and keeps what it was sent.
async fn stub(status: &'static str, body: &'static str) -> (String, Requests) {
    stub_at("127.0.0.1:0", status, body).await
}

async fn stub_at(address: &str, status: &'static str, body: &'static str) -> (String, Requests) {
    let listener = TcpListener::bind(address).await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Requests::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if let Some(request) = read_request(&socket).await {
                    seen.lock().unwrap().push(request);
                    answer(socket, status, body).await;
                }
            });
        }
    });
    (endpoint, requests)
}

fn count(requests: &Requests) -> usize {
    requests.lock().unwrap().len()
}

/// Reads one request (headers, then Content-Length bytes of body).
async fn read_request(socket: &TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        socket.readable().await.ok()?;
        match socket.try_read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            let raw_body = &buf[end + 4..end + 4 + length];
            let body = serde_json::from_slice(raw_body).unwrap_or(serde_json::Value::Null);
            let raw_body = String::from_utf8_lossy(raw_body).into_owned();
            return Some(Seen {
                head,
                raw_body,
                body,
            });
        }
    }
}

async fn answer(mut socket: TcpStream, status: &str, body: &str) {
    let content_type = if body.starts_with('<') {
        "text/xml"
    } else {
        "application/x-amz-json-1.1"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: {content_type}\r\n\
         x-amzn-RequestId: 8c9e2f3a-0000-4000-8000-000000000001\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
    // Drain until the client closes, so it never sees a reset.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut sink)).await;
}

#[tokio::test]
async fn unrecognized_client_is_access_denied_with_awss_reason() {
    let (endpoint, requests) = stub(
        "400 Bad Request",
        r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
    )
    .await;
    let mut s = settings(&endpoint);
    short_timeouts(&mut s, 3);
    let kms = AwsKms::new(s).await.unwrap();

    let err = kms.describe_key(&some_key()).await.unwrap_err();
    let CloudError::AccessDenied { operation, message } = &err else {
        panic!("expected AccessDenied, got {err:?}");
    };
    assert_eq!(*operation, "DescribeKey");
    assert!(
        message.contains("UnrecognizedClientException")
            && message.contains("The security token included in the request is invalid."),
        "{message}"
    );
    assert!(
        message.contains("8c9e2f3a-0000-4000-8000-000000000001"),
        "{message}"
    );
    assert!(!format!("{err} {err:?}").contains("do-not-print"));
    // A refused credential is not retried.
    assert_eq!(count(&requests), 1);
}

/// A client of a peer that throttles every request, allowed `attempts`.
async fn throttled_client(attempts: u32) -> (AwsKms, Requests) {
    let (endpoint, requests) = stub(
        "400 Bad Request",
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    )
    .await;
    let mut s = settings(&endpoint);
    short_timeouts(&mut s, attempts);
    (AwsKms::new(s).await.unwrap(), requests)
}

#[tokio::test]
async fn a_throttled_request_is_left_to_the_pacer() {
    let (kms, requests) = throttled_client(3).await;

    let err = kms.disable_key(&some_key()).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Throttled { message, .. } if message.contains("Rate exceeded")),
        "{err:?}"
    );
    // The SDK does not send it again (its retries would skip the pacing)...
    assert_eq!(count(&requests), 1);

    // ...the pacer does, in turns of its own, as often as a call may be sent.
    let paced = RateLimitedKms::new(Arc::new(kms), Arc::new(KmsRateLimiter::default()), 3);
    let err = paced.disable_key(&some_key()).await.unwrap_err();
    assert!(matches!(&err, CloudError::Throttled { .. }), "{err:?}");
    assert_eq!(count(&requests), 1 + 3);
}

#[tokio::test]
async fn a_throttled_listing_is_retried_by_the_sdk() {
    // ListKeys is not paced request by request (one search sends many), so
    // the SDK's retries keep a long listing from starting over.
    let (kms, requests) = throttled_client(2).await;
    let err = kms.find_keys_tagged("keyhold:job", "j").await.unwrap_err();
    assert!(matches!(&err, CloudError::Throttled { .. }), "{err:?}");
    assert_eq!(count(&requests), 2, "max_attempts is 2");
}

#[tokio::test]
async fn a_proxy_error_page_is_transient() {
    let (endpoint, _) = stub(
        "502 Bad Gateway",
        "<html><body>502 Bad Gateway</body></html>",
    )
    .await;
    let mut s = settings(&endpoint);
    short_timeouts(&mut s, 1);
    let kms = AwsKms::new(s).await.unwrap();
    let err = kms.describe_key(&some_key()).await.unwrap_err();
    assert!(matches!(err, CloudError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn an_alias_update_that_finds_no_alias_creates_it_and_names_create_alias_on_failure() {
    // UpdateAlias finds no alias, so the adapter creates it with CreateAlias,
    // which this peer refuses too: the error names CreateAlias.
    let (endpoint, requests) = stub(
        "400 Bad Request",
        r#"{"__type":"NotFoundException","message":"Alias arn:aws:kms:us-east-1:000000000000:alias/new is not found."}"#,
    )
    .await;
    let mut s = settings(&endpoint);
    short_timeouts(&mut s, 1);
    let kms = AwsKms::new(s).await.unwrap();
    let alias = keyhold_core::cloud::aws::Alias::parse("alias/new").unwrap();
    let err = kms.point_alias(&alias, &some_key()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CloudError::NotFound {
                operation: "CreateAlias",
                ..
            }
        ),
        "{err:?}"
    );
    let targets: Vec<_> = requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        targets,
        ["trentservice.updatealias", "trentservice.createalias"]
    );
}

#[tokio::test]
async fn an_alias_is_moved_with_one_update_alias() {
    let (endpoint, requests) = stub("200 OK", "{}").await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let alias = keyhold_core::cloud::aws::Alias::parse("alias/existing").unwrap();
    kms.point_alias(&alias, &some_key()).await.unwrap();
    let seen = requests.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target(), Some("trentservice.updatealias"));
    assert_eq!(seen[0].body["AliasName"], "alias/existing");
    assert_eq!(seen[0].body["TargetKeyId"], SOME_KEY);
}

#[tokio::test]
async fn create_key_asks_for_an_external_symmetric_key() {
    let (endpoint, requests) = stub(
        "200 OK",
        r#"{"KeyMetadata":{"KeyId":"0B9C0A55-3F0E-4A43-9C2E-6A1C1F8F2B11","KeyState":"PendingImport","Origin":"EXTERNAL"}}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let policy_text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;
    let policy = keyhold_core::cloud::aws::KeyPolicy::parse(policy_text).unwrap();
    let tags = [("keyhold:job".to_owned(), "job-1".to_owned())];

    let key = kms.create_key("a key", Some(&policy), &tags).await.unwrap();
    assert_eq!(key, some_key(), "ids are normalised to lower case");

    let sent = requests.lock().unwrap()[0].clone();
    assert_eq!(sent.target(), Some("trentservice.createkey"));
    assert_eq!(
        sent.body,
        serde_json::json!({
            "Origin": "EXTERNAL",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "MultiRegion": false,
            "Description": "a key",
            "Policy": policy_text,
            "BypassPolicyLockoutSafetyCheck": false,
            "Tags": [{"TagKey": "keyhold:job", "TagValue": "job-1"}],
        })
    );
}

#[tokio::test]
async fn import_sends_the_expiration_model_and_valid_to() {
    let (endpoint, requests) = stub("200 OK", "{}").await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let valid_to = chrono::DateTime::from_timestamp(1_924_992_000, 0).unwrap();

    kms.import_key_material(
        &some_key(),
        b"token",
        b"wrapped",
        Some(valid_to),
        MaterialImport::Existing(None),
    )
    .await
    .unwrap();
    kms.import_key_material(
        &some_key(),
        b"token",
        b"wrapped",
        None,
        MaterialImport::Existing(None),
    )
    .await
    .unwrap();

    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent[0].target(), Some("trentservice.importkeymaterial"));
    let expires = &sent[0].body;
    assert_eq!(expires["KeyId"], SOME_KEY);
    assert_eq!(expires["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
    assert_eq!(expires["ValidTo"].as_f64(), Some(1_924_992_000.0));
    assert_eq!(expires["ImportToken"], "dG9rZW4=");
    assert_eq!(expires["EncryptedKeyMaterial"], "d3JhcHBlZA==");
    let forever = &sent[1].body;
    assert_eq!(forever["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    assert!(forever.get("ValidTo").is_none(), "{forever}");
    // Peers older than in-place rotation get no ImportType they do not know.
    assert!(forever.get("ImportType").is_none(), "{forever}");
    assert!(forever.get("KeyMaterialId").is_none(), "{forever}");
}

const MATERIAL: &str = "b35d55d8f5ac5e188a1fee1db6b5c609b35d55d8f5ac5e188a1fee1db6b5c609";

#[tokio::test]
async fn in_place_rotation_speaks_aws_import_types_material_ids_and_rotate_on_demand() {
    let answer = format!(
        r#"{{"KeyId":"arn:aws:kms:us-east-1:000000000000:key/{SOME_KEY}","KeyMaterialId":"{MATERIAL}"}}"#
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, requests) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let material = KeyMaterialId::parse(MATERIAL).unwrap();
    let answered = kms
        .import_key_material(
            &some_key(),
            b"token",
            b"wrapped",
            None,
            MaterialImport::New {
                description: "keyhold g v2",
            },
        )
        .await
        .unwrap();
    assert_eq!(answered.as_ref(), Some(&material));
    kms.import_key_material(
        &some_key(),
        b"token",
        b"wrapped",
        None,
        MaterialImport::Existing(Some(&material)),
    )
    .await
    .unwrap();
    kms.delete_imported_key_material(&some_key(), Some(&material))
        .await
        .unwrap();
    kms.rotate_key_on_demand(&some_key()).await.unwrap();

    let sent = requests.lock().unwrap().clone();
    let new = &sent[0].body;
    assert_eq!(new["ImportType"], "NEW_KEY_MATERIAL");
    assert_eq!(new["KeyMaterialDescription"], "keyhold g v2");
    assert!(new.get("KeyMaterialId").is_none(), "{new}");
    let existing = &sent[1].body;
    assert_eq!(existing["ImportType"], "EXISTING_KEY_MATERIAL");
    assert_eq!(existing["KeyMaterialId"], MATERIAL);
    assert_eq!(
        sent[2].target(),
        Some("trentservice.deleteimportedkeymaterial")
    );
    assert_eq!(sent[2].body["KeyMaterialId"], MATERIAL);
    assert_eq!(sent[3].target(), Some("trentservice.rotatekeyondemand"));
    assert_eq!(sent[3].body["KeyId"], SOME_KEY);
}

#[tokio::test]
async fn the_rotation_limit_is_told_apart_from_other_refusals() {
    let (endpoint, _) = stub(
        "400 Bad Request",
        r#"{"__type":"LimitExceededException","message":"The on-demand rotations limit has been reached for the given keyId."}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let err = kms.rotate_key_on_demand(&some_key()).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::LimitExceeded { operation: "RotateKeyOnDemand", message } if message.contains("limit has been reached")),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_parameters_for_import_asks_for_the_configured_wrapping_key() {
    let (endpoint, requests) = stub(
        "200 OK",
        r#"{"KeyId":"arn:aws:kms:us-east-1:000000000000:key/0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11","ImportToken":"dG9rZW4=","PublicKey":"ZGVy","ParametersValidTo":1924992000.5}"#,
    )
    .await;
    let mut s = settings(&endpoint);
    s.wrapping_key_spec = keyhold_aws::WrappingKeySpec::Rsa3072;
    let kms = AwsKms::new(s).await.unwrap();

    let params = kms
        .get_parameters_for_import(&some_key(), WrappingAlgorithm::RsaesOaepSha1)
        .await
        .unwrap();
    assert_eq!(params.import_token, b"token");
    assert_eq!(params.public_key_der, b"der");
    assert_eq!(params.algorithm, WrappingAlgorithm::RsaesOaepSha1);
    assert_eq!(
        params.valid_until,
        chrono::DateTime::from_timestamp(1_924_992_000, 500_000_000)
    );
    let sent = requests.lock().unwrap()[0].body.clone();
    assert_eq!(sent["WrappingAlgorithm"], "RSAES_OAEP_SHA_1");
    assert_eq!(sent["WrappingKeySpec"], "RSA_3072");
}

#[tokio::test]
async fn describe_key_reads_state_origin_and_valid_to() {
    let (endpoint, _) = stub(
        "200 OK",
        r#"{"KeyMetadata":{"KeyId":"0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11","KeyState":"Disabled","Origin":"EXTERNAL","ExpirationModel":"KEY_MATERIAL_EXPIRES","ValidTo":1924992000}}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let info = kms.describe_key(&some_key()).await.unwrap();
    assert_eq!(info.key_id, some_key());
    assert_eq!(info.state, keyhold_core::key::KeyState::Disabled);
    assert!(info.external);
    assert_eq!(
        info.valid_to,
        chrono::DateTime::from_timestamp(1_924_992_000, 0)
    );
}

#[tokio::test]
async fn refused_material_is_incorrect_key_material() {
    let (endpoint, requests) = stub(
        "400 Bad Request",
        r#"{"__type":"IncorrectKeyMaterialException","message":"The key material being imported is not the same as the existing key material."}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let err = kms
        .import_key_material(
            &some_key(),
            b"token",
            b"wrapped",
            None,
            MaterialImport::Existing(None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::IncorrectKeyMaterial { message, .. } if message.contains("not the same")),
        "{err:?}"
    );
    assert_eq!(count(&requests), 1, "never retried");
}

#[tokio::test]
async fn an_expired_import_token_asks_for_new_parameters() {
    let (endpoint, _) = stub(
        "400 Bad Request",
        r#"{"__type":"ExpiredImportTokenException","message":"The import token is expired."}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let err = kms
        .import_key_material(
            &some_key(),
            b"token",
            b"wrapped",
            None,
            MaterialImport::Existing(None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CloudError::ExpiredImportToken {
                operation: "ImportKeyMaterial"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = settings(&format!("http://127.0.0.1:{port}"));
    short_timeouts(&mut s, 2);
    let kms = AwsKms::new(s).await.unwrap();

    let started = Instant::now();
    let err = kms.describe_key(&some_key()).await.unwrap_err();
    let CloudError::Transient { operation, message } = &err else {
        panic!("expected Transient, got {err:?}");
    };
    assert_eq!(*operation, "DescribeKey");
    assert!(message.contains("could not be reached"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the operation timeout bounds the call"
    );
}

#[tokio::test]
async fn settings_and_client_never_show_the_secret() {
    let s = settings("http://127.0.0.1:9");
    let shown = format!("{s:?}");
    assert!(shown.contains("AKIAKEYHOLDTESTKEY01"), "{shown}");
    assert!(!shown.contains("do-not-print"), "{shown}");
    let kms = AwsKms::new(s).await.unwrap();
    assert!(!format!("{kms:?}").contains("do-not-print"));
}

#[tokio::test]
async fn invalid_settings_are_refused_before_any_call() {
    let mut s = settings("ftp://example.com");
    assert_eq!(AwsKms::new(s.clone()).await.unwrap_err().field, "endpoint");
    s.endpoint = None;
    s.retry.max_attempts = 0;
    assert_eq!(AwsKms::new(s.clone()).await.unwrap_err().field, "retry");
    s.retry.max_attempts = 1;
    s.credentials = AwsCredentials::DefaultChain {
        assume_role_arn: Some("keyhold-role".to_owned()),
    };
    assert_eq!(AwsKms::new(s).await.unwrap_err().field, "assume_role_arn");
}

#[test]
fn no_credentials_in_the_default_chain_is_access_denied() {
    run_child_test("child_no_credentials_in_the_default_chain", &[]);
}

#[tokio::test]
#[ignore = "run by no_credentials_in_the_default_chain_is_access_denied in a clean environment"]
async fn child_no_credentials_in_the_default_chain() {
    common::assert_in_child("child_no_credentials_in_the_default_chain");
    let (endpoint, requests) = stub("500 Internal Server Error", "{}").await;
    let mut s = settings(&endpoint);
    s.credentials = AwsCredentials::DefaultChain {
        assume_role_arn: None,
    };
    short_timeouts(&mut s, 1);
    let kms = AwsKms::new(s).await.unwrap();
    let err = kms.describe_key(&some_key()).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::AccessDenied { message, .. } if message.contains("no usable AWS credentials")),
        "{err:?}"
    );
    assert_eq!(count(&requests), 0, "nothing is sent unsigned");
}

/// Runs `child_assume_role` with an STS stub that answers as `case` says.
fn assume_role_case(case: &str) {
    // The child serves STS on this port; the SDK finds it through its own variable.
    let sts = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    run_child_test(
        "child_assume_role",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAKEYHOLDBASEKEY01"),
            ("AWS_SECRET_ACCESS_KEY", "keyhold-base-secret"),
            ("AWS_ENDPOINT_URL_STS", &format!("http://{sts}")),
            ("KEYHOLD_TEST_STS_ADDRESS", &sts.to_string()),
            ("KEYHOLD_TEST_STS_CASE", case),
        ],
    );
}

#[test]
fn a_role_sts_will_not_grant_is_access_denied() {
    assume_role_case("denied");
}

#[test]
fn sts_throttling_while_assuming_the_role_is_transient() {
    assume_role_case("throttled");
}

#[tokio::test]
#[ignore = "run by the assume-role tests in a clean environment"]
async fn child_assume_role() {
    common::assert_in_child("child_assume_role");
    let address = std::env::var("KEYHOLD_TEST_STS_ADDRESS").unwrap();
    let case = std::env::var("KEYHOLD_TEST_STS_CASE").unwrap();
    // STS speaks awsQuery: XML errors.
    let (status, body) = match case.as_str() {
        "denied" => (
            "403 Forbidden",
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
             <Message>User is not authorized to perform: sts:AssumeRole</Message></Error>\
             <RequestId>4d1a2b3c-0000-4000-8000-000000000002</RequestId></ErrorResponse>",
        ),
        "throttled" => (
            "400 Bad Request",
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
             <Message>Rate exceeded</Message></Error>\
             <RequestId>4d1a2b3c-0000-4000-8000-000000000003</RequestId></ErrorResponse>",
        ),
        other => panic!("unknown case {other}"),
    };
    let (_, sts_requests) = stub_at(&address, status, body).await;
    let (kms_endpoint, kms_requests) = stub("500 Internal Server Error", "{}").await;
    let mut s = settings(&kms_endpoint);
    s.credentials = AwsCredentials::DefaultChain {
        assume_role_arn: Some("arn:aws:iam::123456789012:role/keyhold".to_owned()),
    };
    short_timeouts(&mut s, 1);
    let kms = AwsKms::new(s).await.unwrap();

    let err = kms.describe_key(&some_key()).await.unwrap_err();
    match case.as_str() {
        "denied" => assert!(
            matches!(&err, CloudError::AccessDenied { message, .. }
                if message.contains("no usable AWS credentials")
                    && message.contains("not authorized to perform: sts:AssumeRole")),
            "{err:?}"
        ),
        _ => assert!(
            matches!(&err, CloudError::Transient { message, .. }
                if message.contains("no usable AWS credentials")),
            "{err:?}"
        ),
    }
    assert_eq!(
        count(&kms_requests),
        0,
        "KMS is never called without credentials"
    );
    let sent = sts_requests.lock().unwrap().clone();
    assert!(!sent.is_empty(), "STS was not asked");
    let body = &sent[0].raw_body;
    assert!(body.contains("Action=AssumeRole"), "{body}");
    assert!(body.contains("RoleSessionName=keyhold"), "{body}");
    assert!(
        body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkeyhold"),
        "{body}"
    );
}

#[tokio::test]
async fn listing_materials_asks_for_all_of_them_and_reads_their_states() {
    let answer = format!(
        r#"{{"Rotations":[{{"KeyId":"{SOME_KEY}","KeyMaterialId":"{MATERIAL}","KeyMaterialState":"CURRENT","ImportState":"IMPORTED"}},{{"KeyId":"{SOME_KEY}","KeyMaterialId":"{}","KeyMaterialDescription":"keyhold g v2","KeyMaterialState":"PENDING_ROTATION","ImportState":"IMPORTED"}}],"Truncated":false}}"#,
        "c".repeat(64)
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, requests) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let listed = kms.list_key_materials(&some_key()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id.as_str(), MATERIAL);
    assert_eq!(listed[0].state, MaterialState::Current);
    assert_eq!(listed[1].description.as_deref(), Some("keyhold g v2"));
    assert_eq!(listed[1].state, MaterialState::PendingRotation);
    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent[0].target(), Some("trentservice.listkeyrotations"));
    assert_eq!(sent[0].body["IncludeKeyMaterial"], "ALL_KEY_MATERIAL");
}

// Drift checks and their repairs.

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

#[tokio::test]
async fn get_key_policy_asks_for_the_default_policy_and_keeps_its_text() {
    let answer = serde_json::json!({"Policy": POLICY, "PolicyName": "default"}).to_string();
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, requests) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let policy = kms.get_key_policy(&some_key()).await.unwrap();
    assert_eq!(policy.as_str(), POLICY);
    let sent = requests.lock().unwrap()[0].clone();
    assert_eq!(sent.target(), Some("trentservice.getkeypolicy"));
    assert_eq!(
        sent.body,
        serde_json::json!({"KeyId": SOME_KEY, "PolicyName": "default"})
    );
}

#[tokio::test]
async fn a_policy_keyhold_cannot_read_is_refused_as_aws_answer() {
    let (endpoint, _) = stub("200 OK", r#"{"Policy":"{\"Version\":\"2012-10-17\"}"}"#).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let err = kms.get_key_policy(&some_key()).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Rejected { operation: "GetKeyPolicy", message }
            if message.contains("AWS KMS answered with a key policy keyhold cannot read")),
        "{err:?}"
    );
}

#[tokio::test]
async fn list_aliases_keeps_the_aliases_keyhold_could_have_made() {
    let answer = format!(
        r#"{{"Aliases":[
            {{"AliasName":"alias/payments","AliasArn":"arn:aws:kms:us-east-1:000000000000:alias/payments","TargetKeyId":"{}"}},
            {{"AliasName":"alias/aws/s3","AliasArn":"arn:aws:kms:us-east-1:000000000000:alias/aws/s3","TargetKeyId":"1234abcd-12ab-34cd-56ef-1234567890ab"}},
            {{"AliasName":"alias/unused","AliasArn":"arn:aws:kms:us-east-1:000000000000:alias/unused"}},
            {{"AliasName":"alias/global","TargetKeyId":"mrk-1234abcd12ab34cd56ef1234567890ab"}}
        ],"Truncated":false}}"#,
        SOME_KEY.to_uppercase()
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, requests) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let aliases = kms.list_aliases().await.unwrap();
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert_eq!(aliases[0].0.as_str(), "alias/payments");
    assert_eq!(aliases[0].1, some_key());
    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target(), Some("trentservice.listaliases"));
    // The largest page AWS serves, and every alias of the Region.
    assert_eq!(sent[0].body, serde_json::json!({"Limit": 100}));
}

#[tokio::test]
async fn list_key_ids_leaves_out_multi_region_keys() {
    let answer = format!(
        r#"{{"Keys":[{{"KeyId":"{SOME_KEY}","KeyArn":"arn:aws:kms:us-east-1:000000000000:key/{SOME_KEY}"}},{{"KeyId":"mrk-1234abcd12ab34cd56ef1234567890ab"}}],"Truncated":false}}"#
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, requests) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    assert_eq!(kms.list_key_ids().await.unwrap(), vec![some_key()]);
    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent[0].target(), Some("trentservice.listkeys"));
    assert_eq!(sent[0].body, serde_json::json!({"Limit": 1000}));
}

#[tokio::test]
async fn list_tags_reads_them_in_awss_order() {
    let (endpoint, requests) = stub(
        "200 OK",
        r#"{"Tags":[{"TagKey":"keyhold:group","TagValue":"payments"},{"TagKey":"owner","TagValue":"team-a"}],"Truncated":false}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let tags = kms.list_tags(&some_key()).await.unwrap();
    assert_eq!(
        tags,
        [
            ("keyhold:group".to_owned(), "payments".to_owned()),
            ("owner".to_owned(), "team-a".to_owned())
        ]
    );
    let sent = requests.lock().unwrap()[0].clone();
    assert_eq!(sent.target(), Some("trentservice.listresourcetags"));
    assert_eq!(sent.body["KeyId"], SOME_KEY);
}

#[tokio::test]
async fn repairs_send_tag_resource_enable_key_and_cancel_key_deletion() {
    let (endpoint, requests) = stub("200 OK", "{}").await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let tags = [
        ("keyhold:group".to_owned(), "payments".to_owned()),
        ("keyhold:version".to_owned(), "3".to_owned()),
    ];
    kms.tag_key(&some_key(), &tags).await.unwrap();
    // Nothing to add is no request (TagResource needs a tag).
    kms.tag_key(&some_key(), &[]).await.unwrap();
    kms.enable_key(&some_key()).await.unwrap();
    kms.cancel_key_deletion(&some_key()).await.unwrap();
    let sent = requests.lock().unwrap().clone();
    let targets: Vec<_> = sent
        .iter()
        .map(|r| r.target().unwrap_or_default())
        .collect();
    assert_eq!(
        targets,
        [
            "trentservice.tagresource",
            "trentservice.enablekey",
            "trentservice.cancelkeydeletion"
        ]
    );
    assert_eq!(
        sent[0].body,
        serde_json::json!({"KeyId": SOME_KEY, "Tags": [
            {"TagKey": "keyhold:group", "TagValue": "payments"},
            {"TagKey": "keyhold:version", "TagValue": "3"},
        ]})
    );
    assert_eq!(sent[1].body, serde_json::json!({"KeyId": SOME_KEY}));
    assert_eq!(sent[2].body, serde_json::json!({"KeyId": SOME_KEY}));
}

#[tokio::test]
async fn describe_key_reads_the_deletion_date_of_a_key_pending_deletion() {
    let (endpoint, _) = stub(
        "200 OK",
        r#"{"KeyMetadata":{"KeyId":"0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11","KeyState":"PendingDeletion","Origin":"EXTERNAL","DeletionDate":1924992000,"PendingDeletionWindowInDays":7}}"#,
    )
    .await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let info = kms.describe_key(&some_key()).await.unwrap();
    assert_eq!(info.state, keyhold_core::key::KeyState::PendingDeletion);
    assert_eq!(
        info.deletion_date,
        chrono::DateTime::from_timestamp(1_924_992_000, 0)
    );
}

#[tokio::test]
async fn a_deleted_material_is_listed_as_not_imported() {
    let answer = format!(
        r#"{{"Rotations":[{{"KeyId":"{SOME_KEY}","KeyMaterialId":"{MATERIAL}","KeyMaterialState":"NON_CURRENT","ImportState":"PENDING_IMPORT"}},{{"KeyId":"{SOME_KEY}","KeyMaterialId":"{}","KeyMaterialState":"CURRENT","ImportState":"IMPORTED"}},{{"KeyId":"{SOME_KEY}","KeyMaterialId":"{}","KeyMaterialState":"NON_CURRENT"}}],"Truncated":false}}"#,
        "c".repeat(64),
        "d".repeat(64)
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    let (endpoint, _) = stub("200 OK", answer).await;
    let kms = AwsKms::new(settings(&endpoint)).await.unwrap();
    let listed = kms.list_key_materials(&some_key()).await.unwrap();
    let imported: Vec<_> = listed.iter().map(|m| m.imported).collect();
    // Without an ImportState (material AWS made), the material is there.
    assert_eq!(imported, [false, true, true]);
}

#[tokio::test]
async fn throttled_drift_reads_and_repairs_are_left_to_the_pacer() {
    let (kms, requests) = throttled_client(3).await;
    let err = kms.get_key_policy(&some_key()).await.unwrap_err();
    assert!(matches!(&err, CloudError::Throttled { .. }), "{err:?}");
    assert_eq!(count(&requests), 1);
    for repair in [
        kms.enable_key(&some_key()).await,
        kms.cancel_key_deletion(&some_key()).await,
        kms.tag_key(&some_key(), &[("k".to_owned(), "v".to_owned())])
            .await,
    ] {
        assert!(
            matches!(&repair, Err(CloudError::Throttled { .. })),
            "{repair:?}"
        );
    }
    assert_eq!(count(&requests), 4, "each sent once by the SDK");
}
