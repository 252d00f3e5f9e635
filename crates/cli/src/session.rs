//! `keyhold login | logout | whoami | passwd`: sessions (with dual control)
//! and passwords.

use keyhold_api::{LoginRequest, PasswordChangeRequest, SessionView};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use zeroize::{Zeroize, Zeroizing};

use crate::client::Context;
use crate::error::CliError;
use crate::input;
use crate::output::{self, OutputFormat, Tabular};
use crate::session_file::{self, SavedSession};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The identity logging in, such as Admin1.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Read the password from stdin's first line instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The identity whose password changes.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Read the current password from stdin's first line and the new one from
    /// its second, instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

impl Tabular for SessionView {
    fn headers() -> &'static [&'static str] {
        &["Users", "Identities", "Since"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.users.clone(),
            identities(self),
            output::time(&self.created_at),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Users", self.users.clone()),
            ("Identities", identities(self)),
            ("Dual control", output::yes_no(self.identities.len() > 1)),
            ("Since", output::time(&self.created_at)),
        ]
    }
}

fn identities(view: &SessionView) -> String {
    view.identities
        .iter()
        .map(|i| format!("{} ({})", i.name, i.role))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `keyhold login`: starts a session, or joins the saved one (dual control).
pub async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        let text = input::read_stdin()?;
        take_one(input::password_lines(&text, &["password"])?)
    } else {
        input::prompt(&format!("Password for {}: ", args.user))?
    };

    let path = ctx.session_path()?;
    let anonymous = ctx.anonymous()?;
    let saved = match session_file::load_session(&path) {
        Ok(saved) => saved.filter(|s| s.url == anonymous.base()),
        Err(e) => {
            eprintln!("warning: {e:#}; starting a new session");
            None
        }
    };

    // Join the saved session if it is still alive; a dead token is dropped
    // first, so that a wrong password is never tried twice (lockout counts).
    let client = match saved {
        Some(saved) => {
            let candidate = ctx.anonymous()?.with_token(saved.token);
            match candidate.get::<SessionView>("/session").await {
                Ok(_) => candidate,
                Err(e) if is_status(&e, StatusCode::UNAUTHORIZED) => {
                    session_file::remove_session(&path)?;
                    candidate.without_token()
                }
                Err(e) => return Err(e),
            }
        }
        None => anonymous,
    };
    let joining = client.has_token();

    let mut request = LoginRequest {
        user: args.user.clone(),
        password: password.as_str().to_owned(),
    };
    let answer = client
        .call::<_, SessionView>(Method::POST, "/session/login", &request)
        .await;
    request.password.zeroize();
    drop(password);
    let mut view = answer.map_err(without_session_hint)?;

    if let Some(token) = view.token.take() {
        let saved = SavedSession {
            url: client.base().to_owned(),
            token: SecretString::from(token),
        };
        session_file::save_session(&path, &saved)?;
    } else if !joining {
        return Err(anyhow::anyhow!(
            "the server started no session and sent no token; nothing was saved"
        ));
    }

    match ctx.output {
        OutputFormat::Json => output::print_json(&view),
        OutputFormat::Table => {
            let how = if joining && view.identities.len() > 1 {
                "joined the session (dual control)"
            } else {
                "started a new session"
            };
            output::emit(&format!(
                "Logged in as {}: {how}.\n{}",
                output::clean(&args.user),
                output::render_fields(&view.fields())
            ))
        }
    }
}

/// `keyhold logout`: ends the session on the server and forgets it locally.
pub async fn logout(ctx: &Context) -> anyhow::Result<()> {
    let path = ctx.session_path()?;
    let client = ctx.authenticated()?;
    let result = client.post_empty("/session/logout").await;
    match result {
        Ok(()) => {
            session_file::remove_session(&path)?;
            output::print_done(ctx.output, "Logged out.")?;
            Ok(())
        }
        Err(e) if is_status(&e, StatusCode::UNAUTHORIZED) => {
            session_file::remove_session(&path)?;
            output::print_done(
                ctx.output,
                "The session had already ended; it is forgotten here too.",
            )?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `keyhold whoami`: the identities in the current session.
pub async fn whoami(ctx: &Context) -> anyhow::Result<()> {
    let view: SessionView = ctx.authenticated()?.get("/session").await?;
    output::print_item(ctx.output, &view)
}

/// `keyhold passwd`: changes an identity's password (no session needed).
pub async fn passwd(ctx: &Context, args: PasswdArgs) -> anyhow::Result<()> {
    let (current, new) = if args.password_stdin {
        let text = input::read_stdin()?;
        let mut lines =
            input::password_lines(&text, &["current password", "new password"])?.into_iter();
        match (lines.next(), lines.next()) {
            (Some(current), Some(new)) => (current, new),
            _ => {
                return Err(CliError::Input(
                    "stdin must hold the current and the new password".into(),
                )
                .into());
            }
        }
    } else {
        let current = input::prompt(&format!("Current password for {}: ", args.user))?;
        let new = input::prompt("New password: ")?;
        let again = input::prompt("New password again: ")?;
        if *new != *again {
            return Err(CliError::Input(
                "the new passwords do not match; nothing was changed".into(),
            )
            .into());
        }
        (current, new)
    };
    if *current == *new {
        return Err(CliError::Input(
            "the new password is the same as the current one; nothing was changed".into(),
        )
        .into());
    }

    let mut request = PasswordChangeRequest {
        user: args.user.clone(),
        current_password: current.as_str().to_owned(),
        new_password: new.as_str().to_owned(),
    };
    drop((current, new));
    let result = ctx
        .anonymous()?
        .call_no_content(Method::POST, "/password", &request)
        .await;
    request.current_password.zeroize();
    request.new_password.zeroize();
    result?;
    output::print_done(
        ctx.output,
        &format!(
            "Password changed for {}. Its sessions have ended: log in again with `keyhold login --user {}`.",
            args.user, args.user
        ),
    )?;
    Ok(())
}

/// A refused login is about the password, not about the session it joins.
fn without_session_hint(error: anyhow::Error) -> anyhow::Error {
    match error.downcast::<CliError>() {
        Ok(CliError::Api {
            status,
            code,
            message,
            ..
        }) => CliError::Api {
            status,
            code,
            message,
            with_session: false,
        }
        .into(),
        Ok(other) => other.into(),
        Err(error) => error,
    }
}

fn take_one(lines: Vec<Zeroizing<String>>) -> Zeroizing<String> {
    lines.into_iter().next().unwrap_or_default()
}

fn is_status(error: &anyhow::Error, wanted: StatusCode) -> bool {
    error
        .chain()
        .any(|e| matches!(e.downcast_ref::<CliError>(), Some(CliError::Api { status, .. }) if *status == wanted))
}
