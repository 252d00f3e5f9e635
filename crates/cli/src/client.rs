//! Talking to a keyhold server: the global flags every command gets, the
//! HTTP client, and how its error answers become [`CliError`]s. The error
//! type lives in `error`, the saved session in `session_file`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use keyhold_api::{ApprovalView, ErrorBody};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CliError;
use crate::output::OutputFormat;
use crate::session_file::{default_session_path, load_session};

/// Where the server listens unless told otherwise (`keyhold serve`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8600";
/// How long to wait for the TCP connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary request may take (an export streams without a limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Turns an error answer into a [`CliError`], reading the [`ErrorBody`] when there is one.
pub fn error_from_answer(status: StatusCode, body: &[u8], with_session: bool) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            let mut message = crate::output::clean(&parsed.error.message);
            if let Some(field) = parsed
                .error
                .field
                .filter(|f| !f.is_empty() && !message.contains(f.as_str()))
            {
                message.push_str(&format!(" (field: {})", crate::output::clean(&field)));
            }
            CliError::Api {
                status,
                code: parsed.error.code,
                message,
                with_session,
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = crate::output::clean(text.trim())
                .chars()
                .take(200)
                .collect();
            let message = if snippet.is_empty() {
                format!("the server answered {status}")
            } else {
                format!("the server answered {status}: {snippet}")
            };
            CliError::Api {
                status,
                code: String::new(),
                message,
                with_session,
            }
        }
    }
}

/// What every command gets from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--url` as given.
    pub url: String,
    pub output: OutputFormat,
    /// `--session-file`, when given.
    pub session_file: Option<PathBuf>,
    /// `--ca-certificate`, when given.
    pub ca_certificate: Option<PathBuf>,
}

impl Context {
    /// The session file: the flag, or the default under the configuration directory.
    pub fn session_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.session_file {
            return Ok(path.clone());
        }
        default_session_path(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME")).ok_or_else(|| {
            CliError::Input(
                "cannot tell where to keep the session: neither XDG_CONFIG_HOME nor HOME is set; pass --session-file PATH".into(),
            )
            .into()
        })
    }

    /// A client without a session (login, password change).
    pub fn anonymous(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.url, self.ca_certificate.as_deref())?.printing(self.output))
    }

    /// A client carrying the session saved for this server.
    pub fn authenticated(&self) -> anyhow::Result<Client> {
        let client = Client::new(&self.url, self.ca_certificate.as_deref())?.printing(self.output);
        let path = self.session_path()?;
        match load_session(&path)? {
            Some(saved) if saved.url == client.base => Ok(client.with_token(saved.token)),
            _ => Err(CliError::NotLoggedIn { url: client.base }.into()),
        }
    }
}

/// `http://host:port/` → `http://host:port`; refuses what is not an http(s) URL.
pub fn normalize_url(raw: &str) -> Result<String, CliError> {
    let parsed = reqwest::Url::parse(raw.trim()).map_err(|e| {
        CliError::Input(format!(
            "--url '{}' is not a URL such as {DEFAULT_URL}: {e}",
            crate::output::clean(raw)
        ))
    })?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(CliError::Input(format!(
                "--url '{parsed}' has the scheme '{other}': use an https:// or http:// URL such as {DEFAULT_URL}"
            )));
        }
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(CliError::Input(format!(
            "--url '{}' must be a plain base URL such as {DEFAULT_URL}, without user, query or fragment",
            crate::output::clean(raw)
        )));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn read_ca_certificate(path: &Path) -> Result<reqwest::Certificate, CliError> {
    let pem = std::fs::read(path).map_err(|e| {
        CliError::Input(format!(
            "--ca-certificate {}: cannot read it ({e}); give the PEM file of the CA that signed the server's certificate",
            path.display()
        ))
    })?;
    reqwest::Certificate::from_pem(&pem).map_err(|e| {
        CliError::Input(format!(
            "--ca-certificate {}: not a PEM certificate ({e}); give the CA's certificate, BEGIN CERTIFICATE block",
            path.display()
        ))
    })
}

/// Percent-encodes one path segment (a name or key id taken from the command line).
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    // `.` and `..` alone would be resolved away as path steps.
    match out.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => out,
    }
}

