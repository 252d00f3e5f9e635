//! Custody: no one person can get a key's material out. One key officer
//! (and one auditor, one administrator) alone tries every path that could
//! move material or widen access; each is refused before anything leaves,
//! read back from keyhold, the audit log, the job list and KMS itself. And
//! a man in the middle that swaps KMS's wrapping public key for its own
//! receives material only once two officers have consented to it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fault_proxy::FaultProxy;
use crate::helpers::*;
use crate::kms::{Kms, endpoint};

const WIDE_OPEN: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;
const OFFICERS: [(&str, &str); 2] = [
    ("officer1", "officer-password-1"),
    ("officer2", "officer-password-2"),
];
const AUDITOR: (&str, &str) = ("auditor1", "auditor-password-1");

/// Creates two key officers and an auditor, passwords set.
async fn create_people(app: &TestApp, admins: &str) {
    for ((name, password), role) in OFFICERS
        .iter()
        .map(|o| (o, "key_officer"))
        .chain([(&AUDITOR, "auditor")])
    {
        app.add_identity(admins, name, role, password).await;
    }
}

async fn two_officers(app: &TestApp) -> String {
    let first = alone(app, OFFICERS[0]).await;
    app.join(&first, OFFICERS[1].0, OFFICERS[1].1).await
}

/// What an attacker could change or start, read back.
async fn state(app: &TestApp, token: &str, groups: &[&str], kms: &Kms) -> Value {
    let (_, credentials) = app.get("/api/v1/credentials", token).await;
    let (_, all_groups) = app.get("/api/v1/groups", token).await;
    let (_, jobs) = app.get("/api/v1/jobs", token).await;
    let mut kms_keys = Vec::new();
    for group in groups {
        kms_keys.push(kms.keys_of_group(group).await.len());
    }
    json!({"credentials": credentials, "groups": all_groups, "jobs": jobs, "kms_keys": kms_keys})
}

