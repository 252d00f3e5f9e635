//! The HTTP API's handlers, under `/api/v1` (routed in `crate::routes`),
//! plus `/healthz`, `/readyz` and `/metrics`. A handler extracts the
//! request, calls its operation (`crate::operations`), and answers with a
//! status and JSON: it holds no rule of its own.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod backups;
pub(crate) mod configuration;
pub(crate) mod credentials;
pub(crate) mod drift;
pub mod errors;
mod extract;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod identities;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod sessions;
pub(crate) mod xks;

pub(crate) use extract::audit_refused_session;

use keyhold_core::InvalidInput;

/// Entries per page of a listing unless the caller asks for another size.
const DEFAULT_PAGE: u32 = 100;
/// Most entries one page of a listing may hold.
pub(crate) const MAX_PAGE: u32 = 1000;

/// The page size a listing's `limit` asks for, the default without one.
pub(crate) fn page_limit(requested: Option<u32>) -> Result<u32, InvalidInput> {
    match requested.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(InvalidInput::new(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_default_and_stay_within_bounds() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1)).unwrap(), 1);
        assert_eq!(page_limit(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        for refused in [0, MAX_PAGE + 1, u32::MAX] {
            assert_eq!(page_limit(Some(refused)).unwrap_err().field, "limit");
        }
    }
}
