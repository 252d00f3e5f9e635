//! keyhold's XKS proxy against AWS's *External Key Store Proxy API
//! Specification*, written from the specification: a real server over HTTPS
//! (a private CA's certificate), every request signed by curl's
//! `--aws-sigv4 "aws:amz:<region>:kms-xks-proxy"` (the independent signer
//! the specification's Appendix D uses), or by the AWS SDK's signer for the
//! load. The stores, credentials and keys are made through keyhold's API.
//!
//! Every operation; every error of the specification's table with its
//! status and `errorName` (DependencyTimeout and Internal through the
//! test-only fault switch of the `crash-points` feature, since no keystore
//! fails on demand); GET refused with 405; AAD and CDIV round trips (the
//! CDIV recomputed here); tampered ciphertexts; disabled keys; usage
//! restrictions; authorization rules and their audit entries; credential
//! rotation and revocation; mutual TLS on and off; quotas; the health
//! answer; the usage log (no plaintext), `/metrics`, and a usage digest
//! whose SHA-256 an auditor checks with `sed` and `sha256sum`.
//!
//! The suite runs with the software keystore and again with
//! KEYHOLD_TEST_KEYSTORE=pkcs11 on SoftHSM2 (`TestApp` picks the token).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::clock::{Clock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;
use crate::test_ca::{TestCa, Usage};

const REGION: &str = "eu-west-1";
const KMS_CN: &str = "cks.kms.eu-west-1.amazonaws.com";
const PRINCIPAL: &str = "arn:aws:iam::111122223333:role/payments-app";
const KMS_KEY_ARN: &str =
    "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A server over HTTPS with its administrators' session, and the CAs of
/// the test: the server's, KMS's (client certificates) and a rogue one.
struct Scene {
    app: TestApp,
    admins: String,
    dir: tempfile::TempDir,
    server_ca: PathBuf,
}

/// A store as its creation answered: the only time its secret is shown.
#[derive(Clone, Debug)]
struct Store {
    name: String,
    uri_path: String,
    access_key_id: String,
    secret: String,
}

impl Store {
    fn credential(&self) -> (&str, &str) {
        (&self.access_key_id, &self.secret)
    }
}

/// What curl got: the HTTP status (0 when no HTTP answer came back, as
/// when the TLS handshake is refused), the body, and curl's exit code.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    exit: i32,
}

impl Answer {
    fn error_name(&self) -> &str {
        self.body["errorName"].as_str().unwrap_or("")
    }

    #[track_caller]
    fn assert_error(&self, status: u16, name: &str) {
        assert_eq!((self.status, self.error_name()), (status, name), "{self:?}");
        let message = self.body["errorMessage"].as_str().unwrap_or("");
        assert!(
            message.len() < 512 && message.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "errorMessage is printable ASCII under 512: {message:?}"
        );
    }

    #[track_caller]
    fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body
    }
}

/// A client certificate for curl: `--cert` and `--key`.
#[derive(Clone, Debug)]
struct ClientCertificate {
    certificate: PathBuf,
    key: PathBuf,
}

impl Scene {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut keyhold_server::ServeArgs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("server-ca");
        std::fs::create_dir(&tls).unwrap();
        let ca = TestCa::new(&tls, "keyhold XKS proxy test CA");
        let (server, key) = ca.issue("server", "localhost", Usage::Server);
        // The chain ends with the CA: the test's API client trusts it from there.
        let certificate = tls.join("chain.pem");
        let chain = [
            std::fs::read_to_string(&server).unwrap(),
            std::fs::read_to_string(ca.certificate()).unwrap(),
        ]
        .concat();
        std::fs::write(&certificate, chain).unwrap();
        let app = TestApp::spawn_with(|args| {
            args.listen.tls_certificate = Some(certificate.clone());
            args.listen.tls_private_key = Some(key.clone());
            configure(args);
        })
        .await;
        // curl signs with the wall clock; keyhold checks signatures against
        // its Clock, so the test's clock starts at the wall clock's time.
        wall_clock(&app);
        let admins = app.dual_session().await;
        Self {
            app,
            admins,
            dir,
            server_ca: ca.certificate(),
        }
    }

    async fn store(&self, name: &str, extra: Value) -> Store {
        let mut body = json!({ "name": name });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, issued) = self
            .app
            .post("/api/v1/xks/stores", Some(&self.admins), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let store = Store {
            name: name.to_owned(),
            uri_path: issued["store"]["uri_path"].as_str().unwrap().to_owned(),
            access_key_id: issued["access_key_id"].as_str().unwrap().to_owned(),
            secret: issued["secret_access_key"].as_str().unwrap().to_owned(),
        };
        // The proxy picks stores up at its next reload (each second).
        within(Duration::from_secs(5), "the store served", || async {
            self.call(&store, "/health", &health_body()).await.status != 404
        })
        .await;
        store
    }

    /// A key of `store`; its `XksKeyId`, once the proxy serves it.
    async fn key(&self, store: &Store, body: Value) -> String {
        self.key_using(store, body, None).await
    }

    /// The same, waiting for it with `certificate` (a store with mTLS).
    async fn key_using(
        &self,
        store: &Store,
        body: Value,
        certificate: Option<&ClientCertificate>,
    ) -> String {
        let (status, key) = self
            .app
            .post(
                &format!("/api/v1/xks/stores/{}/keys", store.name),
                Some(&self.admins),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        let id = key["id"].as_str().unwrap().to_owned();
        within(Duration::from_secs(5), "the key served", || async {
            let path = key_path(&id, "metadata");
            let credential = Some(store.credential());
            self.call_as(store, &path, credential, &metadata_body(), certificate)
                .await
                .status
                != 404
        })
        .await;
        id
    }

    async fn update_key(&self, id: &str, body: Value) {
        let (status, key) = self
            .app
            .patch(&format!("/api/v1/xks/keys/{id}"), &self.admins, body)
            .await;
        assert_eq!(status, StatusCode::OK, "{key}");
    }

    async fn update_store(&self, store: &Store, body: Value) {
        let (status, view) = self
            .app
            .patch(
                &format!("/api/v1/xks/stores/{}", store.name),
                &self.admins,
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
    }

    /// A CA of the test's own in `dir/<name>`.
    fn ca(&self, name: &str) -> TestCa {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        TestCa::new(&dir, name)
    }

    fn client_certificate(&self, ca: &TestCa, file: &str, common_name: &str) -> ClientCertificate {
        let (certificate, key) = ca.issue(file, common_name, Usage::Client);
        ClientCertificate { certificate, key }
    }

    /// POSTs `body` to `<store's uri path><tail>`, signed by curl.
    async fn call(&self, store: &Store, tail: &str, body: &Value) -> Answer {
        self.call_as(store, tail, Some(store.credential()), body, None)
            .await
    }

    async fn call_as(
        &self,
        store: &Store,
        tail: &str,
        credential: Option<(&str, &str)>,
        body: &Value,
        certificate: Option<&ClientCertificate>,
    ) -> Answer {
        let url = format!("{}{}{tail}", self.app.base, store.uri_path);
        self.curl(
            "POST",
            &url,
            credential,
            Some(&body.to_string()),
            certificate,
            &[],
        )
        .await
    }

    /// curl against the server: `--aws-sigv4` with `credential`, the body
    /// on stdin, the server's CA trusted, `extra` arguments last.
    async fn curl(
        &self,
        method: &str,
        url: &str,
        credential: Option<(&str, &str)>,
        body: Option<&str>,
        certificate: Option<&ClientCertificate>,
        extra: &[&str],
    ) -> Answer {
        wall_clock(&self.app);
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-X",
                method,
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(&self.server_ca)
            .args(["-H", "Content-Type: application/json"]);
        if let Some((access_key_id, secret)) = credential {
            command
                .args(["--aws-sigv4", &format!("aws:amz:{REGION}:kms-xks-proxy")])
                .args(["--user", &format!("{access_key_id}:{secret}")]);
        }
        if body.is_some() {
            command.args(["--data-binary", "@-"]);
        }
        if let Some(certificate) = certificate {
            command
                .arg("--cert")
                .arg(&certificate.certificate)
                .arg("--key")
                .arg(&certificate.key);
        }
        command.args(extra).arg(url);
        let body = body.map(str::to_owned);
        tokio::task::spawn_blocking(move || run_curl(command, body.as_deref()))
            .await
            .unwrap()
    }
}

fn run_curl(mut command: Command, body: Option<&str>) -> Answer {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (7.75 or later, for --aws-sigv4) is needed");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        stdin.write_all(body.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (text, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        body: serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
        exit: output.status.code().unwrap_or(-1),
    }
}