#[tokio::test]
async fn one_person_alone_cannot_move_material_or_widen_access() {
    let proxy = FaultProxy::start(&endpoint()).await;
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    create_people(&app, &admins).await;
    app.import_kms_credential(&admins, "aws").await;
    let (g1, g2) = (unique("custody-a"), unique("custody-b"));
    for group in [&g1, &g2] {
        let (status, body) = app.create_group(&admins, group_body(group, "aws")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let k1 = app.rotate_ok(&admins, &g1).await;
    let k2 = app.rotate_ok(&admins, &g2).await;
    // A second rotation: k1 is rotated out and disabled.
    let k1_next = app.rotate_ok(&admins, &g1).await;
    let kms = Kms::connect().await;
    assert_eq!(kms.state(&k1).await, "Disabled");

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/credentials".into(),
            Some(json!({"name": "mitm", "csv": console_csv(), "endpoint": proxy.url})),
        ),
        (
            Method::POST,
            "/api/v1/credentials".into(),
            Some(json!({"name": "other-account", "csv": console_csv()})),
        ),
        (
            Method::POST,
            "/api/v1/credentials/chain".into(),
            Some(json!({"name": "mitm-chain", "kind": "default_chain", "endpoint": proxy.url})),
        ),
        (Method::DELETE, "/api/v1/credentials/aws".into(), None),
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"credential": "aws"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"region": "us-east-1"})),
        ),
        // Another group's alias: its key would answer for this group.
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"alias": format!("alias/{g2}")})),
        ),
        // Another group's key as this group's active key.
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"active_key_id": k2})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"policy": WIDE_OPEN, "notes": "routine"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"disable_after_rotate": false})),
        ),
        // Rotating in place, or what happens at the rotation limit, decides
        // which KMS key the next material goes into.
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"rotation_strategy": "new_material"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/groups/{g1}"),
            Some(json!({"at_rotation_limit": "refuse"})),
        ),
        (
            Method::POST,
            format!("/api/v1/keys/{k1_next}/sync"),
            Some(json!({"delete_material": true})),
        ),
        (Method::DELETE, format!("/api/v1/keys/{k1}"), None),
        (Method::DELETE, format!("/api/v1/groups/{g2}"), None),
    ];
    // Keystore migration and key export exist only offline (the `keyhold`
    // binary on the server's own data directory), never over the API.
    let unreachable = [
        (Method::POST, "/api/v1/keystore/migrate".to_owned()),
        (Method::GET, format!("/api/v1/keys/{k1}/export")),
        (Method::POST, format!("/api/v1/keys/{k1}/export")),
    ];

    let before = state(&app, &admins, &[&g1, &g2], &kms).await;
    let audit_before = app.audit_export(&admins).await.len();
    let people = [
        ("key officer", OFFICERS[0], "dual_control_required"),
        ("auditor", AUDITOR, "forbidden"),
        (
            "administrator",
            ("Admin1", ADMIN1_PASSWORD),
            "dual_control_required",
        ),
    ];
    let mut wrong = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for (who, person, code) in people {
        let token = alone(&app, person).await;
        let wrong_before = wrong.len();
        for (method, path, body) in &attempts {
            let (status, answer) = app
                .request(method.clone(), path, Some(&token), body.clone())
                .await;
            if status != StatusCode::FORBIDDEN || answer["error"]["code"] != code {
                wrong.push(format!("{who}: {method} {path}: {status} {answer}"));
            }
        }
        for (method, path) in &unreachable {
            let (status, answer) = app
                .request(method.clone(), path, Some(&token), Some(json!({})))
                .await;
            if !matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ) {
                wrong.push(format!("{who}: {method} {path}: {status} {answer}"));
            }
        }
        let tried = attempts.len() + unreachable.len();
        rows.push(format!(
            "| {who} alone | {tried} | {} | `{code}` |",
            tried - (wrong.len() - wrong_before),
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing changed, started or left: keyhold, its jobs, KMS, the proxy.
    assert_eq!(state(&app, &admins, &[&g1, &g2], &kms).await, before);
    assert_eq!(proxy.tally().requests, 0, "nothing reached the proxy");
    let audit = app.audit_export(&admins).await;
    let lone_entries: Vec<&Value> = audit[audit_before..]
        .iter()
        .filter(|e| {
            ["officer1", "auditor1", "Admin1"].contains(&e["users"].as_str().unwrap_or_default())
                && !e["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Logged in"))
        })
        .collect();
    assert!(!lone_entries.is_empty());
    for entry in &lone_entries {
        assert!(
            entry["details"]["reason"].is_string(),
            "every entry of a lone person is a refusal with its reason: {entry:#}"
        );
    }
    let policy_refusal = lone_entries
        .iter()
        .find(|e| {
            e["details"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("policy") && r.contains("needs dual control"))
        })
        .expect("the policy change's refusal names the field");
    assert_eq!(policy_refusal["users"], "officer1");

    // What one officer may do alone goes where two decided: rotate, and
    // import a rotated-out key's material again. That key stays disabled.
    let officer = alone(&app, OFFICERS[0]).await;
    app.rotate_ok(&officer, &g1).await;
    let sync = app
        .sync(&officer, &k1, json!({"import_material": true}))
        .await;
    let job = app.wait_job(&officer, &sync).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        kms.state(&k1).await,
        "Disabled",
        "a rotated-out key stays disabled"
    );
    assert!(
        job["messages"].to_string().contains("disabled again"),
        "the job says so: {job:#}"
    );
    let (_, key) = app.get(&format!("/api/v1/keys/{k1}"), &officer).await;
    assert_eq!(key["state"], "disabled", "{key:#}");
    assert_eq!(proxy.tally().requests, 0, "nothing reached the proxy");

    crate::report::section(
        23,
        "Custody: one person alone cannot move key material",
        &format!(
            "One key officer, one auditor and one administrator, each alone in a session, tried every \
             path that could move key material or widen access: a credential with a man in the \
             middle's endpoint or another account's key, deleting the credential, changing a group's \
             credential, region, alias (to another group's), active key (another group's), policy \
             (`Principal: *`, `kms:*`), disable-after-rotate, rotation strategy or at-limit choice, \
             deleting key material, a key or a \
             group, and keystore migration or key export over the API (none exists). Every attempt \
             was refused before anything left: credentials, groups and jobs read back unchanged, no \
             new KMS key, nothing reached the proxy, and every audit entry of the lone person is a \
             refusal with its reason. The officer alone could still rotate and re-import, to where \
             two had decided; a rotated-out key re-imported stayed disabled in KMS.\n\n\
             | session | attempts | refused | refusal |\n|---|---|---|---|\n{}",
            rows.join("\n")
        ),
    );
}

