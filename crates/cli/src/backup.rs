//! `keyhold backup custodian-key | custodians | create | list | show |
//! download | shares | verify | restore`: *Backups*. A backup is one
//! encrypted file whose key is split among custodians, any M of N of whom
//! open it together; each custodian's share is encrypted to their own key.
//!
//! Secrets stay on the machine they are typed on: a custodian's private key
//! is made here and written to a file only they keep, a passphrase
//! custodian's key is derived here (Argon2id) and only its public key and
//! salt go to the server, and a restore combines the shares here. None of
//! them is ever printed or put in an error message.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use keyhold_api::{
    BackupSharesView, BackupView, CustodianRequest, CustodianView, CustodiansView,
    PassphraseKdfView, SetCustodiansRequest,
};
use keyhold_backup::{
    BackupKey, BackupReader, CustodianSecret, HashingWriter, Header, Record, Share, ShareFile,
};
use keyhold_core::backup::{CustodianName, PassphraseKdf};
use keyhold_server::ServeArgs;
use reqwest::Method;
use secrecy::SecretString;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::client::{Client, Context, segment};
use crate::error::{CliError, EXIT_FAILURE};
use crate::input;
use crate::jobs::EXIT_INTERRUPTED;
use crate::output::{self, OutputFormat, Table, Tabular};
use crate::poll::{self, Ended, Seen};

