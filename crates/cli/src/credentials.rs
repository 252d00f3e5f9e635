//! `keyhold credential import | add | list | show | delete`:
//! *Identity Management → Cloud Credentials*.

use std::path::PathBuf;

use keyhold_api::{AddCredentialRequest, CredentialView, ImportCredentialRequest};
use reqwest::Method;
use zeroize::Zeroize;

use crate::client::{Context, segment};
use crate::input;
use crate::output::{self, Tabular};

/// Largest credential file read (the server takes 1 MiB bodies).
const MAX_CSV_BYTES: usize = 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCommand {
    /// Import an AWS access key from the CSV file IAM offers for download.
    /// The secret is stored encrypted and never shown again.
    Import {
        /// A name for the credential (any: letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// The CSV file: `Access key ID,Secret access key` and one row.
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
        /// Endpoint override for AWS KMS (a VPC endpoint, a test peer): one the
        /// server's operator allows (kms_endpoint_allow). Needs two officers.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
    /// Add a credential that stores no secret: the server's own AWS
    /// credentials from the SDK's default chain (environment, profile, web
    /// identity, instance role), optionally assuming an IAM role through STS.
    /// Preferred over long-lived access keys.
    Add {
        /// A name for the credential (any: letters, digits, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// Use the server's AWS default credential chain (the kind added here).
        #[arg(long, required = true)]
        default_chain: bool,
        /// IAM role to assume with those credentials, such as
        /// arn:aws:iam::123456789012:role/keyhold.
        #[arg(long, value_name = "ARN")]
        role_arn: Option<String>,
        /// Endpoint override for AWS KMS (a VPC endpoint, a test peer): one the
        /// server's operator allows (kms_endpoint_allow). Needs two officers.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
    /// List the cloud credentials (never their secrets).
    List,
    /// Show one cloud credential.
    Show {
        /// The credential's name.
        name: String,
    },
    /// Delete a cloud credential (refused while a key group uses it).
    Delete {
        /// The credential's name.
        name: String,
    },
}

impl Tabular for CredentialView {
    fn headers() -> &'static [&'static str] {
        &[
            "Name",
            "Service",
            "Kind",
            "Access Name",
            "Role",
            "Endpoint",
            "Created",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.service.clone(),
            self.kind.clone(),
            self.access_name.clone(),
            output::or_dash(self.role_arn.as_deref()),
            output::or_dash(self.endpoint.as_deref()),
            output::time(&self.created_at),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

pub async fn run(ctx: &Context, command: CredentialCommand) -> anyhow::Result<()> {
    match command {
        CredentialCommand::Import {
            name,
            csv,
            endpoint,
        } => {
            let text = input::read_text_file(&csv, "CSV file", MAX_CSV_BYTES)?;
            let client = ctx.authenticated()?;
            let mut request = ImportCredentialRequest {
                name,
                service: None,
                csv: text.as_str().to_owned(),
                endpoint,
            };
            drop(text);
            let answer = client
                .call::<_, CredentialView>(Method::POST, "/credentials", &request)
                .await;
            request.csv.zeroize();
            output::print_item(ctx.output, &answer?)
        }
        CredentialCommand::Add {
            name,
            // Required by clap: it names the kind, the only one added this way.
            default_chain: _,
            role_arn,
            endpoint,
        } => {
            let request = AddCredentialRequest {
                name,
                service: None,
                kind: "default_chain".to_owned(),
                role_arn,
                endpoint,
            };
            let credential: CredentialView = ctx
                .authenticated()?
                .call(Method::POST, "/credentials/chain", &request)
                .await?;
            output::print_item(ctx.output, &credential)
        }
        CredentialCommand::List => {
            let credentials: Vec<CredentialView> = ctx.authenticated()?.get("/credentials").await?;
            output::print_list(ctx.output, &credentials)
        }
        CredentialCommand::Show { name } => {
            let credential: CredentialView = ctx
                .authenticated()?
                .get(&format!("/credentials/{}", segment(&name)))
                .await?;
            output::print_item(ctx.output, &credential)
        }
        CredentialCommand::Delete { name } => {
            ctx.authenticated()?
                .delete(&format!("/credentials/{}", segment(&name)))
                .await?;
            output::print_done(ctx.output, &format!("Deleted cloud credential {name}."))?;
            Ok(())
        }
    }
}
