//! `keyhold`: the command-line client of the keyhold key management server,
//! and the server itself (`keyhold serve`).

mod approvals;
mod audit;
mod backup;
mod client;
mod configuration;
mod credentials;
mod drift;
mod error;
mod export_verification;
mod groups;
mod identities;
mod input;
mod jobs;
mod keys;
mod manuals;
mod output;
mod poll;
mod session;
mod session_file;
mod xks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyhold_server::ServeArgs;
use secrecy::ExposeSecret;
use serde::Serialize;
use zeroize::Zeroizing;

use client::{Context, DEFAULT_URL};
use error::CliError;
use output::{OutputFormat, Table};

/// jemalloc, for Rust's allocations and (through the crate's malloc
/// override) SQLite's: see crates/cli/Cargo.toml.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  failure: the server is not reachable or failed, the audit chain is broken, a local I/O error
  2  usage error or bad input, or a request the server refused (not logged in, not allowed,
     not found, conflict, invalid value)
  130  Ctrl-C stopped following a job (--wait, job watch); the job goes on in the server

Following a job (--wait, job watch) exits 0 if it succeeded and 1 if it failed or was
cancelled.

Passwords are never taken from arguments: give them on stdin with --password-stdin, or
type them when asked.";

/// keyhold: bring your own key into AWS KMS.
///
/// Keys are generated in keyhold's keystore, pushed into AWS KMS, rotated on
/// schedule, and every action is audited. Sensitive actions need two
/// identities in one session (dual control): log in twice.
#[derive(Debug, Parser)]
#[command(name = "keyhold", version, after_help = EXIT_CODES, propagate_version = true)]
struct Cli {
    /// The keyhold server's base URL.
    #[arg(long, global = true, env = "KEYHOLD_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,
    /// How to print results: aligned tables, or JSON with the API's field names.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Where the session token is kept [default: $XDG_CONFIG_HOME/keyhold/session.json,
    /// else ~/.config/keyhold/session.json].
    #[arg(long, global = true, env = "KEYHOLD_SESSION_FILE", value_name = "PATH")]
    session_file: Option<PathBuf>,
    /// Also trust this CA certificate (PEM) for an https:// --url, such as the
    /// private CA that signed the server's certificate; the system's trusted
    /// CAs are always trusted.
    #[arg(
        long,
        global = true,
        env = "KEYHOLD_CA_CERTIFICATE",
        value_name = "PATH"
    )]
    ca_certificate: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Initialise an empty data directory and print the default administrators'
    /// one-time passwords.
    Init(#[command(flatten)] ServeArgs),
    /// Run the server (initialising an empty data directory first).
    Serve(#[command(flatten)] ServeArgs),
    /// Change an identity's password (needed before its first login).
    Passwd(session::PasswdArgs),
    /// Log in; logging in again with another identity joins the session (dual control).
    Login(session::LoginArgs),
    /// End the session.
    Logout,
    /// Show the identities in the current session.
    Whoami,
    /// Identities: the people and service accounts that log in.
    #[command(subcommand)]
    Identity(identities::IdentityCommand),
    /// Cloud credentials (AWS access keys, or the server's default credential chain).
    #[command(subcommand)]
    Credential(credentials::CredentialCommand),
    /// Key groups: AWS properties and rotation schedule of their keys.
    #[command(subcommand)]
    Group(groups::GroupCommand),
    /// Keys (HSM protected, pushed into AWS KMS).
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Jobs: the Force Rotate, Synchronize, drift check and reconcile runs,
    /// their progress and messages.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Drift: what changed in AWS KMS behind keyhold's back (checks, findings),
    /// and the reconcile plan that puts it right.
    #[command(subcommand)]
    Drift(drift::DriftCommand),
    /// The audit log: list, verify its hash chain, export.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Quorum approvals: requests held for approval, answering them, and the
    /// approval policies.
    #[command(subcommand)]
    Approval(approvals::ApprovalCommand),
    /// Backups: custodians, making and downloading backups and their
    /// shares, checking a backup file, restoring one (server stopped).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// External key stores: keyhold as the XKS proxy AWS KMS calls for every
    /// encrypt and decrypt of a KMS key whose material stays in keyhold's
    /// keystore (stores, their SigV4 credentials, their keys).
    #[command(subcommand)]
    Xks(xks::XksCommand),
    /// The keystore of a data directory (run with the server stopped).
    #[command(subcommand)]
    Keystore(KeystoreCommand),
    /// Server settings (dual control, lockout, session lifetime, drift checks);
    /// `show` by default.
    Config {
        #[command(subcommand)]
        command: Option<configuration::ConfigCommand>,
    },
    /// Print the shell completion script (for example:
    /// keyhold completions bash > /etc/bash_completion.d/keyhold).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (keyhold.1 and one per subcommand) into a directory.
    Manpages {
        /// An existing directory, such as /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeystoreCommand {
    /// Move keys, credential secrets and the audit MAC key from the software
    /// keystore into the PKCS#11 token configured with --keystore pkcs11.
    /// Key material travels wrapped under a transport key the token makes;
    /// check digits are compared; each move is audited; the software keystore
    /// is removed at the end. Interrupted? Run it again: it resumes.
    Migrate(#[command(flatten)] ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context {
        url: cli.url,
        output: cli.output,
        session_file: cli.session_file,
        ca_certificate: cli.ca_certificate,
    };
    match run(&ctx, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error::exit_code_of(&error);
            let reported = error
                .chain()
                .any(|e| matches!(e.downcast_ref::<CliError>(), Some(CliError::Reported(_))));
            if !reported {
                eprintln!("error: {}", output::clean(&format!("{error:#}")));
            }
            ExitCode::from(code)
        }
    }
}

async fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init(ctx.output, args).await,
        Command::Serve(args) => keyhold_server::run_serve(args).await,
        Command::Passwd(args) => session::passwd(ctx, args).await,
        Command::Login(args) => session::login(ctx, args).await,
        Command::Logout => session::logout(ctx).await,
        Command::Whoami => session::whoami(ctx).await,
        Command::Identity(command) => identities::run(ctx, command).await,
        Command::Credential(command) => credentials::run(ctx, command).await,
        Command::Group(command) => groups::run(ctx, command).await,
        Command::Key(command) => keys::run(ctx, command).await,
        Command::Job(command) => jobs::run(ctx, command).await,
        Command::Drift(command) => drift::run(ctx, command).await,
        Command::Audit(command) => audit::run(ctx, command).await,
        Command::Approval(command) => approvals::run(ctx, command).await,
        Command::Backup(command) => backup::run(ctx, command).await,
        Command::Xks(command) => xks::run(ctx, command).await,
        Command::Config { command } => configuration::run(ctx, command).await,
        Command::Completions { shell } => manuals::completions(shell),
        Command::Manpages { dir } => manuals::manpages(&dir),
        Command::Keystore(KeystoreCommand::Migrate(args)) => {
            let report = keyhold_server::run_keystore_migrate(args).await?;
            match ctx.output {
                OutputFormat::Json => output::emit(&format!(
                    "{}\n",
                    serde_json::json!({
                        "keys_moved": report.keys_moved,
                        "keys_in_token_already": report.keys_in_token_already,
                        "credentials_moved": report.credentials_moved,
                        "software_keystore_removed": report.software_keystore_removed,
                    })
                )),
                OutputFormat::Table => {
                    output::emit(&format!("Keystore migration done: {report}.\n"))
                }
            }
        }
    }
}