/// How often a running backup is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Largest share or custodian key file read (both are under 1 KiB).
const MAX_SMALL_FILE: usize = 64 * 1024;
/// Shortest passphrase a custodian may enrol: the share file carries the
/// salt, so anyone holding it can guess passphrases offline.
const MIN_PASSPHRASE_CHARS: usize = 12;

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Make a custodian key: the private key goes into a new file (mode
    /// 0600) that only its custodian keeps; the public key is printed, for
    /// the administrators to enrol with `backup custodians set --custodian`.
    CustodianKey {
        /// The new private key file (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The custodians who together open a backup; `show` by default.
    Custodians {
        #[command(subcommand)]
        command: Option<CustodiansCommand>,
    },
    /// Make a backup now (dual control). With --file and --shares-dir, wait
    /// for it, download the file (its SHA-256 checked) and write each
    /// custodian's share as DIR/<custodian>.share.
    Create(CreateArgs),
    /// List the backups, newest first.
    List {
        /// How many at most [server default: 100; at most 1000].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show a backup's record.
    Show {
        /// The backup's id.
        id: String,
    },
    /// Download a backup's file (encrypted; its SHA-256 is checked).
    Download {
        /// The backup's id.
        id: String,
        /// The new file (never overwritten).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Write a backup's shares, one DIR/<custodian>.share per custodian,
    /// each encrypted to that custodian alone: hand each to its custodian.
    Shares {
        /// The backup's id.
        id: String,
        /// An existing directory; no share file in it is overwritten.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check a backup file offline: its structure, SHA-256 and signature
    /// (no share needed); with --share, also decrypt it to its end.
    Verify(VerifyArgs),
    /// Restore a backup into an empty data directory and database, with
    /// the server stopped: at least the backup's threshold of custodian
    /// shares open it. Takes the same flags as `keyhold serve`.
    Restore(Box<RestoreArgs>),
}

#[derive(Debug, clap::Subcommand)]
pub enum CustodiansCommand {
    /// Show the custodians and how many of them open a backup.
    Show,
    /// Replace the custodians (dual control). Custodians with a key file
    /// are listed first, in the order given, then passphrase custodians.
    Set(SetCustodiansArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetCustodiansArgs {
    /// How many custodians together open a backup (at least 2).
    #[arg(long, value_name = "M")]
    pub threshold: u8,
    /// A custodian with a key from `keyhold backup custodian-key`: its name
    /// and the public key it printed; repeat.
    #[arg(long = "custodian", value_name = "NAME=PUBLIC_KEY")]
    pub custodians: Vec<String>,
    /// A custodian whose key comes from a passphrase, typed here (twice)
    /// and never sent: only the derived public key is; repeat.
    #[arg(long = "passphrase-custodian", value_name = "NAME")]
    pub passphrase_custodians: Vec<String>,
    /// Read the passphrases from stdin, one line per --passphrase-custodian
    /// in order, instead of asking on the terminal.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Download the finished backup's file to this new file.
    #[arg(long, value_name = "FILE", requires = "shares_dir")]
    pub file: Option<PathBuf>,
    /// Write the finished backup's shares into this existing directory.
    #[arg(long, value_name = "DIR", requires = "file")]
    pub shares_dir: Option<PathBuf>,
    /// Without --file: wait until the backup ends and print its record
    /// (exits 1 if it failed).
    #[arg(long, conflicts_with = "file")]
    pub wait: bool,
}

/// Where the custodians' shares and what opens them come from.
#[derive(Debug, Default, clap::Args)]
pub struct ShareArgs {
    /// A custodian's share file (<custodian>.share); repeat, at least as
    /// many as the backup's threshold.
    #[arg(long = "share", value_name = "FILE")]
    pub shares: Vec<PathBuf>,
    /// The private key file of a custodian whose share is for a key
    /// (`keyhold backup custodian-key`); repeat. The passphrase custodians
    /// are asked for their passphrase instead.
    #[arg(long = "custodian-key", value_name = "FILE")]
    pub custodian_keys: Vec<PathBuf>,
    /// Read the passphrases from stdin, one line per passphrase
    /// custodian's share in the order of --share, instead of asking.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The audit public key (PEM, `keyhold audit public-key`) the file
    /// must be signed with; without it, the key the file names.
    #[arg(long, value_name = "PEM_FILE")]
    pub public_key: Option<PathBuf>,
    #[command(flatten)]
    pub shares: ShareArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub shares: ShareArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Tabular for BackupView {
    fn headers() -> &'static [&'static str] {
        &[
            "ID",
            "Status",
            "Trigger",
            "By",
            "Started",
            "Finished",
            "Size",
            "Keys",
            "Custodians",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.status.clone(),
            self.trigger.clone(),
            self.initiated_by.clone(),
            output::time(&self.started_at),
            output::opt_time(self.finished_at.as_deref()),
            self.size.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            self.keys.map_or_else(|| "-".to_owned(), |k| k.to_string()),
            quorum(self.threshold, &self.custodians),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ID", self.id.clone()),
            ("Status", self.status.clone()),
            ("Trigger", self.trigger.clone()),
            ("Initiated by", self.initiated_by.clone()),
            ("Node", self.node.clone()),
            ("Started", output::time(&self.started_at)),
            ("Finished", output::opt_time(self.finished_at.as_deref())),
            ("File", self.file.clone()),
            (
                "Size",
                self.size
                    .map_or_else(|| "-".to_owned(), |s| format!("{s} bytes")),
            ),
            ("SHA-256", output::or_dash(self.sha256.as_deref())),
            (
                "Keys",
                self.keys.map_or_else(|| "-".to_owned(), |k| k.to_string()),
            ),
            ("Custodians", quorum(self.threshold, &self.custodians)),
            ("Error", output::or_dash(self.error.as_deref())),
        ]
    }
}

/// `2 of Ann, Bob, Cy`.
fn quorum(threshold: u8, custodians: &[String]) -> String {
    if custodians.is_empty() {
        return "-".to_owned();
    }
    format!("{threshold} of {}", custodians.join(", "))
}

impl Tabular for CustodianView {
    fn headers() -> &'static [&'static str] {
        &["Custodian", "Public Key", "From Passphrase"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.public_key.clone(),
            output::yes_no(self.passphrase),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

fn render_custodians(view: &CustodiansView) -> String {
    if view.custodians.is_empty() || view.threshold == 0 {
        return "No backup custodians are set: set them with `keyhold backup custodians set --threshold M --custodian NAME=PUBLIC_KEY ... --passphrase-custodian NAME ...`.\n".to_owned();
    }
    let mut table = Table::new(CustodianView::headers());
    for custodian in &view.custodians {
        table.push(custodian.row());
    }
    format!(
        "{}\nAny {} of these {} custodians together open a backup.\n",
        table.render(),
        view.threshold,
        view.custodians.len()
    )
}

pub async fn run(ctx: &Context, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::CustodianKey { out } => custodian_key(ctx.output, &out),
        BackupCommand::Custodians { command } => {
            let client = ctx.authenticated()?;
            let view: CustodiansView = match command.unwrap_or(CustodiansCommand::Show) {
                CustodiansCommand::Show => client.get("/backups/custodians").await?,
                CustodiansCommand::Set(args) => {
                    let request = custodians_request(args)?;
                    client
                        .call(Method::PUT, "/backups/custodians", &request)
                        .await?
                }
            };
            match ctx.output {
                OutputFormat::Json => output::print_json(&view),
                OutputFormat::Table => output::emit(&render_custodians(&view)),
            }
        }
        BackupCommand::Create(args) => create(ctx, args).await,
        BackupCommand::List { limit } => {
            let client = ctx.authenticated()?;
            let backups: Vec<BackupView> = match limit {
                Some(limit) => client.get_query("/backups", &[("limit", limit)]).await?,
                None => client.get("/backups").await?,
            };
            output::print_list(ctx.output, &backups)
        }
        BackupCommand::Show { id } => {
            let backup: BackupView = ctx
                .authenticated()?
                .get(&format!("/backups/{}", segment(&id)))
                .await?;
            output::print_item(ctx.output, &backup)
        }
        BackupCommand::Download { id, file } => {
            ensure_absent(&file, "backup file")?;
            let client = ctx.authenticated()?;
            let backup: BackupView = client.get(&format!("/backups/{}", segment(&id))).await?;
            let size = download(&client, &backup, &file).await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&serde_json::json!({
                    "backup": backup,
                    "file": file,
                })),
                OutputFormat::Table => output::emit(&format!(
                    "Downloaded backup {} to {} ({size} bytes, SHA-256 {} checked).\n",
                    output::clean(&backup.id),
                    file.display(),
                    output::or_dash(backup.sha256.as_deref())
                )),
            }
        }
        BackupCommand::Shares { id, dir } => {
            check_dir(&dir)?;
            let client = ctx.authenticated()?;
            let written = write_shares(&client, &id, &dir).await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&serde_json::json!({
                    "backup": id,
                    "shares": written,
                })),
                OutputFormat::Table => output::emit(&render_shares_written(&written)),
            }
        }
        BackupCommand::Verify(args) => verify(ctx.output, args),
        BackupCommand::Restore(args) => restore(ctx.output, *args).await,
    }
}

// ---- custodian keys and custodians ----

fn custodian_key(format: OutputFormat, out: &Path) -> anyhow::Result<()> {
    ensure_absent(out, "custodian key file")?;
    let (secret, public_key) = keyhold_backup::generate_custodian_key()
        .map_err(|e| anyhow::anyhow!("cannot make a custodian key: {e}"))?;
    write_new_private(out, "custodian key file", secret.to_text().as_bytes())?;
    let fingerprint = secret.fingerprint();
    drop(secret);
    match format {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "file": out,
            "public_key": public_key,
            "fingerprint": fingerprint,
        })),
        OutputFormat::Table => output::emit(&format!(
            "Custodian key written to {} (mode 0600). Keep it private and safe: it opens your shares of every backup, and nothing else can.\n\n{}\nGive the public key to the administrators, who enrol you with:\n  keyhold backup custodians set --custodian YOUR_NAME={public_key} ...\n",
            out.display(),
            output::render_fields(&[
                ("Public key", public_key.clone()),
                ("Fingerprint", fingerprint),
            ])
        )),
    }
}

