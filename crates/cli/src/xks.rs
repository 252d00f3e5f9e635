//! `keyhold xks store | credential | key`: *External Key Stores*, keyhold
//! as the XKS proxy AWS KMS calls for every encrypt and decrypt of a KMS
//! key whose material never leaves keyhold's keystore.
//!
//! A credential's secret access key is printed once, by the command that
//! made it; with `--kms-config-out FILE` it goes only into that new file
//! (mode 0600, the JSON the AWS KMS console takes) and is not printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use keyhold_api::{
    CreateXksKeyRequest, CreateXksStoreRequest, IssuedXksCredentialView, UpdateXksKeyRequest,
    UpdateXksStoreRequest, XksKeyView, XksMtlsRequest, XksRuleView, XksStoreView,
};
use reqwest::Method;
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::backup::create_new_private;
use crate::client::{Client, Context, segment};
use crate::error::CliError;
use crate::input;
use crate::output::{self, OutputFormat, Tabular};

/// Largest mTLS CA file read (the server takes at most 64 KiB of PEM).
const MAX_CA_BYTES: usize = 64 * 1024;
/// What `--usage` takes.
const USAGES: [&str; 3] = ["encrypt_decrypt", "encrypt", "decrypt"];

#[derive(Debug, clap::Subcommand)]
pub enum XksCommand {
    /// External key stores: the path prefix AWS KMS reaches each under,
    /// its request quota and optional mutual TLS.
    #[command(subcommand)]
    Store(StoreCommand),
    /// A store's SigV4 credentials (two at most, so they can be rotated).
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// XKS keys: AES-256 keys generated in keyhold's keystore, whose ids
    /// are the XksKeyId of `aws kms create-key`.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Create a store and its first credential (dual control). Prints the
    /// secret access key once, or with --kms-config-out writes it only into
    /// the AWS KMS console's file.
    Create(CreateStoreArgs),
    /// List the stores (credentials as access key ids only).
    List,
    /// Show one store: its XksProxyUriPath, quota, mTLS and credentials.
    Show {
        /// The store's name.
        name: String,
    },
    /// Change a store's quota or mutual TLS (dual control).
    Update(UpdateStoreArgs),
    /// Delete a store and its credentials (dual control; refused while it
    /// holds keys).
    Delete {
        /// The store's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateStoreArgs {
    /// A name for the store (letters, digits, '.', '_', '-').
    #[arg(long)]
    pub name: String,
    /// The path before /kms/xks/v1 AWS KMS uses, such as /xks/payments
    /// [default: /xks/<name>].
    #[arg(long, value_name = "PATH")]
    pub path_prefix: Option<String>,
    /// Requests per second served, per node [default: 1800, AWS KMS's quota
    /// for an external key store].
    #[arg(long, value_name = "N")]
    pub quota: Option<u32>,
    /// Require mutual TLS: the common name of KMS's client certificate,
    /// such as cks.kms.eu-west-1.amazonaws.com.
    #[arg(long, value_name = "NAME", requires = "mtls_ca")]
    pub mtls_subject: Option<String>,
    /// The PEM file of the CA KMS's client certificate chains to.
    #[arg(long, value_name = "FILE", requires = "mtls_subject")]
    pub mtls_ca: Option<PathBuf>,
    /// Write the AWS KMS console's proxy configuration file (with the
    /// secret) into this new file, mode 0600, instead of printing the secret.
    #[arg(long, value_name = "FILE")]
    pub kms_config_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UpdateStoreArgs {
    /// The store's name.
    pub name: String,
    /// Requests per second served, per node.
    #[arg(long, value_name = "N")]
    pub quota: Option<u32>,
    /// Require mutual TLS with this client certificate common name.
    #[arg(
        long,
        value_name = "NAME",
        requires = "mtls_ca",
        conflicts_with = "no_mtls"
    )]
    pub mtls_subject: Option<String>,
    /// The PEM file of the CA KMS's client certificate chains to.
    #[arg(long, value_name = "FILE", requires = "mtls_subject")]
    pub mtls_ca: Option<PathBuf>,
    /// Turn mutual TLS off.
    #[arg(long)]
    pub no_mtls: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCommand {
    /// Add a new credential to a store (dual control), the first step of a
    /// rotation: give it to AWS KMS (update-custom-key-store), then revoke
    /// the old one. Refused while the store has two.
    Rotate {
        /// The store's name.
        #[arg(long, value_name = "NAME")]
        store: String,
        /// Write the AWS KMS console's file (with the secret) into this new
        /// file, mode 0600, instead of printing the secret.
        #[arg(long, value_name = "FILE")]
        kms_config_out: Option<PathBuf>,
    },
    /// Revoke a credential (dual control): KMS calls signed with it are
    /// refused within seconds.
    Revoke {
        /// The store's name.
        #[arg(long, value_name = "NAME")]
        store: String,
        /// The credential's access key id.
        #[arg(long, value_name = "ID")]
        access_key_id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Generate a key in a store (dual control). The --allow-* options make
    /// its authorization rule on KMS's request metadata: each list given
    /// must match ('*' matches any run of characters).
    Create(CreateKeyArgs),
    /// List the keys, of one store or all.
    List {
        /// Only this store's keys.
        #[arg(long, value_name = "NAME")]
        store: Option<String>,
    },
    /// Show one key, with the aws kms create-key command for it.
    Show {
        /// The key's id (its XksKeyId).
        id: String,
    },
    /// Enable a key (dual control: AWS KMS may use it again).
    Enable {
        /// The key's id.
        id: String,
    },
    /// Disable a key (one key officer): AWS KMS calls with it are refused.
    Disable {
        /// The key's id.
        id: String,
    },
    /// Change a key. Narrowing its usage or its description needs one key
    /// officer; widening its usage or changing its rule needs two.
    Update(UpdateKeyArgs),
    /// Delete a disabled key and destroy its material (dual control):
    /// whatever AWS KMS encrypted under it can never be decrypted again.
    Delete {
        /// The key's id.
        id: String,
    },
}

/// An authorization rule's lists, as options.
#[derive(Debug, Default, clap::Args)]
pub struct RuleArgs {
    /// An AWS principal ARN pattern allowed (awsPrincipalArn); repeat.
    #[arg(long = "allow-principal", value_name = "ARN")]
    pub principals: Vec<String>,
    /// A KMS key ARN pattern allowed (kmsKeyArn); repeat.
    #[arg(long = "allow-kms-key-arn", value_name = "ARN")]
    pub kms_key_arns: Vec<String>,
    /// A KMS operation allowed (kmsOperation: Encrypt, Decrypt,
    /// GenerateDataKey*, ReEncrypt*, …); repeat.
    #[arg(long = "allow-operation", value_name = "OPERATION")]
    pub kms_operations: Vec<String>,
    /// A source VPC pattern allowed (awsSourceVpc); repeat.
    #[arg(long = "allow-source-vpc", value_name = "VPC")]
    pub source_vpcs: Vec<String>,
}

impl RuleArgs {
    fn is_empty(&self) -> bool {
        self.principals.is_empty()
            && self.kms_key_arns.is_empty()
            && self.kms_operations.is_empty()
            && self.source_vpcs.is_empty()
    }

    fn into_rule(self) -> XksRuleView {
        XksRuleView {
            principals: self.principals,
            kms_key_arns: self.kms_key_arns,
            kms_operations: self.kms_operations,
            source_vpcs: self.source_vpcs,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateKeyArgs {
    /// The store's name.
    #[arg(long, value_name = "NAME")]
    pub store: String,
    #[arg(long)]
    pub description: Option<String>,
    /// What AWS KMS may do with the key [default: encrypt_decrypt, what
    /// aws kms create-key needs].
    #[arg(long, value_parser = USAGES)]
    pub usage: Option<String>,
    /// Create it disabled (enable it later, under dual control).
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub rule: RuleArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpdateKeyArgs {
    /// The key's id.
    pub id: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_parser = USAGES)]
    pub usage: Option<String>,
    /// Replace the authorization rule with the --allow-* options given.
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Remove the authorization rule (SigV4 alone admits requests).
    #[arg(long, conflicts_with_all = ["principals", "kms_key_arns", "kms_operations", "source_vpcs"])]
    pub no_rule: bool,
}

impl Tabular for XksStoreView {
    fn headers() -> &'static [&'static str] {
        &[
            "Name",
            "XksProxyUriPath",
            "Quota/s",
            "mTLS",
            "Credentials",
            "Keys",
            "Created",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.uri_path.clone(),
            self.quota_per_second.to_string(),
            output::or_dash(self.mtls.as_ref().map(|m| m.subject.as_str())),
            self.credentials
                .iter()
                .map(|c| c.access_key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.key_count.to_string(),
            output::time(&self.created_at),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("Name", self.name.clone()),
            ("Path prefix", self.path_prefix.clone()),
            ("XksProxyUriPath", self.uri_path.clone()),
            ("Quota per second", self.quota_per_second.to_string()),
            (
                "mTLS subject",
                output::or_dash(self.mtls.as_ref().map(|m| m.subject.as_str())),
            ),
            (
                "mTLS CA SHA-256",
                output::or_dash(
                    self.mtls
                        .as_ref()
                        .map(|m| m.ca_sha256.join(", "))
                        .as_deref(),
                ),
            ),
        ];
        if self.credentials.is_empty() {
            fields.push((
                "Credential",
                "none (KMS cannot sign: rotate to add one)".to_owned(),
            ));
        }
        for credential in &self.credentials {
            fields.push((
                "Credential",
                format!(
                    "{} (created {})",
                    credential.access_key_id,
                    output::time(&credential.created_at)
                ),
            ));
        }
        fields.extend([
            ("Keys", self.key_count.to_string()),
            ("Created", output::time(&self.created_at)),
            ("Updated", output::time(&self.updated_at)),
        ]);
        fields
    }
}

impl Tabular for XksKeyView {
    fn headers() -> &'static [&'static str] {
        &[
            "XksKeyId",
            "Store",
            "Usage",
            "Enabled",
            "Rule",
            "Check Digits",
            "Description",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.store.clone(),
            self.usage.clone(),
            output::yes_no(self.enabled),
            if self.rule == XksRuleView::default() {
                "-".to_owned()
            } else {
                "yes".to_owned()
            },
            self.check_digits.clone(),
            output::or_dash(Some(&self.description)),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let list = |items: &[String]| {
            if items.is_empty() {
                "any".to_owned()
            } else {
                items.join(", ")
            }
        };
        vec![
            ("XksKeyId", self.id.clone()),
            ("Store", self.store.clone()),
            ("Description", output::or_dash(Some(&self.description))),
            ("Usage", self.usage.clone()),
            ("Enabled", output::yes_no(self.enabled)),
            ("Allowed principals", list(&self.rule.principals)),
            ("Allowed KMS key ARNs", list(&self.rule.kms_key_arns)),
            ("Allowed KMS operations", list(&self.rule.kms_operations)),
            ("Allowed source VPCs", list(&self.rule.source_vpcs)),
            ("Check digits", self.check_digits.clone()),
            ("Created", output::time(&self.created_at)),
            ("Updated", output::time(&self.updated_at)),
            ("XksProxyUriPath", self.aws.xks_proxy_uri_path.clone()),
            ("Create the KMS key", self.aws.create_key_command.clone()),
        ]
    }
}

pub async fn run(ctx: &Context, command: XksCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        XksCommand::Store(command) => store(ctx, &client, command).await,
        XksCommand::Credential(command) => credential(ctx, &client, command).await,
        XksCommand::Key(command) => key(ctx, &client, command).await,
    }
}

async fn store(ctx: &Context, client: &Client, command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Create(args) => {
            let request = CreateXksStoreRequest {
                name: args.name,
                path_prefix: args.path_prefix,
                quota_per_second: args.quota,
                mtls: mtls(args.mtls_subject, args.mtls_ca.as_deref())?,
            };
            issue(ctx, args.kms_config_out.as_deref(), async {
                client.call(Method::POST, "/xks/stores", &request).await
            })
            .await
        }
        StoreCommand::List => {
            let stores: Vec<XksStoreView> = client.get("/xks/stores").await?;
            output::print_list(ctx.output, &stores)
        }
        StoreCommand::Show { name } => {
            let store: XksStoreView = client
                .get(&format!("/xks/stores/{}", segment(&name)))
                .await?;
            output::print_item(ctx.output, &store)
        }
        StoreCommand::Update(args) => {
            let request = UpdateXksStoreRequest {
                quota_per_second: args.quota,
                mtls: if args.no_mtls {
                    Some(None)
                } else {
                    mtls(args.mtls_subject, args.mtls_ca.as_deref())?.map(Some)
                },
            };
            if request == UpdateXksStoreRequest::default() {
                return Err(CliError::Input(
                    "nothing to change: give --quota, --mtls-subject with --mtls-ca, or --no-mtls"
                        .into(),
                )
                .into());
            }
            let store: XksStoreView = client
                .call(
                    Method::PATCH,
                    &format!("/xks/stores/{}", segment(&args.name)),
                    &request,
                )
                .await?;
            output::print_item(ctx.output, &store)
        }
        StoreCommand::Delete { name } => {
            client
                .delete(&format!("/xks/stores/{}", segment(&name)))
                .await?;
            output::print_done(
                ctx.output,
                &format!(
                    "Deleted external key store {name}. Delete its custom key store in AWS KMS too (aws kms delete-custom-key-store)."
                ),
            )
        }
    }
}

async fn credential(
    ctx: &Context,
    client: &Client,
    command: CredentialCommand,
) -> anyhow::Result<()> {
    match command {
        CredentialCommand::Rotate {
            store,
            kms_config_out,
        } => {
            let path = format!("/xks/stores/{}/credentials", segment(&store));
            issue(ctx, kms_config_out.as_deref(), async {
                client
                    .call(Method::POST, &path, &serde_json::json!({}))
                    .await
            })
            .await
        }
        CredentialCommand::Revoke {
            store,
            access_key_id,
        } => {
            client
                .delete(&format!(
                    "/xks/stores/{}/credentials/{}",
                    segment(&store),
                    segment(&access_key_id)
                ))
                .await?;
            output::print_done(
                ctx.output,
                &format!(
                    "Revoked credential {access_key_id} of external key store {store}: AWS KMS calls signed with it are refused."
                ),
            )
        }
    }
}

async fn key(ctx: &Context, client: &Client, command: KeyCommand) -> anyhow::Result<()> {
    let key_path = |id: &str| format!("/xks/keys/{}", segment(id));
    let change = |request: UpdateXksKeyRequest, id: String| async move {
        let key: XksKeyView = client.call(Method::PATCH, &key_path(&id), &request).await?;
        output::print_item(ctx.output, &key)
    };
    match command {
        KeyCommand::Create(args) => {
            let request = CreateXksKeyRequest {
                description: args.description,
                usage: args.usage,
                enabled: args.disabled.then_some(false),
                rule: (!args.rule.is_empty()).then(|| args.rule.into_rule()),
            };
            let key: XksKeyView = client
                .call(
                    Method::POST,
                    &format!("/xks/stores/{}/keys", segment(&args.store)),
                    &request,
                )
                .await?;
            output::print_item(ctx.output, &key)
        }
        KeyCommand::List { store } => {
            let keys: Vec<XksKeyView> = match store {
                Some(store) => {
                    client
                        .get(&format!("/xks/stores/{}/keys", segment(&store)))
                        .await?
                }
                None => client.get("/xks/keys").await?,
            };
            output::print_list(ctx.output, &keys)
        }
        KeyCommand::Show { id } => {
            let key: XksKeyView = client.get(&key_path(&id)).await?;
            output::print_item(ctx.output, &key)
        }
        KeyCommand::Enable { id } => {
            let request = UpdateXksKeyRequest {
                enabled: Some(true),
                ..UpdateXksKeyRequest::default()
            };
            change(request, id).await
        }
        KeyCommand::Disable { id } => {
            let request = UpdateXksKeyRequest {
                enabled: Some(false),
                ..UpdateXksKeyRequest::default()
            };
            change(request, id).await
        }
        KeyCommand::Update(args) => {
            let rule = if args.no_rule {
                Some(XksRuleView::default())
            } else {
                (!args.rule.is_empty()).then(|| args.rule.into_rule())
            };
            let request = UpdateXksKeyRequest {
                description: args.description,
                usage: args.usage,
                enabled: None,
                rule,
            };
            if request == UpdateXksKeyRequest::default() {
                return Err(CliError::Input(
                    "nothing to change: give --description, --usage, --allow-* options (the new rule) or --no-rule".into(),
                )
                .into());
            }
            change(request, args.id).await
        }
        KeyCommand::Delete { id } => {
            client.delete(&key_path(&id)).await?;
            output::print_done(
                ctx.output,
                &format!(
                    "Deleted XKS key {id}; its material is destroyed. Schedule its KMS key's deletion in AWS KMS too."
                ),
            )
        }
    }
}

/// The mutual-TLS rule of the options (clap asks for both or neither).
fn mtls(subject: Option<String>, ca: Option<&Path>) -> anyhow::Result<Option<XksMtlsRequest>> {
    match (subject, ca) {
        (Some(subject), Some(ca)) => {
            let pem = input::read_text_file(ca, "mTLS CA file", MAX_CA_BYTES)?;
            Ok(Some(XksMtlsRequest {
                subject,
                ca_pem: pem.as_str().to_owned(),
            }))
        }
        (None, None) => Ok(None),
        _ => Err(CliError::Input(
            "give --mtls-subject and --mtls-ca together (the client certificate's name and its CA)"
                .into(),
        )
        .into()),
    }
}

/// Runs a call that issues a credential and shows its secret once: printed,
/// or only written into the new file `out` (made before the call, so a
/// file that cannot be written never costs a credential; removed again
/// when the call fails or is sent for approval).
async fn issue(
    ctx: &Context,
    out: Option<&Path>,
    call: impl Future<Output = anyhow::Result<IssuedXksCredentialView>>,
) -> anyhow::Result<()> {
    let file = out
        .map(|path| create_new_private(path, "KMS configuration file"))
        .transpose()?;
    let answer = call.await;
    let (Some(path), Some(file)) = (out, file) else {
        let mut issued = answer?;
        let printed = print_issued(ctx.output, &issued);
        wipe(&mut issued);
        return printed;
    };
    let mut issued = match answer {
        Ok(issued) => issued,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    let written = write_console_file(file, &issued);
    let printed = match written {
        Ok(()) => print_written(ctx.output, &issued, path),
        Err(e) => {
            // The credential exists now: its secret must reach the officer
            // somehow, or it is lost (revoke it and rotate again otherwise).
            let _ = std::fs::remove_file(path);
            eprintln!(
                "error: cannot write {} ({e}); the secret is printed instead",
                path.display()
            );
            print_issued(ctx.output, &issued)
        }
    };
    wipe(&mut issued);
    printed
}

fn write_console_file(
    mut file: std::fs::File,
    issued: &IssuedXksCredentialView,
) -> anyhow::Result<()> {
    let mut text = Zeroizing::new(serde_json::to_string_pretty(&issued.kms_console_file)?);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Wipes the secret's copies in the answer.
pub(crate) fn wipe(issued: &mut IssuedXksCredentialView) {
    issued.secret_access_key.zeroize();
    issued
        .kms_console_file
        .xks_proxy_authentication_credential
        .raw_secret_access_key
        .zeroize();
}

const SECRET_NOTE: &str = "The secret access key is shown only now: give it to AWS KMS (aws kms create-custom-key-store, or update-custom-key-store when rotating) and keep no other copy.";

/// The credential with its secret, the one time it is printed (also by
/// `approval result`, for a request that made one).
pub(crate) fn print_issued(
    format: OutputFormat,
    issued: &IssuedXksCredentialView,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let text = Zeroizing::new(serde_json::to_string_pretty(issued)?);
            output::emit(&format!("{}\n", text.as_str()))
        }
        OutputFormat::Table => {
            let mut fields = issued.store.fields();
            fields.extend([
                ("New access key ID", issued.access_key_id.clone()),
                ("Secret access key", issued.secret_access_key.clone()),
            ]);
            let text = Zeroizing::new(output::render_fields(&fields));
            for (_, value) in &mut fields {
                value.zeroize();
            }
            output::emit(text.as_str())?;
            output::emit(&format!("\n{SECRET_NOTE}\n{}", next_steps(issued)))
        }
    }
}

/// The credential without its secret, which went into `path`.
fn print_written(
    format: OutputFormat,
    issued: &IssuedXksCredentialView,
    path: &Path,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Written<'a> {
                store: &'a XksStoreView,
                access_key_id: &'a str,
                kms_config_file: &'a Path,
            }
            output::print_json(&Written {
                store: &issued.store,
                access_key_id: &issued.access_key_id,
                kms_config_file: path,
            })
        }
        OutputFormat::Table => {
            let mut fields = issued.store.fields();
            fields.extend([
                ("New access key ID", issued.access_key_id.clone()),
                ("KMS configuration file", path.display().to_string()),
            ]);
            output::emit(&output::render_fields(&fields))?;
            output::emit(&format!(
                "\nThe secret access key is only in {} (mode 0600): upload it in the AWS KMS console, or pass its values to the AWS CLI, then delete the file.\n{}",
                path.display(),
                next_steps(issued)
            ))
        }
    }
}

