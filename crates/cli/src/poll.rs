//! Following something the server runs (a job, a backup) until it ends:
//! one poll at a time, a few consecutive transient failures retried with
//! growing waits, Ctrl-C honoured while asking and while waiting.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::jobs::is_transient;

/// How long one poll may take before it counts as a lost connection.
const POLL_TIMEOUT: Duration = Duration::from_secs(15);
/// Waits after consecutive failed polls; when they run out, following fails.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(8),
];

/// What a poll told the follower.
pub enum Seen<'a, T> {
    /// The server's answer; the follower says whether it is the end.
    Answer(&'a T),
    /// A transient failure, to be tried again after `delay` (the
    /// `attempt`-th of [`RETRY_DELAYS`]).
    Retrying {
        error: &'a anyhow::Error,
        delay: Duration,
        attempt: usize,
    },
}

/// How following ended.
pub enum Ended<T> {
    /// The last answer, which the follower called the end.
    Done(T),
    /// Ctrl-C: the work goes on in the server.
    Interrupted,
    /// Every retry failed; the last failure.
    GaveUp(anyhow::Error),
}

/// Resolves on Ctrl-C; never, if the signal cannot be caught.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Asks for `path` every `interval` until `seen` calls an answer the end.
/// Only that end bounds the wait; a failure that is not transient (or that
/// `seen` returns) ends it with the error.
pub async fn until_done<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    interval: Duration,
    mut seen: impl FnMut(Seen<'_, T>) -> anyhow::Result<bool>,
) -> anyhow::Result<Ended<T>> {
    let interrupted = ctrl_c();
    tokio::pin!(interrupted);
    let mut failures = 0usize;
    loop {
        let polled = tokio::select! {
            polled = client.get_within::<T>(path, POLL_TIMEOUT) => polled,
            () = &mut interrupted => return Ok(Ended::Interrupted),
        };
        let delay = match polled {
            Ok(answer) => {
                failures = 0;
                if seen(Seen::Answer(&answer))? {
                    return Ok(Ended::Done(answer));
                }
                interval
            }
            Err(error) if is_transient(&error) => {
                let Some(delay) = RETRY_DELAYS.get(failures).copied() else {
                    return Ok(Ended::GaveUp(error));
                };
                failures += 1;
                seen(Seen::Retrying {
                    error: &error,
                    delay,
                    attempt: failures,
                })?;
                delay
            }
            Err(error) => return Err(error),
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut interrupted => return Ok(Ended::Interrupted),
        }
    }
}
