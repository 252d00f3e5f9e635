//! No way in for the wrong person: every endpoint × every role × single and
//! dual session × no session; a session that gains rights gets a new token;
//! the API ignores cookies, so another site cannot ride a browser session.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::report;
use crate::test_ca::{TestCa, Usage};

/// What an endpoint asks of its caller: the documented policy (README,
/// "Roles and dual control"), written out here apart from the server's code
/// so the test checks the server against the policy, not against itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// Any live session.
    Session,
    /// Any role may read.
    Read,
    /// Key officers and administrators.
    Keys,
    /// Two identities that may manage credentials (key officers,
    /// administrators): a credential decides where key material goes.
    DualCredentials,
    /// Two identities that may manage keys: adding and deleting groups and
    /// keys, a group change naming a custody field (credential, region,
    /// alias, active key, policy, disable-after-rotate, self-heal), and
    /// applying a drift reconcile plan.
    DualKeys,
    /// Two administrators.
    DualIdentities,
    DualConfiguration,
    /// One administrator: downloading backups' files and shares (both
    /// encrypted, but taking them away is the administrators' business,
    /// and audited) and archiving the audit log.
    Configuration,
    /// One identity in a session of its own (an answer to an approval
    /// request is one person's), holding a role that may manage keys.
    Approver,
}