/// The request of `custodians set`: key custodians as given, then the
/// passphrase custodians, whose keys are derived here.
fn custodians_request(args: SetCustodiansArgs) -> anyhow::Result<SetCustodiansRequest> {
    if args.custodians.is_empty() && args.passphrase_custodians.is_empty() {
        return Err(CliError::Input(
            "name the custodians: --custodian NAME=PUBLIC_KEY for each key from `keyhold backup custodian-key`, --passphrase-custodian NAME for each who uses a passphrase".into(),
        )
        .into());
    }
    if args.passphrase_stdin && args.passphrase_custodians.is_empty() {
        return Err(CliError::Input(
            "--passphrase-stdin reads the passphrases of --passphrase-custodian NAME; none was named".into(),
        )
        .into());
    }
    let mut custodians = Vec::new();
    for raw in &args.custodians {
        custodians.push(key_custodian(raw)?);
    }
    for name in &args.passphrase_custodians {
        check_name(name)?;
    }
    let passphrases = read_new_passphrases(&args.passphrase_custodians, args.passphrase_stdin)?;
    for (name, passphrase) in args.passphrase_custodians.iter().zip(passphrases) {
        let kdf = keyhold_backup::new_passphrase_kdf()
            .map_err(|e| anyhow::anyhow!("custodian '{name}': {e}"))?;
        let secret = keyhold_backup::custodian_from_passphrase(&passphrase, &kdf)
            .map_err(|e| CliError::Input(format!("custodian '{name}': {e}")))?;
        custodians.push(CustodianRequest {
            name: name.clone(),
            public_key: Some(secret.public_key_hex()),
            passphrase: None,
            kdf: Some(kdf_view(&kdf)),
        });
    }
    Ok(SetCustodiansRequest {
        threshold: args.threshold,
        custodians,
    })
}

fn kdf_view(kdf: &PassphraseKdf) -> PassphraseKdfView {
    PassphraseKdfView {
        memory_kib: kdf.memory_kib,
        iterations: kdf.iterations,
        parallelism: kdf.parallelism,
        salt: kdf.salt.clone(),
    }
}

/// `NAME=PUBLIC_KEY`, checked here so a typo is caught before anything is sent.
fn key_custodian(raw: &str) -> Result<CustodianRequest, CliError> {
    let Some((name, key)) = raw.split_once('=') else {
        return Err(CliError::Input(format!(
            "--custodian '{}' is not NAME=PUBLIC_KEY: give the custodian's name, '=', and the public key `keyhold backup custodian-key` printed",
            output::clean(raw)
        )));
    };
    let (name, key) = (name.trim(), key.trim());
    check_name(name)?;
    if keyhold_backup::key_fingerprint(key).is_none() {
        return Err(CliError::Input(format!(
            "--custodian {name}: the public key must be the 64 hex digits `keyhold backup custodian-key` printed"
        )));
    }
    Ok(CustodianRequest {
        name: name.to_owned(),
        public_key: Some(key.to_ascii_lowercase()),
        passphrase: None,
        kdf: None,
    })
}

fn check_name(name: &str) -> Result<(), CliError> {
    CustodianName::parse(name).map(|_| ()).map_err(|e| {
        CliError::Input(format!(
            "custodian '{}': {}",
            output::clean(name),
            e.message
        ))
    })
}

/// Each passphrase custodian's new passphrase: typed twice on the
/// terminal, or one line of stdin each.
fn read_new_passphrases(names: &[String], from_stdin: bool) -> anyhow::Result<Vec<SecretString>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let labels: Vec<String> = names
        .iter()
        .map(|n| format!("passphrase of custodian {n}"))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    if from_stdin {
        let text = input::read_stdin()?;
        let what: Vec<&str> = labels.iter().map(String::as_str).collect();
        for (name, line) in names.iter().zip(input::password_lines(&text, &what)?) {
            out.push(strong_enough(name, line)?);
        }
        return Ok(out);
    }
    for name in names {
        let first = prompt_passphrase(&format!("Passphrase of custodian {name}: "))?;
        let again = prompt_passphrase(&format!("Passphrase of custodian {name} again: "))?;
        if *first != *again {
            return Err(CliError::Input(format!(
                "the two passphrases of custodian {name} differ; nothing was changed"
            ))
            .into());
        }
        out.push(strong_enough(name, first)?);
    }
    Ok(out)
}

