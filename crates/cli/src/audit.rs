//! `keyhold audit list | verify | export | archive | archives`: *Logging and
//! Reporting → Audit Logs*.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keyhold_api::{
    ArchiveRequest, AuditArchiveView, AuditEntryView, AuditPublicKeyView, AuditStreamView,
    AuditVerifyRequest, AuditVerifyView,
};
use keyhold_core::audit::{AuditPublicKey, Checkpoint, parse_checkpoints};
use reqwest::Method;
use serde::Serialize;

use crate::client::Context;
use crate::error::{CliError, EXIT_FAILURE};
use crate::input;
use crate::output::{self, OutputFormat, Tabular};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first.
    List(ListArgs),
    /// Check the whole log: hash chain, MACs, and signed checkpoints (the
    /// server's newest and any given with --checkpoint); exits 1 when it is
    /// broken, cut short or rewritten. With --export and --public-key, checks
    /// an exported log offline, without a server.
    Verify(VerifyArgs),
    /// Sign a checkpoint of the log's head now; the server also appends it to
    /// its checkpoint file. Keep it apart from the server: `audit verify
    /// --checkpoint` later proves the log still reaches it.
    Checkpoint {
        /// Append the checkpoint to this file instead of printing it.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print the public key that verifies checkpoints (PEM); pin it where
    /// you keep the checkpoints.
    PublicKey,
    /// Show the audit streams to a SIEM (syslog, JSON file) of the node
    /// answering: its state, the last entry delivered, how far behind.
    Streams,
    /// Write the whole log as JSON Lines (one entry per line, oldest first).
    Export {
        /// Write to this file instead of stdout (replaced only once the export is complete).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Archive old entries into a signed archive file on the server (the
    /// entries stay in the log, marked archived; backups carry the archives).
    Archive(ArchiveArgs),
    /// List the audit archives, oldest first.
    Archives,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ArchiveArgs {
    /// Archive the entries up to this sequence number (`keyhold audit list` shows them).
    #[arg(long, value_name = "SEQ")]
    pub up_to_seq: Option<i64>,
    /// Archive the entries older than this many days (1 to 36500).
    #[arg(long, value_name = "DAYS")]
    pub older_than_days: Option<u32>,
}

impl Tabular for AuditArchiveView {
    fn headers() -> &'static [&'static str] {
        &["ID", "File", "First Seq", "Last Seq", "Created", "SHA-256"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.file.clone(),
            self.first_seq.to_string(),
            self.last_seq.to_string(),
            output::time(&self.created_at),
            self.sha256.clone(),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

#[derive(Debug, Default, clap::Args)]
pub struct VerifyArgs {
    /// A file of checkpoints (lines `keyhold audit checkpoint` printed, or
    /// the server's checkpoint file) the log must reach; repeat for several.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// An exported log (`keyhold audit export --file`) to check offline.
    #[arg(long, value_name = "FILE", requires = "public_key")]
    pub export: Option<PathBuf>,
    /// The checkpoint public key (PEM, from `keyhold audit public-key`), for --export.
    #[arg(long, value_name = "FILE", requires = "export")]
    pub public_key: Option<PathBuf>,
}

/// Largest checkpoint or public key file read (a checkpoint is ~300 bytes).
const MAX_CHECKPOINT_FILE: usize = 64 * 1024 * 1024;

/// Every checkpoint in the files given with --checkpoint.
fn read_checkpoints(files: &[PathBuf]) -> anyhow::Result<Vec<Checkpoint>> {
    let mut all = Vec::new();
    for file in files {
        let text = input::read_text_file(file, "checkpoint file", MAX_CHECKPOINT_FILE)?;
        let checkpoints = parse_checkpoints(&text).map_err(|e| {
            CliError::Input(format!(
                "{}: {e}. Give lines `keyhold audit checkpoint` printed, unchanged",
                file.display()
            ))
        })?;
        all.extend(checkpoints);
    }
    Ok(all)
}

pub(crate) fn read_public_key(file: &Path) -> anyhow::Result<AuditPublicKey> {
    let text = input::read_text_file(file, "public key file", 64 * 1024)?;
    Ok(AuditPublicKey::from_pem(&text)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?)
}

#[derive(Debug, Default, clap::Args)]
pub struct ListArgs {
    /// Entries at or after this time: RFC 3339 (2026-11-29T12:00:00Z) or a date (2026-11-29).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Entries at or before this time: RFC 3339, or a date for the end of that day (UTC).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Entries of sessions this identity was in (or `System`).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Entries whose summary contains this text.
    #[arg(long)]
    pub text: Option<String>,
    /// How many entries at most [server default: 100; at most 1000].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Entries older than this sequence number (the next page after a listing).
    #[arg(long, value_name = "SEQ")]
    pub before_seq: Option<i64>,
}

/// The query string of `GET /api/v1/audit`.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<i64>,
}

impl AuditQuery {
    pub fn from_args(args: ListArgs) -> Result<Self, CliError> {
        Ok(Self {
            from: args
                .from
                .as_deref()
                .map(|t| time_bound("--from", t, false))
                .transpose()?,
            to: args
                .to
                .as_deref()
                .map(|t| time_bound("--to", t, true))
                .transpose()?,
            user: args.user,
            text: args.text,
            limit: args.limit,
            before_seq: args.before_seq,
        })
    }
}

/// An RFC 3339 time as given, or a date turned into the start (or end) of that day in UTC.
fn time_bound(flag: &str, raw: &str, end_of_day: bool) -> Result<String, CliError> {
    let raw = raw.trim();
    if chrono::DateTime::parse_from_rfc3339(raw).is_ok() {
        return Ok(raw.to_owned());
    }
    if chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").is_ok() {
        let time = if end_of_day {
            "23:59:59.999999999"
        } else {
            "00:00:00"
        };
        return Ok(format!("{raw}T{time}Z"));
    }
    Err(CliError::Input(format!(
        "{flag} '{}' is not a time: use RFC 3339 such as 2026-11-29T12:00:00Z, or a date such as 2026-11-29",
        output::clean(raw)
    )))
}

impl Tabular for AuditStreamView {
    fn headers() -> &'static [&'static str] {
        &[
            "Kind",
            "Destination",
            "State",
            "Last entry",
            "Behind",
            "Last delivery",
            "Failures",
            "Last error",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.kind.clone(),
            self.destination.clone(),
            self.state.clone(),
            self.cursor.map_or("-".to_owned(), |c| c.to_string()),
            self.lag.map_or("-".to_owned(), |l| l.to_string()),
            self.last_delivered_at
                .as_deref()
                .map_or("-".to_owned(), output::time),
            self.failures.to_string(),
            output::or_dash(self.last_error.as_deref()),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

impl Tabular for AuditEntryView {
    fn headers() -> &'static [&'static str] {
        &["Date", "Users", "Summary", "Details", "Archived"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            output::time(&self.date),
            self.users.clone(),
            self.summary.clone(),
            output::yes_no(self.has_details),
            output::yes_no(self.archived),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Seq", self.seq.to_string()),
            ("Date", output::time(&self.date)),
            ("Users", self.users.clone()),
            ("Summary", self.summary.clone()),
            (
                "Details",
                if self.has_details {
                    self.details.to_string()
                } else {
                    "no".to_owned()
                },
            ),
            ("Archived", output::yes_no(self.archived)),
            ("Hash", self.hash.clone()),
        ]
    }
}

/// What `audit verify` prints for people.
pub fn verify_report(view: &AuditVerifyView) -> String {
    let reached = match (view.checkpoint_seq, &view.checkpoint_time) {
        (Some(seq), Some(time)) => format!(
            "It reaches the signed checkpoint of entry {seq} ({}).\n",
            output::clean(time)
        ),
        _ => "No signed checkpoint was checked.\n".to_owned(),
    };
    let archives = match &view.archives {
        Some(a) if a.problem.is_none() => format!(
            "{} audit archive(s), {} entries, verified against the live log.\n",
            a.archives, a.entries
        ),
        Some(a) => format!(
            "Audit archives BROKEN: {}\n",
            output::clean(a.problem.as_deref().unwrap_or_default())
        ),
        None => String::new(),
    };
    if view.ok {
        return format!(
            "Audit log intact: {} entries checked, the hash chain is unbroken.\n{reached}{archives}",
            view.entries_checked
        );
    }
    if view.first_bad_seq.is_none() && view.archives.as_ref().is_some_and(|a| a.problem.is_some()) {
        return format!(
            "Audit log intact: {} entries checked, the hash chain is unbroken.\n{reached}{archives}",
            view.entries_checked
        );
    }
    let at = view.first_bad_seq.map_or_else(
        || "an unknown entry".to_owned(),
        |seq| format!("entry {seq}"),
    );
    let reason = view
        .reason
        .as_deref()
        .map_or_else(|| "no reason given".to_owned(), output::clean);
    format!(
        "Audit log BROKEN: the hash chain fails at {at}: {reason}\n{} entries checked.\n",
        view.entries_checked
    )
}

pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List(args) => {
            let query = AuditQuery::from_args(args)?;
            let entries: Vec<AuditEntryView> =
                ctx.authenticated()?.get_query("/audit", &query).await?;
            output::print_list(ctx.output, &entries)
        }
        AuditCommand::Verify(args) => {
            let checkpoints = read_checkpoints(&args.checkpoints)?;
            let view = match (&args.export, &args.public_key) {
                (Some(export), Some(key)) => crate::export_verification::verify(
                    export,
                    &read_public_key(key)?,
                    &checkpoints,
                )?,
                _ if checkpoints.is_empty() => ctx.authenticated()?.get("/audit/verify").await?,
                _ => {
                    let request = AuditVerifyRequest {
                        checkpoints: checkpoints
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<_, _>>()?,
                    };
                    ctx.authenticated()?
                        .call(Method::POST, "/audit/verify", &request)
                        .await?
                }
            };
            match ctx.output {
                OutputFormat::Json => output::print_json(&view)?,
                OutputFormat::Table => output::emit(&verify_report(&view))?,
            }
            if view.ok {
                Ok(())
            } else {
                Err(CliError::Reported(EXIT_FAILURE).into())
            }
        }
        AuditCommand::Checkpoint { file } => {
            let checkpoint: Checkpoint = ctx
                .authenticated()?
                .call(Method::POST, "/audit/checkpoints", &serde_json::json!({}))
                .await?;
            let line = format!("{}\n", checkpoint.to_json_line());
            match file {
                None => output::emit(&line)?,
                Some(path) => {
                    append(&path, &line)?;
                    eprintln!(
                        "Checkpoint of entry {} appended to {}.",
                        checkpoint.seq,
                        path.display()
                    );
                }
            }
            Ok(())
        }
        AuditCommand::Streams => {
            let streams: Vec<AuditStreamView> = ctx.authenticated()?.get("/audit/streams").await?;
            if streams.is_empty() && ctx.output == OutputFormat::Table {
                return output::emit(
                    "No audit stream on this node: set audit_syslog_address or audit_json_file (README: Streaming the audit log to a SIEM).",
                );
            }
            output::print_list(ctx.output, &streams)
        }
        AuditCommand::PublicKey => {
            let key: AuditPublicKeyView = ctx.authenticated()?.get("/audit/public-key").await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&key)?,
                OutputFormat::Table => output::emit(&key.pem)?,
            }
            Ok(())
        }
        AuditCommand::Archive(args) => {
            let request = ArchiveRequest {
                up_to_seq: args.up_to_seq,
                older_than_days: args.older_than_days,
            };
            let archived: Option<AuditArchiveView> = ctx
                .authenticated()?
                .call_optional(Method::POST, "/audit/archives", &request)
                .await?;
            match (archived, ctx.output) {
                (Some(archive), OutputFormat::Json) => output::print_json(&archive),
                (Some(archive), OutputFormat::Table) => output::emit(&format!(
                    "Archived audit entries {} to {} into {}.\n{}",
                    archive.first_seq,
                    archive.last_seq,
                    output::clean(&archive.file),
                    output::render_fields(&archive.fields())
                )),
                (None, OutputFormat::Json) => output::emit("null\n"),
                (None, OutputFormat::Table) => {
                    output::emit("Nothing to archive: no unarchived entries are that old.\n")
                }
            }
        }
        AuditCommand::Archives => {
            let archives: Vec<AuditArchiveView> =
                ctx.authenticated()?.get("/audit/archives").await?;
            output::print_list(ctx.output, &archives)
        }
        AuditCommand::Export { file } => {
            let client = ctx.authenticated()?;
            match file {
                None => {
                    let mut sink = LineCounter::new(std::io::stdout().lock());
                    client.download("/audit/export", &mut sink).await?;
                    Ok(())
                }
                Some(path) => export_to_file(&client, &path).await,
            }
        }
    }
}

