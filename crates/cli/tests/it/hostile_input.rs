//! A table of hostile requests against every endpoint that takes input, and
//! of hostile invocations of the CLI: each is refused with a 4xx (or a
//! non-zero exit) and a message saying what is wrong, never a 500 or a
//! panic, and nothing changes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::report;

/// One hostile request: what it tries, and the status it must get (or any
/// 4xx when `None`).
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: Option<u16>,
}

fn json_case(
    what: &'static str,
    method: Method,
    path: &str,
    body: Value,
    status: Option<u16>,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
    }
}

fn raw_case(
    what: &'static str,
    path: &str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: Option<u16>,
) -> Case {
    Case {
        what,
        method: Method::POST,
        path: path.to_owned(),
        content_type,
        body,
        status,
    }
}

const POLICY_OK: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

/// Names a user might type or an attacker might send.
const HOSTILE_NAMES: &[&str] = &[
    "",
    " ",
    "../../etc/passwd",
    "a/b",
    "name\u{0}nul",
    "line\nbreak",
    "tab\there",
    "\u{202e}evil",
    "zero\u{200b}width",
    "名前",
    "emoji-🔑",
    "'; DROP TABLE key_groups; --",
    "<script>alert(1)</script>",
    "%2e%2e%2f",
];

fn corpus(group: &str, job: &str, key: &str) -> Vec<Case> {
    use Method as M;
    let long = "x".repeat(300);
    let mut cases = Vec::new();

    // Names, in every place a name is given.
    for name in HOSTILE_NAMES.iter().copied().chain([long.as_str()]) {
        cases.push(json_case(
            "credential name",
            M::POST,
            "/api/v1/credentials",
            json!({"name": name, "csv": console_csv()}),
            Some(400),
        ));
        let mut body = group_body("fine-name", "c");
        body["name"] = json!(name);
        cases.push(json_case(
            "group name",
            M::POST,
            "/api/v1/groups",
            body,
            Some(400),
        ));
        cases.push(json_case(
            "identity name",
            M::POST,
            "/api/v1/identities",
            json!({"name": name, "role": "auditor"}),
            Some(400),
        ));
    }
    // Credential files.
    for csv in [
        String::new(),
        "Access key ID,Secret access key\n".to_owned(),
        "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE\n".to_owned(),
        "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,secret,extra,columns\n".to_owned(),
        "Access key ID,Secret access key\n\"unterminated,quote\n".to_owned(),
        "Access key ID,Secret access key\nAKIA\u{0}NUL,secret\n".to_owned(),
        "User name,Password\nalice,hunter2\n".to_owned(),
        format!(
            "Access key ID,Secret access key\n{}",
            "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n".repeat(2000)
        ),
        "\u{feff}\u{feff}\u{feff}".to_owned(),
        // A valid key and secret, but a column IAM's files do not have.
        format!("Access key ID,Secret access key,Note\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY},x\n"),
        format!("Access key ID,Secret access key\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY},x\n"),
    ] {
        cases.push(json_case(
            "credential CSV",
            M::POST,
            "/api/v1/credentials",
            json!({"name": "csv-case", "csv": csv}),
            Some(400),
        ));
    }
    for endpoint in [
        "not a url",
        "ftp://kms.example",
        "http://",
        "file:///etc/passwd",
        "http://user:pw@kms.example",
        "http://127.0.0.1:99999",
        "https://kms.example:65536/",
        "https://kms.example:0",
    ] {
        cases.push(json_case(
            "credential endpoint",
            M::POST,
            "/api/v1/credentials",
            json!({"name": "ep-case", "csv": console_csv(), "endpoint": endpoint}),
            Some(400),
        ));
    }
    cases.push(json_case(
        "chain credential kind",
        M::POST,
        "/api/v1/credentials/chain",
        json!({"name": "chain-case", "kind": "access_key"}),
        Some(400),
    ));
    cases.push(json_case("chain role ARN", M::POST, "/api/v1/credentials/chain", json!({"name": "chain-case", "kind": "default_chain", "role_arn": "arn:aws:iam::12:role/x"}), Some(400)));
    // Group properties.
    let group_field = |field: &str, value: Value| {
        let mut body = group_body("hostile-group", "c");
        body[field] = value;
        body
    };
    for (field, value) in [
        ("alias", json!("no-prefix")),
        ("alias", json!("alias/aws/reserved")),
        ("alias", json!("alias/has space")),
        ("alias", json!(format!("alias/{}", "a".repeat(300)))),
        ("region", json!("mars-north-1")),
        ("region", json!("EU-WEST-1")),
        ("rotate_every", json!("0d")),
        ("rotate_every", json!("-1d")),
        ("rotate_every", json!("12h")),
        ("rotate_every", json!("99999999999999999999d")),
        ("rotate_every", json!("1 fortnight")),
        ("rotate_every", json!(" 30d")),
        ("rotate_every", json!("30d ")),
        ("rotate_every", json!("30 d")),
        ("valid_for", json!("1y\n")),
        ("valid_for", json!("forever")),
        ("key_type", json!("RSA")),
        ("key_length", json!(128)),
        ("key_length", json!("256")),
        ("policy", json!("{not json")),
        ("policy", json!("[]")),
        ("policy", json!("{}")),
        (
            "policy",
            json!(format!(
                "{{\"Statement\":[{}]}}",
                "{},".repeat(20_000) + "{}"
            )),
        ),
        ("policy", json!(POLICY_OK.replace("Allow", "Allow\u{0}"))),
        ("policy", json!(42)),
        ("disable_after_rotate", json!("yes")),
        ("owner", json!("x".repeat(5000))),
        ("description", json!("x".repeat(10_000))),
        ("credential", json!("")),
        ("colour", json!("red")),
    ] {
        cases.push(json_case(
            "group property",
            M::POST,
            "/api/v1/groups",
            group_field(field, value),
            None,
        ));
    }
    cases.push(json_case(
        "group change: nothing",
        M::PATCH,
        &format!("/api/v1/groups/{group}"),
        json!({}),
        Some(400),
    ));
    cases.push(json_case(
        "group change: wrong type",
        M::PATCH,
        &format!("/api/v1/groups/{group}"),
        json!({"rotate_every": 30}),
        Some(400),
    ));
    cases.push(json_case(
        "group change: bad policy",
        M::PATCH,
        &format!("/api/v1/groups/{group}"),
        json!({"policy": "{"}),
        Some(400),
    ));
    cases.push(json_case(
        "group change: unknown credential",
        M::PATCH,
        &format!("/api/v1/groups/{group}"),
        json!({"credential": "nope"}),
        Some(400),
    ));
    // Identities, passwords, logins.
    cases.push(json_case(
        "identity role",
        M::POST,
        "/api/v1/identities",
        json!({"name": "eve", "role": "root"}),
        Some(400),
    ));
    cases.push(json_case(
        "identity role type",
        M::POST,
        "/api/v1/identities",
        json!({"name": "eve", "role": ["administrator"]}),
        Some(400),
    ));
    for new_password in [
        "short",
        &"p".repeat(257),
        "",
        "password1234",
        "qwertyuiop123",
        "Admin1Admin1Admin1",
    ] {
        cases.push(json_case("new password", M::POST, "/api/v1/password", json!({"user": "Admin1", "current_password": ADMIN1_PASSWORD, "new_password": new_password}), Some(400)));
    }
    cases.push(json_case(
        "login: huge password",
        M::POST,
        "/api/v1/session/login",
        json!({"user": "Admin1", "password": "p".repeat(100_000)}),
        None,
    ));
    cases.push(json_case(
        "login: control characters",
        M::POST,
        "/api/v1/session/login",
        json!({"user": "Admin1\u{0}", "password": "x"}),
        None,
    ));
    cases.push(json_case(
        "login: wrong types",
        M::POST,
        "/api/v1/session/login",
        json!({"user": 1, "password": true}),
        Some(400),
    ));
    // Settings.
    for change in [
        json!({"lockout_threshold": -1}),
        json!({"lockout_threshold": "three"}),
        json!({"lockout_threshold": 1e20}),
        json!({"session_idle_minutes": 0}),
        json!({"session_max_hours": 100_000}),
        json!({"dual_control": "off"}),
        json!({"designated_rotator": "node with spaces"}),
        json!({"unknown_setting": 1}),
        json!({}),
        // serde reads a struct from an array field by field: refused.
        json!([null, 7]),
        json!([true]),
        json!(7),
        json!(null),
    ] {
        cases.push(json_case(
            "settings change",
            M::PATCH,
            "/api/v1/config",
            change,
            Some(400),
        ));
    }
    // Arrays in place of objects, which serde would read field by field
    // (a login as ["Admin1", password] would log in).
    for (method, path, body) in [
        (
            M::POST,
            "/api/v1/session/login".to_owned(),
            json!(["Admin1", ADMIN1_PASSWORD]),
        ),
        (
            M::POST,
            "/api/v1/password".to_owned(),
            json!(["Admin1", ADMIN1_PASSWORD, "another-Pass-phrase-91"]),
        ),
        (
            M::POST,
            "/api/v1/identities".to_owned(),
            json!(["eve", "auditor"]),
        ),
        (
            M::PATCH,
            format!("/api/v1/groups/{group}"),
            json!([null, null, "30d"]),
        ),
        (
            M::POST,
            "/api/v1/credentials".to_owned(),
            json!(["arr", console_csv()]),
        ),
        (
            M::POST,
            format!("/api/v1/keys/{key}/sync"),
            json!([true, false, false]),
        ),
    ] {
        cases.push(json_case(
            "a JSON array in place of an object",
            method,
            &path,
            body,
            Some(400),
        ));
    }
    // Ids of other objects, and ids that are not ids.
    cases.push(json_case(
        "job id as a key",
        M::POST,
        &format!("/api/v1/keys/{job}/sync"),
        json!({"import_material": true}),
        Some(404),
    ));
    cases.push(json_case(
        "key id as a job",
        M::POST,
        &format!("/api/v1/jobs/{key}/retry"),
        json!({}),
        Some(404),
    ));
    cases.push(json_case(
        "group name as a credential",
        M::POST,
        "/api/v1/groups",
        group_body("other-group", group),
        Some(400),
    ));
    cases.push(json_case(
        "sync: nothing to do",
        M::POST,
        &format!("/api/v1/keys/{key}/sync"),
        json!({"import_material": false, "update_policy": false}),
        Some(400),
    ));
    cases.push(json_case(
        "sync: wrong type",
        M::POST,
        &format!("/api/v1/keys/{key}/sync"),
        json!({"import_material": "yes"}),
        Some(400),
    ));
    cases.push(json_case(
        "retry: a job that did not fail",
        M::POST,
        &format!("/api/v1/jobs/{job}/retry"),
        json!({}),
        Some(409),
    ));
    // UUIDs in the forms `uuid` also parses but keyhold never prints.
    for (path, what) in [
        (
            format!("/api/v1/jobs/%7B{job}%7D/retry"),
            "job id in braces",
        ),
        (
            format!("/api/v1/jobs/urn:uuid:{job}/cancel"),
            "job id as a URN",
        ),
        (
            format!("/api/v1/jobs/{}/retry", job.replace('-', "")),
            "job id without hyphens",
        ),
        (format!("/api/v1/keys/%7B{key}%7D/sync"), "key id in braces"),
    ] {
        cases.push(json_case(what, M::POST, &path, json!({}), Some(400)));
    }
    cases.push(json_case(
        "job id not a uuid",
        M::POST,
        "/api/v1/jobs/..%2F..%2Fetc/cancel",
        json!({}),
        None,
    ));
    // Bodies that are not JSON objects, or not JSON at all.
    for (what, content_type, body) in [
        ("no content type", None, br#"{"name":"x"}"#.to_vec()),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            b"name=x&csv=y".to_vec(),
        ),
        ("text content type", Some("text/plain"), b"{}".to_vec()),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--".to_vec(),
        ),
    ] {
        cases.push(raw_case(
            what,
            "/api/v1/credentials",
            content_type,
            body,
            Some(415),
        ));
    }
    let json_type = Some("application/json");
    for (what, body) in [
        ("truncated JSON", br#"{"name": "x", "csv": "#.to_vec()),
        (
            "invalid UTF-8",
            b"{\"name\": \"\xff\xfe\", \"csv\": \"x\"}".to_vec(),
        ),
        ("a JSON array", b"[1,2,3]".to_vec()),
        ("a JSON string", b"\"hello\"".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("empty body", Vec::new()),
        (
            "nested 100 000 deep",
            ("[".repeat(100_000) + &"]".repeat(100_000)).into_bytes(),
        ),
        (
            "duplicate fields",
            br#"{"name":"a","name":"b","csv":"x"}"#.to_vec(),
        ),
        (
            "trailing garbage",
            br#"{"name":"a","csv":"x"} trailing"#.to_vec(),
        ),
    ] {
        cases.push(raw_case(
            what,
            "/api/v1/credentials",
            json_type,
            body,
            Some(400),
        ));
    }
    cases.push(raw_case(
        "a body over 1 MiB",
        "/api/v1/groups",
        json_type,
        vec![b' '; 2 * 1024 * 1024],
        Some(413),
    ));
    // Queries.
    for query in [
        "limit=-1",
        "limit=99999999999",
        "limit=abc",
        "from=yesterday",
        "to=2026-13-45T00:00:00Z",
        "before_seq=x",
        "user=%00",
        "text=a%0Ab",
    ] {
        cases.push(Case {
            what: "audit query",
            method: M::GET,
            path: format!("/api/v1/audit?{query}"),
            content_type: None,
            body: Vec::new(),
            status: Some(400),
        });
    }
    // Drift: findings queries, finding ids, and reconcile plans.
    for (query, status) in [
        ("include_cleared=yes", 400),
        ("limit=0", 400),
        ("limit=abc", 400),
        ("kind=alias_missing", 400),
        ("group=..%2Fetc", 400),
        ("group=%00", 400),
        ("key=not-a-key", 400),
        ("group=no-such-group", 404),
        ("key=7907323e-ea39-4542-b198-ef4a4ca5793c", 404),
    ] {
        cases.push(Case {
            what: "drift findings query",
            method: M::GET,
            path: format!("/api/v1/drift/findings?{query}"),
            content_type: None,
            body: Vec::new(),
            status: Some(status),
        });
    }
    for (path, status) in [
        ("/api/v1/drift/findings/not-an-id".to_owned(), 400),
        (format!("/api/v1/drift/findings/%7B{job}%7D"), 400),
        (format!("/api/v1/drift/findings/{job}"), 404),
        ("/api/v1/drift/groups/..%2F..%2Fetc/plan".to_owned(), 400),
    ] {
        cases.push(Case {
            what: "drift finding or plan",
            method: M::GET,
            path,
            content_type: None,
            body: Vec::new(),
            status: Some(status),
        });
    }
    let reconcile = format!("/api/v1/drift/groups/{group}/reconcile");
    for (body, status) in [
        (json!({}), 400),
        (json!({"plan": ""}), 400),
        (json!({"plan": "not a digest"}), 400),
        (json!({"plan": "g".repeat(64)}), 400),
        (json!({"plan": 7}), 400),
        (json!({"plan": "0".repeat(64), "force": true}), 400),
        (json!(["0".repeat(64)]), 400),
        // A digest of no plan the group has: it changed since it was read.
        (json!({"plan": "0".repeat(64)}), 409),
    ] {
        cases.push(json_case(
            "drift reconcile",
            M::POST,
            &reconcile,
            body,
            Some(status),
        ));
    }
    cases.push(json_case(
        "drift check of an odd name",
        M::POST,
        "/api/v1/drift/groups/a%20b/check",
        json!({}),
        Some(400),
    ));
    // Backups: ids, custodian sets, archive bounds.
    for (path, status) in [
        ("/api/v1/backups/not-an-id".to_owned(), 400),
        (format!("/api/v1/backups/{job}"), 404),
        (format!("/api/v1/backups/{job}/file"), 404),
        (
            "/api/v1/backups/..%2F..%2Fetc%2Fpasswd/file".to_owned(),
            400,
        ),
        (format!("/api/v1/backups/%7B{job}%7D/shares"), 400),
        ("/api/v1/backups?limit=0".to_owned(), 400),
        ("/api/v1/backups?limit=abc".to_owned(), 400),
        ("/api/v1/backups?status=running".to_owned(), 400),
    ] {
        cases.push(Case {
            what: "backup id or listing",
            method: M::GET,
            path,
            content_type: None,
            body: Vec::new(),
            status: Some(status),
        });
    }
    let key = |c: char| c.to_string().repeat(64);
    for body in [
        json!({}),
        json!({"threshold": 2}),
        json!({"threshold": 1, "custodians": [{"name": "a", "public_key": key('a')}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 3, "custodians": [{"name": "a", "public_key": key('a')}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 300, "custodians": []}),
        json!({"threshold": -1, "custodians": []}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": key('a')}, {"name": "a", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": key('a')}, {"name": "b", "public_key": key('a')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": "zz"}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "../a", "public_key": key('a')}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a\u{0}", "public_key": key('a')}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a"}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": key('a'), "passphrase": "both given here"}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": key('a'), "kdf": {"memory_kib": 8, "iterations": 1, "parallelism": 1, "salt": "xyz"}}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": [{"name": "a", "public_key": key('a'), "admin": true}, {"name": "b", "public_key": key('b')}]}),
        json!({"threshold": 2, "custodians": (0..17).map(|i| json!({"name": format!("c{i}"), "public_key": format!("{i:064x}")})).collect::<Vec<_>>()}),
    ] {
        cases.push(json_case(
            "backup custodians",
            M::PUT,
            "/api/v1/backups/custodians",
            body,
            Some(400),
        ));
    }
    for body in [
        json!({}),
        json!({"up_to_seq": 0}),
        json!({"up_to_seq": -5}),
        json!({"up_to_seq": "all"}),
        json!({"older_than_days": 0}),
        json!({"older_than_days": 100_000}),
        json!({"up_to_seq": 3, "older_than_days": 3}),
        json!({"up_to_seq": 3, "purge": true}),
    ] {
        cases.push(json_case(
            "audit archive",
            M::POST,
            "/api/v1/audit/archives",
            body,
            Some(400),
        ));
    }
    // No custodians set: a backup has nobody to hold its key.
    cases.push(json_case(
        "backup without custodians",
        M::POST,
        "/api/v1/backups",
        json!({}),
        Some(400),
    ));
    cases
}