impl Needs {
    fn dual(self) -> bool {
        matches!(
            self,
            Self::DualCredentials | Self::DualKeys | Self::DualIdentities | Self::DualConfiguration
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Auditor,
    Officer,
    Admin,
}

impl Role {
    fn holds(self, needs: Needs) -> bool {
        match needs {
            Needs::Session | Needs::Read => true,
            Needs::DualCredentials | Needs::Keys | Needs::DualKeys | Needs::Approver => {
                self != Self::Auditor
            }
            Needs::DualIdentities | Needs::DualConfiguration | Needs::Configuration => {
                self == Self::Admin
            }
        }
    }

    /// The identities of this role the test logs in with, first and second.
    fn identities(self) -> [(&'static str, &'static str); 2] {
        match self {
            Self::Auditor => [
                ("auditor1", "auditor-password-1"),
                ("auditor2", "auditor-password-2"),
            ],
            Self::Officer => [
                ("officer1", "officer-password-1"),
                ("officer2", "officer-password-2"),
            ],
            Self::Admin => [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthenticated,
    Forbidden,
    DualControl,
    /// 409: answer an approval request from a session of your own.
    OwnSession,
}

fn expected(needs: Needs, session: &[Role]) -> Expect {
    if session.is_empty() {
        return Expect::Unauthenticated;
    }
    if needs == Needs::Approver && session.len() > 1 {
        return Expect::OwnSession;
    }
    let holders = session.iter().filter(|role| role.holds(needs)).count();
    if holders == 0 {
        Expect::Forbidden
    } else if needs.dual() && holders < 2 {
        Expect::DualControl
    } else {
        Expect::Allowed
    }
}

const SESSIONS: &[(&str, &[Role])] = &[
    ("no session", &[]),
    ("auditor", &[Role::Auditor]),
    ("auditor + auditor", &[Role::Auditor, Role::Auditor]),
    ("key officer", &[Role::Officer]),
    ("key officer + key officer", &[Role::Officer, Role::Officer]),
    ("auditor + key officer", &[Role::Auditor, Role::Officer]),
    ("administrator", &[Role::Admin]),
    ("administrator + administrator", &[Role::Admin, Role::Admin]),
    ("key officer + administrator", &[Role::Officer, Role::Admin]),
];

/// An id no object has: allowed requests for it end in 404 and change
/// nothing, refused ones must be refused before the lookup.
const NOBODY: &str = "7907323e-ea39-4542-b198-ef4a4ca5793c";

/// Every route of the API that needs a session (logout is checked apart: it
/// ends the session). `tag` makes the names a request would create unique.
/// `xks_key` is an XKS key that exists: whether a change of it widens it
/// (two officers) or restricts it (one) depends on the key as it is, so
/// each session first disables it (one officer) and then enables it again
/// (two), whatever the session before left.
fn endpoints(tag: &str, xks_key: &str) -> Vec<(Method, String, Option<Value>, Needs)> {
    use Method as M;
    let path = |p: &str| format!("/api/v1{p}");
    vec![
        (M::GET, path("/session"), None, Needs::Session),
        (M::GET, path("/identities"), None, Needs::Read),
        (
            M::POST,
            path("/identities"),
            Some(json!({"name": format!("new-{tag}"), "role": "auditor"})),
            Needs::DualIdentities,
        ),
        (
            M::DELETE,
            path("/identities/nobody"),
            None,
            Needs::DualIdentities,
        ),
        (M::GET, path("/credentials"), None, Needs::Read),
        (
            M::POST,
            path("/credentials"),
            Some(json!({"name": format!("cred-{tag}"), "csv": console_csv()})),
            Needs::DualCredentials,
        ),
        (
            M::POST,
            path("/credentials/chain"),
            Some(json!({"name": format!("chain-{tag}"), "kind": "default_chain"})),
            Needs::DualCredentials,
        ),
        (M::GET, path("/credentials/chain"), None, Needs::Read),
        (
            M::DELETE,
            path("/credentials/chain"),
            None,
            Needs::DualCredentials,
        ),
        (M::GET, path("/credentials/nothing"), None, Needs::Read),
        (
            M::DELETE,
            path("/credentials/nothing"),
            None,
            Needs::DualCredentials,
        ),
        (M::GET, path("/groups"), None, Needs::Read),
        (
            M::POST,
            path("/groups"),
            Some(group_body(&format!("group-{tag}"), "no-such-credential")),
            Needs::DualKeys,
        ),
        (M::GET, path("/groups/nothing"), None, Needs::Read),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"notes": "changed"})),
            Needs::Keys,
        ),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"notes": "changed", "policy": null})),
            Needs::DualKeys,
        ),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"credential": "other"})),
            Needs::DualKeys,
        ),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"region": "us-east-1", "alias": "alias/other"})),
            Needs::DualKeys,
        ),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"active_key_id": NOBODY, "disable_after_rotate": false})),
            Needs::DualKeys,
        ),
        (
            M::PATCH,
            path("/groups/nothing"),
            Some(json!({"self_heal": true})),
            Needs::DualKeys,
        ),
        (M::DELETE, path("/groups/nothing"), None, Needs::DualKeys),
        (
            M::POST,
            path("/groups/nothing/rotate"),
            Some(json!({})),
            Needs::Keys,
        ),
        (M::GET, path("/keys"), None, Needs::Read),
        (M::GET, path(&format!("/keys/{NOBODY}")), None, Needs::Read),
        (
            M::DELETE,
            path(&format!("/keys/{NOBODY}")),
            None,
            Needs::DualKeys,
        ),
        (
            M::POST,
            path(&format!("/keys/{NOBODY}/sync")),
            Some(json!({"import_material": true})),
            Needs::Keys,
        ),
        (
            M::POST,
            path(&format!("/keys/{NOBODY}/sync")),
            Some(json!({"delete_material": true})),
            Needs::DualKeys,
        ),
        (M::GET, path("/jobs"), None, Needs::Read),
        (M::GET, path(&format!("/jobs/{NOBODY}")), None, Needs::Read),
        (
            M::POST,
            path(&format!("/jobs/{NOBODY}/retry")),
            None,
            Needs::Keys,
        ),
        (
            M::POST,
            path(&format!("/jobs/{NOBODY}/cancel")),
            None,
            Needs::Keys,
        ),
        (M::GET, path("/drift"), None, Needs::Read),
        (
            M::GET,
            path("/drift/findings?group=nothing&include_cleared=true"),
            None,
            Needs::Read,
        ),
        (
            M::GET,
            path(&format!("/drift/findings/{NOBODY}")),
            None,
            Needs::Read,
        ),
        (M::POST, path("/drift/checks"), None, Needs::Keys),
        (
            M::POST,
            path("/drift/groups/nothing/check"),
            None,
            Needs::Keys,
        ),
        (
            M::GET,
            path("/drift/groups/nothing/plan"),
            None,
            Needs::Read,
        ),
        (
            M::POST,
            path("/drift/groups/nothing/reconcile"),
            Some(json!({"plan": "0".repeat(64)})),
            Needs::DualKeys,
        ),
        (M::GET, path("/audit"), None, Needs::Read),
        (M::GET, path("/audit/verify"), None, Needs::Read),
        (M::GET, path("/audit/export"), None, Needs::Read),
        (M::GET, path("/audit/streams"), None, Needs::Read),
        (M::GET, path("/audit/archives"), None, Needs::Read),
        (
            M::POST,
            path("/audit/archives"),
            Some(json!({"up_to_seq": 1})),
            Needs::Configuration,
        ),
        (M::GET, path("/backups"), None, Needs::Read),
        (M::POST, path("/backups"), None, Needs::DualConfiguration),
        (M::GET, path("/backups/custodians"), None, Needs::Read),
        (
            M::PUT,
            path("/backups/custodians"),
            Some(json!({"threshold": 2, "custodians": [
                {"name": "alice", "public_key": "a".repeat(64)},
                {"name": "bob", "public_key": "b".repeat(64)},
            ]})),
            Needs::DualConfiguration,
        ),
        (
            M::GET,
            path(&format!("/backups/{NOBODY}")),
            None,
            Needs::Read,
        ),
        (
            M::GET,
            path(&format!("/backups/{NOBODY}/file")),
            None,
            Needs::Configuration,
        ),
        (
            M::GET,
            path(&format!("/backups/{NOBODY}/shares")),
            None,
            Needs::Configuration,
        ),
        (M::GET, path("/config"), None, Needs::Read),
        (
            M::PATCH,
            path("/config"),
            Some(json!({"lockout_threshold": 5})),
            Needs::DualConfiguration,
        ),
        (M::GET, path("/approvals"), None, Needs::Read),
        (
            M::GET,
            path(&format!("/approvals/{NOBODY}")),
            None,
            Needs::Read,
        ),
        (
            M::POST,
            path(&format!("/approvals/{NOBODY}/approve")),
            None,
            Needs::Approver,
        ),
        (
            M::POST,
            path(&format!("/approvals/{NOBODY}/deny")),
            Some(json!({"reason": "no"})),
            Needs::Approver,
        ),
        (
            M::POST,
            path(&format!("/approvals/{NOBODY}/result")),
            None,
            Needs::Read,
        ),
        (M::GET, path("/approval-policies"), None, Needs::Read),
        (
            M::PUT,
            path("/approval-policies"),
            Some(json!({"quorums": {}})),
            Needs::DualConfiguration,
        ),
        // External key stores: a store and its SigV4 credentials let AWS KMS
        // use its keys, as a cloud credential decides where material goes.
        (M::GET, path("/xks/stores"), None, Needs::Read),
        (
            M::POST,
            path("/xks/stores"),
            Some(json!({"name": format!("xks-{tag}")})),
            Needs::DualCredentials,
        ),
        (M::GET, path("/xks/stores/nothing"), None, Needs::Read),
        (
            M::PATCH,
            path("/xks/stores/nothing"),
            Some(json!({"quota_per_second": 5})),
            Needs::DualCredentials,
        ),
        (
            M::DELETE,
            path("/xks/stores/nothing"),
            None,
            Needs::DualCredentials,
        ),
        (
            M::POST,
            path("/xks/stores/nothing/credentials"),
            None,
            Needs::DualCredentials,
        ),
        (
            M::DELETE,
            path("/xks/stores/nothing/credentials/AAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
            Needs::DualCredentials,
        ),
        (M::GET, path("/xks/stores/nothing/keys"), None, Needs::Read),
        (
            M::POST,
            path("/xks/stores/nothing/keys"),
            Some(json!({})),
            Needs::DualKeys,
        ),
        (M::GET, path("/xks/keys?store=nothing"), None, Needs::Read),
        (
            M::GET,
            path(&format!("/xks/keys/{NOBODY}")),
            None,
            Needs::Read,
        ),
        (
            M::PATCH,
            path(&format!("/xks/keys/{NOBODY}")),
            Some(json!({"description": "changed"})),
            Needs::Keys,
        ),
        (
            M::PATCH,
            path(&format!("/xks/keys/{xks_key}")),
            Some(json!({"enabled": false})),
            Needs::Keys,
        ),
        (
            M::PATCH,
            path(&format!("/xks/keys/{xks_key}")),
            Some(json!({"enabled": true})),
            Needs::DualKeys,
        ),
        (
            M::DELETE,
            path(&format!("/xks/keys/{NOBODY}")),
            None,
            Needs::DualKeys,
        ),
    ]
}