fn strong_enough(name: &str, passphrase: Zeroizing<String>) -> Result<SecretString, CliError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(CliError::Input(format!(
            "the passphrase of custodian {name} is shorter than {MIN_PASSPHRASE_CHARS} characters: anyone holding a share can try passphrases offline, so choose a longer one (several words)"
        )));
    }
    Ok(SecretString::from(passphrase.as_str()))
}

fn prompt_passphrase(question: &str) -> anyhow::Result<Zeroizing<String>> {
    input::prompt_secret(question, "--passphrase-stdin", "passphrase")
}

// ---- create, download, shares ----

async fn create(ctx: &Context, args: CreateArgs) -> anyhow::Result<()> {
    let targets = match (args.file, args.shares_dir) {
        (Some(file), Some(dir)) => {
            ensure_absent(&file, "backup file")?;
            check_dir(&dir)?;
            Some((file, dir))
        }
        (None, None) => None,
        // clap requires both together; kept for a command built by hand.
        _ => {
            return Err(CliError::Input(
                "give both --file FILE and --shares-dir DIR, or neither".into(),
            )
            .into());
        }
    };
    let client = ctx.authenticated()?;
    let started: BackupView = client
        .call(Method::POST, "/backups", &serde_json::Map::new())
        .await?;
    let people = ctx.output == OutputFormat::Table;
    let Some((file, dir)) = targets else {
        if !args.wait {
            return match ctx.output {
                OutputFormat::Json => output::print_json(&started),
                OutputFormat::Table => output::emit(&format!(
                    "Backup {id} started.\n{}Follow it with `keyhold backup show {id}`; then download it with `keyhold backup download {id} --file FILE` and `keyhold backup shares {id} --dir DIR`.\n",
                    output::render_fields(&started.fields()),
                    id = output::clean(&started.id)
                )),
            };
        }
        if people {
            output::emit(&started_line(&started))?;
        }
        let done = wait_for(&client, &started.id).await?;
        output::print_item(ctx.output, &done)?;
        return ended_well(&done);
    };
    // Refused before waiting: the shares' names are known now.
    for custodian in &started.custodians {
        ensure_absent(&share_path(&dir, custodian)?, "share file")?;
    }
    if people {
        output::emit(&started_line(&started))?;
    }
    let done = wait_for(&client, &started.id).await?;
    if done.status != "succeeded" {
        match ctx.output {
            OutputFormat::Json => output::print_json(&done)?,
            OutputFormat::Table => output::emit(&output::render_fields(&done.fields()))?,
        }
        return ended_well(&done);
    }
    let size = download(&client, &done, &file).await?;
    let written = write_shares(&client, &done.id, &dir).await?;
    match ctx.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "backup": done,
            "file": file,
            "shares": written,
        })),
        OutputFormat::Table => output::emit(&format!(
            "Backup {} succeeded: {} key(s).\nFile:    {} ({size} bytes, SHA-256 {} checked)\n{}",
            output::clean(&done.id),
            done.keys.unwrap_or(0),
            file.display(),
            output::or_dash(done.sha256.as_deref()),
            render_shares_written(&written)
        )),
    }
}

fn started_line(backup: &BackupView) -> String {
    format!(
        "Backup {} started; its key is split among {}. Waiting for it to finish…\n",
        output::clean(&backup.id),
        output::clean(&quorum(backup.threshold, &backup.custodians))
    )
}

/// Exit status 1 when the backup did not succeed, its error on stderr.
fn ended_well(backup: &BackupView) -> anyhow::Result<()> {
    if backup.status == "succeeded" {
        return Ok(());
    }
    eprintln!(
        "error: backup {} {}: {}",
        output::clean(&backup.id),
        output::clean(&backup.status),
        output::clean(backup.error.as_deref().unwrap_or("no reason given"))
    );
    Err(CliError::Reported(EXIT_FAILURE).into())
}

/// Asks for the backup until it is no longer running. A few consecutive
/// failed polls end the wait with an error; Ctrl-C ends it with 130 (the
/// backup goes on in the server).
async fn wait_for(client: &Client, id: &str) -> anyhow::Result<BackupView> {
    let path = format!("/backups/{}", segment(id));
    let ended = poll::until_done::<BackupView>(client, &path, POLL_INTERVAL, |seen| {
        Ok(match seen {
            Seen::Answer(backup) => backup.status != "running",
            Seen::Retrying { error, delay, .. } => {
                eprintln!(
                    "warning: cannot ask for backup {id} ({}); trying again in {} s",
                    output::clean(&format!("{error:#}")),
                    delay.as_secs()
                );
                false
            }
        })
    })
    .await?;
    match ended {
        Ended::Done(backup) => Ok(backup),
        Ended::Interrupted => Err(stopped(id)),
        Ended::GaveUp(error) => Err(error.context(format!(
            "gave up waiting for backup {id}; it goes on in the server: `keyhold backup show {id}`"
        ))),
    }
}

fn stopped(id: &str) -> anyhow::Error {
    eprintln!(
        "Stopped waiting for backup {id}; it goes on in the server. Once it has succeeded: `keyhold backup download {id} --file FILE` and `keyhold backup shares {id} --dir DIR`."
    );
    CliError::Reported(EXIT_INTERRUPTED).into()
}

