//! Drift against the real KMS peer (LocalStack): each kind made out of band
//! through the AWS API, as a console user or a pipeline would, then found by
//! a check, planned, repaired (by officers, and by self-heal), audited and
//! counted in /metrics; what AWS holds afterwards is read back through the
//! AWS API, not through keyhold.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use aws_sdk_kms::types::Tag;

use crate::concurrency::burst;
use crate::helpers::*;
use crate::kms::{Kms, endpoint};

/// The drift tests' region of the peer: a check lists every key of its
/// region, and the suite's other tests fill eu-west-1 with theirs.
const REGION: &str = "eu-south-2";

const WIDENED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;

struct Scene {
    app: TestApp,
    /// Admin1 and Admin2 in one session.
    token: String,
    group: String,
    kms: Kms,
}

impl Scene {
    async fn new(prefix: &str, adjust: impl FnOnce(&mut Value)) -> Self {
        Self::at(&endpoint(), prefix, adjust).await
    }

    /// A scene on another KMS peer than the suite's LocalStack.
    async fn at(peer: &str, prefix: &str, adjust: impl FnOnce(&mut Value)) -> Self {
        let allowed = peer.to_owned();
        let app = TestApp::spawn_with(move |args| allow_endpoints(args, &[&allowed])).await;
        let token = app.dual_session().await;
        app.import_credential_at(&token, "aws", peer).await;
        let group = unique(prefix);
        let mut body = group_body(&group, "aws");
        body["region"] = json!(REGION);
        adjust(&mut body);
        let (status, created) = app.create_group(&token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let kms = Kms::in_region(peer, REGION).await;
        Self {
            app,
            token,
            group,
            kms,
        }
    }

    fn alias(&self) -> String {
        format!("alias/{}", self.group)
    }

    /// Runs a drift check of the group to its end.
    async fn check(&self) -> Value {
        let (status, job) = self
            .app
            .post(
                &format!("/api/v1/drift/groups/{}/check", self.group),
                Some(&self.token),
                json!(null),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["title"], "Check HSM protected keys");
        let job = self
            .app
            .wait_job(&self.token, job["id"].as_str().unwrap())
            .await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        job
    }

    async fn findings(&self, include_cleared: bool) -> Vec<Value> {
        let (status, found) = self
            .app
            .get(
                &format!(
                    "/api/v1/drift/findings?group={}&include_cleared={include_cleared}",
                    self.group
                ),
                &self.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        found.as_array().unwrap().clone()
    }

    /// The open findings as sorted `(kind, subject)` pairs.
    async fn open(&self) -> Vec<(String, String)> {
        let mut open: Vec<(String, String)> = self
            .findings(false)
            .await
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        open.sort();
        open
    }

    async fn plan(&self) -> Value {
        let (status, plan) = self
            .app
            .get(
                &format!("/api/v1/drift/groups/{}/plan", self.group),
                &self.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{plan}");
        plan
    }

    async fn reconcile(&self, token: &str, digest: &Value) -> (StatusCode, Value) {
        self.app
            .post(
                &format!("/api/v1/drift/groups/{}/reconcile", self.group),
                Some(token),
                json!({ "plan": digest }),
            )
            .await
    }

    async fn audited(&self, starting: &str) -> usize {
        self.app
            .audit_summaries(&self.token)
            .await
            .iter()
            .filter(|entry| {
                entry
                    .split_once(" | ")
                    .is_some_and(|(_, summary)| summary.starts_with(starting))
            })
            .count()
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}

/// `keyhold_drift_findings{kind="..."} N` from /metrics.
fn gauge(metrics: &str, kind: &str) -> Option<u64> {
    let prefix = format!("keyhold_drift_findings{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn drift_made_through_the_aws_api_is_found_planned_and_put_right_by_two_officers() {
    let s = Scene::new("drift", |_| {}).await;
    let k1 = s.app.rotate_ok(&s.token, &s.group).await;
    let k2 = s.app.rotate_ok(&s.token, &s.group).await;
    let ciphertext_k2 = s.kms.encrypt(&k2, b"written under version 2").await;
    let k3 = s.app.rotate_ok(&s.token, &s.group).await;
    assert_eq!(
        s.check().await["summary"],
        format!("drift check of key group {}", s.group)
    );
    assert_eq!(s.open().await, Vec::new(), "AWS as keyhold left it");

    // Behind keyhold's back, through the AWS API.
    let c = &s.kms.client;
    c.schedule_key_deletion()
        .key_id(&k1)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    c.put_key_policy()
        .key_id(&k2)
        .policy_name("default")
        .policy(WIDENED)
        .send()
        .await
        .unwrap();
    c.delete_imported_key_material()
        .key_id(&k2)
        .send()
        .await
        .unwrap();
    c.disable_key().key_id(&k3).send().await.unwrap();
    c.untag_resource()
        .key_id(&k3)
        .tag_keys("keyhold:group")
        .send()
        .await
        .unwrap();
    c.update_alias()
        .alias_name(s.alias())
        .target_key_id(&k2)
        .send()
        .await
        .unwrap();
    let stray = c
        .create_key()
        .origin(aws_sdk_kms::types::OriginType::External)
        .tags(
            Tag::builder()
                .tag_key("keyhold:group")
                .tag_value(&s.group)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();

    let job = s.check().await;
    assert!(
        job["messages"]
            .to_string()
            .contains("7 finding(s) open, 7 new"),
        "{job:#}"
    );
    let alias = s.alias();
    assert_eq!(
        s.open().await,
        pairs(&[
            ("pending_deletion", &k1),
            ("policy_differs", &k2),
            ("material_deleted", &k2),
            ("state_differs", &k3),
            ("tags_missing", &k3),
            ("alias_elsewhere", &alias),
            ("unknown_key", &stray),
        ])
    );
    let findings = s.findings(false).await;
    let policy = findings
        .iter()
        .find(|f| f["kind"] == "policy_differs")
        .unwrap();
    assert!(
        policy["detail"]
            .as_str()
            .unwrap()
            .contains(r#"+         "AWS": "*""#),
        "{policy:#}"
    );
    assert_eq!(policy["repair"]["action"], "put_policy");
    assert_eq!(policy["repair"]["safe"], true);
    assert_eq!(s.audited("Drift found: ").await, 7);
    let metrics = s.app.metrics().await;
    assert_eq!(gauge(&metrics, "policy_differs"), Some(1), "{metrics}");
    assert_eq!(gauge(&metrics, "key_missing"), Some(0), "{metrics}");
    // keyhold's record stands: the check wrote nothing to AWS or to it.
    assert_eq!(s.kms.state(&k3).await, "Disabled");
    let (_, keys) = s
        .app
        .get(&format!("/api/v1/keys?group={}", s.group), &s.token)
        .await;
    let k3_view = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == k3.as_str())
        .unwrap()
        .clone();
    assert_eq!(k3_view["state"], "enabled");
    // Its state, its tags, and the alias that should name it.
    assert_eq!(k3_view["drift_open"], 3, "{k3_view:#}");
    let (_, group) = s
        .app
        .get(&format!("/api/v1/groups/{}", s.group), &s.token)
        .await;
    assert_eq!(group["drift_open"], 7, "{group:#}");

    // The plan: cancel the deletion first, the unknown key for officers.
    let plan = s.plan().await;
    let actions: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["repair"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "cancel_deletion",
            "enable_key",
            "reimport_material",
            "point_alias",
            "put_policy",
            "tag_key"
        ]
    );
    assert_eq!(plan["unresolved"][0]["kind"], "unknown_key");

    // One officer alone may not write to AWS, nor may anyone without a session.
    let alone = alone(&s.app, ("Admin1", ADMIN1_PASSWORD)).await;
    let (status, body) = s.reconcile(&alone, &plan["digest"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = s
        .app
        .post(
            &format!("/api/v1/drift/groups/{}/reconcile", s.group),
            None,
            json!({ "plan": plan["digest"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A plan other than the one due now is refused, and says why.
    let (status, body) = s.reconcile(&s.token, &json!("0000")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s.reconcile(&s.token, &json!("0".repeat(64))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed since it was read")
    );
    assert_eq!(
        s.kms.state(&k3).await,
        "Disabled",
        "a refusal changes nothing"
    );

    let (status, job) = s.reconcile(&s.token, &plan["digest"]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["title"], "Reconcile HSM protected keys");
    let job = s.app.wait_job(&s.token, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");

    // AWS, read back: as keyhold's record says.
    assert_eq!(s.kms.state(&k1).await, "Disabled", "deletion cancelled");
    assert_eq!(
        s.kms.state(&k2).await,
        "Disabled",
        "material back, disabled as recorded"
    );
    assert_eq!(s.kms.state(&k3).await, "Enabled");
    assert_eq!(
        s.kms.alias_target(&alias).await.as_deref(),
        Some(k3.as_str())
    );
    let group_policy: Value =
        serde_json::from_str(group_body(&s.group, "aws")["policy"].as_str().unwrap()).unwrap();
    assert_eq!(s.kms.policy(&k2).await, group_policy);
    let tags = c.list_resource_tags().key_id(&k3).send().await.unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "keyhold:group" && t.tag_value() == s.group),
        "{tags:?}"
    );
    // What version 2 encrypted decrypts again (its key enabled for the test).
    c.enable_key().key_id(&k2).send().await.unwrap();
    assert_eq!(
        s.kms.decrypt(&ciphertext_k2).await.unwrap(),
        b"written under version 2"
    );
    c.disable_key().key_id(&k2).send().await.unwrap();

    assert_eq!(s.open().await, pairs(&[("unknown_key", &stray)]));
    let history = s.findings(true).await;
    assert_eq!(history.len(), 7);
    assert!(history[1..].iter().all(|f| f["cleared_at"].is_string()));
    assert_eq!(
        s.audited(&format!(
            "Repaired drift of HSM protected key group {}",
            s.group
        ))
        .await,
        6
    );
    assert_eq!(s.audited("Drift cleared: ").await, 6);
    let metrics = s.app.metrics().await;
    assert_eq!(gauge(&metrics, "policy_differs"), Some(0), "{metrics}");
    assert_eq!(gauge(&metrics, "unknown_key"), Some(1), "{metrics}");
    let (_, verify) = s.app.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(verify["ok"], true, "{verify}");
}

#[tokio::test]
async fn self_heal_puts_back_what_is_safe_and_leaves_a_disabled_key_to_officers() {
    let s = Scene::new("heal", |body| body["self_heal"] = json!(true)).await;
    let key = s.app.rotate_ok(&s.token, &s.group).await;
    let ciphertext = s.kms.encrypt(&key, b"before the drift").await;
    let (_, group) = s
        .app
        .get(&format!("/api/v1/groups/{}", s.group), &s.token)
        .await;
    assert_eq!(group["self_heal"], true);
    let c = &s.kms.client;
    c.delete_alias().alias_name(s.alias()).send().await.unwrap();
    c.delete_imported_key_material()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    c.untag_resource()
        .key_id(&key)
        .tag_keys("keyhold:key-id")
        .send()
        .await
        .unwrap();

    let job = s.check().await;
    assert_eq!(
        job["steps_total"], 5,
        "a check, three repairs, a recheck: {job:#}"
    );
    assert_eq!(s.open().await, Vec::new());
    assert_eq!(
        s.kms.alias_target(&s.alias()).await.as_deref(),
        Some(key.as_str())
    );
    assert_eq!(s.kms.state(&key).await, "Enabled");
    assert_eq!(
        s.kms.decrypt(&ciphertext).await.unwrap(),
        b"before the drift"
    );
    assert_eq!(s.audited("Self-heal repaired drift").await, 3);

    // Someone disabled the key (an incident?): officers decide.
    c.disable_key().key_id(&key).send().await.unwrap();
    let job = s.check().await;
    assert_eq!(job["steps_total"], 1);
    assert_eq!(s.kms.state(&key).await, "Disabled");
    assert_eq!(s.open().await, pairs(&[("state_differs", &key)]));

    // Turning self-heal off (or on) is a custody change: two officers.
    let alone = alone(&s.app, ("Admin1", ADMIN1_PASSWORD)).await;
    let (status, body) = s
        .app
        .patch(
            &format!("/api/v1/groups/{}", s.group),
            &alone,
            json!({"self_heal": false}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn sixteen_reconciliations_at_once_start_one_job_that_repairs_once() {
    let s = Scene::new("crowd", |_| {}).await;
    let key = s.app.rotate_ok(&s.token, &s.group).await;
    s.kms
        .client
        .delete_alias()
        .alias_name(s.alias())
        .send()
        .await
        .unwrap();
    s.check().await;
    let plan = s.plan().await;
    let path = format!("/api/v1/drift/groups/{}/reconcile", s.group);
    let requests = (0..16)
        .map(|_| {
            (
                Method::POST,
                path.clone(),
                Some(s.token.clone()),
                Some(json!({ "plan": plan["digest"] })),
            )
        })
        .collect();
    let answers = burst(&s.app, requests).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, job)| job)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:#?}");
    assert!(
        answers
            .iter()
            .all(|(status, _)| matches!(*status, StatusCode::ACCEPTED | StatusCode::CONFLICT)),
        "{answers:#?}"
    );
    let job = s
        .app
        .wait_job(&s.token, accepted[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        s.kms.alias_target(&s.alias()).await.as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        s.audited(&format!(
            "Repaired drift of HSM protected key group {}",
            s.group
        ))
        .await,
        1
    );
    // And sixteen checks at once: one job, the rest told which one runs.
    let path = format!("/api/v1/drift/groups/{}/check", s.group);
    let requests = (0..16)
        .map(|_| (Method::POST, path.clone(), Some(s.token.clone()), None))
        .collect();
    let answers = burst(&s.app, requests).await;
    let started = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(started, 1, "{answers:#?}");
}

/// On the faithful peer: LocalStack (4.8 and 4.11) answers no ValidTo.
#[tokio::test]
async fn material_expiring_with_no_rotation_due_is_found_with_what_to_do() {
    let peer = crate::in_place::shared_faithful_peer();
    let s = Scene::at(peer, "expiring", |body| {
        body["valid_for"] = json!("20d");
        body["rotate_every"] = Value::Null;
    })
    .await;
    let key = s.app.rotate_ok(&s.token, &s.group).await;
    let described = s.kms.describe(&key).await;
    assert!(described.valid_to().is_some(), "{described:?}");
    s.check().await;
    assert_eq!(s.open().await, pairs(&[("material_expiring", &key)]));
    let finding = &s.findings(false).await[0];
    assert!(finding["repair"].is_null(), "{finding:#}");
    assert!(
        finding["detail"].as_str().unwrap().contains("Force Rotate"),
        "{finding:#}"
    );
}

#[tokio::test]
async fn the_schedule_checks_every_group_once_its_interval_has_passed() {
    let s = Scene::new("scheduled", |_| {}).await;
    s.app.rotate_ok(&s.token, &s.group).await;
    s.kms
        .client
        .delete_alias()
        .alias_name(s.alias())
        .send()
        .await
        .unwrap();
    // A day after the group was made, the schedule checks it.
    s.app.clock.advance(chrono::Duration::hours(25));
    let app = &s.app;
    // The session ended with the day that passed.
    let token = &app.dual_session_again().await;
    let group = &s.group;
    let job: Value = app
        .eventually("a scheduled drift check", || async move {
            let (_, jobs) = app.get("/api/v1/jobs?limit=100", token).await;
            jobs.as_array()?
                .iter()
                .find(|j| j["kind"] == "check_drift" && j["group"] == group.as_str())
                .cloned()
        })
        .await;
    assert_eq!(job["users"], "System");
    let job = app.wait_job(token, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let (_, overview) = app.get("/api/v1/drift", token).await;
    let row = overview["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == s.group.as_str())
        .unwrap();
    assert_eq!(row["open"], 1);
    assert_eq!(row["check_job"], job["id"]);
    assert_eq!(overview["check_hours"], 24);
}

/// The `keyhold` binary against the server: check, list, plan, reconcile,
/// and the refusals a user meets, each with its exit code.
#[tokio::test]
async fn the_cli_checks_plans_and_reconciles_and_says_what_is_wrong() {
    let s = Scene::new("cli", |_| {}).await;
    let key = s.app.rotate_ok(&s.token, &s.group).await;
    s.kms
        .client
        .delete_alias()
        .alias_name(s.alias())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    let (base, group) = (s.app.base.clone(), s.group.clone());
    let run = move |args: Vec<String>, stdin: String| {
        let (base, session) = (base.clone(), session.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = keyhold_cli(&base, &session, &args, stdin.as_bytes());
                (
                    out.status.code(),
                    String::from_utf8(out.stdout).unwrap(),
                    String::from_utf8(out.stderr).unwrap(),
                )
            })
            .await
            .unwrap()
        }
    };
    let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    for (user, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
        let (code, _, err) = run(
            args(&["login", "--user", user, "--password-stdin"]),
            format!("{password}\n"),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
    }

    let (code, out, err) = run(
        args(&["drift", "check", "--group", &group, "--wait"]),
        String::new(),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("Key group {group} has 1 open drift finding(s)")),
        "{out}"
    );
    let (code, out, err) = run(
        args(&["drift", "list", "--group", &group, "--output", "json"]),
        String::new(),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["kind"], "alias_missing", "{listed:#}");
    let (code, out, err) = run(args(&["drift", "plan", "--group", &group]), String::new()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("point alias {}", s.alias())), "{out}");
    assert!(out.contains("Plan digest: "), "{out}");

    // A plan other than the one due, and a command that names no group.
    let stale = "0".repeat(64);
    let (code, _, err) = run(
        args(&["drift", "reconcile", "--group", &group, "--plan", &stale]),
        String::new(),
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("changed since it was read"), "{err}");
    let (code, _, err) = run(args(&["drift", "check"]), String::new()).await;
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        s.kms.alias_target(&s.alias()).await,
        None,
        "refusals change nothing"
    );

    let (code, out, err) = run(
        args(&["drift", "reconcile", "--group", &group, "--wait"]),
        String::new(),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("Key group {group} has no open drift findings.")),
        "{out}"
    );
    assert_eq!(
        s.kms.alias_target(&s.alias()).await.as_deref(),
        Some(key.as_str())
    );
}