/// Creates the auditors and key officers the matrix logs in with.
async fn create_identities(app: &TestApp, admins: &str) {
    for role in [Role::Auditor, Role::Officer] {
        for (name, password) in role.identities() {
            let role_name = match role {
                Role::Auditor => "auditor",
                _ => "key_officer",
            };
            app.add_identity(admins, name, role_name, password).await;
        }
    }
}

/// Logs the roles in, one after the other, into one session.
async fn session_of(app: &TestApp, roles: &[Role]) -> Option<String> {
    let mut token: Option<String> = None;
    for (index, role) in roles.iter().enumerate() {
        let earlier = roles[..index].iter().filter(|r| *r == role).count();
        let (name, password) = role.identities()[earlier];
        let (status, body) = app.login(token.as_deref(), name, password).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        token = Some(body["token"].as_str().unwrap().to_owned());
    }
    token
}

/// Audit entries recording a refusal for lack of a role or of a second identity.
async fn refusals_audited(app: &TestApp, token: &str) -> usize {
    app.audit_export(token)
        .await
        .iter()
        .filter(|entry| {
            let reason = entry["details"]["reason"].as_str().unwrap_or_default();
            reason.contains("is not allowed for") || reason.contains("needs dual control")
        })
        .count()
}

#[tokio::test]
async fn every_endpoint_admits_exactly_the_roles_and_sessions_the_policy_names() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    create_identities(&app, &admins).await;
    let (status, store) = app
        .post(
            "/api/v1/xks/stores",
            Some(&admins),
            json!({"name": "matrix"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{store}");
    let (status, key) = app
        .post("/api/v1/xks/stores/matrix/keys", Some(&admins), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let xks_key = key["id"].as_str().unwrap().to_owned();
    let refusals_before = refusals_audited(&app, &admins).await;

    let mut wrong = Vec::new();
    let mut rows = Vec::new();
    let (mut cases, mut refused_with_session) = (0, 0);
    for (index, (label, roles)) in SESSIONS.iter().enumerate() {
        let token = session_of(&app, roles).await;
        let (mut allowed, mut refused) = (0, 0);
        for (method, path, body, needs) in endpoints(&format!("s{index}"), &xks_key) {
            let want = expected(needs, roles);
            let (status, answer) = app
                .request(method.clone(), &path, token.as_deref(), body)
                .await;
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let got = match (status, code) {
                (StatusCode::UNAUTHORIZED, "unauthenticated") => Expect::Unauthenticated,
                (StatusCode::FORBIDDEN, "forbidden") => Expect::Forbidden,
                (StatusCode::FORBIDDEN, "dual_control_required") => Expect::DualControl,
                (StatusCode::CONFLICT, _)
                    if answer["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("session of your own")) =>
                {
                    Expect::OwnSession
                }
                (status, _) if status.is_server_error() => {
                    wrong.push(format!("{label}: {method} {path}: {status} {answer}"));
                    continue;
                }
                _ => Expect::Allowed,
            };
            cases += 1;
            if got == want {
                if want == Expect::Allowed {
                    allowed += 1;
                } else {
                    refused += 1;
                    if !roles.is_empty() && want != Expect::OwnSession {
                        refused_with_session += 1;
                    }
                }
            } else {
                wrong.push(format!(
                    "{label}: {method} {path}: expected {want:?}, got {status} {answer}"
                ));
            }
        }
        rows.push(format!("| {label} | {allowed} | {refused} |"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Every refusal of a logged-in caller left an audit entry with its reason.
    let refusals_after = refusals_audited(&app, &admins).await;
    assert_eq!(refusals_after - refusals_before, refused_with_session);

    // Nothing a refused request asked for exists; what was allowed does.
    let (_, identities) = app.get("/api/v1/identities", &admins).await;
    let created: Vec<&str> = identities
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .filter(|name| name.starts_with("new-"))
        .collect();
    let two_admins = SESSIONS
        .iter()
        .position(|(label, _)| *label == "administrator + administrator")
        .unwrap();
    assert_eq!(created, vec![format!("new-s{two_admins}")]);
    // Credentials (where key material goes) only from two identities holding the role.
    let (_, credentials) = app.get("/api/v1/credentials", &admins).await;
    let mut added: Vec<String> = credentials
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|name| name.starts_with("cred-"))
        .map(str::to_owned)
        .collect();
    added.sort();
    let mut by_two: Vec<String> = SESSIONS
        .iter()
        .enumerate()
        .filter(|(_, (_, roles))| expected(Needs::DualCredentials, roles) == Expect::Allowed)
        .map(|(index, _)| format!("cred-s{index}"))
        .collect();
    by_two.sort();
    assert_eq!(added, by_two);

    let endpoint_count = endpoints("x", NOBODY).len();
    report::section(
        20,
        "No way in: authorization matrix",
        &format!(
            "Every API route that needs a session ({endpoint_count} method and path pairs) was called \
             from each of {} kinds of session: {cases} cases, each answered as the role policy says \
             (allowed, 401 without a session, 403 `forbidden` without the role, 403 \
             `dual_control_required` without a second identity holding it). Refused requests changed \
             nothing, and each of the {refused_with_session} refusals of a logged-in caller is in the \
             audit log with its reason.\n\n| session | allowed | refused |\n|---|---|---|\n{}",
            SESSIONS.len(),
            rows.join("\n")
        ),
    );
}

#[tokio::test]
async fn logging_out_ends_the_session_and_the_api_ignores_cookies() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;

    // A browser sends cookies to any site's requests, never an Authorization
    // header: the API reads only the header, so another site cannot act
    // with an officer's browser session.
    for cookie in [
        format!("keyhold_session={token}"),
        format!("session={token}"),
    ] {
        let response = app
            .http
            .post(format!("{}/api/v1/groups", app.base))
            .header("cookie", cookie)
            .json(&group_body("by-cookie", "c"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let (_, groups) = app.get("/api/v1/groups", &token).await;
    assert_eq!(groups, json!([]));

    let (status, _) = app
        .request(Method::POST, "/api/v1/session/logout", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .request(Method::POST, "/api/v1/session/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/api/v1/groups", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A token that was never issued, or was replaced when a second identity
    // joined, is as dead as a logged-out one.
    let first = app.login(None, "Admin1", ADMIN1_PASSWORD).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let joined = app.join(&first, "Admin2", ADMIN2_PASSWORD).await;
    for dead in [first.as_str(), "planted-by-someone-else"] {
        let (status, _) = app.get("/api/v1/session", dead).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = app.login(Some(dead), "Admin2", ADMIN2_PASSWORD).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, session) = app.get("/api/v1/session", &joined).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["users"], "Admin1,Admin2");
}

/// A private CA and a server certificate it signed for `localhost` and
/// 127.0.0.1, made with the openssl command line as an operator would.
/// Returns the CA certificate, the server's chain (server, then CA) and key.
fn private_ca_and_server_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new(dir, "keyhold test CA");
    let (server, key) = ca.issue("server", "localhost", Usage::Server);
    let chain = [
        std::fs::read_to_string(&server).unwrap(),
        std::fs::read_to_string(ca.certificate()).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    (ca.certificate(), dir.join("chain.pem"), key)
}

// Multi-threaded: the server keeps answering while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn https_with_the_configured_certificate_serves_api_and_cli_on_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = private_ca_and_server_certificate(dir.path());
    let app = TestApp::spawn_with(|args| {
        // Not loopback: allowed because the traffic is encrypted.
        args.listen.listen = Some("0.0.0.0:0".into());
        args.listen.tls_certificate = Some(certificate.clone());
        args.listen.tls_private_key = Some(key.clone());
    })
    .await;
    assert!(app.base.starts_with("https://localhost:"), "{}", app.base);
    let token = app.dual_session().await;
    let (status, session) = app.get("/api/v1/session", &token).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["users"], "Admin1,Admin2");
    let answer = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["strict-transport-security"],
        "max-age=31536000",
        "browsers are told to keep to HTTPS"
    );

    // Plain HTTP to the HTTPS port gets no answer; nor does a client that
    // does not trust the certificate.
    let plain = app.base.replacen("https://", "http://", 1);
    assert!(
        reqwest::get(format!("{plain}/healthz")).await.is_err(),
        "plain HTTP is not served on the HTTPS port"
    );
    assert!(
        reqwest::get(format!("{}/healthz", app.base)).await.is_err(),
        "an unknown certificate is refused by a verifying client"
    );

    // The command line reaches it with the CA given, and only then.
    let session_file = dir.path().join("session.json");
    let ca_flag = ["--ca-certificate", ca.to_str().unwrap()];
    let cli = |args: &[&str], trusting_the_ca: bool| {
        let flags = if trusting_the_ca { &ca_flag[..] } else { &[] };
        keyhold_cli(
            &app.base,
            &session_file,
            &[flags, args].concat(),
            format!("{ADMIN1_PASSWORD}\n").as_bytes(),
        )
    };
    let login = ["login", "--user", "Admin1", "--password-stdin"];
    let refused = cli(&login, false);
    assert!(!refused.status.success());
    let told = String::from_utf8_lossy(&refused.stderr);
    assert!(told.contains("certificate"), "{told}");
    let logged_in = cli(&login, true);
    assert!(
        logged_in.status.success(),
        "{}",
        String::from_utf8_lossy(&logged_in.stderr)
    );
    let who = cli(&["whoami", "--output", "json"], true);
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["users"], "Admin1");
}