/// Streams the backup's file into the new file `path` and checks it is
/// the file the record describes; a file that is not is removed.
async fn download(client: &Client, backup: &BackupView, path: &Path) -> anyhow::Result<u64> {
    let Some(expected) = backup.sha256.clone() else {
        return Err(CliError::Input(format!(
            "backup {} is {}: only a succeeded backup has a file to download",
            output::clean(&backup.id),
            output::clean(&backup.status)
        ))
        .into());
    };
    let file = create_new_private(path, "backup file")?;
    let mut sink = HashingWriter::new(BufWriter::new(file));
    let result: anyhow::Result<u64> = async {
        client
            .download(&format!("/backups/{}/file", segment(&backup.id)), &mut sink)
            .await?;
        let (digest, bytes) = (sink.digest(), sink.written());
        let file = sink
            .into_inner()
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        let actual = hex::encode(digest);
        if !actual.eq_ignore_ascii_case(&expected) || backup.size.is_some_and(|s| s != bytes) {
            anyhow::bail!(
                "the downloaded file ({bytes} bytes, SHA-256 {actual}) is not backup {}'s ({} bytes, SHA-256 {}): it was changed on the server or on the way; it was removed. Download it again, or from another copy",
                output::clean(&backup.id),
                backup.size.map_or_else(|| "?".to_owned(), |s| s.to_string()),
                output::clean(&expected)
            );
        }
        Ok(bytes)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// One written share: whose, and where.
#[derive(Debug, Serialize)]
struct WrittenShare {
    custodian: String,
    file: PathBuf,
}

/// Writes `dir/<custodian>.share` for each custodian of the backup. Every
/// file is checked to be new before the first is written.
async fn write_shares(client: &Client, id: &str, dir: &Path) -> anyhow::Result<Vec<WrittenShare>> {
    let view: BackupSharesView = client
        .get(&format!("/backups/{}/shares", segment(id)))
        .await?;
    let mut planned = Vec::with_capacity(view.shares.len());
    for share in &view.shares {
        let parsed = ShareFile::parse(&share.text).map_err(|e| {
            anyhow::anyhow!(
                "the server sent custodian '{}''s share in a form this keyhold cannot read: {e}",
                output::clean(&share.custodian)
            )
        })?;
        if parsed.custodian != share.custodian || parsed.backup_id.to_string() != view.backup {
            anyhow::bail!(
                "the server sent a share labelled custodian '{}' of backup {} that is another's: nothing was written",
                output::clean(&share.custodian),
                output::clean(&view.backup)
            );
        }
        let path = share_path(dir, &share.custodian)?;
        ensure_absent(&path, "share file")?;
        planned.push((share, path));
    }
    let mut written = Vec::with_capacity(planned.len());
    for (share, path) in planned {
        write_new_private(&path, "share file", share.text.as_bytes())?;
        written.push(WrittenShare {
            custodian: share.custodian.clone(),
            file: path,
        });
    }
    Ok(written)
}

fn render_shares_written(written: &[WrittenShare]) -> String {
    let mut table = Table::new(&["Custodian", "Share File"]);
    for share in written {
        table.push(vec![
            share.custodian.clone(),
            share.file.display().to_string(),
        ]);
    }
    format!(
        "Shares:\n{}Hand each custodian their own share file (it is encrypted to them alone), and keep the backup file apart from the shares.\n",
        table.render()
    )
}

/// `dir/<custodian>.share`, for a name that is a plain file name.
fn share_path(dir: &Path, custodian: &str) -> anyhow::Result<PathBuf> {
    if CustodianName::parse(custodian).is_err() {
        anyhow::bail!(
            "the server names a custodian '{}' that is not a plain file name: nothing was written",
            output::clean(custodian)
        );
    }
    Ok(dir.join(format!("{custodian}.share")))
}

// ---- local files ----

fn ensure_absent(path: &Path, what: &str) -> Result<(), CliError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(CliError::Input(format!(
            "the {what} {} exists already: keyhold never overwrites one; name a new file, or move the old one away",
            path.display()
        )));
    }
    Ok(())
}

fn check_dir(dir: &Path) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(CliError::Input(format!(
            "{} is not a directory: create it first (share files are written into it)",
            dir.display()
        )));
    }
    Ok(())
}

/// A new file only its owner can read (mode 0600), never an existing one.
/// (Also where `xks` writes the AWS KMS console's file, which holds a secret.)
pub(crate) fn create_new_private(path: &Path, what: &str) -> Result<std::fs::File, CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Input(format!(
                "the {what} {} exists already: keyhold never overwrites one; name a new file, or move the old one away",
                path.display()
            ))
        } else {
            CliError::Input(format!("cannot create the {what} {}: {e}", path.display()))
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The umask may only have removed bits; make the mode exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| {
                CliError::Input(format!(
                    "cannot restrict the {what} {}: {e}",
                    path.display()
                ))
            })?;
    }
    Ok(file)
}

fn write_new_private(path: &Path, what: &str, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = create_new_private(path, what)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        anyhow::bail!("cannot write the {what} {}: {e}", path.display());
    }
    Ok(())
}

// ---- opening shares ----