/// An HTTP client for one server's `/api/v1`.
pub struct Client {
    http: reqwest::Client,
    /// The normalised base URL (no trailing slash).
    base: String,
    token: Option<SecretString>,
    /// How an answer that sent the request for approval is printed.
    output: OutputFormat,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("has_token", &self.token.is_some())
            .finish()
    }
}

impl Client {
    pub fn new(url: &str, ca_certificate: Option<&Path>) -> anyhow::Result<Self> {
        let base = normalize_url(url)?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("keyhold-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_certificate {
            http = http.add_root_certificate(read_ca_certificate(path)?);
        }
        let http = http.build().context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            base,
            token: None,
            output: OutputFormat::Table,
        })
    }

    /// Prints an answer that sent the request for approval in this format.
    pub fn printing(mut self, output: OutputFormat) -> Self {
        self.output = output;
        self
    }

    pub fn with_token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The normalised base URL, as the session file records it.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token.expose_secret()),
            None => builder,
        }
    }

    /// Sends a request; any status but 2xx becomes a [`CliError::Api`].
    ///
    /// Every answer passes here, so this is where a request a policy holds
    /// to a quorum is recognised: 202 with an approval request (and its
    /// address in `Location`) instead of the command's own answer. It is printed
    /// (see [`print_sent_for_approval`]) and the command ends with status 0
    /// ([`CliError::Reported`]) without printing anything else. Other 202
    /// answers (a job started) go on as usual.
    async fn send(&self, builder: RequestBuilder) -> anyhow::Result<Response> {
        let response = builder.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            return self.unless_sent_for_approval(response).await;
        }
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(error_from_answer(status, &body, self.token.is_some()).into())
    }

    /// A 202 answer: printed and ended when it is an approval request (the
    /// server names it in `Location`), else handed on as it came.
    async fn unless_sent_for_approval(&self, response: Response) -> anyhow::Result<Response> {
        let is_request = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.starts_with("/api/v1/approvals/"));
        if !is_request {
            return Ok(response);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let request = approval_request(&body)
            .context("the server answered with an approval request this keyhold cannot read")?;
        print_sent_for_approval(self.output, &request)?;
        Err(CliError::Reported(0).into())
    }

    fn transport_error(&self, error: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(error);
        if error.is_connect() || (error.is_timeout() && error.url().is_some() && !error.is_body()) {
            CliError::Unreachable {
                url: self.base.clone(),
                cause,
            }
            .into()
        } else {
            anyhow::anyhow!("the request to {} failed: {cause}", self.base)
        }
    }

    async fn read_json<T: DeserializeOwned>(&self, response: Response) -> anyhow::Result<T> {
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body)
            .context("the server's answer is not what this keyhold client expects (is the server the same version?)")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .send(self.request(Method::GET, path).timeout(REQUEST_TIMEOUT))
            .await?;
        self.read_json(response).await
    }

    /// A GET that gives up after `timeout` (polling, where a hung answer is
    /// better retried than waited for).
    pub async fn get_within<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let response = self
            .send(self.request(Method::GET, path).timeout(timeout))
            .await?;
        self.read_json(response).await
    }

    pub async fn get_query<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<T> {
        let builder = self
            .request(Method::GET, path)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(builder).await?;
        self.read_json(response).await
    }

    /// Sends `body` and reads the JSON answer.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self
            .send(
                self.request(method, path)
                    .json(body)
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        self.read_json(response).await
    }

    /// Sends `body` and reads the JSON answer, or `None` when the server
    /// answers 204 (nothing was done).
    pub async fn call_optional<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Option<T>> {
        let response = self
            .send(
                self.request(method, path)
                    .json(body)
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.read_json(response).await.map(Some)
    }

    /// Sends `body` to an endpoint that answers without content (204).
    pub async fn call_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<()> {
        self.send(
            self.request(method, path)
                .json(body)
                .timeout(REQUEST_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// POST without a body to an endpoint that answers 204 (logout).
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(Method::POST, path).timeout(REQUEST_TIMEOUT))
            .await?;
        Ok(())
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, path).timeout(REQUEST_TIMEOUT))
            .await?;
        Ok(())
    }

    /// Streams a GET answer's body into `sink`, a chunk at a time. Returns the bytes written.
    pub async fn download(&self, path: &str, sink: &mut dyn Write) -> anyhow::Result<u64> {
        let mut response = self.send(self.request(Method::GET, path)).await?;
        let mut written = 0u64;
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                anyhow::anyhow!(
                    "the download from {} broke off: {}",
                    self.base,
                    root_cause(&e)
                )
            })?;
            let Some(chunk) = chunk else { break };
            sink.write_all(&chunk).map_err(sink_error)?;
            written += chunk.len() as u64;
        }
        sink.flush().map_err(sink_error)?;
        Ok(written)
    }
}