/// What to do next on the AWS side: create the custom key store for a new
/// store, or hand KMS the new credential and revoke the old one.
fn next_steps(issued: &IssuedXksCredentialView) -> String {
    let store = output::clean(&issued.store.name);
    match issued.store.credentials.as_slice() {
        [_, _] => {
            let old = issued
                .store
                .credentials
                .iter()
                .map(|c| c.access_key_id.as_str())
                .find(|id| *id != issued.access_key_id)
                .unwrap_or("OLD_ACCESS_KEY_ID");
            format!(
                "Next: aws kms update-custom-key-store --custom-key-store-id <id> --xks-proxy-authentication-credential AccessKeyId={},RawSecretAccessKey=<secret>\n\
                 then, once KMS signs with it: keyhold xks credential revoke --store {store} --access-key-id {}\n",
                output::clean(&issued.access_key_id),
                output::clean(old)
            )
        }
        _ => format!(
            "Next: aws kms create-custom-key-store --custom-key-store-name {store} --custom-key-store-type EXTERNAL_KEY_STORE \
             --xks-proxy-connectivity PUBLIC_ENDPOINT --xks-proxy-uri-endpoint https://<this server's host> \
             --xks-proxy-uri-path {} --xks-proxy-authentication-credential AccessKeyId={},RawSecretAccessKey=<secret>\n",
            output::clean(&issued.store.uri_path),
            output::clean(&issued.access_key_id)
        ),
    }
}
