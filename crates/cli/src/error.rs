//! The CLI's error type: its kind decides the exit status (`keyhold --help`
//! lists them); any other error is a failure.

use std::fmt;

use reqwest::StatusCode;

/// Exit status: a failure (server unreachable or failing, broken audit chain, local I/O).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: a usage error or bad input, or a request the server refused (4xx).
pub const EXIT_USAGE: u8 = 2;

/// An error whose kind decides the exit status. Anything else is a failure (1).
#[derive(Debug)]
pub enum CliError {
    /// The server answered with an error status and (usually) an
    /// [`ErrorBody`](keyhold_api::ErrorBody).
    /// `with_session` tells whether the request carried a session token.
    Api {
        status: StatusCode,
        code: String,
        message: String,
        with_session: bool,
    },
    /// No TCP connection to the server.
    Unreachable { url: String, cause: String },
    /// No session for this server in the session file.
    NotLoggedIn { url: String },
    /// Bad input found before anything was sent (a file, stdin, a flag value).
    Input(String),
    /// The outcome has already been printed; exit with this status.
    Reported(u8),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { status, .. } if status.is_client_error() => EXIT_USAGE,
            Self::Api { .. } | Self::Unreachable { .. } => EXIT_FAILURE,
            Self::NotLoggedIn { .. } | Self::Input(_) => EXIT_USAGE,
            Self::Reported(code) => *code,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api {
                status,
                code,
                message,
                with_session,
            } => {
                f.write_str(message)?;
                if *status == StatusCode::UNAUTHORIZED
                    && *with_session
                    && !message.contains("keyhold login")
                {
                    f.write_str(" (`keyhold login --user NAME`)")?;
                } else if code == "dual_control_required" && !message.contains("keyhold login") {
                    f.write_str(
                        " (`keyhold login --user NAME` adds a second identity to this session)",
                    )?;
                }
                Ok(())
            }
            Self::Unreachable { url, cause } => write!(
                f,
                "the keyhold server is not reachable at {url} ({cause}). Is it running? Start it with `keyhold serve`, or point --url / KEYHOLD_URL at it"
            ),
            Self::NotLoggedIn { url } => {
                write!(
                    f,
                    "not logged in to {url}: log in first with `keyhold login --user NAME`"
                )
            }
            Self::Input(message) => f.write_str(message),
            Self::Reported(code) => write!(f, "exit status {code}"),
        }
    }
}

impl std::error::Error for CliError {}

/// The exit status an error calls for: that of the first [`CliError`] in its chain.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .map_or(EXIT_FAILURE, CliError::exit_code)
}
