//! `keyhold backup` and `keyhold audit archive` through the real binary
//! against a server in the test process: custodian keys, custodians (two of
//! them from passphrases typed on stdin, derived on the CLI's side), a
//! backup downloaded with its shares, its offline verification, and the
//! restores the CLI refuses before writing anything.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const BOB_PASSPHRASE: &str = "bob's correct horse battery";
const CY_PASSPHRASE: &str = "cy's staple of the battery";

/// The `keyhold` binary against one server, with its own session file.
struct Cli {
    base: String,
    dir: tempfile::TempDir,
}

struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Cli {
    fn new(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn run(&self, args: &[&str], stdin: &str) -> Ran {
        let (base, session) = (self.base.clone(), self.path("session"));
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let stdin = stdin.to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = keyhold_cli(&base, &session, &args, stdin.as_bytes());
            Ran {
                code: out.status.code(),
                out: String::from_utf8(out.stdout).unwrap(),
                err: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }

    /// Runs and expects exit status 0.
    async fn ok(&self, args: &[&str], stdin: &str) -> String {
        let ran = self.run(args, stdin).await;
        assert_eq!(ran.code, Some(0), "{args:?}: {}\n{}", ran.err, ran.out);
        ran.out
    }

    async fn login_both(&self) {
        for (user, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
            self.ok(
                &["login", "--user", user, "--password-stdin"],
                &format!("{password}\n"),
            )
            .await;
        }
    }
}

/// `keyhold backup restore` with `args`, on the restore target `data`
/// (its database as the suite's backend wants it).
async fn restore(
    data: &Path,
    db: Option<&keyhold_store::testing::TestDatabase>,
    args: &[&str],
    stdin: &str,
) -> Ran {
    use std::io::Write;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhold"));
    command
        .args(["backup", "restore"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .args(["--log", "warn"]);
    if let Some(db) = db {
        use_database(&mut command, db);
    }
    if let Some(hsm) = Hsm::for_suite() {
        hsm.configure_command(&mut command);
    }
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        Ran {
            code: out.status.code(),
            out: String::from_utf8(out.stdout).unwrap(),
            err: String::from_utf8(out.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex_of(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A custodian key: a new private file only, its public key printed, and
/// never an existing file overwritten.
#[tokio::test]
async fn custodian_key_writes_a_private_file_and_refuses_to_overwrite() {
    let app = TestApp::spawn().await;
    let cli = Cli::new(&app);
    let key = cli.path("ann.key");
    let key_arg = key.to_str().unwrap();
    let out = cli
        .ok(
            &["backup", "custodian-key", "--out", key_arg, "-o", "json"],
            "",
        )
        .await;
    let printed: Value = serde_json::from_str(&out).unwrap();
    let public = printed["public_key"].as_str().unwrap();
    assert_eq!(public.len(), 64, "{printed}");
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(
        secret.starts_with("keyhold-custodian-secret-v1:"),
        "{secret}"
    );
    let secret_hex = secret.trim().split(':').nth(1).unwrap();
    assert!(!out.contains(secret_hex), "the secret was printed: {out}");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);

    let again = cli
        .run(&["backup", "custodian-key", "--out", key_arg], "")
        .await;
    assert_eq!(again.code, Some(2), "{}", again.err);
    assert!(again.err.contains("exists already"), "{}", again.err);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), secret);

    // For people: the public key and how to enrol it.
    let other = cli.path("bob.key");
    let out = cli
        .ok(
            &["backup", "custodian-key", "--out", other.to_str().unwrap()],
            "",
        )
        .await;
    assert!(out.contains("--custodian YOUR_NAME="), "{out}");
}

/// The whole custodian side through the CLI: custodians set (one key, two
/// passphrases on stdin), a backup downloaded with its three shares,
/// verified offline, and the restores refused before anything is written.
#[tokio::test]
async fn backup_create_verify_and_refused_restores() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws1").await;
    let cli = Cli::new(&app);
    cli.login_both().await;

    let ann_key = cli.path("ann.key");
    let out = cli
        .ok(
            &[
                "backup",
                "custodian-key",
                "--out",
                ann_key.to_str().unwrap(),
                "-o",
                "json",
            ],
            "",
        )
        .await;
    let ann_public: Value = serde_json::from_str(&out).unwrap();
    let ann_public = ann_public["public_key"].as_str().unwrap().to_owned();

    // A passphrase that is too short is refused before anything is sent.
    let short = cli
        .run(
            &[
                "backup",
                "custodians",
                "set",
                "--threshold",
                "2",
                "--custodian",
                &format!("ann={ann_public}"),
                "--passphrase-custodian",
                "bob",
                "--passphrase-stdin",
            ],
            "short\n",
        )
        .await;
    assert_eq!(short.code, Some(2), "{}", short.err);
    assert!(!short.err.contains("short\n"), "{}", short.err);

    let out = cli
        .ok(
            &[
                "backup",
                "custodians",
                "set",
                "--threshold",
                "2",
                "--custodian",
                &format!("ann={ann_public}"),
                "--passphrase-custodian",
                "bob",
                "--passphrase-custodian",
                "cy",
                "--passphrase-stdin",
            ],
            &format!("{BOB_PASSPHRASE}\n{CY_PASSPHRASE}\n"),
        )
        .await;
    assert!(
        out.contains("Any 2 of these 3 custodians together open a backup."),
        "{out}"
    );
    let (status, custodians) = app.get("/api/v1/backups/custodians", &token).await;
    assert_eq!(status, StatusCode::OK, "{custodians}");
    assert_eq!(custodians["threshold"], 2);
    let listed: Vec<(String, bool)> = custodians["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["passphrase"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("ann".to_owned(), false),
            ("bob".to_owned(), true),
            ("cy".to_owned(), true)
        ]
    );
    assert_eq!(custodians["custodians"][0]["public_key"], ann_public);
    // The passphrases never reached the server: not in its audit log.
    let audit = serde_json::to_string(&app.audit_export(&token).await).unwrap();
    assert!(
        !audit.contains(BOB_PASSPHRASE) && !audit.contains(CY_PASSPHRASE),
        "a passphrase is in the audit log"
    );

    // The backup, its file and its three shares.
    let file = cli.path("backup.khbk");
    let shares = cli.path("shares");
    std::fs::create_dir(&shares).unwrap();
    let out = cli
        .ok(
            &[
                "backup",
                "create",
                "--file",
                file.to_str().unwrap(),
                "--shares-dir",
                shares.to_str().unwrap(),
                "-o",
                "json",
            ],
            "",
        )
        .await;
    let created: Value = serde_json::from_str(&out).unwrap();
    let backup = &created["backup"];
    assert_eq!(backup["status"], "succeeded", "{created:#}");
    let id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["sha256"].as_str().unwrap(), sha256_hex(&file));
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let share = |name: &str| shares.join(format!("{name}.share"));
    for name in ["ann", "bob", "cy"] {
        let text = std::fs::read_to_string(share(name)).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["custodian"], name);
        assert_eq!(parsed["backup_id"], id.as_str());
        #[cfg(unix)]
        assert_eq!(mode(&share(name)), 0o600);
    }
    assert_eq!(std::fs::read_dir(&shares).unwrap().count(), 3);
    let (status, listed) = app.get("/api/v1/backups", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["id"], id.as_str(), "{listed:#}");

    // Offline: header, hash and signature; pinned to the audit key too.
    let file_arg = file.to_str().unwrap();
    let out = cli.ok(&["backup", "verify", "--file", file_arg], "").await;
    for expected in [
        format!("Backup file {file_arg} is intact"),
        id.clone(),
        "Admin1".to_owned(),
        "2 of ann, bob, cy".to_owned(),
        sha256_hex(&file),
    ] {
        assert!(out.contains(&expected), "{expected}: {out}");
    }
    let (_, public) = app.get("/api/v1/audit/public-key", &token).await;
    let pem = cli.path("audit.pem");
    std::fs::write(&pem, public["pem"].as_str().unwrap()).unwrap();
    cli.ok(
        &[
            "backup",
            "verify",
            "--file",
            file_arg,
            "--public-key",
            pem.to_str().unwrap(),
        ],
        "",
    )
    .await;
    // With two shares (a key and a passphrase), to the end of every record.
    let out = cli
        .ok(
            &[
                "backup",
                "verify",
                "--file",
                file_arg,
                "--share",
                share("ann").to_str().unwrap(),
                "--share",
                share("bob").to_str().unwrap(),
                "--custodian-key",
                ann_key.to_str().unwrap(),
                "--passphrase-stdin",
                "-o",
                "json",
            ],
            &format!("{BOB_PASSPHRASE}\n"),
        )
        .await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["contents"]["credential_secrets"], 1, "{report:#}");

    // One flipped byte anywhere is caught without any share.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let flipped = cli.path("flipped.khbk");
    std::fs::write(&flipped, &bytes).unwrap();
    let ran = cli
        .run(
            &["backup", "verify", "--file", flipped.to_str().unwrap()],
            "",
        )
        .await;
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    assert!(ran.err.contains("damaged or was altered"), "{}", ran.err);

    // Restores the CLI refuses (exit 2) before writing anything.
    let target = cli.path("restored");
    std::fs::create_dir(&target).unwrap();
    let one = restore(
        &target,
        None,
        &[
            "--file",
            file_arg,
            "--share",
            share("ann").to_str().unwrap(),
            "--custodian-key",
            ann_key.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert_eq!(one.code, Some(2), "{}", one.err);
    assert!(
        one.err.contains("1 share(s) given") && one.err.contains("needs 2"),
        "{}",
        one.err
    );
    assert!(is_empty_dir(&target), "a refused restore wrote something");

    let wrong = "not bob's passphrase at all";
    let ran = restore(
        &target,
        None,
        &[
            "--file",
            file_arg,
            "--share",
            share("bob").to_str().unwrap(),
            "--share",
            share("cy").to_str().unwrap(),
            "--passphrase-stdin",
        ],
        &format!("{wrong}\n{CY_PASSPHRASE}\n"),
    )
    .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("passphrase is wrong"), "{}", ran.err);
    assert!(!ran.err.contains(wrong) && !ran.err.contains(CY_PASSPHRASE));
    assert!(is_empty_dir(&target), "a refused restore wrote something");

    // A key share without its key file.
    let ran = restore(
        &target,
        None,
        &[
            "--file",
            file_arg,
            "--share",
            share("ann").to_str().unwrap(),
            "--share",
            share("cy").to_str().unwrap(),
            "--passphrase-stdin",
        ],
        &format!("{CY_PASSPHRASE}\n"),
    )
    .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("--custodian-key"), "{}", ran.err);

    // A share of another backup.
    let second = cli.path("second.khbk");
    let second_shares = cli.path("second-shares");
    std::fs::create_dir(&second_shares).unwrap();
    cli.ok(
        &[
            "backup",
            "create",
            "--file",
            second.to_str().unwrap(),
            "--shares-dir",
            second_shares.to_str().unwrap(),
        ],
        "",
    )
    .await;
    let ran = restore(
        &target,
        None,
        &[
            "--file",
            file_arg,
            "--share",
            share("ann").to_str().unwrap(),
            "--share",
            second_shares.join("cy.share").to_str().unwrap(),
            "--custodian-key",
            ann_key.to_str().unwrap(),
            "--passphrase-stdin",
        ],
        &format!("{CY_PASSPHRASE}\n"),
    )
    .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("not of this backup"), "{}", ran.err);
    assert!(is_empty_dir(&target), "a refused restore wrote something");

    // Files already there are never overwritten.
    let ran = cli
        .run(
            &["backup", "shares", &id, "--dir", shares.to_str().unwrap()],
            "",
        )
        .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("exists already"), "{}", ran.err);
    let ran = cli
        .run(&["backup", "download", &id, "--file", file_arg], "")
        .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    let again = cli.path("again.khbk");
    cli.ok(
        &["backup", "download", &id, "--file", again.to_str().unwrap()],
        "",
    )
    .await;
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let out = cli.ok(&["backup", "list"], "").await;
    assert!(
        out.contains(&id) && out.contains("2 of ann, bob, cy"),
        "{out}"
    );
}

