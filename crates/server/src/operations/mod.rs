//! The operations a session asks for, one function each, called alike by
//! the JSON API (`crate::http`) and the web UI (`crate::ui`).
//!
//! Rules:
//! - An operation takes input as it was received (an API request, a name
//!   from the path) and parses it itself, so both edges refuse the same
//!   input with the same message.
//! - Every refused or failed change is audited here, once, through
//!   [`audited`], with its [`Action`]'s failure text; the core writes the
//!   success entry with the same action's success text.
//! - Operations answer with views (what the API shows and the UI draws) or
//!   nothing; status codes and pages are the edges' business.

pub mod approvals;
pub mod audit;
pub mod backups;
pub mod configuration;
pub mod credentials;
pub mod drift;
pub mod groups;
pub mod identities;
pub mod jobs;
pub mod keys;
mod requests;
pub mod sessions;
pub mod xks;

use keyhold_core::action::Action;
use keyhold_core::identity::Session;

use crate::ApiResult;
use crate::app::AppState;
use crate::http::errors::ApiError;

/// Runs an operation, auditing its failure first when it is refused or
/// fails: every failed action leaves an entry, written in one place.
async fn audited<T>(
    app: &AppState,
    session: &Session,
    action: Action<'_>,
    operation: impl Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let result = operation.await;
    if let Err(error) = &result
        && !matches!(error, ApiError::AwaitingApproval(_))
    {
        // An entry the store refuses goes to the server log and metrics.
        app.keyhold
            .audit_failure(&session.users(), action, &error.public_message())
            .await;
    }
    result
}