/// The backup key from the shares given, and the custodians whose shares
/// opened it. Every refusal is bad input (exit 2), checked before any
/// passphrase is asked for when it can be.
fn open_shares(header: &Header, args: &ShareArgs) -> anyhow::Result<(BackupKey, Vec<String>)> {
    let backup = header.backup_id;
    let mut keys = Vec::with_capacity(args.custodian_keys.len());
    for path in &args.custodian_keys {
        let text = input::read_text_file(path, "custodian key file", MAX_SMALL_FILE)?;
        let key = CustodianSecret::parse(&text)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        keys.push(key);
    }
    let mut files = Vec::with_capacity(args.shares.len());
    for path in &args.shares {
        let text = input::read_text_file(path, "share file", MAX_SMALL_FILE)?;
        let share = ShareFile::parse(&text)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        if share.backup_id != backup {
            return Err(CliError::Input(format!(
                "{} is custodian '{}''s share of backup {}, not of this backup {backup}: give the shares written for backup {backup}",
                path.display(),
                output::clean(&share.custodian),
                share.backup_id
            ))
            .into());
        }
        if files
            .iter()
            .any(|(_, other): &(PathBuf, ShareFile)| other.index == share.index)
        {
            return Err(CliError::Input(format!(
                "{} is custodian '{}''s share, given twice: give each custodian's share once",
                path.display(),
                output::clean(&share.custodian)
            ))
            .into());
        }
        files.push((path.clone(), share));
    }
    let needed = usize::from(header.threshold);
    if files.len() < needed {
        let missing: Vec<&str> = header
            .custodians
            .iter()
            .enumerate()
            .filter(|(i, _)| !files.iter().any(|(_, s)| usize::from(s.index) == i + 1))
            .map(|(_, name)| name.as_str())
            .collect();
        return Err(CliError::Input(format!(
            "{} share(s) given, backup {backup} needs {needed} of its {} custodians': add --share FILE from {} more of {}; nothing was written",
            files.len(),
            header.custodians.len(),
            needed - files.len(),
            output::clean(&missing.join(", "))
        ))
        .into());
    }
    // Passphrase custodians in --share order; a key share needs its key file.
    let passphrase_names: Vec<String> = files
        .iter()
        .filter(|(_, s)| s.kdf.is_some())
        .map(|(_, s)| output::clean(&s.custodian))
        .collect();
    for (path, share) in files.iter().filter(|(_, s)| s.kdf.is_none()) {
        if !keys
            .iter()
            .any(|k| k.fingerprint().eq_ignore_ascii_case(&share.key_fingerprint))
        {
            return Err(CliError::Input(format!(
                "{} is custodian '{}''s share, for key {}: give that custodian's key file with --custodian-key FILE{}",
                path.display(),
                output::clean(&share.custodian),
                share.key_fingerprint,
                given_keys(&keys)
            ))
            .into());
        }
    }
    let mut passphrases = read_passphrases(&passphrase_names, args.passphrase_stdin)?.into_iter();
    let mut opened: Vec<Share> = Vec::with_capacity(files.len());
    let mut custodians = Vec::with_capacity(files.len());
    for (path, share) in &files {
        let refused =
            |e: keyhold_backup::BackupError| CliError::Input(format!("{}: {e}", path.display()));
        let open = match &share.kdf {
            Some(kdf) => {
                let passphrase = passphrases.next().ok_or_else(|| {
                    CliError::Input(format!(
                        "no passphrase for custodian '{}'",
                        output::clean(&share.custodian)
                    ))
                })?;
                let secret =
                    keyhold_backup::custodian_from_passphrase(&passphrase, kdf).map_err(refused)?;
                share.open(&secret).map_err(refused)?
            }
            None => {
                let key = keys
                    .iter()
                    .find(|k| k.fingerprint().eq_ignore_ascii_case(&share.key_fingerprint))
                    .ok_or_else(|| {
                        CliError::Input(format!("{}: no key file opens it", path.display()))
                    })?;
                share.open(key).map_err(refused)?
            }
        };
        custodians.push(share.custodian.clone());
        opened.push(open);
    }
    let key = keyhold_backup::combine(header, &opened)
        .map_err(|e| CliError::Input(format!("{e}; nothing was written")))?;
    Ok((key, custodians))
}

fn given_keys(keys: &[CustodianSecret]) -> String {
    if keys.is_empty() {
        return " (none was given)".to_owned();
    }
    let prints: Vec<String> = keys.iter().map(CustodianSecret::fingerprint).collect();
    format!(" (the keys given are {})", prints.join(", "))
}

/// The passphrase of each passphrase custodian whose share was given.
fn read_passphrases(names: &[String], from_stdin: bool) -> anyhow::Result<Vec<SecretString>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if from_stdin {
        let text = input::read_stdin()?;
        let labels: Vec<String> = names
            .iter()
            .map(|n| format!("passphrase of custodian {n}"))
            .collect();
        let what: Vec<&str> = labels.iter().map(String::as_str).collect();
        return Ok(input::password_lines(&text, &what)?
            .into_iter()
            .map(|line| SecretString::from(line.as_str()))
            .collect());
    }
    names
        .iter()
        .map(|name| {
            prompt_passphrase(&format!("Passphrase of custodian {name}: "))
                .map(|p| SecretString::from(p.as_str()))
        })
        .collect()
}

// ---- verify and restore ----