/// `audit archive --up-to-seq` makes a signed archive the API lists, and
/// `audit archives` shows it.
#[tokio::test]
async fn audit_archive_up_to_a_sequence_number() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let cli = Cli::new(&app);
    cli.login_both().await;
    let out = cli
        .ok(&["audit", "archive", "--up-to-seq", "3", "-o", "json"], "")
        .await;
    let archive: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(archive["last_seq"], 3, "{archive:#}");
    let (status, archives) = app.get("/api/v1/audit/archives", &token).await;
    assert_eq!(status, StatusCode::OK, "{archives}");
    assert_eq!(archives[0]["id"], archive["id"], "{archives:#}");
    assert_eq!(archives[0]["first_seq"], 1);
    let out = cli.ok(&["audit", "archives"], "").await;
    assert!(out.contains(archive["file"].as_str().unwrap()), "{out}");
    // Nothing more up to 3: said, not an error.
    let out = cli.ok(&["audit", "archive", "--up-to-seq", "3"], "").await;
    assert!(out.contains("Nothing to archive"), "{out}");
    let ran = cli.run(&["audit", "archive"], "").await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
}

/// A restore through the CLI into a fresh data directory and database, on
/// two key custodians' shares: the restored server starts, its
/// administrators log in as before, the credential secret opens, and the
/// audit log records the restore and still verifies.
#[tokio::test]
async fn a_cli_restore_into_a_fresh_installation_starts() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws1").await;
    let cli = Cli::new(&app);
    cli.login_both().await;
    let mut custodians = vec![];
    for name in ["ann", "bob"] {
        let key = cli.path(&format!("{name}.key"));
        let out = cli
            .ok(
                &[
                    "backup",
                    "custodian-key",
                    "--out",
                    key.to_str().unwrap(),
                    "-o",
                    "json",
                ],
                "",
            )
            .await;
        let public: Value = serde_json::from_str(&out).unwrap();
        custodians.push(format!("{name}={}", public["public_key"].as_str().unwrap()));
    }
    cli.ok(
        &[
            "backup",
            "custodians",
            "set",
            "--threshold",
            "2",
            "--custodian",
            &custodians[0],
            "--custodian",
            &custodians[1],
        ],
        "",
    )
    .await;
    let file = cli.path("backup.khbk");
    let shares = cli.path("shares");
    std::fs::create_dir(&shares).unwrap();
    let out = cli
        .ok(
            &[
                "backup",
                "create",
                "--file",
                file.to_str().unwrap(),
                "--shares-dir",
                shares.to_str().unwrap(),
                "-o",
                "json",
            ],
            "",
        )
        .await;
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["backup"]["id"].as_str().unwrap().to_owned();

    let target = app.sibling(|_| {}, None).await;
    let ran = restore(
        &target.data_dir(),
        Some(&target.db),
        &[
            "--file",
            file.to_str().unwrap(),
            "--share",
            shares.join("ann.share").to_str().unwrap(),
            "--share",
            shares.join("bob.share").to_str().unwrap(),
            "--custodian-key",
            cli.path("ann.key").to_str().unwrap(),
            "--custodian-key",
            cli.path("bob.key").to_str().unwrap(),
            "-o",
            "json",
        ],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.err, ran.out);
    let report: Value = serde_json::from_str(&ran.out).unwrap();
    assert_eq!(report["backup_id"], id.as_str(), "{report:#}");
    assert_eq!(report["credentials"], 1, "{report:#}");
    assert_eq!(report["custodians"], serde_json::json!(["ann", "bob"]));

    let restored = target.start().await;
    let token = restored.dual_session_again().await;
    let (status, credentials) = restored.get("/api/v1/credentials", &token).await;
    assert_eq!(status, StatusCode::OK, "{credentials}");
    assert!(credentials.to_string().contains("aws1"), "{credentials:#}");
    let summaries = restored.audit_summaries(&token).await;
    assert!(
        summaries
            .iter()
            .any(|s| s == &format!("System | Restored from backup {id}")),
        "{summaries:#?}"
    );
    let (status, verified) = restored.get("/api/v1/audit/verify", &token).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["ok"], true, "{verified:#}");
}
