//! The real `keyhold` binary: init, serve, and the reference walkthrough as a
//! user scripts it, with passwords on stdin and JSON output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use keyhold_store::testing::TestDatabase;

use crate::helpers::{
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, spawn_listening, test_database, use_database,
};

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");

struct Cli {
    url: String,
    session_file: PathBuf,
    /// The database `keyhold init` writes and the server then serves, if any.
    db: Option<TestDatabase>,
    /// Everything every command printed, to check no secret ever appears.
    transcript: String,
}

impl Cli {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(KEYHOLD);
        command
            .args(args)
            .env("KEYHOLD_URL", &self.url)
            .env("KEYHOLD_SESSION_FILE", &self.session_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(db) = &self.db {
            use_database(&mut command, db);
        }
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        self.transcript
            .push_str(&String::from_utf8_lossy(&out.stdout));
        self.transcript
            .push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    fn ok(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "keyhold {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&mut self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all, None)).unwrap()
    }

    fn fails(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "keyhold {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(data_dir: &Path, db: &TestDatabase) -> (ServerProcess, String) {
    let mut command = Command::new(KEYHOLD);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    use_database(&mut command, db);
    let (child, url) = spawn_listening(&mut command);
    (ServerProcess(child), url)
}

#[test]
fn init_then_the_reference_walkthrough_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(test_database());
    let mut cli = Cli {
        url: String::new(),
        session_file: dir.path().join("session.json"),
        db: Some(db),
        transcript: String::new(),
    };

    // keyhold init: one-time passwords as JSON, once.
    let init: Value = serde_json::from_str(&cli.ok(
        &[
            "init",
            "--output",
            "json",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        None,
    ))
    .unwrap();
    let identities = init["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 2);
    assert_eq!(identities[0]["name"], "Admin1");
    let one_time: Vec<String> = identities
        .iter()
        .map(|i| i["password"].as_str().unwrap().to_owned())
        .collect();
    let again = cli.fails(&["init", "--data-dir", data_dir.to_str().unwrap()], None);
    assert!(again.contains("already initialised"), "{again}");
    let key_file = data_dir.join("keystore").join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (_server, url) = start_server(&data_dir, cli.db.as_ref().unwrap());
    cli.url = url;

    // First use: change both one-time passwords, with stdin, never an argument.
    cli.ok(
        &["passwd", "--user", "Admin1", "--password-stdin"],
        Some(&format!("{}\nAdmin1-new-password\n", one_time[0])),
    );
    cli.ok(
        &["passwd", "--user", "Admin2", "--password-stdin"],
        Some(&format!("{}\nAdmin2-new-password\n", one_time[1])),
    );
    let refused = cli.fails(
        &[
            "login",
            "--user",
            "Admin1",
            "--password",
            "Admin1-new-password",
        ],
        None,
    );
    assert!(!refused.is_empty());

    cli.ok(
        &["login", "--user", "Admin1", "--password-stdin"],
        Some("Admin1-new-password\n"),
    );
    assert_eq!(
        std::fs::metadata(&cli.session_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Cloud credential from the console CSV (BOM and CRLF as Windows saves it).
    let csv = dir.path().join("credentials.csv");
    std::fs::write(
        &csv,
        format!(
            "\u{feff}Access key ID,Secret access key\r\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\r\n"
        ),
    )
    .unwrap();
    let import = [
        "credential",
        "import",
        "--name",
        "aws-prod",
        "--csv",
        csv.to_str().unwrap(),
    ];
    // A credential decides where key material goes: one officer alone cannot add it.
    let alone = cli.fails(&import, None);
    assert!(alone.contains("dual control"), "{alone}");

    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#).unwrap();
    let create = [
        "group",
        "create",
        "--name",
        "ig-demo",
        "--credential",
        "aws-prod",
        "--region",
        "eu-west-1",
        "--alias",
        "alias/ig-demo",
        "--policy",
        policy.to_str().unwrap(),
        "--rotate-every",
        "30d",
        "--valid-for",
        "1y",
        "--disable-after-rotate",
    ];
    let alone = cli.fails(&create, None);
    assert!(alone.contains("dual control"), "{alone}");

    // Dual control: Admin2 joins the same session.
    cli.ok(
        &["login", "--user", "Admin2", "--password-stdin"],
        Some("Admin2-new-password\n"),
    );
    let who = cli.json(&["whoami"]);
    assert_eq!(who["users"], "Admin1,Admin2");
    cli.ok(&import, None);
    let creds = cli.json(&["credential", "list"]);
    assert_eq!(creds[0]["access_name"], ACCESS_KEY_ID);
    cli.ok(&create, None);

    let group = cli.json(&["group", "show", "ig-demo"]);
    assert_eq!(group["alias"], "alias/ig-demo");
    assert_eq!(group["rotate_every"], "30d");
    assert_eq!(group["disable_after_rotate"], true);
    assert!(group["policy"].as_str().unwrap().contains("kms:*"));
    let groups = cli.json(&["group", "list"]);
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(cli.json(&["key", "list"]), Value::Array(vec![]));
    let table = cli.ok(&["group", "list"], None);
    assert!(table.contains("ig-demo"), "{table}");
    assert_eq!(group["rotation_strategy"], "new_key");
    // The rotation strategy is changed through the binary (both officers are
    // in the session), and a strategy that does not exist is refused saying
    // which ones do.
    cli.ok(
        &[
            "group",
            "update",
            "ig-demo",
            "--rotation-strategy",
            "new_material",
            "--at-rotation-limit",
            "refuse",
        ],
        None,
    );
    let group = cli.json(&["group", "show", "ig-demo"]);
    assert_eq!(group["rotation_strategy"], "new_material");
    assert_eq!(group["at_rotation_limit"], "refuse");
    let shown = cli.ok(&["group", "show", "ig-demo"], None);
    assert!(shown.contains("new_material"), "{shown}");
    let wrong = cli.fails(
        &[
            "group",
            "update",
            "ig-demo",
            "--rotation-strategy",
            "in_place",
        ],
        None,
    );
    assert!(
        wrong.contains("new_key") && wrong.contains("new_material"),
        "{wrong}"
    );
    cli.ok(
        &[
            "group",
            "update",
            "ig-demo",
            "--rotation-strategy",
            "new_key",
        ],
        None,
    );

    let bad = cli.fails(
        &[
            "group",
            "create",
            "--name",
            "bad name",
            "--credential",
            "aws-prod",
            "--region",
            "eu-west-1",
            "--alias",
            "alias/x",
        ],
        None,
    );
    assert!(bad.contains("not allowed"), "{bad}");
    let missing = cli.fails(
        &[
            "credential",
            "import",
            "--name",
            "x",
            "--csv",
            "/nonexistent/file.csv",
        ],
        None,
    );
    assert!(missing.contains("/nonexistent/file.csv"), "{missing}");

    let audit = cli.json(&["audit", "list"]);
    let summaries: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} | {}",
                e["users"].as_str().unwrap(),
                e["summary"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        summaries.contains(&"Admin1,Admin2 | Added HSM protected key group ig-demo".to_owned()),
        "{summaries:#?}"
    );
    assert!(
        summaries.contains(&"Admin1,Admin2 | Logged in 'Admin2' using Password.".to_owned()),
        "{summaries:#?}"
    );
    cli.ok(&["audit", "verify"], None);
    let export = dir.path().join("audit.jsonl");
    cli.ok(
        &["audit", "export", "--file", export.to_str().unwrap()],
        None,
    );
    let lines = std::fs::read_to_string(&export).unwrap();
    assert!(lines.lines().count() >= summaries.len());

    cli.ok(&["logout"], None);
    let after = cli.fails(&["group", "list"], None);
    assert!(after.contains("log in"), "{after}");

    assert!(
        !cli.transcript.contains(SECRET_ACCESS_KEY),
        "the CLI printed the secret access key"
    );
    assert!(
        !cli.transcript.contains("Admin1-new-password"),
        "the CLI printed a password"
    );
}

#[test]
fn an_unreachable_server_is_reported_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cli = Cli {
        url: "http://127.0.0.1:9".into(),
        session_file: dir.path().join("s.json"),
        db: None,
        transcript: String::new(),
    };
    let err = cli.fails(
        &["login", "--user", "Admin1", "--password-stdin"],
        Some("x\n"),
    );
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// `require_initialised` (set by the Debian package): `serve` refuses an
/// empty data directory, creating nothing and printing no password, and
/// says to run `keyhold init`; once that has run, it serves.
#[test]
fn a_server_that_requires_initialisation_refuses_an_empty_data_dir_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(test_database());
    let serve = || {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("KEYHOLD_REQUIRE_INITIALISED", "true");
        if let Some(hsm) = crate::helpers::Hsm::for_suite() {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, &db);
        command
    };
    let refused = serve().output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not initialised") && stderr.contains("keyhold init"),
        "{stderr}"
    );
    assert!(
        !stdout.to_lowercase().contains("password"),
        "a password was printed: {stdout}"
    );
    assert!(
        !data_dir.join("keystore").exists(),
        "the refused start created a keystore"
    );

    let init = crate::helpers::init_data_dir(&data_dir, &db);
    assert_eq!(init["identities"].as_array().unwrap().len(), 2, "{init}");
    let mut command = serve();
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let (child, url) = spawn_listening(&mut command);
    let _server = ServerProcess(child);
    let ready = runtime
        .block_on(reqwest::get(format!("{url}/readyz")))
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
}