/// What `backup verify` found, for scripts.
#[derive(Debug, Serialize)]
struct VerifyReport {
    file: PathBuf,
    ok: bool,
    backup_id: String,
    created_at: String,
    created_by: String,
    node: String,
    keystore: String,
    database: String,
    schema_version: i64,
    threshold: u8,
    custodians: Vec<String>,
    audit_key_fingerprint: String,
    size: u64,
    sha256: String,
    /// With shares: what decrypting to the end counted.
    contents: Option<Contents>,
}

#[derive(Debug, Default, Serialize)]
struct Contents {
    records: u64,
    tables: u64,
    rows: u64,
    keys: u64,
    credential_secrets: u64,
    audit_archives: u64,
}

fn open_backup(path: &Path) -> Result<BufReader<std::fs::File>, CliError> {
    Ok(BufReader::new(input::open_regular_file(
        path,
        "backup file",
    )?))
}

/// The file's structure, hash and signature: a damaged or altered file
/// fails here (exit 1), before anyone is asked for a passphrase.
fn verified(
    path: &Path,
    expected: Option<&keyhold_core::audit::AuditPublicKey>,
) -> anyhow::Result<keyhold_backup::Verified> {
    keyhold_backup::verify_file(open_backup(path)?, expected)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn verify(format: OutputFormat, args: VerifyArgs) -> anyhow::Result<()> {
    let expected = args
        .public_key
        .as_deref()
        .map(crate::audit::read_public_key)
        .transpose()?;
    let verified = verified(&args.file, expected.as_ref())?;
    let header = &verified.header;
    let audit_key = header
        .audit_public_key()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let contents = if args.shares.shares.is_empty() {
        None
    } else {
        let (key, _) = open_shares(header, &args.shares)?;
        Some(decrypt_all(&args.file, &key)?)
    };
    let report = VerifyReport {
        file: args.file.clone(),
        ok: true,
        backup_id: header.backup_id.to_string(),
        created_at: header.created_at.clone(),
        created_by: header.created_by.clone(),
        node: header.node.clone(),
        keystore: header.keystore.clone(),
        database: header.database.clone(),
        schema_version: header.schema_version,
        threshold: header.threshold,
        custodians: header.custodians.clone(),
        audit_key_fingerprint: audit_key.fingerprint_hex(),
        size: verified.size,
        sha256: verified.sha256.clone(),
        contents,
    };
    match format {
        OutputFormat::Json => output::print_json(&report),
        OutputFormat::Table => output::emit(&render_verified(&report, expected.is_some())),
    }
}

fn render_verified(report: &VerifyReport, pinned: bool) -> String {
    let signer = if pinned {
        "the audit key given with --public-key"
    } else {
        "the audit key it names (pin it with --public-key to check whose)"
    };
    let mut text = format!(
        "Backup file {} is intact: its SHA-256 and signature by {signer} verify.\n\n",
        report.file.display()
    );
    let mut fields = vec![
        ("Backup ID", report.backup_id.clone()),
        ("Made", output::time(&report.created_at)),
        ("Made by", report.created_by.clone()),
        ("Node", report.node.clone()),
        (
            "Keystore",
            format!(
                "{} (database {}, schema {})",
                report.keystore, report.database, report.schema_version
            ),
        ),
        ("Custodians", quorum(report.threshold, &report.custodians)),
        ("Audit key", report.audit_key_fingerprint.clone()),
        ("Size", format!("{} bytes", report.size)),
        ("SHA-256", report.sha256.clone()),
    ];
    match &report.contents {
        Some(c) => {
            fields.push(("Keys", c.keys.to_string()));
            fields.push(("Credentials", c.credential_secrets.to_string()));
            fields.push(("Tables", format!("{} ({} rows)", c.tables, c.rows)));
            fields.push(("Audit archives", c.audit_archives.to_string()));
        }
        None => fields.push((
            "Keys",
            "unknown: the contents are encrypted (give --share to decrypt them to the end)"
                .to_owned(),
        )),
    }
    text.push_str(&output::render_fields(&fields));
    if report.contents.is_some() {
        text.push_str("\nThe shares open it and every record decrypts to the end.\n");
    }
    text
}

/// Decrypts every record to the end record and the verified trailer.
fn decrypt_all(path: &Path, key: &BackupKey) -> anyhow::Result<Contents> {
    let damaged = |e: keyhold_backup::BackupError| anyhow::anyhow!("{}: {e}", path.display());
    let mut reader = BackupReader::open(open_backup(path)?).map_err(damaged)?;
    reader.unlock(key).map_err(damaged)?;
    let mut contents = Contents::default();
    while let Some(record) = reader.next_record().map_err(damaged)? {
        contents.records += 1;
        match record {
            Record::Table { .. } => contents.tables += 1,
            Record::Row { .. } => contents.rows += 1,
            Record::KeyMaterial { .. } => contents.keys += 1,
            Record::CredentialSecret { .. } => contents.credential_secrets += 1,
            Record::AuditArchive { .. } => contents.audit_archives += 1,
            Record::AuditKeys(_) | Record::End { .. } => {}
        }
    }
    Ok(contents)
}

async fn restore(format: OutputFormat, args: RestoreArgs) -> anyhow::Result<()> {
    if args.shares.shares.is_empty() {
        return Err(CliError::Input(
            "give the custodians' share files with --share FILE, at least as many as the backup's threshold".into(),
        )
        .into());
    }
    let verified = verified(&args.file, None)?;
    let (key, custodians) = open_shares(&verified.header, &args.shares)?;
    let report =
        keyhold_server::run_backup_restore(args.serve, &args.file, key, &custodians).await?;
    match format {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "backup_id": report.backup_id.to_string(),
            "created_at": report.created_at,
            "keys": report.keys,
            "credentials": report.credentials,
            "audit_entries": report.audit_entries,
            "archives": report.archives,
            "custodians": custodians,
        })),
        OutputFormat::Table => output::emit(&format!(
            "Restore done: {report}.\nThe audit log records it, with the custodians {}. Approval requests still open in the backup were closed: ask again.\nStart the server with the same flags: keyhold serve ...\n",
            output::clean(&custodians.join(", "))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: BackupCommand,
    }

    fn parse(args: &[&str]) -> Result<BackupCommand, clap::Error> {
        Harness::try_parse_from(std::iter::once("backup").chain(args.iter().copied()))
            .map(|h| h.command)
    }

    const KEY: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    #[test]
    fn the_commands_parse_and_refuse_half_of_a_pair() {
        for line in [
            vec!["custodian-key", "--out", "ann.key"],
            vec!["custodians"],
            vec!["custodians", "show"],
            vec![
                "custodians",
                "set",
                "--threshold",
                "2",
                "--custodian",
                "ann=00",
                "--passphrase-custodian",
                "bob",
                "--passphrase-stdin",
            ],
            vec!["create"],
            vec!["create", "--wait"],
            vec!["create", "--file", "b.khbk", "--shares-dir", "s"],
            vec!["list", "--limit", "5"],
            vec!["show", "x"],
            vec!["download", "x", "--file", "f"],
            vec!["shares", "x", "--dir", "d"],
            vec!["verify", "--file", "f", "--public-key", "k.pem"],
            vec![
                "verify",
                "--file",
                "f",
                "--share",
                "a",
                "--share",
                "b",
                "--custodian-key",
                "k",
            ],
            vec![
                "restore",
                "--file",
                "f",
                "--share",
                "a",
                "--passphrase-stdin",
                "--data-dir",
                "/srv/keyhold",
            ],
        ] {
            if let Err(e) = parse(&line) {
                panic!("{line:?}: {e}");
            }
        }
        assert!(parse(&["create", "--file", "b"]).is_err());
        assert!(parse(&["create", "--shares-dir", "s"]).is_err());
        assert!(parse(&["create", "--file", "b", "--shares-dir", "s", "--wait"]).is_err());
        assert!(parse(&["custodian-key"]).is_err());
        assert!(parse(&["restore", "--share", "a"]).is_err());
    }

    #[test]
    fn key_custodians_are_checked_before_anything_is_sent() {
        let ok = key_custodian(&format!("ann = {}", KEY.to_uppercase())).unwrap();
        assert_eq!(ok.name, "ann");
        assert_eq!(ok.public_key.as_deref(), Some(KEY));
        assert!(ok.kdf.is_none() && ok.passphrase.is_none());
        for bad in [
            "ann",
            "ann=00",
            "=00",
            &format!("a/b={KEY}"),
            &format!(".x={KEY}"),
        ] {
            let err = key_custodian(bad).unwrap_err().to_string();
            assert!(err.contains("custodian"), "{bad}: {err}");
        }
    }

    #[test]
    fn short_passphrases_are_refused_without_being_echoed() {
        let err = strong_enough("bob", Zeroizing::new("short-one".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bob") && err.contains("12"), "{err}");
        assert!(!err.contains("short-one"), "{err}");
        assert!(strong_enough("bob", Zeroizing::new("a much longer one".into())).is_ok());
    }

    #[test]
    fn share_files_are_named_after_plain_custodian_names() {
        let dir = Path::new("/tmp/shares");
        assert_eq!(
            share_path(dir, "ann").unwrap(),
            PathBuf::from("/tmp/shares/ann.share")
        );
        for bad in ["../x", "a/b", ".hidden", ""] {
            assert!(share_path(dir, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn private_files_are_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_private(&path, "custodian key file", b"secret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = write_new_private(&path, "custodian key file", b"other")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists already"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert!(ensure_absent(&path, "x").is_err());
    }

    #[test]
    fn backups_show_their_quorum() {
        let backup = BackupView {
            id: "b1".into(),
            trigger: "manual".into(),
            initiated_by: "Admin1,Admin2".into(),
            status: "succeeded".into(),
            started_at: "2026-11-29T12:00:00Z".into(),
            finished_at: Some("2026-11-29T12:00:05Z".into()),
            file: "b1.khbk".into(),
            size: Some(1024),
            sha256: Some("ab".into()),
            keys: Some(3),
            threshold: 2,
            custodians: vec!["ann".into(), "bob".into(), "cy".into()],
            error: None,
            node: "node-a".into(),
        };
        let row = backup.row();
        assert_eq!(row[8], "2 of ann, bob, cy");
        let text = output::render_fields(&backup.fields());
        assert!(text.contains("Size:          1024 bytes\n"), "{text}");
        let none = render_custodians(&CustodiansView {
            threshold: 0,
            custodians: vec![],
        });
        assert!(none.contains("keyhold backup custodians set"), "{none}");
    }
}
