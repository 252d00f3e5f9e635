//! `keyhold approval list | show | approve | deny | result | policies`:
//! *Administration → Approvals*, the requests a policy holds to a quorum of
//! approvals, and the policies themselves.
//!
//! A command whose request waits for approvals prints "Sent for approval"
//! (see `client::print_sent_for_approval`); approvers read it here with
//! `show`, which prints exactly what will run, and answer it from their own
//! session.

use std::path::PathBuf;

use keyhold_api::{
    ApprovalPoliciesRequest, ApprovalResultView, ApprovalView, DenyRequest, PolicyView,
};
use reqwest::Method;
use serde::Serialize;

use crate::client::{Context, segment};
use crate::error::CliError;
use crate::output::{self, OutputFormat, Table, Tabular};

/// Largest policies file read.
const MAX_POLICIES_BYTES: usize = 64 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalCommand {
    /// List approval requests, newest first.
    List {
        /// Only those with this status: pending, approved, executed, failed,
        /// denied or expired.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// How many at most [server default: 100; at most 1000].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show a request: what will happen, its exact parameters and their
    /// hash, who asked, the answers so far and when it expires.
    Show {
        /// The request's id.
        id: String,
    },
    /// Approve a request (not one your own session asked for); the last
    /// approval needed runs it.
    Approve {
        /// The request's id.
        id: String,
    },
    /// Deny a request: it will not run.
    Deny {
        /// The request's id.
        id: String,
        /// Why, for the requester and the other approvers.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Collect what an executed request gave its requester (an added
    /// identity's one-time password): shown this once.
    Result {
        /// The request's id.
        id: String,
    },
    /// The approval policies: which operations need a quorum of approvals;
    /// `show` by default.
    Policies {
        #[command(subcommand)]
        command: Option<PoliciesCommand>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PoliciesCommand {
    /// Show each class of sensitive operation and its policy.
    Show,
    /// Replace the quorums with those of a JSON file such as
    /// {"quorums": {"delete_group": {"approvals": 2, "role": "administrator",
    /// "expires_after_hours": 24}}}; a class left out keeps dual control.
    Set {
        /// The JSON file, or - for stdin.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

impl Tabular for ApprovalView {
    fn headers() -> &'static [&'static str] {
        &[
            "ID",
            "Class",
            "Summary",
            "Status",
            "Approvals",
            "Requested By",
            "Requested",
            "Expires",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.class.clone(),
            self.summary.clone(),
            self.status.clone(),
            approvals(self),
            self.requested_by.join(", "),
            output::time(&self.requested_at),
            output::time(&self.expires_at),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("ID", self.id.clone()),
            (
                "Operation",
                format!("{} ({})", self.class_label, self.class),
            ),
            ("Summary", self.summary.clone()),
            ("Status", self.status.clone()),
            ("Requested by", self.requested_by.join(", ")),
            ("Requested", output::time(&self.requested_at)),
            ("Expires", output::time(&self.expires_at)),
            (
                "Needs",
                format!(
                    "{} approval(s) from {} identities",
                    self.approvals_needed,
                    self.approver_role.replace('_', " ")
                ),
            ),
            ("Approvals", approvals(self)),
            ("Params hash", format!("sha256:{}", self.params_hash)),
            ("Decided", output::opt_time(self.decided_at.as_deref())),
            ("Outcome", output::or_dash(self.outcome.as_deref())),
            ("You may answer", output::yes_no(self.you_may_answer)),
        ];
        if self.result_waiting {
            fields.push((
                "Result",
                format!(
                    "waits for the requester: keyhold approval result {}",
                    self.id
                ),
            ));
        }
        fields
    }
}

/// `1/2`: approvals given of those needed.
fn approvals(request: &ApprovalView) -> String {
    let given = request
        .votes
        .iter()
        .filter(|v| v.answer == "approved")
        .count();
    format!("{given}/{}", request.approvals_needed)
}

impl Tabular for PolicyView {
    fn headers() -> &'static [&'static str] {
        &["Class", "Operation", "Policy", "Description"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.class.clone(),
            self.label.clone(),
            self.policy.clone(),
            self.description.clone(),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

pub async fn run(ctx: &Context, command: ApprovalCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        ApprovalCommand::List { status, limit } => {
            #[derive(Serialize)]
            struct Query {
                #[serde(skip_serializing_if = "Option::is_none")]
                status: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                limit: Option<u32>,
            }
            let requests: Vec<ApprovalView> = client
                .get_query("/approvals", &Query { status, limit })
                .await?;
            output::print_list(ctx.output, &requests)
        }
        ApprovalCommand::Show { id } => {
            let request: ApprovalView = client.get(&format!("/approvals/{}", segment(&id))).await?;
            print_request(ctx.output, &request)
        }
        ApprovalCommand::Approve { id } => {
            let request: ApprovalView = client
                .call(
                    Method::POST,
                    &format!("/approvals/{}/approve", segment(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            print_answered(ctx.output, &request, "Approved")
        }
        ApprovalCommand::Deny { id, reason } => {
            let request: ApprovalView = client
                .call(
                    Method::POST,
                    &format!("/approvals/{}/deny", segment(&id)),
                    &DenyRequest { reason },
                )
                .await?;
            print_answered(ctx.output, &request, "Denied")
        }
        ApprovalCommand::Result { id } => {
            let mut result: ApprovalResultView = client
                .call(
                    Method::POST,
                    &format!("/approvals/{}/result", segment(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            let printed = print_result(ctx.output, &result);
            zeroize::Zeroize::zeroize(&mut result.password);
            if let Some(issued) = result.xks_credential.as_mut() {
                crate::xks::wipe(issued);
            }
            printed
        }
        ApprovalCommand::Policies { command } => match command.unwrap_or(PoliciesCommand::Show) {
            PoliciesCommand::Show => {
                let policies: Vec<PolicyView> = client.get("/approval-policies").await?;
                output::print_list(ctx.output, &policies)
            }
            PoliciesCommand::Set { file } => {
                let request = read_policies(&file)?;
                let policies: Vec<PolicyView> = client
                    .call(Method::PUT, "/approval-policies", &request)
                    .await?;
                output::print_list(ctx.output, &policies)
            }
        },
    }
}

/// `approval show`: the fields, then the votes, the policy changes and the
/// exact parameters, as pretty JSON.
pub fn print_request(format: OutputFormat, request: &ApprovalView) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return output::print_json(request);
    }
    output::emit(&render_request(request)?)
}

/// The text of `approval show` for people.
pub fn render_request(request: &ApprovalView) -> anyhow::Result<String> {
    let mut text = output::render_fields(&request.fields());
    text.push_str("\nVotes:\n");
    if request.votes.is_empty() {
        text.push_str("  none yet\n");
    } else {
        let mut table = Table::new(&["Identity", "Role", "Answer", "At", "Reason"]);
        for vote in &request.votes {
            table.push(vec![
                vote.identity.clone(),
                vote.role.clone(),
                vote.answer.clone(),
                output::time(&vote.at),
                output::or_dash(vote.reason.as_deref()),
            ]);
        }
        for line in table.render().lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    if !request.policy_changes.is_empty() {
        text.push_str("\nPolicy changes:\n");
        let mut table = Table::new(&["Class", "Before", "After"]);
        for change in &request.policy_changes {
            table.push(vec![
                change.class.clone(),
                change.before.clone(),
                change.after.clone(),
            ]);
        }
        for line in table.render().lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text.push_str("\nParameters (exactly what will run):\n");
    let parameters = serde_json::to_string_pretty(&request.operation)?;
    for line in parameters.lines() {
        // Each line cleaned: the server's text never drives the terminal.
        text.push_str(&format!("  {}\n", output::clean(line)));
    }
    Ok(text)
}

/// After `approve` or `deny`: what became of the request.
fn print_answered(
    format: OutputFormat,
    request: &ApprovalView,
    answer: &str,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        return output::print_json(request);
    }
    let id = output::clean(&request.id);
    let outcome = output::clean(request.outcome.as_deref().unwrap_or_default());
    let message = match request.status.as_str() {
        "pending" => format!(
            "{answer} request {id}: it waits for {} more approval(s).",
            request.approvals_remaining
        ),
        "executed" if request.result_waiting => format!(
            "{answer} request {id}: executed ({outcome}). Its requester collects the result with: keyhold approval result {id}"
        ),
        "executed" => format!("{answer} request {id}: executed ({outcome})."),
        "failed" => format!("{answer} request {id}, but it failed: {outcome}"),
        "denied" => format!("{answer} request {id}: it will not run."),
        status => format!("{answer} request {id}: it is {}.", output::clean(status)),
    };
    output::emit(&format!("{message}\n"))?;
    if request.status == "failed" {
        return Err(CliError::Reported(crate::error::EXIT_FAILURE).into());
    }
    Ok(())
}

/// `approval result`: the one-time password, or the new XKS credential,
/// shown this once.
fn print_result(format: OutputFormat, result: &ApprovalResultView) -> anyhow::Result<()> {
    if let (OutputFormat::Table, Some(issued)) = (format, &result.xks_credential) {
        return crate::xks::print_issued(format, issued);
    }
    match format {
        OutputFormat::Json => {
            let text = zeroize::Zeroizing::new(serde_json::to_string_pretty(result)?);
            output::emit(&format!("{}\n", text.as_str()))
        }
        OutputFormat::Table => {
            let mut table = Table::new(&["Request", "One-time password"]);
            table.push(vec![result.id.clone(), result.password.clone()]);
            let text = zeroize::Zeroizing::new(table.render());
            output::emit(text.as_str())?;
            output::emit(
                "\nThis password is shown only now. The identity must change it before first use: keyhold passwd --user NAME\n",
            )
        }
    }
}

/// The policies file (or stdin with `-`), checked as JSON before sending.
fn read_policies(file: &std::path::Path) -> anyhow::Result<ApprovalPoliciesRequest> {
    let text = if file.as_os_str() == "-" {
        crate::input::read_stdin()?
    } else {
        crate::input::read_text_file(file, "approval policies file", MAX_POLICIES_BYTES)?
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "the approval policies {} are not JSON such as {{\"quorums\": {{\"delete_group\": {{\"approvals\": 2, \"role\": \"administrator\", \"expires_after_hours\": 24}}}}}}: {e}",
            if file.as_os_str() == "-" {
                "on stdin".to_owned()
            } else {
                format!("file {}", file.display())
            }
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_api::{PolicyChangeView, VoteView};

    fn request() -> ApprovalView {
        ApprovalView {
            id: "7d3c".into(),
            class: "delete_group".into(),
            class_label: "Delete a key group".into(),
            summary: "Delete key group ig-demo".into(),
            operation: serde_json::json!({"kind": "delete_group", "group": "ig-demo"}),
            params_hash: "ab12".into(),
            requested_by: vec!["Admin1".into()],
            requested_at: "2026-11-29T12:00:00Z".into(),
            expires_at: "2026-11-30T12:00:00Z".into(),
            approvals_needed: 2,
            approver_role: "key_officer".into(),
            approvals_remaining: 1,
            status: "pending".into(),
            votes: vec![VoteView {
                identity: "Admin2".into(),
                role: "administrator".into(),
                answer: "approved".into(),
                at: "2026-11-29T12:05:00Z".into(),
                reason: None,
            }],
            decided_at: None,
            outcome: None,
            result_waiting: false,
            policy_changes: vec![PolicyChangeView {
                class: "delete_key".into(),
                before: "dual control".into(),
                after: "2 approvals".into(),
            }],
            you_may_answer: true,
        }
    }

    #[test]
    fn show_prints_what_will_happen() {
        let text = render_request(&request()).unwrap();
        for expected in [
            "Delete key group ig-demo",
            "\"group\": \"ig-demo\"",
            "sha256:ab12",
            "Admin1",
            "Admin2",
            "1/2",
            "2026-11-30 12:00:00",
            "delete_key  dual control  2 approvals",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[test]
    fn a_request_sent_for_approval_says_who_must_approve() {
        let text = crate::client::sent_for_approval(&request());
        assert_eq!(
            text,
            "Sent for approval: request 7d3c waits for 1 approval from key officer identities (expires 2026-11-30 12:00:00 UTC). Approvers: keyhold approval show 7d3c"
        );
        let body = serde_json::to_vec(&request()).unwrap();
        assert!(crate::client::approval_request(&body).is_some());
        assert!(crate::client::approval_request(br#"{"id":"j","status":"queued"}"#).is_none());
    }
}