/// Hostile requests to the external key stores' management: `store` and
/// `xks_key` exist, `job` is an id of another kind.
fn xks_corpus(store: &str, xks_key: &str, job: &str) -> Vec<Case> {
    use Method as M;
    let mut cases = Vec::new();
    let long = "x".repeat(300);
    for name in HOSTILE_NAMES.iter().copied().chain([long.as_str()]) {
        cases.push(json_case(
            "XKS store name",
            M::POST,
            "/api/v1/xks/stores",
            json!({ "name": name }),
            Some(400),
        ));
    }
    let too_long = format!("/{}", "a".repeat(120));
    for prefix in [
        "",
        "/",
        "xks",
        "//a",
        "/a/",
        "/a b",
        "/a/../b",
        "/a%2Fb",
        "/a?b=c",
        "/a\u{0}b",
        "/名前",
        "/api/x",
        "/ui",
        "/metrics",
        "/kms/xks/v1",
        "/HEALTHZ",
        too_long.as_str(),
    ] {
        cases.push(json_case(
            "XKS path prefix",
            M::POST,
            "/api/v1/xks/stores",
            json!({"name": "hostile-prefix", "path_prefix": prefix}),
            Some(400),
        ));
    }
    for quota in [
        json!(0),
        json!(-1),
        json!(100_001),
        json!("1800"),
        json!(1e20),
    ] {
        cases.push(json_case(
            "XKS quota",
            M::POST,
            "/api/v1/xks/stores",
            json!({"name": "hostile-quota", "quota_per_second": quota}),
            Some(400),
        ));
    }
    let subject = "cks.kms.eu-west-1.amazonaws.com";
    let not_a_certificate =
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    for mtls in [
        json!({"subject": "", "ca_pem": not_a_certificate}),
        json!({"subject": "has space", "ca_pem": not_a_certificate}),
        json!({"subject": "cr\rlf", "ca_pem": not_a_certificate}),
        json!({"subject": subject, "ca_pem": ""}),
        json!({"subject": subject, "ca_pem": "not pem"}),
        json!({"subject": subject, "ca_pem": not_a_certificate}),
        json!({"subject": subject, "ca_pem": "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"}),
        json!({"subject": subject, "ca_pem": format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", "QUFB".repeat(20_000))}),
        json!({"subject": subject, "ca_pem": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n"}),
        json!({"subject": subject}),
        json!({"subject": subject, "ca_pem": not_a_certificate, "verify": false}),
        json!([subject, not_a_certificate]),
        json!(true),
    ] {
        cases.push(json_case(
            "XKS mTLS rule",
            M::POST,
            "/api/v1/xks/stores",
            json!({"name": "hostile-mtls", "mtls": mtls}),
            Some(400),
        ));
    }
    for body in [
        json!({"name": "hostile-secret", "secret_access_key": "chosen-by-the-caller"}),
        json!({"name": "hostile-secret", "access_key_id": "AAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        json!(["hostile-array"]),
        json!({}),
    ] {
        cases.push(json_case(
            "XKS store body",
            M::POST,
            "/api/v1/xks/stores",
            body,
            Some(400),
        ));
    }
    let store_path = format!("/api/v1/xks/stores/{store}");
    for change in [
        json!({}),
        json!({"quota_per_second": 0}),
        json!({"mtls": {"subject": subject}}),
        json!({"mtls": {"subject": subject, "ca_pem": not_a_certificate}}),
        json!({"path_prefix": "/elsewhere"}),
        json!({"name": "renamed"}),
        json!([5]),
    ] {
        cases.push(json_case(
            "XKS store change",
            M::PATCH,
            &store_path,
            change,
            Some(400),
        ));
    }
    let keys_path = format!("/api/v1/xks/stores/{store}/keys");
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    for body in [
        json!({"usage": "sign"}),
        json!({"usage": "ENCRYPT_DECRYPT"}),
        json!({"usage": 1}),
        json!({"description": "x".repeat(300)}),
        json!({"description": "line\nbreak"}),
        json!({"description": "\u{1b}[2J"}),
        json!({"enabled": "true"}),
        json!({"rule": {"principals": "arn:aws:iam::111122223333:root"}}),
        json!({"rule": {"principals": ["has space"]}}),
        json!({"rule": {"principals": [""]}}),
        json!({"rule": {"kms_operations": ["x".repeat(3000)]}}),
        json!({"rule": {"source_vpcs": many}}),
        json!({"rule": {"kms_key_arns": ["tab\there"]}}),
        json!({"rule": {"accounts": ["111122223333"]}}),
        json!({"rule": ["Decrypt"]}),
        json!({"id": "7907323e-ea39-4542-b198-ef4a4ca5793c"}),
        json!({"material": "AAAA"}),
        json!([null, "encrypt"]),
    ] {
        cases.push(json_case("XKS key", M::POST, &keys_path, body, Some(400)));
    }
    let key_path = format!("/api/v1/xks/keys/{xks_key}");
    for change in [
        json!({}),
        json!({"enabled": null}),
        json!({"usage": "both"}),
        json!({"description": "\u{0}"}),
        json!({"rule": {"principals": ["a b"]}}),
        json!({"store": "elsewhere"}),
        json!([false]),
    ] {
        cases.push(json_case(
            "XKS key change",
            M::PATCH,
            &key_path,
            change,
            Some(400),
        ));
    }
    for (method, path, status) in [
        (M::GET, "/api/v1/xks/keys/not-a-key".to_owned(), 400),
        (M::GET, format!("/api/v1/xks/keys/%7B{xks_key}%7D"), 400),
        (M::GET, format!("/api/v1/xks/keys/urn:uuid:{xks_key}"), 400),
        (
            M::GET,
            format!("/api/v1/xks/keys/{}", xks_key.replace('-', "")),
            400,
        ),
        (M::GET, format!("/api/v1/xks/keys/{job}"), 404),
        (M::DELETE, "/api/v1/xks/keys/..%2F..%2Fetc".to_owned(), 400),
        (M::GET, "/api/v1/xks/keys?store=..%2Fetc".to_owned(), 400),
        (M::GET, "/api/v1/xks/keys?store=%00".to_owned(), 400),
        (
            M::GET,
            "/api/v1/xks/keys?store=no-such-store".to_owned(),
            404,
        ),
        (M::GET, "/api/v1/xks/keys?colour=red".to_owned(), 400),
        (M::GET, "/api/v1/xks/stores/a%20b".to_owned(), 400),
        (M::GET, "/api/v1/xks/stores/no-such-store".to_owned(), 404),
        (
            M::DELETE,
            format!("{store_path}/credentials/lowercase-not-an-id"),
            400,
        ),
        (M::DELETE, format!("{store_path}/credentials/AAAA"), 400),
        (
            M::DELETE,
            format!("{store_path}/credentials/..%2F..%2Fetc"),
            400,
        ),
        (
            M::DELETE,
            format!("{store_path}/credentials/{}", "A".repeat(31)),
            400,
        ),
        (
            M::DELETE,
            format!("{store_path}/credentials/{}", "A".repeat(26)),
            404,
        ),
    ] {
        cases.push(Case {
            what: "XKS id, name or query",
            method,
            path,
            content_type: None,
            body: Vec::new(),
            status: Some(status),
        });
    }
    // An enabled key is not deleted, and a store holding keys is not either.
    cases.push(Case {
        what: "XKS delete refused",
        method: M::DELETE,
        path: key_path,
        content_type: None,
        body: Vec::new(),
        status: Some(409),
    });
    cases.push(Case {
        what: "XKS delete refused",
        method: M::DELETE,
        path: store_path,
        content_type: None,
        body: Vec::new(),
        status: Some(409),
    });
    cases
}

/// Everything a refused request must not have changed.
async fn state(app: &TestApp, token: &str) -> Value {
    let mut state = serde_json::Map::new();
    for path in [
        "/api/v1/identities",
        "/api/v1/credentials",
        "/api/v1/groups",
        "/api/v1/keys",
        "/api/v1/jobs",
        "/api/v1/config",
        "/api/v1/backups",
        "/api/v1/backups/custodians",
        "/api/v1/audit/archives",
        "/api/v1/xks/stores",
        "/api/v1/xks/keys",
    ] {
        let (status, mut body) = app.get(path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // The cluster's heartbeats move on by themselves; the settings must not.
        if let Some(settings) = body.as_object_mut() {
            settings.remove("cluster");
        }
        state.insert(path.to_owned(), body);
    }
    Value::Object(state)
}

#[tokio::test]
async fn every_hostile_request_gets_a_clear_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "c").await;
    let group = unique("hostile");
    app.create_group(&token, group_body(&group, "c")).await;
    let job = app.rotate(&token, &group).await;
    let done = app.wait_job(&token, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let key = done["kms_key_id"].as_str().unwrap().to_owned();
    let (status, store) = app
        .post(
            "/api/v1/xks/stores",
            Some(&token),
            json!({"name": "hostile-xks"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{store}");
    let (status, xks_key) = app
        .post(
            "/api/v1/xks/stores/hostile-xks/keys",
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{xks_key}");
    let xks_key = xks_key["id"].as_str().unwrap().to_owned();
    let before = state(&app, &token).await;

    let mut cases = corpus(&group, &job, &key);
    cases.extend(xks_corpus("hostile-xks", &xks_key, &job));
    let mut wrong = Vec::new();
    let mut by_what: Vec<(&str, usize)> = Vec::new();
    for case in &cases {
        let mut request = app
            .http
            .request(case.method.clone(), format!("{}{}", app.base, case.path))
            .bearer_auth(&token)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        let expected = case
            .status
            .map_or(status.is_client_error(), |s| status.as_u16() == s);
        if !expected || message.len() < 10 || message.chars().any(char::is_control) {
            wrong.push(format!(
                "{} ({} {}): {status} {}",
                case.what,
                case.method,
                case.path.chars().take(80).collect::<String>(),
                text.chars().take(300).collect::<String>()
            ));
        }
        match by_what.iter_mut().find(|(what, _)| *what == case.what) {
            Some((_, count)) => *count += 1,
            None => by_what.push((case.what, 1)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // Replayed and expired sessions.
    let (_, answer) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    let replayed = answer["token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/session/logout",
            Some(&replayed),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, answer) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    let idle = answer["token"].as_str().unwrap().to_owned();
    app.clock.advance(chrono::Duration::hours(13));
    for dead in [&replayed, &idle] {
        let (status, body) = app
            .post("/api/v1/groups", Some(dead), group_body("replayed", "c"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let token = app.dual_session_again().await;

    // A body that stalls is answered 408 and the connection let go.
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/v1/groups HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"name\": "
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled body is not waited for for ever")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A URL of 100 KB, which hyper answers itself before any route runs
    // (over 64 KiB): 414 with the API's JSON error all the same. Raw, since
    // HTTP clients refuse to send such a URL.
    let mut long = tokio::net::TcpStream::connect(&address).await.unwrap();
    long.write_all(
        format!(
            "GET /api/v1/groups/{} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\r\n",
            "g".repeat(100_000)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), long.read_to_end(&mut answer))
        .await
        .expect("the answer to a long URL comes, and the connection closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "uri_too_long", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 KiB"),
        "{body}"
    );

    // Headers that stall halfway: the connection is let go (hyper's header
    // read timeout, 10 s), not held open for as long as the client likes.
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(
        format!("GET /api/v1/groups HTTP/1.1\r\nhost: {address}\r\nauthorization: Bea").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), half.read_to_end(&mut answer))
        .await
        .expect("a client that stalls in its headers is not waited for for ever")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    assert_eq!(
        state(&app, &token).await,
        before,
        "a refused request changed something"
    );
    let (_, verified) = app.get("/api/v1/audit/verify", &token).await;
    assert_eq!(verified["ok"], true, "{verified}");

    let table: Vec<String> = by_what
        .iter()
        .map(|(what, count)| format!("| {what} | {count} |"))
        .collect();
    report::section(
        10,
        "Hostile input: the API",
        &format!(
            "{} hostile requests against every endpoint that takes input, as a signed-in pair of \
             administrators (so only the input can be at fault): each got the expected 4xx with a \
             JSON message of its own, none a 5xx; afterwards identities, credentials, groups, keys, \
             jobs and settings were exactly as before and the audit chain verified. Also refused: \
             a logged-out token replayed, a session idle past its limit (401), a body that \
             stalled (408 after 10 s, connection closed), headers that stalled halfway \
             (connection closed after 10 s), and a URL of 100 KB (414 with the JSON error, \
             although hyper answers it before any route).\n\n| input | cases |\n|---|---|\n{}",
            cases.len(),
            table.join("\n")
        ),
    );
}

/// The `keyhold` binary run with hostile arguments, files and input.
struct HostileCli {
    url: String,
    session_file: std::path::PathBuf,
}

impl HostileCli {
    fn run(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        keyhold_cli(&self.url, &self.session_file, args, stdin)
    }
}

// Multi-threaded: the in-process server answers while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_command_line_exits_non_zero_with_a_message_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "c").await;
    let group = unique("hostile-cli");
    app.create_group(&token, group_body(&group, "c")).await;
    let job = app.rotate(&token, &group).await;
    let done = app.wait_job(&token, &job).await;
    let key = done["kms_key_id"].as_str().unwrap().to_owned();
    let before = state(&app, &token).await;

    let dir = tempfile::tempdir().unwrap();
    let cli = HostileCli {
        url: app.base.clone(),
        session_file: dir.path().join("session.json"),
    };
    for (user, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
        let out = cli.run(
            &["login", "--user", user, "--password-stdin"],
            format!("{password}\n").as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let valid_csv = file("valid.csv", console_csv().as_bytes());
    let huge = file("huge.csv", &vec![b'a'; 2 * 1024 * 1024]);
    let binary = file("binary.csv", &[0xff, 0xfe, 0x00, 0x01, 0x80]);
    let bad_policy = file("policy.json", b"{not json");
    let empty = file("empty.json", b"");
    let missing = dir.path().join("missing").join("x").display().to_string();
    let directory = dir.path().display().to_string();
    let fifo = dir.path().join("fifo.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let fifo = fifo.display().to_string();
    let traversal = format!(
        "{}/../../../../../../../../etc/passwd",
        dir.path().display()
    );
    let group_create = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "group",
            "create",
            "--name",
            "cli-hostile",
            "--credential",
            "c",
            "--region",
            "eu-west-1",
            "--alias",
            "alias/cli-hostile",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|s| (*s).to_owned()).collect() };
    let xks_store_create = |extra: &[&str]| -> Vec<String> {
        ["xks", "store", "create", "--name", "cli-hostile"]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let cases: Vec<(&str, Vec<String>, Vec<u8>)> = vec![
        (
            "name with a slash",
            owned(&["credential", "import", "--name", "a/b", "--csv", &valid_csv]),
            vec![],
        ),
        (
            "name with a tab",
            owned(&[
                "credential",
                "import",
                "--name",
                "a\tb",
                "--csv",
                &valid_csv,
            ]),
            vec![],
        ),
        (
            "CSV file missing",
            owned(&["credential", "import", "--name", "x", "--csv", &missing]),
            vec![],
        ),
        (
            "CSV file a directory",
            owned(&["credential", "import", "--name", "x", "--csv", &directory]),
            vec![],
        ),
        (
            "CSV file a FIFO nobody writes to",
            owned(&["credential", "import", "--name", "x", "--csv", &fifo]),
            vec![],
        ),
        (
            "CSV path traversal to /etc/passwd",
            owned(&["credential", "import", "--name", "x", "--csv", &traversal]),
            vec![],
        ),
        (
            "CSV file of 2 MiB",
            owned(&["credential", "import", "--name", "x", "--csv", &huge]),
            vec![],
        ),
        (
            "CSV file not UTF-8",
            owned(&["credential", "import", "--name", "x", "--csv", &binary]),
            vec![],
        ),
        (
            "CSV endpoint not a URL",
            owned(&[
                "credential",
                "import",
                "--name",
                "x",
                "--csv",
                &valid_csv,
                "--endpoint",
                "nowhere",
            ]),
            vec![],
        ),
        (
            "policy file missing",
            group_create(&["--policy", &missing]),
            vec![],
        ),
        (
            "policy not JSON",
            group_create(&["--policy", &bad_policy]),
            vec![],
        ),
        (
            "policy file empty",
            group_create(&["--policy", &empty]),
            vec![],
        ),
        (
            "interval of zero days",
            group_create(&["--rotate-every", "0d"]),
            vec![],
        ),
        (
            "interval in hours",
            group_create(&["--rotate-every", "12h"]),
            vec![],
        ),
        (
            "key length 128",
            group_create(&["--key-length", "128"]),
            vec![],
        ),
        (
            "region that does not exist",
            owned(&[
                "group",
                "create",
                "--name",
                "g",
                "--credential",
                "c",
                "--region",
                "mars-1",
                "--alias",
                "alias/g",
            ]),
            vec![],
        ),
        (
            "group of another name",
            owned(&["group", "rotate", "no-such-group"]),
            vec![],
        ),
        (
            "key id not a uuid",
            owned(&["key", "sync", "not-a-uuid"]),
            vec![],
        ),
        (
            "sync with nothing to do",
            owned(&[
                "key",
                "sync",
                &key,
                "--no-import-material",
                "--no-update-policy",
            ]),
            vec![],
        ),
        ("job id of a key", owned(&["job", "retry", &key]), vec![]),
        (
            "job id not a uuid",
            owned(&["job", "show", "../../etc"]),
            vec![],
        ),
        (
            "negative limit",
            owned(&["audit", "list", "--limit", "-5"]),
            vec![],
        ),
        (
            "time that is not a time",
            owned(&["audit", "list", "--from", "yesterday"]),
            vec![],
        ),
        (
            "export into a missing directory",
            owned(&["audit", "export", "--file", &missing]),
            vec![],
        ),
        (
            "negative lockout",
            owned(&["config", "set", "--lockout-threshold", "-1"]),
            vec![],
        ),
        (
            "bad designated rotator",
            owned(&["config", "set", "--designated-rotator", "a b"]),
            vec![],
        ),
        (
            "unknown role",
            owned(&["identity", "create", "--name", "eve", "--role", "root"]),
            vec![],
        ),
        (
            "URL of another scheme",
            owned(&["--url", "ftp://127.0.0.1", "whoami"]),
            vec![],
        ),
        (
            "URL that does not parse",
            owned(&["--url", "http://[::1", "whoami"]),
            vec![],
        ),
        (
            "unknown output format",
            owned(&["--output", "xml", "whoami"]),
            vec![],
        ),
        (
            "stdin over 64 KiB",
            owned(&["passwd", "--user", "Admin1", "--password-stdin"]),
            vec![b'p'; 100 * 1024],
        ),
        (
            "empty password on stdin",
            owned(&["login", "--user", "Admin1", "--password-stdin"]),
            b"\n".to_vec(),
        ),
        (
            "unknown flag",
            owned(&["group", "list", "--colour", "red"]),
            vec![],
        ),
        (
            "mTLS CA file missing",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &missing,
            ]),
            vec![],
        ),
        (
            "mTLS CA file a directory",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &directory,
            ]),
            vec![],
        ),
        (
            "mTLS CA file a FIFO nobody writes to",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &fifo,
            ]),
            vec![],
        ),
        (
            "mTLS CA file of 2 MiB",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &huge,
            ]),
            vec![],
        ),
        (
            "mTLS CA file not UTF-8",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &binary,
            ]),
            vec![],
        ),
        (
            "mTLS CA file not a certificate",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &valid_csv,
            ]),
            vec![],
        ),
        (
            "mTLS CA path traversal to /etc/passwd",
            xks_store_create(&[
                "--mtls-subject",
                "cks.kms.eu-west-1.amazonaws.com",
                "--mtls-ca",
                &traversal,
            ]),
            vec![],
        ),
        (
            "mTLS subject without its CA",
            xks_store_create(&["--mtls-subject", "cks.kms.eu-west-1.amazonaws.com"]),
            vec![],
        ),
        (
            "XKS path prefix with a space",
            xks_store_create(&["--path-prefix", "/a b"]),
            vec![],
        ),
        (
            "XKS quota of zero",
            xks_store_create(&["--quota", "0"]),
            vec![],
        ),
        (
            "KMS configuration file in a missing directory",
            xks_store_create(&["--kms-config-out", &missing]),
            vec![],
        ),
        (
            "KMS configuration file onto a directory",
            xks_store_create(&["--kms-config-out", &directory]),
            vec![],
        ),
        (
            "XKS key id not a uuid",
            owned(&["xks", "key", "show", "../../etc/passwd"]),
            vec![],
        ),
        (
            "XKS key usage unknown",
            owned(&["xks", "key", "create", "--store", "s", "--usage", "sign"]),
            vec![],
        ),
        (
            "XKS rule pattern with a space",
            owned(&[
                "xks",
                "key",
                "create",
                "--store",
                "s",
                "--allow-operation",
                "De crypt",
            ]),
            vec![],
        ),
        (
            "XKS access key id in lower case",
            owned(&[
                "xks",
                "credential",
                "revoke",
                "--store",
                "s",
                "--access-key-id",
                "abc",
            ]),
            vec![],
        ),
        (
            "XKS rotation of a store that does not exist",
            owned(&["xks", "credential", "rotate", "--store", "no-such-store"]),
            vec![],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, args, stdin) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli.run(&args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        if out.status.success()
            || code == Some(101)
            || stderr.contains("panicked")
            || !stderr.contains("error")
            || stderr.contains("root:x:0")
        {
            wrong.push(format!("{what}: exit {code:?}: {stderr}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        state(&app, &token).await,
        before,
        "a refused command changed something"
    );

    report::section(
        11,
        "Hostile input: the command line",
        &format!(
            "{} hostile invocations of the `keyhold` binary (names with slashes and control \
             characters, missing, oversized, binary and directory files, a FIFO nobody writes to, a path traversing to \
             /etc/passwd, malformed policies and intervals, ids of the wrong kind, bad URLs, flags \
             and stdin): each exited non-zero with an `error:` message, none panicked, none showed \
             the traversed file's content, and the server's state was unchanged.",
            cases.len()
        ),
    );
}