const INIT_NOTE: &str = "These one-time passwords are shown only now. Each identity must change its password \
before it can log in: keyhold passwd --user NAME";

/// `keyhold init`: prints the default administrators' one-time passwords, the
/// only time they are shown.
async fn init(format: OutputFormat, args: ServeArgs) -> anyhow::Result<()> {
    let passwords = keyhold_server::run_init(args).await?;
    match format {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Shown<'a> {
                identities: Vec<ShownIdentity<'a>>,
            }
            #[derive(Serialize)]
            struct ShownIdentity<'a> {
                name: &'a str,
                password: &'a str,
            }
            let shown = Shown {
                identities: passwords
                    .iter()
                    .map(|p| ShownIdentity {
                        name: &p.name,
                        password: p.password.expose_secret(),
                    })
                    .collect(),
            };
            let text = Zeroizing::new(serde_json::to_string(&shown)?);
            output::emit(&format!("{}\n", text.as_str()))?;
            eprintln!("{INIT_NOTE}");
        }
        OutputFormat::Table => {
            let mut table = Table::new(&["Identity", "One-time password"]);
            for p in &passwords {
                table.push(vec![p.name.clone(), p.password.expose_secret().to_owned()]);
            }
            let text = Zeroizing::new(table.render());
            output::emit(text.as_str())?;
            output::emit(&format!("\n{INIT_NOTE}\n"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scripted_core_parses() {
        for line in [
            "keyhold init --output json",
            "keyhold serve --data-dir /tmp/x",
            "keyhold passwd --user Admin1 --password-stdin",
            "keyhold login --user Admin2 --password-stdin",
            "keyhold credential import --name aws1 --csv creds.csv --endpoint http://127.0.0.1:4566",
            "keyhold credential add --name aws-role --default-chain \
             --role-arn arn:aws:iam::123456789012:role/keyhold --endpoint http://127.0.0.1:4566",
            "keyhold credential add --name aws-chain --default-chain",
            "keyhold group create --name ig-demo --credential aws1 --region eu-west-1 --alias alias/ig-demo \
             --description d --active-key-id 0b5e1c1e-0000-4000-8000-000000000000 --policy p.json \
             --rotate-every 30d --valid-for 1y --disable-after-rotate",
            "keyhold group show ig-demo -o json",
            "keyhold key list --group ig-demo --output json",
            "keyhold group rotate ig-demo",
            "keyhold group rotate ig-demo --wait -o json",
            "keyhold key sync bbb61d9f-0fba-4585-8c31-988cbc999849 --no-update-policy \
             --no-import-material --delete-material --wait",
            "keyhold job list --limit 20",
            "keyhold job show 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "keyhold job watch 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11 --output json",
            "keyhold job retry 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11 --wait",
            "keyhold job cancel 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "keyhold audit list --from 2026-11-01 --limit 5",
            "keyhold audit verify",
            "keyhold audit export --file audit.ndjson",
            "keyhold config",
            "keyhold approval list --status pending --limit 5",
            "keyhold approval show 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11 -o json",
            "keyhold approval approve 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "keyhold approval deny 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11 --reason not-now",
            "keyhold approval result 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "keyhold approval policies",
            "keyhold approval policies set --file -",
            "keyhold config set --dual-control off",
            "keyhold config set --drift-check-hours 0 --drift-expiry-days 14",
            "keyhold drift status -o json",
            "keyhold drift list --group ig-demo --all --limit 20",
            "keyhold drift list --key bbb61d9f-0fba-4585-8c31-988cbc999849",
            "keyhold drift show 5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11",
            "keyhold drift check --group ig-demo --wait",
            "keyhold drift check --all --wait -o json",
            "keyhold drift plan --group ig-demo",
            "keyhold drift reconcile --group ig-demo",
            "keyhold drift reconcile --group ig-demo --plan 3f9a --wait",
            "keyhold group create --name g2 --credential aws1 --region eu-west-1 --alias alias/g2 \
             --self-heal on",
            "keyhold group update ig-demo --self-heal off",
            "keyhold keystore migrate --data-dir /srv/keyhold --keystore pkcs11 \
             --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token-label keyhold",
            "keyhold --url http://127.0.0.1:9000 whoami",
            "keyhold backup custodian-key --out ann.key",
            "keyhold backup custodians set --threshold 2 --custodian ann=00 \
             --passphrase-custodian bob --passphrase-custodian cy --passphrase-stdin",
            "keyhold backup create --file b.khbk --shares-dir shares -o json",
            "keyhold backup verify --file b.khbk --public-key audit.pem",
            "keyhold backup restore --file b.khbk --share ann.share --share bob.share \
             --custodian-key ann.key --passphrase-stdin --data-dir /srv/keyhold",
            "keyhold audit archive --up-to-seq 100",
            "keyhold audit archive --older-than-days 365",
            "keyhold audit archives",
            "keyhold xks store create --name payments --path-prefix /xks/payments --quota 900 \
             --mtls-subject cks.kms.eu-west-1.amazonaws.com --mtls-ca ca.pem --kms-config-out kms.json",
            "keyhold xks store list -o json",
            "keyhold xks store show payments",
            "keyhold xks store update payments --quota 1800 --no-mtls",
            "keyhold xks store delete payments",
            "keyhold xks credential rotate --store payments --kms-config-out new.json",
            "keyhold xks credential revoke --store payments --access-key-id ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "keyhold xks key create --store payments --description d --usage decrypt --disabled \
             --allow-principal arn:aws:iam::111122223333:role/app-* --allow-principal arn:aws:iam::111122223333:root \
             --allow-kms-key-arn arn:aws:kms:eu-west-1:111122223333:key/* --allow-operation Decrypt \
             --allow-source-vpc vpc-0abc",
            "keyhold xks key list --store payments",
            "keyhold xks key show 7907323e-ea39-4542-b198-ef4a4ca5793c",
            "keyhold xks key enable 7907323e-ea39-4542-b198-ef4a4ca5793c",
            "keyhold xks key disable 7907323e-ea39-4542-b198-ef4a4ca5793c",
            "keyhold xks key update 7907323e-ea39-4542-b198-ef4a4ca5793c --usage encrypt_decrypt --no-rule",
            "keyhold xks key delete 7907323e-ea39-4542-b198-ef4a4ca5793c",
        ] {
            let args: Vec<&str> = line.split_whitespace().collect();
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn credential_add_names_its_kind() {
        assert!(Cli::try_parse_from(["keyhold", "credential", "add", "--name", "a"]).is_err());
        assert!(
            Cli::try_parse_from([
                "keyhold",
                "credential",
                "add",
                "--name",
                "a",
                "--role-arn",
                "arn:aws:iam::123456789012:role/keyhold",
            ])
            .is_err()
        );
    }

    #[test]
    fn xks_options_that_belong_together_are_asked_for_together() {
        let parses = |line: &str| {
            let args: Vec<&str> = line.split_whitespace().collect();
            Cli::try_parse_from(&args).is_ok()
        };
        assert!(!parses(
            "keyhold xks store create --name a --mtls-subject cks.kms.eu-west-1.amazonaws.com"
        ));
        assert!(!parses(
            "keyhold xks store create --name a --mtls-ca ca.pem"
        ));
        assert!(!parses(
            "keyhold xks store update a --no-mtls --mtls-subject s --mtls-ca c"
        ));
        assert!(!parses("keyhold xks key create --store a --usage sign"));
        assert!(!parses(
            "keyhold xks key update k --no-rule --allow-operation Decrypt"
        ));
        assert!(!parses("keyhold xks credential rotate payments"));
        assert!(!parses(
            "keyhold xks store create --name a --secret-access-key x"
        ));
    }

    #[test]
    fn passwords_are_not_arguments() {
        assert!(
            Cli::try_parse_from(["keyhold", "login", "--user", "a", "--password", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["keyhold", "passwd", "--user", "a", "--new-password", "x"])
                .is_err()
        );
    }
}