/// keyhold's clock at the wall clock's time (curl signs with the wall clock).
fn wall_clock(app: &TestApp) {
    app.clock.set(SystemClock.now());
}

fn metadata(kms_operation: &str) -> Value {
    json!({
        "awsPrincipalArn": PRINCIPAL,
        "kmsKeyArn": KMS_KEY_ARN,
        "kmsOperation": kms_operation,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsViaService": "ebs",
    })
}

fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut body = json!({
        "requestMetadata": metadata("Encrypt"),
        "plaintext": BASE64.encode(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(BASE64.encode(aad));
    }
    if cdiv {
        body["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    body
}

/// The Decrypt request for an Encrypt answer.
fn decrypt_body(sealed: &Value, aad: Option<&[u8]>) -> Value {
    let mut body = json!({
        "requestMetadata": metadata("Decrypt"),
        "ciphertext": sealed["ciphertext"],
        "initializationVector": sealed["initializationVector"],
        "authenticationTag": sealed["authenticationTag"],
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(BASE64.encode(aad));
    }
    body
}

fn metadata_body() -> Value {
    json!({ "requestMetadata": metadata("DescribeKey") })
}

fn health_body() -> Value {
    json!({ "requestMetadata": {
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsOperation": "KmsHealthCheck",
    }})
}

fn key_path(key: &str, operation: &str) -> String {
    format!("/keys/{key}/{operation}")
}

fn decoded(value: &Value) -> Vec<u8> {
    BASE64.decode(value.as_str().unwrap()).unwrap()
}

/// Flips one bit of a Base64 field.
fn tampered(value: &Value) -> Value {
    let mut bytes = decoded(value);
    bytes[0] ^= 0x01;
    json!(BASE64.encode(bytes))
}

/// Polls `check` every 100 ms for up to `limit`; how long it took.
async fn within<F>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> Duration
where
    F: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {} s", limit.as_secs());
}

// ---- operations ----

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_as_the_specification_says_with_aad_and_cdiv_round_trips() {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let key = scene
        .key(&store, json!({"description": "payments data keys"}))
        .await;

    // GetKeyMetadata: AES_256, both usages, enabled.
    let answer = scene
        .call(&store, &key_path(&key, "metadata"), &metadata_body())
        .await;
    assert_eq!(
        answer.assert_ok(),
        &json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
    );

    // Encrypt with AAD and a CDIV, then Decrypt with the same AAD.
    let plaintext = b"a 32-byte data key, for example!";
    let aad = b"project=nile,department=marketing";
    let answer = scene
        .call(
            &store,
            &key_path(&key, "encrypt"),
            &encrypt_body(plaintext, Some(aad), true),
        )
        .await;
    let sealed = answer.assert_ok().clone();
    let (iv, ciphertext, tag) = (
        decoded(&sealed["initializationVector"]),
        decoded(&sealed["ciphertext"]),
        decoded(&sealed["authenticationTag"]),
    );
    assert_eq!(iv.len(), 12, "a 96-bit IV");
    assert_eq!(tag.len(), 16, "a 128-bit tag");
    assert_eq!(ciphertext.len(), plaintext.len(), "GCM keeps the length");
    assert_ne!(&ciphertext[..], &plaintext[..]);
    assert!(sealed.get("ciphertextMetadata").is_none());
    // Appendix C, computed independently: SHA-256(aad || iv || ciphertext || tag).
    let expected: Vec<u8> = [&aad[..], &iv, &ciphertext, &tag].concat();
    assert_eq!(
        decoded(&sealed["ciphertextDataIntegrityValue"]),
        Sha256::digest(&expected).to_vec()
    );
    let answer = scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&sealed, Some(aad)),
        )
        .await;
    assert_eq!(decoded(&answer.assert_ok()["plaintext"]), plaintext);

    // Without AAD and without a CDIV: no CDIV in the answer.
    let answer = scene
        .call(
            &store,
            &key_path(&key, "encrypt"),
            &encrypt_body(b"x", None, false),
        )
        .await;
    let bare = answer.assert_ok().clone();
    assert!(bare.get("ciphertextDataIntegrityValue").is_none(), "{bare}");
    let answer = scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&bare, None),
        )
        .await;
    assert_eq!(decoded(&answer.assert_ok()["plaintext"]), b"x");
    // Two encryptions of the same plaintext differ (a fresh IV each).
    let again = scene
        .call(
            &store,
            &key_path(&key, "encrypt"),
            &encrypt_body(b"x", None, false),
        )
        .await;
    assert_ne!(
        again.assert_ok()["initializationVector"],
        bare["initializationVector"]
    );

    // The specification's largest inputs: 4,300 bytes of plaintext, 8,192 of AAD.
    let big = vec![0xa5u8; 4300];
    let big_aad = vec![0x5au8; 8192];
    let answer = scene
        .call(
            &store,
            &key_path(&key, "encrypt"),
            &encrypt_body(&big, Some(&big_aad), true),
        )
        .await;
    let sealed_big = answer.assert_ok().clone();
    let answer = scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&sealed_big, Some(&big_aad)),
        )
        .await;
    assert_eq!(decoded(&answer.assert_ok()["plaintext"]), big);

    // Tampering with anything the tag covers: InvalidCiphertextException.
    for (what, body) in [
        ("no AAD", decrypt_body(&sealed, None)),
        ("another AAD", decrypt_body(&sealed, Some(b"project=nile"))),
        ("a flipped tag bit", {
            let mut body = decrypt_body(&sealed, Some(aad));
            body["authenticationTag"] = tampered(&sealed["authenticationTag"]);
            body
        }),
        ("a flipped ciphertext bit", {
            let mut body = decrypt_body(&sealed, Some(aad));
            body["ciphertext"] = tampered(&sealed["ciphertext"]);
            body
        }),
        ("a flipped IV bit", {
            let mut body = decrypt_body(&sealed, Some(aad));
            body["initializationVector"] = tampered(&sealed["initializationVector"]);
            body
        }),
        ("a 16-byte IV, which keyhold never makes", {
            let mut body = decrypt_body(&sealed, Some(aad));
            body["initializationVector"] = json!(BASE64.encode([7u8; 16]));
            body
        }),
        ("ciphertextMetadata, which keyhold never makes", {
            let mut body = decrypt_body(&sealed, Some(aad));
            body["ciphertextMetadata"] = json!(BASE64.encode(b"key_version=1"));
            body
        }),
    ] {
        let answer = scene.call(&store, &key_path(&key, "decrypt"), &body).await;
        assert_eq!(
            answer.error_name(),
            "InvalidCiphertextException",
            "{what}: {answer:?}"
        );
        answer.assert_error(400, "InvalidCiphertextException");
    }

    // GetHealthStatus: the specification's shape, from the cached deep check.
    let answer = scene.call(&store, "/health", &health_body()).await;
    let health = answer.assert_ok();
    assert_eq!(health["xksProxyFleetSize"], 1, "{health}");
    assert_eq!(health["xksProxyVendor"], "keyhold");
    assert!(
        health["xksProxyModel"]
            .as_str()
            .unwrap()
            .starts_with("keyhold ")
    );
    assert!(
        !health["ekmVendor"].as_str().unwrap().is_empty(),
        "{health}"
    );
    let details = health["ekmFleetDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{health}");
    assert_eq!(details[0]["healthStatus"], "ACTIVE", "{health}");
    assert!(!details[0]["id"].as_str().unwrap().is_empty());
    assert!(!details[0]["model"].as_str().unwrap().is_empty());

    // GET (and any method but POST) on an API path: 405, with the error body.
    for path in [key_path(&key, "encrypt"), "/health".to_owned()] {
        let url = format!("{}{}{path}", scene.app.base, store.uri_path);
        let answer = scene
            .curl("GET", &url, Some(store.credential()), None, None, &[])
            .await;
        assert_eq!(answer.status, 405, "{answer:?}");
        assert!(!answer.error_name().is_empty(), "{answer:?}");
        let answer = scene
            .curl("PUT", &url, Some(store.credential()), Some("{}"), None, &[])
            .await;
        assert_eq!(answer.status, 405, "{answer:?}");
    }
}

