//! *Logging and Reporting → Audit Logs*: verification against signed
//! checkpoints, and the export.

use futures_util::Stream;
use keyhold_core::audit::{ChainBreak, ChainVerifier, Checkpoint, ExportEnd, VerifyReport};
use keyhold_core::identity::Session;

use keyhold_api as api;

use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// Entries read from the store per chunk of an export.
const EXPORT_CHUNK: u32 = 500;

/// Verifies the whole log against `given` checkpoints and the newest one
/// this server wrote.
pub async fn verify(
    app: &AppState,
    session: &Session,
    mut given: Vec<Checkpoint>,
) -> ApiResult<VerifyReport> {
    given.extend(app.checkpoints.newest());
    Ok(app.keyhold.verify_audit(session, &given).await?)
}

/// The signed archives checked against the live log (a session that may
/// read the audit log may check them).
pub async fn verify_archives(
    app: &AppState,
    session: &Session,
) -> ApiResult<crate::backup::archive::ArchivesChecked> {
    app.keyhold.may_read_audit(session)?;
    Ok(crate::backup::archive::verify(&app.keyhold, app.backups.archive_dir()).await?)
}

/// What this node's audit streams to a SIEM are doing.
pub fn streams(app: &AppState, session: &Session) -> ApiResult<Vec<api::AuditStreamView>> {
    app.keyhold.may_read_audit(session)?;
    Ok(app
        .streams
        .snapshot()
        .iter()
        .map(views::audit_stream)
        .collect())
}

/// A checkpoint asked for by an officer or auditor: signed, appended and logged.
pub async fn checkpoint(app: &AppState, session: &Session) -> ApiResult<Checkpoint> {
    Ok(app.checkpoints.write_now(session).await?)
}

/// The whole log as JSON Lines, oldest first, a chunk at a time so a long
/// log never sits in memory whole. Reading the first chunk audits the export
/// (and answers a refusal before anything is sent).
///
/// The entries are verified as they go out (chain, MAC, and the newest
/// checkpoint), and the last line says how that ended: a checkpoint signed
/// over the last entry, with which an auditor checks the file with the
/// public key alone, or where the log is broken.
pub async fn export(
    app: &AppState,
    session: &Session,
) -> ApiResult<impl Stream<Item = Result<String, std::io::Error>> + Send + 'static> {
    let first = app.keyhold.export_audit(session, 0, EXPORT_CHUNK).await?;
    let anchors: Vec<Checkpoint> = app.checkpoints.newest().into_iter().collect();
    let verifier = app.keyhold.audit_verifier(&anchors)?;
    let app = app.clone();
    let session = session.clone();
    let start = Export {
        page: Some(first),
        verifier,
        broken: None,
        ended: false,
    };
    Ok(futures_util::stream::unfold(start, move |mut export| {
        let app = app.clone();
        let session = session.clone();
        async move {
            if export.ended {
                return None;
            }
            let Some(page) = export.page.take() else {
                export.ended = true;
                let end = export.end(&app);
                return Some((Ok(end), export));
            };
            let mut chunk = String::new();
            for entry in &page.entries {
                if export.broken.is_none()
                    && let Err(broken) = export.verifier.push(entry)
                {
                    export.broken = Some((entry.seq, broken));
                }
                if let Ok(line) = serde_json::to_string(&views::audit_entry(entry)) {
                    chunk.push_str(&line);
                    chunk.push('\n');
                }
            }
            if let Some(after) = page.next_after_seq {
                match app
                    .keyhold
                    .export_audit(&session, after, EXPORT_CHUNK)
                    .await
                {
                    Ok(next) => export.page = Some(next),
                    Err(e) => {
                        tracing::error!(error = %e, "audit export stopped early");
                        export.ended = true;
                        return Some((Err(std::io::Error::other("audit export failed")), export));
                    }
                }
            }
            Some((Ok(chunk), export))
        }
    }))
}

/// An export under way: the next page and the verification so far.
struct Export {
    page: Option<keyhold_core::service::AuditExport>,
    verifier: ChainVerifier,
    broken: Option<(i64, ChainBreak)>,
    ended: bool,
}

impl Export {
    /// The closing line: a checkpoint over the last entry, or the break.
    fn end(&self, app: &AppState) -> String {
        let outcome = match &self.broken {
            Some(broken) => Err(broken.clone()),
            None => self.verifier.finish(),
        };
        let end = match outcome {
            Ok(()) => match app.keyhold.sign_verified_head(self.verifier.head()) {
                Ok(checkpoint) => ExportEnd::Checkpoint(checkpoint),
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the audit export's checkpoint");
                    ExportEnd::Unsigned {
                        reason: "the keystore could not sign the export's checkpoint".into(),
                    }
                }
            },
            Err(broken) => {
                let report = self.verifier.report(Err(broken));
                ExportEnd::Broken {
                    first_bad_seq: report.first_bad_seq.unwrap_or_default(),
                    reason: report.reason.unwrap_or_default(),
                }
            }
        };
        format!("{}\n", serde_json::to_string(&end).unwrap_or_default())
    }
}