/// Appends `line` to the file at `path` (created when missing) and syncs it.
fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| CliError::Input(format!("cannot open {}: {e}", path.display())))?;
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    Ok(())
}

/// Exports into a temporary file beside `path`, renamed over it once complete,
/// so an interrupted export never leaves a truncated log behind.
async fn export_to_file(client: &crate::client::Client, path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CliError::Input(format!("--file {} is not a file path", path.display())))?;
    let temp = dir.join(format!(
        ".{}.{}.part",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::File::create(&temp)
        .map_err(|e| CliError::Input(format!("cannot create {}: {e}", temp.display())))?;
    let mut sink = LineCounter::new(std::io::BufWriter::new(file));
    let result: anyhow::Result<u64> = async {
        client.download("/audit/export", &mut sink).await?;
        let LineCounter { inner, lines } = sink;
        let file = inner
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(lines)
    }
    .await;
    match result {
        Ok(lines) => {
            eprintln!("Exported {lines} audit entries to {}.", path.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Passes bytes through, counting the lines (entries) written.
struct LineCounter<W> {
    inner: W,
    lines: u64,
}

impl<W> LineCounter<W> {
    fn new(inner: W) -> Self {
        Self { inner, lines: 0 }
    }
}

impl<W: Write> Write for LineCounter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.lines += buf[..written].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(has_details: bool, archived: bool) -> AuditEntryView {
        AuditEntryView {
            seq: 7,
            date: "2026-11-29T12:00:00Z".into(),
            users: "Admin1,Admin2".into(),
            summary: "Added HSM protected key group ig-demo".into(),
            has_details,
            details: serde_json::Value::Null,
            archived,
            prev_hash: "00".into(),
            hash: "ab".into(),
        }
    }

    #[test]
    fn audit_rows_show_date_users_summary_details_archived() {
        let mut table = output::Table::new(AuditEntryView::headers());
        table.push(entry(true, false).row());
        assert_eq!(
            table.render(),
            "Date                 Users          Summary                                Details  Archived\n\
             2026-11-29 12:00:00  Admin1,Admin2  Added HSM protected key group ig-demo  yes      no\n"
        );
    }

    #[test]
    fn list_flags_become_the_query() {
        let query = AuditQuery::from_args(ListArgs {
            from: Some("2026-11-01".into()),
            to: Some("2026-11-29".into()),
            user: Some("Admin2".into()),
            text: None,
            limit: Some(10),
            before_seq: None,
        })
        .unwrap();
        assert_eq!(query.from.as_deref(), Some("2026-11-01T00:00:00Z"));
        assert_eq!(query.to.as_deref(), Some("2026-11-29T23:59:59.999999999Z"));
        let value = serde_json::to_value(&query).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"from": "2026-11-01T00:00:00Z", "to": "2026-11-29T23:59:59.999999999Z", "user": "Admin2", "limit": 10})
        );
        assert_eq!(
            time_bound("--from", "2026-11-29T12:00:00+01:00", false).unwrap(),
            "2026-11-29T12:00:00+01:00"
        );
        assert!(
            time_bound("--from", "yesterday", false)
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn verify_report_names_the_first_bad_entry() {
        let ok = AuditVerifyView {
            ok: true,
            entries_checked: 12,
            first_bad_seq: None,
            reason: None,
            checkpoint_seq: Some(10),
            checkpoint_time: Some("2026-12-05T12:00:00Z".into()),
            archives: None,
        };
        let text = verify_report(&ok);
        assert!(text.contains("intact: 12 entries"), "{text}");
        assert!(
            text.contains("checkpoint of entry 10 (2026-12-05T12:00:00Z)"),
            "{text}"
        );
        let broken = AuditVerifyView {
            ok: false,
            entries_checked: 5,
            first_bad_seq: Some(4),
            reason: Some("hash mismatch".into()),
            checkpoint_seq: None,
            checkpoint_time: None,
            archives: None,
        };
        let text = verify_report(&broken);
        assert!(text.contains("entry 4: hash mismatch"), "{text}");
    }

    #[test]
    fn line_counter_counts_entries() {
        let mut counter = LineCounter::new(Vec::new());
        counter.write_all(b"{\"seq\":1}\n{\"seq\"").unwrap();
        counter.write_all(b":2}\n").unwrap();
        assert_eq!(counter.lines, 2);
        assert_eq!(counter.inner.len(), 20);
    }
}