// ---- errors ----

#[tokio::test(flavor = "multi_thread")]
async fn every_error_of_the_table_is_answered_with_its_status_and_name() {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let other = scene.store("billing", json!({})).await;
    let key = scene.key(&store, json!({})).await;
    let other_key = scene.key(&other, json!({})).await;
    let encrypt_only = scene.key(&store, json!({"usage": "encrypt"})).await;
    let decrypt_only = scene.key(&store, json!({"usage": "decrypt"})).await;
    let disabled = scene.key(&store, json!({})).await;
    scene.update_key(&disabled, json!({"enabled": false})).await;
    within(Duration::from_secs(5), "the key disabled", || async {
        scene
            .call(&store, &key_path(&disabled, "metadata"), &metadata_body())
            .await
            .body["keyStatus"]
            == "DISABLED"
    })
    .await;
    let sealed = scene
        .call(
            &store,
            &key_path(&key, "encrypt"),
            &encrypt_body(b"data key", None, false),
        )
        .await
        .assert_ok()
        .clone();

    // 400 ValidationException: not JSON, a missing field, bad Base64.
    for body in [
        json!("not an object"),
        json!({"requestMetadata": metadata("Encrypt")}),
        json!({"requestMetadata": metadata("Encrypt"), "plaintext": "%%%", "encryptionAlgorithm": "AES_GCM"}),
        json!({"requestMetadata": {"kmsOperation": "Encrypt"}, "plaintext": "AA==", "encryptionAlgorithm": "AES_GCM"}),
    ] {
        scene
            .call(&store, &key_path(&key, "encrypt"), &body)
            .await
            .assert_error(400, "ValidationException");
    }
    // 400 InvalidStateException: a disabled key (its metadata says DISABLED).
    scene
        .call(
            &store,
            &key_path(&disabled, "encrypt"),
            &encrypt_body(b"x", None, false),
        )
        .await
        .assert_error(400, "InvalidStateException");
    let answer = scene
        .call(&store, &key_path(&disabled, "metadata"), &metadata_body())
        .await;
    assert_eq!(answer.assert_ok()["keyStatus"], "DISABLED");
    // 400 InvalidCiphertextException: the wrong AAD.
    scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&sealed, Some(b"other")),
        )
        .await
        .assert_error(400, "InvalidCiphertextException");
    // 400 InvalidKeyUsageException: each one-way key the other way.
    scene
        .call(
            &store,
            &key_path(&encrypt_only, "decrypt"),
            &decrypt_body(&sealed, None),
        )
        .await
        .assert_error(400, "InvalidKeyUsageException");
    scene
        .call(
            &store,
            &key_path(&decrypt_only, "encrypt"),
            &encrypt_body(b"x", None, false),
        )
        .await
        .assert_error(400, "InvalidKeyUsageException");
    let answer = scene
        .call(
            &store,
            &key_path(&encrypt_only, "metadata"),
            &metadata_body(),
        )
        .await;
    assert_eq!(answer.assert_ok()["keyUsage"], json!(["ENCRYPT"]));
    // A decrypt-only key opens what its key sealed? No: another key's
    // ciphertext never authenticates under it.
    scene
        .call(
            &store,
            &key_path(&decrypt_only, "decrypt"),
            &decrypt_body(&sealed, None),
        )
        .await
        .assert_error(400, "InvalidCiphertextException");

    // 401 AuthenticationFailedException: unsigned; a wrong secret; another
    // store's credential; an unknown access key id; a garbled header; a
    // signature from six minutes ago (keyhold's clock moved on).
    let health = health_body();
    let unsigned = scene.call_as(&store, "/health", None, &health, None).await;
    unsigned.assert_error(401, "AuthenticationFailedException");
    let wrong_secret = BASE64.encode([9u8; 32]);
    for credential in [
        (store.access_key_id.as_str(), wrong_secret.as_str()),
        other.credential(),
        ("ZZZZZZZZZZZZZZZZZZZZZZZZZZ", store.secret.as_str()),
    ] {
        scene
            .call_as(&store, "/health", Some(credential), &health, None)
            .await
            .assert_error(401, "AuthenticationFailedException");
    }
    let url = format!("{}{}/health", scene.app.base, store.uri_path);
    let garbled = scene
        .curl(
            "POST",
            &url,
            None,
            Some(&health.to_string()),
            None,
            &["-H", "Authorization: AWS4-HMAC-SHA256 Credential=garbage"],
        )
        .await;
    garbled.assert_error(401, "AuthenticationFailedException");
    wall_clock(&scene.app);
    let ahead = SystemClock.now() + chrono::Duration::minutes(6);
    let stale = {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(&scene.server_ca)
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:kms-xks-proxy")])
            .args([
                "--user",
                &format!("{}:{}", store.access_key_id, store.secret),
            ])
            .arg(&url);
        // keyhold's clock six minutes ahead of the signer's.
        scene.app.clock.set(ahead);
        let body = health.to_string();
        tokio::task::spawn_blocking(move || run_curl(command, Some(&body)))
            .await
            .unwrap()
    };
    stale.assert_error(401, "AuthenticationFailedException");
    assert!(
        stale.body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("5 minutes"),
        "{stale:?}"
    );

    // 403 AccessDeniedException: the key's rule admits another principal.
    let ruled = scene
        .key(
            &store,
            json!({"rule": {"principals": ["arn:aws:iam::999999999999:*"]}}),
        )
        .await;
    scene
        .call(
            &store,
            &key_path(&ruled, "encrypt"),
            &encrypt_body(b"x", None, false),
        )
        .await
        .assert_error(403, "AccessDeniedException");

    // 404 KeyNotFoundException: no such key; another store's key; not a UUID.
    for missing in [
        uuid::Uuid::new_v4().to_string(),
        other_key.clone(),
        "not-a-keyhold-key".to_owned(),
    ] {
        scene
            .call(&store, &key_path(&missing, "metadata"), &metadata_body())
            .await
            .assert_error(404, "KeyNotFoundException");
    }
    // 404 InvalidUriPathException: an unknown prefix; an unknown operation.
    let unknown = Store {
        uri_path: "/xks/nowhere/kms/xks/v1".into(),
        ..store.clone()
    };
    scene
        .call(&unknown, "/health", &health)
        .await
        .assert_error(404, "InvalidUriPathException");
    scene
        .call(&store, &key_path(&key, "sign"), &metadata_body())
        .await
        .assert_error(404, "InvalidUriPathException");

    // 501 UnsupportedOperationException: another algorithm; a body past
    // keyhold's bound.
    let mut cbc = encrypt_body(b"x", None, false);
    cbc["encryptionAlgorithm"] = json!("AES_CBC");
    scene
        .call(&store, &key_path(&key, "encrypt"), &cbc)
        .await
        .assert_error(501, "UnsupportedOperationException");
    // Sent as a client sends a large body, asking first: keyhold refuses it
    // from its Content-Length, and a body sent unasked could still be on its
    // way when the refused connection closes (curl then fails with 55,
    // never reading the answer).
    let huge = encrypt_body(&vec![1u8; 300 * 1024], None, false);
    let url = format!(
        "{}{}{}",
        scene.app.base,
        store.uri_path,
        key_path(&key, "encrypt")
    );
    scene
        .curl(
            "POST",
            &url,
            Some(store.credential()),
            Some(&huge.to_string()),
            None,
            &["-H", "Expect: 100-continue"],
        )
        .await
        .assert_error(501, "UnsupportedOperationException");

    // 429 ThrottlingException: a store with a quota of one request a second.
    let slow = scene.store("slow", json!({"quota_per_second": 1})).await;
    let slow_key = scene.key(&slow, json!({})).await;
    let client = sdk_client(&scene);
    let credential = keyhold_bench::xks_client::XksCredential::new(
        slow.access_key_id.clone(),
        slow.secret.clone(),
    );
    let url = format!(
        "{}{}{}",
        scene.app.base,
        slow.uri_path,
        key_path(&slow_key, "metadata")
    );
    wall_clock(&scene.app);
    let answers = burst(&client, &url, &credential, 10).await;
    let throttled = answers
        .iter()
        .find(|a| a.status == 429)
        .unwrap_or_else(|| panic!("none of 10 throttled at 1 a second"));
    assert_eq!(throttled.error_name(), "ThrottlingException");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Requests nobody signed (or signed with a wrong secret) never spend
    // the quota: after a flood of them, KMS's own request is served.
    for _ in 0..5 {
        scene
            .call_as(&slow, "/health", None, &health, None)
            .await
            .assert_error(401, "AuthenticationFailedException");
        scene
            .call_as(
                &slow,
                "/health",
                Some((slow.access_key_id.as_str(), "not-the-secret")),
                &health,
                None,
            )
            .await
            .assert_error(401, "AuthenticationFailedException");
    }
    scene.call(&slow, "/health", &health).await.assert_ok();

    // The refusals that matter are in the audit log, one by one.
    wall_clock(&scene.app);
    let audit = scene.app.audit_summaries(&scene.admins).await;
    let refused: Vec<&String> = audit
        .iter()
        .filter(|s| s.contains("Refused an XKS request for"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|s| s.contains(&ruled) && s.starts_with("Anonymous |")),
        "{audit:#?}"
    );
    assert!(
        refused.iter().any(|s| s.contains("/health")),
        "a failed signature on health names the path: {audit:#?}"
    );
}