/// The approval request a 202 answer's body holds.
pub fn approval_request(body: &[u8]) -> Option<ApprovalView> {
    serde_json::from_slice(body).ok()
}

/// What a command whose request waits for approvals prints: the request as
/// JSON, or a sentence that says who must approve it, by when, and how.
pub fn print_sent_for_approval(format: OutputFormat, request: &ApprovalView) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => crate::output::print_json(request),
        OutputFormat::Table => crate::output::emit(&format!("{}\n", sent_for_approval(request))),
    }
}

/// `Sent for approval: request … waits for 2 approvals from administrator
/// identities (expires …). Approvers: keyhold approval show …`
pub fn sent_for_approval(request: &ApprovalView) -> String {
    let id = crate::output::clean(&request.id);
    let count = request.approvals_remaining.max(1);
    let plural = if count == 1 { "" } else { "s" };
    format!(
        "Sent for approval: request {id} waits for {count} approval{plural} from {} identities (expires {} UTC). Approvers: keyhold approval show {id}",
        crate::output::clean(&request.approver_role.replace('_', " ")),
        crate::output::time(&request.expires_at),
    )
}

/// A failed write of a download: quiet when stdout's reader has gone.
fn sink_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Reported(0).into()
    } else {
        anyhow::anyhow!("cannot write the download: {error}")
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_FAILURE, EXIT_USAGE, exit_code_of};

    #[test]
    fn urls_are_normalised_and_checked() {
        assert_eq!(
            normalize_url("http://127.0.0.1:8600/").unwrap(),
            "http://127.0.0.1:8600"
        );
        assert_eq!(
            normalize_url("http://localhost:8600").unwrap(),
            "http://localhost:8600"
        );
        assert_eq!(
            normalize_url("http://h/prefix/").unwrap(),
            "http://h/prefix"
        );
        assert!(normalize_url("127.0.0.1:8600").is_err());
        assert!(normalize_url("ftp://h").is_err());
        assert_eq!(
            normalize_url("https://keyhold.example:8600/").unwrap(),
            "https://keyhold.example:8600"
        );
        assert!(normalize_url("http://h/?x=1").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("ig-demo_1.x"), "ig-demo_1.x");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment(".."), "%2E%2E");
    }

    #[test]
    fn error_answers_become_messages_and_exit_codes() {
        let body = br#"{"error":{"code":"not_found","message":"key group 'g' does not exist"}}"#;
        let err = error_from_answer(StatusCode::NOT_FOUND, body, true);
        assert_eq!(err.to_string(), "key group 'g' does not exist");
        assert_eq!(err.exit_code(), EXIT_USAGE);

        let body = br#"{"error":{"code":"unauthenticated","message":"session expired"}}"#;
        let err = error_from_answer(StatusCode::UNAUTHORIZED, body, true);
        assert!(err.to_string().contains("keyhold login"));
        let err = error_from_answer(StatusCode::UNAUTHORIZED, body, false);
        assert_eq!(err.to_string(), "session expired");

        let body = br#"{"error":{"code":"invalid_input","message":"bad value","field":"alias"}}"#;
        assert_eq!(
            error_from_answer(StatusCode::BAD_REQUEST, body, true).to_string(),
            "bad value (field: alias)"
        );

        let err = error_from_answer(StatusCode::BAD_GATEWAY, b"<html>proxy\x1b[31m</html>", true);
        assert!(err.to_string().contains("502"));
        assert!(!err.to_string().contains('\x1b'));
        assert_eq!(err.exit_code(), EXIT_FAILURE);

        let unreachable = CliError::Unreachable {
            url: DEFAULT_URL.into(),
            cause: "refused".into(),
        };
        assert!(unreachable.to_string().contains("keyhold serve"));
        assert_eq!(
            exit_code_of(&anyhow::Error::new(unreachable).context("x")),
            EXIT_FAILURE
        );
        assert_eq!(
            exit_code_of(&anyhow::Error::new(CliError::Input("x".into()))),
            EXIT_USAGE
        );
        assert_eq!(exit_code_of(&anyhow::anyhow!("other")), EXIT_FAILURE);
    }
}
