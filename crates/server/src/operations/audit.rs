//! *Logging and Reporting → Audit Logs*: the export.

use futures_util::Stream;
use keyhold_core::identity::Session;

use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// Entries read from the store per chunk of an export.
const EXPORT_CHUNK: u32 = 500;

/// The whole log as JSON Lines, oldest first, a chunk at a time so a long
/// log never sits in memory whole. Reading the first chunk audits the export
/// (and answers a refusal before anything is sent).
pub async fn export(
    app: &AppState,
    session: &Session,
) -> ApiResult<impl Stream<Item = Result<String, std::io::Error>> + Send + 'static> {
    let first = app.keyhold.export_audit(session, 0, EXPORT_CHUNK).await?;
    let app = app.clone();
    let session = session.clone();
    Ok(futures_util::stream::unfold(Some(first), move |page| {
        let app = app.clone();
        let session = session.clone();
        async move {
            let page = page?;
            let mut chunk = String::new();
            for entry in &page.entries {
                if let Ok(line) = serde_json::to_string(&views::audit_entry(entry)) {
                    chunk.push_str(&line);
                    chunk.push('\n');
                }
            }
            let next = match page.next_after_seq {
                Some(after) => match app
                    .keyhold
                    .export_audit(&session, after, EXPORT_CHUNK)
                    .await
                {
                    Ok(next) => Some(next),
                    Err(e) => {
                        tracing::error!(error = %e, "audit export stopped early");
                        return Some((Err(std::io::Error::other("audit export failed")), None));
                    }
                },
                None => None,
            };
            Some((Ok::<_, std::io::Error>(chunk), next))
        }
    }))
}