/// The fault switch is the process's: nextest runs each test in a process
/// of its own, so no other test's server sees it.
#[cfg(feature = "crash-points")]
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_or_failing_keystore_answers_dependency_timeout_and_internal_and_health_says_unavailable()
 {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let key = scene.key(&store, json!({})).await;
    let encrypt = encrypt_body(b"data key", None, false);
    scene
        .call(&store, &key_path(&key, "encrypt"), &encrypt)
        .await
        .assert_ok();

    // Past the proxy's 200 ms deadline (KMS gives up at 250 ms).
    keyhold_server::set_xks_fault("delay:300").unwrap();
    let started = Instant::now();
    scene
        .call(&store, &key_path(&key, "encrypt"), &encrypt)
        .await
        .assert_error(503, "DependencyTimeoutException");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A keystore that fails: InternalException, and the deep health check
    // (re-run at once when the switch changes) says UNAVAILABLE.
    keyhold_server::set_xks_fault("fail").unwrap();
    scene
        .call(&store, &key_path(&key, "encrypt"), &encrypt)
        .await
        .assert_error(500, "InternalException");
    within(Duration::from_secs(10), "health UNAVAILABLE", || async {
        let answer = scene.call(&store, "/health", &health_body()).await;
        answer.status == 200 && answer.body["ekmFleetDetails"][0]["healthStatus"] == "UNAVAILABLE"
    })
    .await;

    keyhold_server::set_xks_fault("").unwrap();
    scene
        .call(&store, &key_path(&key, "encrypt"), &encrypt)
        .await
        .assert_ok();
    within(Duration::from_secs(10), "health ACTIVE again", || async {
        let answer = scene.call(&store, "/health", &health_body()).await;
        answer.body["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE"
    })
    .await;
}

// ---- authorization ----

#[tokio::test(flavor = "multi_thread")]
async fn authorization_rules_admit_only_matching_metadata_and_refusals_are_audited() {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let key = scene
        .key(
            &store,
            json!({"rule": {
                "principals": ["arn:aws:iam::111122223333:role/payments-*"],
                "kms_operations": ["Encrypt", "Decrypt", "GenerateDataKey*", "DescribeKey"],
                "kms_key_arns": ["arn:aws:kms:eu-west-1:111122223333:key/*"],
            }}),
        )
        .await;
    let admitted = encrypt_body(b"x", None, false);
    let sealed = scene
        .call(&store, &key_path(&key, "encrypt"), &admitted)
        .await
        .assert_ok()
        .clone();
    scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&sealed, None),
        )
        .await
        .assert_ok();
    scene
        .call(&store, &key_path(&key, "metadata"), &metadata_body())
        .await
        .assert_ok();

    let mut refused_ids = Vec::new();
    for (field, value) in [
        (
            "awsPrincipalArn",
            json!("arn:aws:iam::111122223333:role/intruder"),
        ),
        ("kmsOperation", json!("ReEncrypt")),
        (
            "kmsKeyArn",
            json!("arn:aws:kms:us-east-1:111122223333:key/other"),
        ),
    ] {
        let mut body = encrypt_body(b"x", None, false);
        body["requestMetadata"][field] = value;
        refused_ids.push(
            body["requestMetadata"]["kmsRequestId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let answer = scene.call(&store, &key_path(&key, "encrypt"), &body).await;
        answer.assert_error(403, "AccessDeniedException");
        assert!(
            answer.body["errorMessage"]
                .as_str()
                .unwrap()
                .contains(field),
            "the refusal names the list that refused: {answer:?}"
        );
    }
    // Health is never subject to a rule.
    scene
        .call(&store, "/health", &health_body())
        .await
        .assert_ok();

    // Each refusal is in the audit log with its request id and reason.
    wall_clock(&scene.app);
    let entries = scene.app.audit_export(&scene.admins).await;
    for id in &refused_ids {
        let entry = entries
            .iter()
            .find(|e| e["details"]["kms_request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no audit entry for {id}"));
        assert_eq!(entry["users"], "Anonymous");
        assert_eq!(
            entry["summary"],
            format!("Refused an XKS request for {key}")
        );
        assert_eq!(entry["details"]["error"], "AccessDeniedException");
        assert_eq!(entry["details"]["store"], "payments");
        assert_eq!(entry["details"]["access_key_id"], store.access_key_id);
        assert!(
            entry["details"]["reason"]
                .as_str()
                .unwrap()
                .contains("rule")
        );
    }
}

// ---- credentials ----

#[tokio::test(flavor = "multi_thread")]
async fn two_credentials_work_at_once_and_a_revoked_one_is_refused_within_seconds() {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let (status, issued) = scene
        .app
        .post(
            &format!("/api/v1/xks/stores/{}/credentials", store.name),
            Some(&scene.admins),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let second = Store {
        access_key_id: issued["access_key_id"].as_str().unwrap().to_owned(),
        secret: issued["secret_access_key"].as_str().unwrap().to_owned(),
        ..store.clone()
    };
    // The new credential works on this node within the reload (about a second).
    within(
        Duration::from_secs(5),
        "the new credential accepted",
        || async { scene.call(&second, "/health", &health_body()).await.status == 200 },
    )
    .await;
    scene
        .call(&store, "/health", &health_body())
        .await
        .assert_ok();

    let (status, body) = scene
        .app
        .delete(
            &format!(
                "/api/v1/xks/stores/{}/credentials/{}",
                store.name, store.access_key_id
            ),
            &scene.admins,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let took = within(
        Duration::from_secs(3),
        "the revoked credential refused",
        || async { scene.call(&store, "/health", &health_body()).await.status == 401 },
    )
    .await;
    scene
        .call(&store, "/health", &health_body())
        .await
        .assert_error(401, "AuthenticationFailedException");
    scene
        .call(&second, "/health", &health_body())
        .await
        .assert_ok();
    println!("revocation took effect after {} ms", took.as_millis());
}

// ---- mutual TLS ----

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_kms_certificate_only_and_leaves_other_stores_and_clients_alone() {
    let scene = Scene::new().await;
    let kms_ca = scene.ca("kms-ca");
    let rogue_ca = scene.ca("rogue-ca");
    let kms = scene.client_certificate(&kms_ca, "kms", KMS_CN);
    let wrong_cn = scene.client_certificate(&kms_ca, "wrong-cn", "cks.kms.us-east-1.amazonaws.com");
    let forged = scene.client_certificate(&rogue_ca, "forged", KMS_CN);
    let ca_pem = std::fs::read_to_string(kms_ca.certificate()).unwrap();

    let guarded = scene
        .store(
            "guarded",
            json!({"mtls": {"subject": KMS_CN, "ca_pem": ca_pem}}),
        )
        .await;
    let open = scene.store("open", json!({})).await;
    let key = scene.key_using(&guarded, json!({}), Some(&kms)).await;
    let health = health_body();

    // KMS's certificate: admitted, for health and for keys.
    scene
        .call_as(
            &guarded,
            "/health",
            Some(guarded.credential()),
            &health,
            Some(&kms),
        )
        .await
        .assert_ok();
    scene
        .call_as(
            &guarded,
            &key_path(&key, "encrypt"),
            Some(guarded.credential()),
            &encrypt_body(b"x", None, false),
            Some(&kms),
        )
        .await
        .assert_ok();
    // No certificate: the handshake completes (the API and UI share the
    // listener), and the store refuses.
    scene
        .call_as(
            &guarded,
            "/health",
            Some(guarded.credential()),
            &health,
            None,
        )
        .await
        .assert_error(401, "AuthenticationFailedException");
    // Another CA, or the right CA with another subject: the handshake fails.
    for (what, certificate) in [("another CA", &forged), ("another subject", &wrong_cn)] {
        let answer = scene
            .call_as(
                &guarded,
                "/health",
                Some(guarded.credential()),
                &health,
                Some(certificate),
            )
            .await;
        assert_eq!(
            answer.status, 0,
            "{what}: no HTTP answer at all: {answer:?}"
        );
        assert_ne!(answer.exit, 0, "{what}: {answer:?}");
    }
    // A store without mTLS: unaffected, with or without KMS's certificate.
    scene.call(&open, "/health", &health).await.assert_ok();
    scene
        .call_as(
            &open,
            "/health",
            Some(open.credential()),
            &health,
            Some(&kms),
        )
        .await
        .assert_ok();
    // The API is unaffected too.
    let (status, _) = scene.app.get("/api/v1/xks/stores", &scene.admins).await;
    assert_eq!(status, StatusCode::OK);

    // mTLS off: the store takes requests without a certificate within the reload.
    scene.update_store(&guarded, json!({"mtls": null})).await;
    within(Duration::from_secs(5), "mTLS off", || async {
        scene
            .call_as(
                &guarded,
                "/health",
                Some(guarded.credential()),
                &health,
                None,
            )
            .await
            .status
            == 200
    })
    .await;
    // With no rule left anywhere, no client is asked for a certificate: a
    // rogue one is not even looked at.
    scene
        .call_as(
            &guarded,
            "/health",
            Some(guarded.credential()),
            &health,
            Some(&forged),
        )
        .await
        .assert_ok();
    // mTLS on again, with another CA: KMS's certificate no longer fits.
    let rogue_pem = std::fs::read_to_string(rogue_ca.certificate()).unwrap();
    scene
        .update_store(
            &guarded,
            json!({"mtls": {"subject": KMS_CN, "ca_pem": rogue_pem}}),
        )
        .await;
    within(
        Duration::from_secs(5),
        "mTLS on with the other CA",
        || async {
            scene
                .call_as(
                    &guarded,
                    "/health",
                    Some(guarded.credential()),
                    &health,
                    Some(&kms),
                )
                .await
                .status
                == 0
        },
    )
    .await;
    scene
        .call_as(
            &guarded,
            "/health",
            Some(guarded.credential()),
            &health,
            Some(&forged),
        )
        .await
        .assert_ok();

    // The refusal of the certificate-less request is audited.
    wall_clock(&scene.app);
    let entries = scene.app.audit_export(&scene.admins).await;
    assert!(
        entries.iter().any(|e| e["details"]["store"] == "guarded"
            && e["details"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("mutual TLS"))),
        "{entries:#?}"
    );
}

// ---- quotas ----

#[tokio::test(flavor = "multi_thread")]
async fn a_store_over_its_quota_is_throttled_and_recovers_while_others_are_not() {
    let scene = Scene::new().await;
    let limited = scene.store("limited", json!({"quota_per_second": 5})).await;
    let other = scene.store("other", json!({})).await;
    let key = scene.key(&limited, json!({})).await;
    let client = sdk_client(&scene);
    let credential = keyhold_bench::xks_client::XksCredential::new(
        limited.access_key_id.clone(),
        limited.secret.clone(),
    );
    let url = format!(
        "{}{}{}",
        scene.app.base,
        limited.uri_path,
        key_path(&key, "metadata")
    );
    wall_clock(&scene.app);
    // Bursts of 20 at once until one is throttled (the first, unless the
    // machine is so loaded that 20 requests spread over seconds).
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers = burst(&client, &url, &credential, 20).await;
        if answers.iter().any(|a| a.status == 429) {
            break;
        }
    }
    let throttled = answers.iter().filter(|a| a.status == 429).count();
    assert!(throttled > 0, "none of 20 throttled");
    assert!(
        answers
            .iter()
            .filter(|a| a.status == 429)
            .all(|a| a.body["errorName"] == "ThrottlingException")
    );
    // Another store has its own quota.
    scene
        .call(&other, "/health", &health_body())
        .await
        .assert_ok();
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    scene
        .call(&limited, &key_path(&key, "metadata"), &metadata_body())
        .await
        .assert_ok();
    // Raising the quota takes effect within the reload.
    scene
        .update_store(&limited, json!({"quota_per_second": 1000}))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wall_clock(&scene.app);
    let answers = burst(&client, &url, &credential, 20).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let metrics = scene.app.metrics().await;
    assert!(
        metrics.contains("keyhold_xks_throttled_total{store=\"limited\"}"),
        "{metrics}"
    );
}

/// `count` signed GetKeyMetadata requests to `url` at once.
async fn burst(
    client: &keyhold_bench::xks_client::XksClient,
    url: &str,
    credential: &keyhold_bench::xks_client::XksCredential,
    count: usize,
) -> Vec<keyhold_bench::xks_client::Answer> {
    futures_join(
        (0..count)
            .map(|_| {
                let (client, credential, url) =
                    (client.clone(), credential.clone(), url.to_owned());
                async move {
                    client
                        .post(&url, &credential, &metadata_body())
                        .await
                        .unwrap()
                }
            })
            .collect(),
    )
    .await
}

/// Runs the futures concurrently, in order of their answers' requests.
async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// The AWS SDK's signer (keyhold-bench's XKS client) over the server's CA.
fn sdk_client(scene: &Scene) -> keyhold_bench::xks_client::XksClient {
    let root = reqwest::Certificate::from_pem(&std::fs::read(&scene.server_ca).unwrap()).unwrap();
    keyhold_bench::xks_client::XksClient::new(
        reqwest::Client::builder()
            .add_root_certificate(root)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
}

// ---- usage log, metrics, digest ----

#[tokio::test(flavor = "multi_thread")]
async fn calls_reach_the_usage_log_without_plaintext_and_a_digest_an_auditor_can_check() {
    let scene = Scene::new().await;
    let store = scene.store("payments", json!({})).await;
    let key = scene.key(&store, json!({})).await;
    let plaintext = b"TOP-SECRET-DATA-KEY-0123456789ab";
    let aad = b"AAD-MARKER-department=marketing";
    let mut request_ids = Vec::new();
    let body = encrypt_body(plaintext, Some(aad), true);
    request_ids.push(
        body["requestMetadata"]["kmsRequestId"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let sealed = scene
        .call(&store, &key_path(&key, "encrypt"), &body)
        .await
        .assert_ok()
        .clone();
    let body = decrypt_body(&sealed, Some(aad));
    request_ids.push(
        body["requestMetadata"]["kmsRequestId"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    scene
        .call(&store, &key_path(&key, "decrypt"), &body)
        .await
        .assert_ok();
    scene
        .call(
            &store,
            &key_path(&key, "decrypt"),
            &decrypt_body(&sealed, None),
        )
        .await
        .assert_error(400, "InvalidCiphertextException");
    let health = health_body();
    request_ids.push(
        health["requestMetadata"]["kmsRequestId"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    scene.call(&store, "/health", &health).await.assert_ok();

    // The usage log: a line per call, flushed within a second.
    let log = scene.app.data_dir.join("xks-usage-node-a.jsonl");
    within(Duration::from_secs(5), "the calls' usage lines", || async {
        std::fs::read_to_string(&log)
            .is_ok_and(|text| request_ids.iter().all(|id| text.contains(id.as_str())))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in &request_ids[..2] {
        let line = lines
            .iter()
            .find(|l| l["kms_request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no line for {id}: {text}"));
        assert_eq!(line["store"], "payments");
        assert_eq!(line["key"], key.as_str());
        assert_eq!(line["aws_principal_arn"], PRINCIPAL);
        assert_eq!(line["kms_key_arn"], KMS_KEY_ARN);
        assert_eq!(line["kms_via_service"], "ebs");
        assert_eq!(line["access_key_id"], store.access_key_id);
        assert_eq!(line["node"], "node-a");
        assert_eq!(line["outcome"], "ok");
        assert!(line["latency_us"].as_u64().unwrap() > 0);
    }
    assert!(
        lines
            .iter()
            .any(|l| l["outcome"] == "InvalidCiphertextException")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["operation"] == "health" && l["kms_operation"] == "KmsHealthCheck")
    );
    // Never plaintext, AAD or ciphertext, raw or in Base64.
    for secret in [
        String::from_utf8_lossy(plaintext).to_string(),
        BASE64.encode(plaintext),
        String::from_utf8_lossy(aad).to_string(),
        BASE64.encode(aad),
        sealed["ciphertext"].as_str().unwrap().to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} in the usage log");
    }

    // /metrics: per store, key, operation and outcome; per principal.
    let metrics = scene.app.metrics().await;
    for series in [
        format!(
            "keyhold_xks_requests_total{{store=\"payments\",key=\"{key}\",operation=\"encrypt\",outcome=\"ok\"}} 1"
        ),
        format!(
            "keyhold_xks_requests_total{{store=\"payments\",key=\"{key}\",operation=\"decrypt\",outcome=\"InvalidCiphertextException\"}} 1"
        ),
        format!("keyhold_xks_principal_requests_total{{principal=\"{PRINCIPAL}\"}} "),
        "keyhold_xks_request_duration_seconds_count{operation=\"encrypt\"}".to_owned(),
        "keyhold_xks_usage_log_dropped_total 0".to_owned(),
        "keyhold_xks_health_active 1".to_owned(),
    ] {
        assert!(metrics.contains(&series), "{series} not in {metrics}");
    }
    assert!(!metrics.contains(&BASE64.encode(plaintext)));

    // A digest: the Clock moves past the interval (5 minutes by default).
    // Digests are appended while the period has calls; check every one.
    scene.app.clock.advance(chrono::Duration::minutes(6));
    let digests = scene
        .app
        .eventually("a usage digest covering every line", || async {
            let entries = scene.app.audit_export(&scene.admins).await;
            let digests: Vec<Value> = entries
                .into_iter()
                .filter(|e| e["summary"] == "Recorded the XKS usage digest of node node-a")
                .collect();
            // Every line the file has (no XKS call is made any more).
            let lines = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
            let covered: u64 = digests
                .iter()
                .flat_map(|d| d["details"]["usage_log"].as_array().unwrap())
                .map(|segment| segment["lines"].as_u64().unwrap())
                .sum();
            (covered == lines).then_some(digests)
        })
        .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines_digested = 0;
    for digest in &digests {
        let details = &digest["details"];
        assert_eq!(details["node"], "node-a");
        assert!(details["period"]["start"].is_string() && details["period"]["end"].is_string());
        assert_eq!(details["usage_log_dropped_lines"], 0);
        for segment in details["usage_log"].as_array().unwrap() {
            let Some(first) = segment["first_line"].as_u64() else {
                continue;
            };
            let last = segment["last_line"].as_u64().unwrap();
            assert_eq!(segment["file"], log.display().to_string());
            // What an auditor runs.
            let script = format!("sed -n '{first},{last}p' '{}' | sha256sum", log.display());
            let output = Command::new("sh").args(["-c", &script]).output().unwrap();
            let sum = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                sum.split_whitespace().next(),
                segment["sha256"].as_str(),
                "{script}"
            );
            lines_digested += last - first + 1;
        }
    }
    assert_eq!(
        lines_digested,
        text.lines().count() as u64,
        "every line is digested once"
    );
    let calls: Vec<&Value> = digests
        .iter()
        .flat_map(|d| d["details"]["calls"].as_array().unwrap())
        .collect();
    assert!(calls.iter().any(|c| c["key"] == key.as_str()
        && c["operation"] == "encrypt"
        && c["outcome"] == "ok"
        && c["store"] == "payments"));
    assert!(
        digests
            .iter()
            .any(|d| d["details"]["principals"]["top"][0]["principal"] == PRINCIPAL)
    );
}

// ---- a quick local load, for insight (benchmarks proper are ./scripts/bench) ----

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_signed_encrypts_and_decrypts_over_https_all_succeed() {
    const CONCURRENCY: usize = 32;
    const PER_WORKER: usize = 60;
    let scene = Scene::new().await;
    let store = scene
        .store("load", json!({"quota_per_second": 100000}))
        .await;
    let key = scene.key(&store, json!({})).await;
    let client = sdk_client(&scene);
    let credential = keyhold_bench::xks_client::XksCredential::new(
        store.access_key_id.clone(),
        store.secret.clone(),
    );
    let encrypt_url = format!(
        "{}{}{}",
        scene.app.base,
        store.uri_path,
        key_path(&key, "encrypt")
    );
    let decrypt_url = format!(
        "{}{}{}",
        scene.app.base,
        store.uri_path,
        key_path(&key, "decrypt")
    );
    wall_clock(&scene.app);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let client = client.clone();
            let credential = credential.clone();
            let (encrypt_url, decrypt_url) = (encrypt_url.clone(), decrypt_url.clone());
            async move {
                let mut latencies = Vec::new();
                for i in 0..PER_WORKER {
                    let plaintext = format!("data key {worker} {i} 0123456789abcdef");
                    let t = Instant::now();
                    let sealed = client
                        .post(
                            &encrypt_url,
                            &credential,
                            &encrypt_body(plaintext.as_bytes(), None, true),
                        )
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                    assert_eq!(sealed.status, 200, "{:?}", sealed.body);
                    let t = Instant::now();
                    let opened = client
                        .post(&decrypt_url, &credential, &decrypt_body(&sealed.body, None))
                        .await
                        .unwrap();
                    latencies.push(t.elapsed());
                    assert_eq!(opened.status, 200, "{:?}", opened.body);
                    assert_eq!(decoded(&opened.body["plaintext"]), plaintext.as_bytes());
                }
                latencies
            }
        })
        .collect();
    let mut latencies: Vec<Duration> = futures_join(workers).await.into_iter().flatten().collect();
    let took = started.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{} signed requests over HTTPS at concurrency {CONCURRENCY} in {:.2} s: {:.0} req/s; p50 {} ms, p99 {} ms, max {} ms (client and server share this machine)",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        p(0.5).as_millis(),
        p(0.99).as_millis(),
        latencies.last().unwrap().as_millis()
    );
}
