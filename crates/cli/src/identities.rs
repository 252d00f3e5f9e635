//! `keyhold identity list | create | delete`: *Identity Management → Identities*.

use keyhold_api::{CreateIdentityRequest, CreatedIdentity, IdentityView};
use reqwest::Method;
use serde::Serialize;

use crate::client::{Context, segment};
use crate::output::{self, OutputFormat, Table, Tabular};

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// List the identities.
    List,
    /// Create an identity; prints its one-time password, shown this once.
    Create {
        /// Its name: 1 to 64 letters, digits, '.', '_' or '-'.
        #[arg(long)]
        name: String,
        /// Its role: administrator, key_officer or auditor.
        #[arg(long)]
        role: String,
    },
    /// Delete an identity.
    Delete {
        /// The identity's name.
        name: String,
    },
}

impl Tabular for IdentityView {
    fn headers() -> &'static [&'static str] {
        &["Name", "Role", "Must Change Password", "Locked", "Created"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.role.clone(),
            output::yes_no(self.must_change_password),
            output::yes_no(self.locked),
            output::time(&self.created_at),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        Self::headers().iter().copied().zip(self.row()).collect()
    }
}

pub async fn run(ctx: &Context, command: IdentityCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        IdentityCommand::List => {
            let identities: Vec<IdentityView> = client.get("/identities").await?;
            output::print_list(ctx.output, &identities)
        }
        IdentityCommand::Create { name, role } => {
            let request = CreateIdentityRequest { name, role };
            let mut created: CreatedIdentity =
                client.call(Method::POST, "/identities", &request).await?;
            let printed = print_created(ctx.output, &created);
            zeroize::Zeroize::zeroize(&mut created.password);
            printed
        }
        IdentityCommand::Delete { name } => {
            client
                .delete(&format!("/identities/{}", segment(&name)))
                .await?;
            output::print_done(ctx.output, &format!("Deleted identity {name}."))?;
            Ok(())
        }
    }
}

/// The one place besides `init` where a password is printed: the one-time
/// password of a new identity.
fn print_created(format: OutputFormat, created: &CreatedIdentity) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Shown<'a> {
                name: &'a str,
                role: &'a str,
                password: &'a str,
            }
            let text = zeroize::Zeroizing::new(serde_json::to_string_pretty(&Shown {
                name: &created.name,
                role: &created.role,
                password: &created.password,
            })?);
            output::emit(&format!("{}\n", text.as_str()))?;
        }
        OutputFormat::Table => {
            let mut table = Table::new(&["Identity", "Role", "One-time password"]);
            table.push(vec![
                created.name.clone(),
                created.role.clone(),
                created.password.clone(),
            ]);
            let text = zeroize::Zeroizing::new(table.render());
            output::emit(text.as_str())?;
            output::emit(&format!(
                "\nThis password is shown only now. {} must change it before first use: keyhold passwd --user {}\n",
                output::clean(&created.name),
                output::clean(&created.name)
            ))?;
        }
    }
    Ok(())
}