/// The wrapping public key a man in the middle hands out: that of a KMS key
/// the attacker holds (a decoy in the same peer), so whatever is wrapped
/// under it is the attacker's to import and use.
async fn decoy_public_key(kms: &Kms) -> String {
    use base64::Engine;
    let decoy = kms.create_placeholder().await;
    let params = kms
        .client
        .get_parameters_for_import()
        .key_id(&decoy)
        .wrapping_algorithm(aws_sdk_kms::types::AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(aws_sdk_kms::types::WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(params.public_key().unwrap().as_ref())
}

#[tokio::test]
async fn a_proxy_that_swaps_the_wrapping_key_gets_material_only_with_two_officers_consent() {
    let kms = Kms::connect().await;
    let proxy = FaultProxy::start(&endpoint()).await;
    proxy.swap_wrapping_key(&decoy_public_key(&kms).await);

    // Not on the operator's allow-list: refused to one officer and to two.
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    create_people(&app, &admins).await;
    let body = json!({"name": "mitm", "csv": console_csv(), "endpoint": proxy.url});
    let (status, answer) = app
        .post(
            "/api/v1/credentials",
            Some(&alone(&app, OFFICERS[0]).await),
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = app
        .post(
            "/api/v1/credentials",
            Some(&two_officers(&app).await),
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "endpoint");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("allow-list") && message.contains("KEYHOLD_KMS_ENDPOINT_ALLOW"),
        "the refusal says what to configure: {message}"
    );
    let (_, credentials) = app.get("/api/v1/credentials", &admins).await;
    assert_eq!(credentials, json!([]));
    drop(app);

    // On the allow-list (an operator's mistake, or a proxy the operator
    // trusts): still only two officers can point a group at it.
    let app = TestApp::spawn_with(|args| allow_endpoints(args, &[&proxy.url])).await;
    let admins = app.dual_session().await;
    create_people(&app, &admins).await;
    app.import_kms_credential(&admins, "aws").await;
    let group = unique("custody-mitm");
    let (status, created) = app.create_group(&admins, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let officer = alone(&app, OFFICERS[0]).await;
    let (status, answer) = app
        .post("/api/v1/credentials", Some(&officer), body.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let pair = two_officers(&app).await;
    let (status, answer) = app.post("/api/v1/credentials", Some(&pair), body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &officer,
            json!({"credential": "mitm"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // The officer's rotation goes where the group says: LocalStack.
    app.rotate_ok(&officer, &group).await;
    let seen = proxy.swap_state();
    assert_eq!((seen.swapped, seen.captured.len()), (0, 0), "{seen:?}");
    assert_eq!(proxy.tally().requests, 0);

    // Two officers consent: only now does material go to the proxy.
    let (status, answer) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &pair,
            json!({"credential": "mitm"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = app.rotate(&pair, &group).await;
    app.wait_job(&pair, &id).await;
    let seen = proxy.swap_state();
    assert!(
        seen.swapped >= 1 && !seen.captured.is_empty(),
        "with two officers' consent the proxy received wrapped material: {seen:?}"
    );
    // The audit log says who consented, and to what.
    let audit = app.audit_export(&admins).await;
    let consent = audit
        .iter()
        .rev()
        .find(|e| e["summary"] == format!("Updated HSM protected key group {group}"))
        .unwrap();
    assert_eq!(consent["users"], "officer1,officer2");
    assert_eq!(consent["details"]["before"]["credential"], "aws");
    assert_eq!(consent["details"]["after"]["credential"], "mitm");
    let added = audit
        .iter()
        .find(|e| e["summary"] == "Added cloud credential mitm")
        .unwrap();
    assert_eq!(added["users"], "officer1,officer2");
    assert_eq!(added["details"]["endpoint"], proxy.url);

    crate::report::section(
        24,
        "Custody: a man in the middle swapping the wrapping key",
        &format!(
            "A loopback proxy in front of KMS answered `GetParametersForImport` with a wrapping \
             public key of its own and kept every `ImportKeyMaterial`. Off the operator's \
             `kms_endpoint_allow` list, a credential naming it was refused to one officer (403) and \
             to two (400, saying what to configure). On the list, one officer could neither add it \
             nor point a group at it, and the officer's rotation went to KMS: the proxy saw 0 \
             requests. Only after two officers added it and moved the group to it (both audited \
             with their names, the change with its before and after) did wrapped material reach it \
             ({} import(s) captured).",
            seen.captured.len()
        ),
    );
}
