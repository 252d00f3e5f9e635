//! *Key Management → External Key Stores*: the stores AWS KMS reaches
//! keyhold through (their `XksProxyUriPath`, quota, mutual TLS, SigV4
//! credentials and keys), creating one, and each store's page: its
//! credentials (*Rotate*, *Revoke*) and its keys (*Create key*, *Enable*,
//! *Disable*, *Delete*), with the AWS CLI lines that use them.
//!
//! Reads and actions are the API's operations (`crate::operations::xks`)
//! with the browser's session: who may do what, dual control or the
//! approval classes `manage_xks_stores` and `manage_xks_keys`, and what a
//! store or a rule must be are decided there, not here. The page only
//! leaves out the forms no identity of the session has the role for (an
//! auditor reads, nothing more) and says in advance when a second officer
//! is needed.
//!
//! A credential's secret access key exists in a page once: drawn into the
//! answer to the POST that created it (never into a URL, a redirect or
//! anything stored), together with the AWS CLI lines and the AWS KMS
//! console's file that carry it. Reloading the store's page shows the
//! access key id only.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::error::CoreError;
use keyhold_core::identity::Operation;
use keyhold_core::xks::{
    DEFAULT_QUOTA_PER_SECOND, MAX_ACTIVE_CREDENTIALS, MAX_CA_PEM_LEN, MAX_DESCRIPTION_LEN,
    MAX_QUOTA_PER_SECOND,
};
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroize;

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::xks;

const TITLE: &str = "External Key Stores";
const CREATED_TITLE: &str = "External key store created";
const ROTATED_TITLE: &str = "New credential issued";
/// Where the AWS CLI lines leave the id AWS KMS gives the custom key store
/// (`cks-…`, from `create-custom-key-store`): keyhold never learns it. The
/// angle brackets make a line pasted unchanged fail in the shell rather
/// than reach KMS.
const STORE_ID_PLACEHOLDER: &str = "<custom-key-store-id>";

// ---- what the session may do ----------------------------------------------------

/// Whether some identity of the session has the role for `op` (dual
/// control aside, which [`layout::needs`] explains): a form the session
/// could never send is not drawn. The core decides again when one is sent.
fn may(ui: &UiSession, op: Operation) -> bool {
    ui.session
        .identities
        .iter()
        .any(|identity| identity.role.allows(op.permission))
}

/// The session only reads (an auditor): the page says so instead of
/// drawing forms.
fn reads_only(ui: &UiSession) -> bool {
    !may(ui, Operation::MANAGE_XKS_STORES) && !may(ui, Operation::RESTRICT_XKS_KEY)
}

fn read_only_note() -> Markup {
    html! {
        p.hint #xks-read-only role="note" {
            "Your role reads external key stores: key officers and administrators create and change them."
        }
    }
}

// ---- outcome notices ------------------------------------------------------------

/// The outcome of the last action, as a redirect carries it: only these
/// sentences can appear, with the values escaped like any other text.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct XksQuery {
    /// `key_created`, `key_enabled`, `key_disabled`, `key_deleted`,
    /// `credential_revoked`, `store_updated` or `store_deleted`.
    done: String,
    /// The key's id, the credential's access key id or the store's name.
    name: String,
}

impl XksQuery {
    fn notice(&self) -> Option<Notice> {
        let name = &self.name;
        let text = match self.done.as_str() {
            "key_created" => format!(
                "Created XKS key {name}: give its XksKeyId to AWS KMS with the create-key line below."
            ),
            "key_enabled" => format!("Enabled XKS key {name}: AWS KMS can use it again."),
            "key_disabled" => format!(
                "Disabled XKS key {name}: keyhold refuses AWS KMS's requests for it until it is enabled."
            ),
            "key_deleted" => format!(
                "Deleted XKS key {name}: its material is gone, and what it encrypted cannot be decrypted."
            ),
            "credential_revoked" => format!(
                "Revoked credential {name}: requests signed with it are refused from now on."
            ),
            "store_updated" => {
                format!("Saved the quota and mutual TLS of external key store {name}.")
            }
            "store_deleted" => {
                format!("Deleted external key store {name}: AWS KMS can no longer reach it.")
            }
            _ => return None,
        };
        Some(Notice::Done(text))
    }
}

// ---- small pieces ---------------------------------------------------------------------

fn store_href(name: &str) -> String {
    format!("/ui/xks/{}", encode(name))
}

fn key_href(store: &str, id: &str) -> String {
    format!("{}/keys/{}", store_href(store), encode(id))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// How old a credential is, in whole days (rotation is a matter of days),
/// from its RFC 3339 creation time; empty when the time cannot be read.
fn age(created_at: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(created) = chrono::DateTime::parse_from_rfc3339(created_at) else {
        return String::new();
    };
    let days = (now - created.with_timezone(&chrono::Utc)).num_days();
    match days {
        ..=0 => "less than a day old".to_owned(),
        days => format!("{} old", plural(days.unsigned_abs(), "day", "days")),
    }
}

fn usage_words(usage: &str) -> &str {
    match usage {
        "encrypt_decrypt" => "Encrypt and decrypt",
        "encrypt" => "Encrypt only",
        "decrypt" => "Decrypt only",
        other => other,
    }
}

/// A key's authorization rule in words: what each list that is set admits.
fn rule_summary(rule: &api::XksRuleView) -> Markup {
    let lists = [
        ("Principals", &rule.principals),
        ("KMS key ARNs", &rule.kms_key_arns),
        ("KMS operations", &rule.kms_operations),
        ("Source VPCs", &rule.source_vpcs),
    ];
    html! {
        @if lists.iter().all(|(_, list)| list.is_empty()) {
            "None: every request SigV4 admits"
        } @else {
            ul.rule-lists {
                @for (label, list) in lists {
                    @if !list.is_empty() {
                        li { (label) ": " code { (list.join(", ")) } }
                    }
                }
            }
        }
    }
}

fn mtls_words(mtls: Option<&api::XksMtlsView>) -> Markup {
    html! {
        @match mtls {
            Some(mtls) => code { (mtls.subject) },
            None => "Off",
        }
    }
}

/// The `--xks-proxy-uri-endpoint` AWS KMS is given: this server as the
/// browser reached it, over HTTPS on port 443 (the only port KMS uses), or
/// a placeholder when the request named no usable host.
fn proxy_endpoint(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Drop a port (not the colons of an IPv6 literal), since KMS only
    // connects to 443.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let usable = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if usable {
        format!("https://{name}")
    } else {
        "https://<keyhold's public name>".to_owned()
    }
}

// ---- the list --------------------------------------------------------------------

fn stores_table(stores: &[api::XksStoreView], now: chrono::DateTime<chrono::Utc>) -> Markup {
    html! {
        div.table-wrap {
            table.data #xks-stores-table {
                caption { "External key stores (credential secrets are never shown here)" }
                thead {
                    tr {
                        th scope="col" { "Name" }
                        th scope="col" { "XksProxyUriPath" }
                        th scope="col" { "Quota" }
                        th scope="col" { "mTLS subject" }
                        th scope="col" { "Credentials" }
                        th scope="col" { "Keys" }
                    }
                }
                tbody {
                    @if stores.is_empty() {
                        tr.empty { td colspan="6" { "No external key stores yet." } }
                    }
                    @for store in stores {
                        tr data-store=(store.name) {
                            th scope="row" { a.store-link #(format!("store-{}", store.name)) href=(store_href(&store.name)) { (store.name) } }
                            td.uri-path { code { (store.uri_path) } }
                            td.quota { (store.quota_per_second) "\u{a0}requests/s per node" }
                            td.mtls { (mtls_words(store.mtls.as_ref())) }
                            td.credentials {
                                ul.plain {
                                    @for credential in &store.credentials {
                                        li data-access-key-id=(credential.access_key_id) {
                                            code { (credential.access_key_id) }
                                            span.age { " (" (age(&credential.created_at, now)) ")" }
                                        }
                                    }
                                }
                            }
                            td.num.keys { (store.key_count) }
                        }
                    }
                }
            }
        }
    }
}

/// A store's quota and mutual-TLS rule as its forms send them (nothing in
/// them is secret: the CA is a public certificate).
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Limits {
    quota_per_second: String,
    mtls_subject: String,
    mtls_ca_pem: String,
}

impl Limits {
    /// What a store has now, to edit.
    fn of(store: &api::XksStoreView) -> Self {
        Self {
            quota_per_second: store.quota_per_second.to_string(),
            mtls_subject: store
                .mtls
                .as_ref()
                .map(|m| m.subject.clone())
                .unwrap_or_default(),
            mtls_ca_pem: store
                .mtls
                .as_ref()
                .map(|m| m.ca_pem.clone())
                .unwrap_or_default(),
        }
    }

    /// The quota, `None` when left empty.
    fn quota(&self) -> Result<Option<u32>, InvalidInput> {
        let quota = self.quota_per_second.trim();
        if quota.is_empty() {
            return Ok(None);
        }
        quota.parse::<u32>().map(Some).map_err(|_| {
            InvalidInput::new(
                "quota",
                format!(
                    "the quota is a whole number of requests per second, 1 to {MAX_QUOTA_PER_SECOND} (AWS KMS's default is {DEFAULT_QUOTA_PER_SECOND})"
                ),
            )
        })
    }

    /// The mutual-TLS rule, `None` when both fields are empty; one without
    /// the other is refused (the fields are filled or cleared together).
    fn mtls(&self) -> Result<Option<api::XksMtlsRequest>, InvalidInput> {
        let subject = self.mtls_subject.trim();
        let ca_pem = self.mtls_ca_pem.trim();
        match (subject.is_empty(), ca_pem.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(api::XksMtlsRequest {
                subject: subject.to_owned(),
                ca_pem: format!("{ca_pem}\n"),
            })),
            (false, true) => Err(InvalidInput::new(
                "mtls ca",
                "mutual TLS needs the CA too: paste the PEM of the CA AWS KMS's client certificate chains to, or clear the subject to leave mutual TLS off",
            )),
            (true, false) => Err(InvalidInput::new(
                "mtls subject",
                "mutual TLS needs the subject too: give the common name of AWS KMS's client certificate (cks.kms.<region>.amazonaws.com), or clear the CA to leave mutual TLS off",
            )),
        }
    }

    /// The change from `store` to these settings: the quota always (saving
    /// it unchanged changes nothing), the rule only when it differs.
    fn change(
        &self,
        store: &api::XksStoreView,
    ) -> Result<api::UpdateXksStoreRequest, InvalidInput> {
        let quota_per_second = Some(self.quota()?.unwrap_or(store.quota_per_second));
        let wanted = self.mtls()?;
        let now = store
            .mtls
            .as_ref()
            .map(|m| (m.subject.as_str(), m.ca_pem.trim()));
        let asked = wanted
            .as_ref()
            .map(|m| (m.subject.as_str(), m.ca_pem.trim()));
        let mtls = (now != asked).then_some(wanted);
        Ok(api::UpdateXksStoreRequest {
            quota_per_second,
            mtls,
        })
    }
}

/// What the create form shows: empty, or what an officer sent when it was
/// refused.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoreForm {
    name: String,
    path_prefix: String,
    #[serde(flatten)]
    limits: Limits,
}

impl StoreForm {
    fn request(&self) -> Result<api::CreateXksStoreRequest, InvalidInput> {
        let prefix = self.path_prefix.trim();
        Ok(api::CreateXksStoreRequest {
            name: self.name.trim().to_owned(),
            path_prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            quota_per_second: self.limits.quota()?,
            mtls: self.limits.mtls()?,
        })
    }
}

/// The field an invalid-input error names, and what is wrong with it, to
/// show the error beside the field.
#[derive(Clone, Copy)]
struct FieldError<'a> {
    /// The id of the form field it belongs to.
    id: &'static str,
    message: &'a str,
}

/// Which of this screen's form fields an error is about. Operations name
/// fields by what they are ("path prefix", "mtls ca") or by the API's
/// field name ("quota_per_second"): both lead to the same field.
fn field_error(error: Option<&ApiError>) -> Option<FieldError<'_>> {
    let Some(ApiError::Core(CoreError::Invalid(invalid))) = error else {
        return None;
    };
    let field = invalid.field.replace('_', " ");
    let id = match field.as_str() {
        f if f.contains("name") => "xks-name",
        f if f.contains("prefix") || f.contains("path") => "xks-path-prefix",
        f if f.contains("quota") => "xks-quota",
        f if f.contains("subject") => "xks-mtls-subject",
        f if f.contains("mtls") || f.contains("ca") => "xks-mtls-ca",
        f if f.contains("description") => "xks-key-description",
        f if f.contains("usage") => "xks-key-usage",
        f if f.contains("rule")
            || f.contains("principal")
            || f.contains("arn")
            || f.contains("operation")
            || f.contains("vpc") =>
        {
            "xks-key-rule"
        }
        _ => return None,
    };
    Some(FieldError {
        id,
        message: &invalid.message,
    })
}

/// The error for field `id`, if it is the one refused.
fn error_for<'a>(error: Option<FieldError<'a>>, id: &str) -> Option<FieldError<'a>> {
    error.filter(|e| e.id == id)
}

/// What a refused field says beside it, named by the field's
/// `aria-describedby`.
fn error_beside(id: &str, error: Option<FieldError<'_>>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.field-error #(format!("{id}-error")) { "Not saved: " (error.message) }
        }
    }
}

/// A field's `aria-describedby`: its hint, then what was refused.
fn described_by(id: &str, hint: bool, error: Option<FieldError<'_>>) -> Option<String> {
    let ids: Vec<String> = [
        hint.then(|| format!("{id}-hint")),
        error.map(|_| format!("{id}-error")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// The mutual-TLS fields are described by the fieldset's hint, then by
/// what was refused.
fn mtls_described_by(id: &str, error: Option<FieldError<'_>>) -> String {
    match described_by(id, false, error) {
        Some(error) => format!("xks-mtls-hint {error}"),
        None => "xks-mtls-hint".to_owned(),
    }
}

/// The quota and mutual-TLS fields, of the create form and of a store's
/// settings form (never on one page together, so they share their ids).
fn quota_and_mtls_fields(limits: &Limits, bad: Option<FieldError<'_>>) -> Markup {
    let quota_error = error_for(bad, "xks-quota");
    let subject_error = error_for(bad, "xks-mtls-subject");
    let ca_error = error_for(bad, "xks-mtls-ca");
    html! {
        div.field {
            label for="xks-quota" { "Quota (requests per second, per node)" }
            input #xks-quota type="number" name="quota_per_second" min="1" max=(MAX_QUOTA_PER_SECOND)
                value=(if limits.quota_per_second.is_empty() { DEFAULT_QUOTA_PER_SECOND.to_string() } else { limits.quota_per_second.clone() })
                aria-invalid=[quota_error.map(|_| "true")] autofocus[quota_error.is_some()]
                aria-describedby=[described_by("xks-quota", true, quota_error)];
            p.hint #xks-quota-hint {
                "Beyond it AWS KMS is answered ThrottlingException. "
                (DEFAULT_QUOTA_PER_SECOND) " is AWS KMS's own limit for an external key store."
            }
            (error_beside("xks-quota", quota_error))
        }
        fieldset.mtls {
            legend { "Mutual TLS (optional)" }
            p.hint #xks-mtls-hint {
                "Leave both empty for SigV4 alone. With both, keyhold accepts this store's requests only over a TLS client certificate "
                "that chains to the CA and carries the subject as its common name."
            }
            div.field {
                label for="xks-mtls-subject" { "Client certificate subject" }
                input #xks-mtls-subject type="text" name="mtls_subject" value=(limits.mtls_subject)
                    placeholder="cks.kms.eu-west-1.amazonaws.com" autocomplete="off" spellcheck="false"
                    aria-invalid=[subject_error.map(|_| "true")] autofocus[subject_error.is_some()]
                    aria-describedby=(mtls_described_by("xks-mtls-subject", subject_error));
                (error_beside("xks-mtls-subject", subject_error))
            }
            div.field {
                label for="xks-mtls-ca" { "CA certificates (PEM)" }
                textarea #xks-mtls-ca name="mtls_ca_pem" rows="4" maxlength=(MAX_CA_PEM_LEN) spellcheck="false"
                    placeholder="-----BEGIN CERTIFICATE-----"
                    aria-invalid=[ca_error.map(|_| "true")] autofocus[ca_error.is_some()]
                    aria-describedby=(mtls_described_by("xks-mtls-ca", ca_error)) { (limits.mtls_ca_pem) }
                (error_beside("xks-mtls-ca", ca_error))
            }
        }
    }
}

fn store_form(
    ui: &UiSession,
    dual_control: bool,
    form: &StoreForm,
    error: Option<&ApiError>,
) -> Markup {
    let bad = field_error(error);
    let name_error = error_for(bad, "xks-name");
    let prefix_error = error_for(bad, "xks-path-prefix");
    html! {
        section.card #create-store aria-labelledby="create-store-title" {
            h2 #create-store-title { "Create an external key store" }
            p.hint #create-store-hint {
                "keyhold generates the store's first SigV4 credential and shows its secret once, on the next page, "
                "with the AWS CLI lines and the AWS KMS console's file that carry it."
            }
            (layout::needs(ui, Operation::MANAGE_XKS_STORES, dual_control))
            form #xks-store-form method="post" action="/ui/xks" aria-describedby="create-store-hint" {
                (csrf_field(&ui.csrf))
                div.field {
                    label for="xks-name" { "Name (required)" }
                    input #xks-name type="text" name="name" value=(form.name) required maxlength="64"
                        autocomplete="off" spellcheck="false"
                        aria-invalid=[name_error.map(|_| "true")] autofocus[name_error.is_some()]
                        aria-describedby=[described_by("xks-name", true, name_error)];
                    p.hint #xks-name-hint { "1 to 64 letters, digits, '.', '_' or '-'. Also the custom key store's name in the AWS CLI line." }
                    (error_beside("xks-name", name_error))
                }
                div.field {
                    label for="xks-path-prefix" { "Path prefix (optional)" }
                    input #xks-path-prefix type="text" name="path_prefix" value=(form.path_prefix)
                        placeholder="/xks/payments" autocomplete="off" spellcheck="false"
                        aria-invalid=[prefix_error.map(|_| "true")] autofocus[prefix_error.is_some()]
                        aria-describedby=[described_by("xks-path-prefix", true, prefix_error)];
                    p.hint #xks-path-prefix-hint {
                        "The path before " code { "/kms/xks/v1" } " under which AWS KMS reaches this store; "
                        code { "/xks/<name>" } " when empty."
                    }
                    (error_beside("xks-path-prefix", prefix_error))
                }
                (quota_and_mtls_fields(&form.limits, bad))
                p.actions { button type="submit" #create-store-button { "Create store" } }
            }
        }
    }
}

fn list_body(
    ui: &UiSession,
    stores: &[api::XksStoreView],
    now: chrono::DateTime<chrono::Utc>,
    dual_control: bool,
    form: &StoreForm,
    error: Option<&ApiError>,
) -> Markup {
    html! {
        p.hint {
            "AWS KMS sends every encrypt and decrypt of a KMS key in an external key store to keyhold, "
            "which does it with a key that never leaves its keystore. Each store is a path AWS KMS reaches, "
            "the SigV4 credentials it signs with (two at most, to rotate them), and its keys."
        }
        (stores_table(stores, now))
        @if may(ui, Operation::MANAGE_XKS_STORES) {
            (store_form(ui, dual_control, form, error))
        } @else if reads_only(ui) {
            (read_only_note())
        }
    }
}

struct Listing {
    stores: Vec<api::XksStoreView>,
    dual_control: bool,
}

async fn listing(app: &AppState, ui: &UiSession) -> Result<Listing, ApiError> {
    Ok(Listing {
        stores: xks::list_stores(app, &ui.session).await?,
        dual_control: app.keyhold.settings(&ui.session).await?.dual_control,
    })
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(query): Query<XksQuery>,
) -> Response {
    match listing(&app, &ui).await {
        Ok(listing) => layout::page(
            &ui,
            Nav::Xks,
            TITLE,
            query.notice().as_ref(),
            list_body(
                &ui,
                &listing.stores,
                app.keyhold.now(),
                listing.dual_control,
                &StoreForm::default(),
                None,
            ),
        )
        .into_response(),
        Err(error) => failure(&ui, Nav::Xks, TITLE, error, html! {}),
    }
}

// ---- a credential, shown once -------------------------------------------------------

/// A credential as its operation issued it; its secret (in the view and in
/// the console file) is wiped when the page has been drawn.
struct Issued(api::IssuedXksCredentialView);

impl Issued {
    fn wipe(&mut self) {
        self.0.secret_access_key.zeroize();
        self.0
            .kms_console_file
            .xks_proxy_authentication_credential
            .raw_secret_access_key
            .zeroize();
    }
}

impl Drop for Issued {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// `--xks-proxy-authentication-credential`'s value, quoted for a POSIX
/// shell (an access key id and a Base64 secret hold no quote).
fn credential_argument(issued: &api::IssuedXksCredentialView) -> String {
    format!(
        "'AccessKeyId={},RawSecretAccessKey={}'",
        issued.access_key_id, issued.secret_access_key
    )
}

/// The lines that create the custom key store in AWS KMS and connect it.
fn create_store_commands(issued: &api::IssuedXksCredentialView, endpoint: &str) -> String {
    format!(
        "aws kms create-custom-key-store \\\n    --custom-key-store-name {name} \\\n    --custom-key-store-type EXTERNAL_KEY_STORE \\\n    --xks-proxy-connectivity PUBLIC_ENDPOINT \\\n    --xks-proxy-uri-endpoint {endpoint} \\\n    --xks-proxy-uri-path {path} \\\n    --xks-proxy-authentication-credential {credential}\n\naws kms connect-custom-key-store --custom-key-store-id {STORE_ID_PLACEHOLDER}",
        name = issued.store.name,
        path = issued.kms_console_file.xks_proxy_uri_path,
        credential = credential_argument(issued),
    )
}

/// The line that gives AWS KMS a store's new credential.
fn rotate_command(issued: &api::IssuedXksCredentialView) -> String {
    format!(
        "aws kms update-custom-key-store \\\n    --custom-key-store-id {STORE_ID_PLACEHOLDER} \\\n    --xks-proxy-authentication-credential {credential}",
        credential = credential_argument(issued),
    )
}

/// The console file as a `data:` URL, so it downloads from the page itself
/// and the secret never goes anywhere else.
fn console_file_href(json: &str) -> String {
    format!("data:application/json;charset=utf-8,{}", encode(json))
}

/// The result page: the credential, its secret once, and how to give them
/// to AWS KMS. `created` tells a new store from a rotation.
fn issued_body(issued: &api::IssuedXksCredentialView, endpoint: &str, created: bool) -> Markup {
    let store = &issued.store;
    let json = serde_json::to_string_pretty(&issued.kms_console_file).unwrap_or_default();
    let file_name = format!("{}-xks-proxy.json", store.name);
    let commands = if created {
        create_store_commands(issued, endpoint)
    } else {
        rotate_command(issued)
    };
    html! {
        p.notice.warn #xks-secret-once role="note" {
            strong { "Shown this once. " }
            "Copy the secret access key now, or download the console file: keyhold keeps it only sealed in its keystore "
            "and never shows it again (reloading the store's page shows the access key id alone)."
        }
        section.card #issued-credential aria-labelledby="issued-credential-title" {
            h2 #issued-credential-title {
                @if created { "Credential of external key store " (store.name) } @else { "New credential of external key store " (store.name) }
            }
            dl.facts {
                dt { "XksProxyUriPath" } dd { code #xks-uri-path { (issued.kms_console_file.xks_proxy_uri_path) } }
                dt { "Access key id" } dd { code #xks-access-key-id { (issued.access_key_id) } }
                dt { "Secret access key" } dd { code.hash #xks-secret { (issued.secret_access_key) } }
            }
        }
        section.card #aws-cli aria-labelledby="aws-cli-title" {
            h2 #aws-cli-title { "With the AWS CLI" }
            p.hint #aws-cli-hint {
                @if created {
                    "Create the custom key store in AWS KMS, then connect it. The endpoint is this server's name as your browser reached it: "
                    "AWS KMS connects to it over HTTPS on port 443, so give the public name AWS reaches keyhold at if it differs. "
                    "Replace " code { (STORE_ID_PLACEHOLDER) } " with the id create-custom-key-store answers (cks-…)."
                } @else {
                    "Give AWS KMS the new credential (replace " code { (STORE_ID_PLACEHOLDER) } " with the custom key store's id, cks-…). "
                    "keyhold accepts both credentials until you revoke the older one on the store's page: do that once AWS KMS signs with the new one."
                }
                " The secret stays in your shell's history: the console file below avoids that."
            }
            pre.command #aws-cli-command aria-describedby="aws-cli-hint" { (commands) }
        }
        section.card #kms-console aria-labelledby="kms-console-title" {
            h2 #kms-console-title { "In the AWS KMS console" }
            p.hint #kms-console-hint {
                "The proxy configuration file the console's "
                @if created { "Create external key store" } @else { "Edit external key store" }
                " page uploads. Download it, or copy the text: select it and press Ctrl+C (⌘C on a Mac)."
            }
            p.actions {
                a.button.secondary #download-console-file href=(console_file_href(&json)) download=(file_name) {
                    "Download " (file_name)
                }
            }
            pre.command #kms-console-file aria-describedby="kms-console-hint" { (json) }
        }
        p { a #to-store href=(store_href(&store.name)) { "Go to external key store " (store.name) } }
    }
}

fn issued_page(ui: &UiSession, issued: Issued, headers: &HeaderMap, created: bool) -> Response {
    let endpoint = proxy_endpoint(headers);
    let (title, notice) = if created {
        (
            CREATED_TITLE,
            format!("Created external key store {}.", issued.0.store.name),
        )
    } else {
        (
            ROTATED_TITLE,
            format!(
                "Issued a new credential for external key store {}.",
                issued.0.store.name
            ),
        )
    };
    let body = issued_body(&issued.0, &endpoint, created);
    drop(issued);
    layout::page(ui, Nav::Xks, title, Some(&Notice::Done(notice)), body).into_response()
}

// ---- a credential an approved request issued ----------------------------------------

/// Whether an approval request, once run, issues an XKS credential whose
/// secret its requester collects (`Some(true)` when it creates the store).
pub(crate) fn issued_by_request(view: &api::ApprovalView) -> Option<bool> {
    match view
        .operation
        .get("kind")
        .and_then(serde_json::Value::as_str)
    {
        Some("create_xks_store") => Some(true),
        Some("add_xks_credential") => Some(false),
        _ => None,
    }
}

/// The credential an executed request issued, shown once to its requester
/// as a direct answer would have shown it. When the store was deleted in
/// between, only its secret is left to show. The result's copies of the
/// secret are wiped once drawn.
pub(crate) fn collected(
    mut result: api::ApprovalResultView,
    created: bool,
    headers: &HeaderMap,
) -> Markup {
    let shown = match result.xks_credential.take() {
        Some(issued) => {
            let issued = Issued(issued);
            issued_body(&issued.0, &proxy_endpoint(headers), created)
        }
        None => html! {
            section.card #issued-credential aria-labelledby="issued-credential-title" {
                h2 #issued-credential-title { "Secret access key" }
                p.notice.warn role="note" {
                    "Shown this once. The external key store was deleted since the request ran, so the secret is of no use to AWS KMS now."
                }
                p { code.hash #xks-secret { (result.password) } }
            }
        },
    };
    result.password.zeroize();
    shown
}

/// *Create store*: under dual control, or sent for approval when a policy
/// holds `manage_xks_stores` to a quorum. The answer shows the secret once.
pub async fn create(
    State(app): State<AppState>,
    ui: UiSession,
    headers: HeaderMap,
    axum::Form(form): axum::Form<StoreForm>,
) -> Response {
    let result = match form.request() {
        Ok(request) => xks::create_store(&app, &ui.session, &request).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(issued) => issued_page(&ui, Issued(issued), &headers, true),
        Err(error) => {
            if let Some(sent) = super::sent_for_approval(&error) {
                return sent;
            }
            let shown = match listing(&app, &ui).await {
                Ok(listing) => list_body(
                    &ui,
                    &listing.stores,
                    app.keyhold.now(),
                    listing.dual_control,
                    &form,
                    Some(&error),
                ),
                Err(_) => html! {},
            };
            failure(&ui, Nav::Xks, TITLE, error, shown)
        }
    }
}

// ---- one store ---------------------------------------------------------------------

/// What a store's page shows.
struct Detail {
    store: api::XksStoreView,
    keys: Vec<api::XksKeyView>,
    dual_control: bool,
}

async fn detail_of(app: &AppState, ui: &UiSession, name: &str) -> Result<Detail, ApiError> {
    let session = &ui.session;
    Ok(Detail {
        store: xks::show_store(app, session, name).await?,
        keys: xks::list_keys(app, session, Some(name)).await?,
        dual_control: app.keyhold.settings(session).await?.dual_control,
    })
}

/// What a refused form on a store's page sent, to show it again.
#[derive(Clone, Copy)]
enum Sent<'a> {
    Nothing,
    Key(&'a KeyForm),
    Settings(&'a Limits),
}

/// The quota and mutual-TLS form, folded away until opened (or when a
/// save was refused, open with what was sent).
fn settings_form(
    ui: &UiSession,
    detail: &Detail,
    sent: Sent<'_>,
    error: Option<&ApiError>,
) -> Markup {
    let store = &detail.store;
    let (limits, error) = match sent {
        Sent::Settings(limits) => (limits.clone(), error),
        _ => (Limits::of(store), None),
    };
    html! {
        details #store-settings open[error.is_some()] {
            summary #store-settings-summary { "Change the quota or mutual TLS" }
            (layout::needs(ui, Operation::MANAGE_XKS_STORES, detail.dual_control))
            form #xks-settings-form method="post" action=(format!("{}/settings", store_href(&store.name))) {
                (csrf_field(&ui.csrf))
                (quota_and_mtls_fields(&limits, field_error(error)))
                p.actions { button type="submit" #save-settings { "Save quota and mutual TLS" } }
            }
        }
    }
}

fn store_facts(
    ui: &UiSession,
    detail: &Detail,
    sent: Sent<'_>,
    error: Option<&ApiError>,
) -> Markup {
    let store = &detail.store;
    html! {
        section.card #xks-store-facts aria-labelledby="xks-store-facts-title" {
            h2 #xks-store-facts-title { "What AWS KMS is given" }
            dl.facts {
                dt { "XksProxyUriPath" } dd { code #store-uri-path { (store.uri_path) } }
                dt { "Quota" } dd { (store.quota_per_second) " requests per second, per node" }
                dt { "Mutual TLS" } dd #store-mtls {
                    @match &store.mtls {
                        Some(mtls) => {
                            "Client certificate " code { (mtls.subject) } ", issued under the CA with SHA-256 "
                            @for (i, sha) in mtls.ca_sha256.iter().enumerate() {
                                @if i > 0 { ", " }
                                code.hash { (sha) }
                            }
                        },
                        None => "Off: SigV4 alone",
                    }
                }
                dt { "Created" } dd { (layout::when(&store.created_at)) }
            }
            @if may(ui, Operation::MANAGE_XKS_STORES) {
                (settings_form(ui, detail, sent, error))
            }
        }
    }
}

fn delete_store_section(store: &api::XksStoreView) -> Markup {
    html! {
        section.card #delete-store-section aria-labelledby="delete-store-title" {
            h2 #delete-store-title { "Delete this store" }
            p.hint #delete-store-hint {
                "Deleting the store deletes its credentials: AWS KMS can no longer reach it. "
                "keyhold refuses while the store holds keys: delete them first."
            }
            p.actions {
                a.button.secondary #delete-store href=(format!("{}/delete", store_href(&store.name))) aria-describedby="delete-store-hint" {
                    "Delete store " (store.name)
                }
            }
        }
    }
}

fn credentials_section(
    ui: &UiSession,
    detail: &Detail,
    now: chrono::DateTime<chrono::Utc>,
) -> Markup {
    let store = &detail.store;
    let manage = may(ui, Operation::MANAGE_XKS_STORES);
    let full = store.credentials.len() >= MAX_ACTIVE_CREDENTIALS as usize;
    html! {
        section.card #xks-credentials aria-labelledby="xks-credentials-title" {
            h2 #xks-credentials-title { "SigV4 credentials" }
            p.hint {
                "AWS KMS signs every request with one of these. To rotate, issue a new one, give it to AWS KMS, "
                "then revoke the older: keyhold accepts " (MAX_ACTIVE_CREDENTIALS) " at a time so no request fails meanwhile."
            }
            div.table-wrap {
                table.data #xks-credentials-table {
                    caption { "Credentials of " (store.name) ", oldest first (their secrets are never shown again)" }
                    thead {
                        tr {
                            th scope="col" { "Access key id" }
                            th scope="col" { "Created" }
                            th scope="col" { "Age" }
                            @if manage { th.row-actions scope="col" { "Actions" } }
                        }
                    }
                    tbody {
                        @if store.credentials.is_empty() {
                            tr.empty { td colspan=(if manage { "4" } else { "3" }) { "No credentials: AWS KMS cannot reach this store. Rotate to issue one." } }
                        }
                        @for credential in &store.credentials {
                            tr data-access-key-id=(credential.access_key_id) {
                                th scope="row" { code { (credential.access_key_id) } }
                                td { (layout::when(&credential.created_at)) }
                                td.age { (age(&credential.created_at, now)) }
                                @if manage {
                                    td.row-actions {
                                        a.revoke #(format!("revoke-{}", credential.access_key_id)) href=(format!("{}/credentials/{}/revoke", store_href(&store.name), encode(&credential.access_key_id))) {
                                            "Revoke" span.visually-hidden { " credential " (credential.access_key_id) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manage {
                (layout::needs(ui, Operation::MANAGE_XKS_STORES, detail.dual_control))
                @if full {
                    p.hint #rotate-full {
                        "This store has " (MAX_ACTIVE_CREDENTIALS) " credentials: revoke the one AWS KMS no longer signs with before issuing another."
                    }
                } @else {
                    form #rotate-form method="post" action=(format!("{}/credentials", store_href(&store.name))) {
                        (csrf_field(&ui.csrf))
                        p.actions { button type="submit" #rotate-credential { "Rotate: issue a new credential" } }
                    }
                }
            }
        }
    }
}

/// The Enable, Disable and Delete of one key, as far as the session's roles
/// go: disabling needs one key officer; enabling and deleting need two (or
/// are sent for approval); deleting only once the key is disabled.
fn key_actions(ui: &UiSession, store: &str, key: &api::XksKeyView) -> Markup {
    let href = key_href(store, &key.id);
    html! {
        @if key.enabled {
            @if may(ui, Operation::RESTRICT_XKS_KEY) {
                form.inline method="post" action=(format!("{href}/disable")) {
                    (csrf_field(&ui.csrf))
                    button.disable.secondary #(format!("disable-{}", key.id)) type="submit" { "Disable" span.visually-hidden { " key " (key.id) } }
                }
            }
        } @else if may(ui, Operation::MANAGE_XKS_KEYS) {
            form.inline method="post" action=(format!("{href}/enable")) {
                (csrf_field(&ui.csrf))
                button.enable.secondary #(format!("enable-{}", key.id)) type="submit" { "Enable" span.visually-hidden { " key " (key.id) } }
            }
            " "
            a.delete #(format!("delete-{}", key.id)) href=(format!("{href}/delete")) { "Delete" span.visually-hidden { " key " (key.id) } }
        }
    }
}

fn keys_table(ui: &UiSession, detail: &Detail) -> Markup {
    let store = &detail.store.name;
    let act = may(ui, Operation::RESTRICT_XKS_KEY);
    html! {
        div.table-wrap {
            table.data #xks-keys-table {
                caption { "Keys of " (store) }
                thead {
                    tr {
                        th scope="col" { "XksKeyId" }
                        th scope="col" { "Description" }
                        th scope="col" { "Usage" }
                        th scope="col" { "State" }
                        th scope="col" { "Authorization rule" }
                        th scope="col" { "Check digits" }
                        @if act { th.row-actions scope="col" { "Actions" } }
                    }
                }
                tbody {
                    @if detail.keys.is_empty() {
                        tr.empty { td colspan=(if act { "7" } else { "6" }) { "No keys yet." } }
                    }
                    @for key in &detail.keys {
                        tr data-key=(key.id) data-enabled=(key.enabled) {
                            th scope="row" { code.hash { (key.id) } }
                            td.description { @if key.description.is_empty() { "—" } @else { (key.description) } }
                            td.usage { (usage_words(&key.usage)) }
                            td.state {
                                @if key.enabled {
                                    span.status-badge data-status="succeeded" { "Enabled" }
                                } @else {
                                    span.status-badge data-status="failed" { "Disabled" }
                                }
                            }
                            td.rule { (rule_summary(&key.rule)) }
                            td.check-digits { code { (key.check_digits) } }
                            @if act { td.row-actions { (key_actions(ui, store, key)) } }
                        }
                    }
                }
            }
        }
    }
}

/// Each key's `aws kms create-key` line, apart from the table so the long
/// lines do not widen it.
fn key_commands(keys: &[api::XksKeyView]) -> Markup {
    html! {
        @if !keys.is_empty() {
            h3 #key-commands-title { "In AWS KMS" }
            p.hint #key-commands-hint {
                "Each key becomes a KMS key with its line (replace " code { (STORE_ID_PLACEHOLDER) }
                " with the custom key store's id, cks-…). KMS keys need a key that encrypts and decrypts."
            }
            ul.plain.key-commands aria-labelledby="key-commands-title" {
                @for key in keys {
                    li data-key=(key.id) {
                        p.command-label {
                            "Key " code { (key.id) }
                            @if !key.description.is_empty() { " (" (key.description) ")" }
                        }
                        pre.command.create-key-command aria-describedby="key-commands-hint" { (key.aws.create_key_command) }
                    }
                }
            }
        }
    }
}

/// What the key form shows: the defaults, or what an officer sent when it
/// was refused.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct KeyForm {
    description: String,
    usage: String,
    /// The checkbox: present (`on`) when ticked.
    enabled: Option<String>,
    principals: String,
    kms_key_arns: String,
    kms_operations: String,
    source_vpcs: String,
}

impl Default for KeyForm {
    fn default() -> Self {
        Self {
            description: String::new(),
            usage: "encrypt_decrypt".to_owned(),
            enabled: Some("on".to_owned()),
            principals: String::new(),
            kms_key_arns: String::new(),
            kms_operations: String::new(),
            source_vpcs: String::new(),
        }
    }
}

/// A textarea's patterns: one a line, blank lines skipped.
fn lines(raw: &str) -> Vec<String> {
    raw.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

impl KeyForm {
    fn request(&self) -> api::CreateXksKeyRequest {
        let rule = api::XksRuleView {
            principals: lines(&self.principals),
            kms_key_arns: lines(&self.kms_key_arns),
            kms_operations: lines(&self.kms_operations),
            source_vpcs: lines(&self.source_vpcs),
        };
        let no_rule = rule == api::XksRuleView::default();
        let description = self.description.trim();
        api::CreateXksKeyRequest {
            description: (!description.is_empty()).then(|| description.to_owned()),
            usage: Some(self.usage.clone()).filter(|u| !u.is_empty()),
            enabled: Some(self.enabled.is_some()),
            rule: (!no_rule).then_some(rule),
        }
    }
}

fn rule_field(id: &str, name: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            textarea #(id) name=(name) rows="2" spellcheck="false" placeholder=(placeholder)
                aria-describedby="xks-key-rule-hint" { (value) }
        }
    }
}

fn key_form(ui: &UiSession, detail: &Detail, form: &KeyForm, error: Option<&ApiError>) -> Markup {
    let bad = field_error(error);
    let description_error = error_for(bad, "xks-key-description");
    let usage_error = error_for(bad, "xks-key-usage");
    let rule_error = error_for(bad, "xks-key-rule");
    let store = &detail.store.name;
    html! {
        section.card #create-key aria-labelledby="create-key-title" {
            h2 #create-key-title { "Create a key" }
            p.hint #create-key-hint {
                "An AES-256 key generated in keyhold's keystore; its material never leaves it. "
                "Its id is the XksKeyId AWS KMS is given."
            }
            (layout::needs(ui, Operation::MANAGE_XKS_KEYS, detail.dual_control))
            form #xks-key-form method="post" action=(format!("{}/keys", store_href(store))) aria-describedby="create-key-hint" {
                (csrf_field(&ui.csrf))
                div.field {
                    label for="xks-key-description" { "Description (optional)" }
                    input #xks-key-description type="text" name="description" value=(form.description)
                        maxlength=(MAX_DESCRIPTION_LEN)
                        aria-invalid=[description_error.map(|_| "true")] autofocus[description_error.is_some()]
                        aria-describedby=[described_by("xks-key-description", false, description_error)];
                    (error_beside("xks-key-description", description_error))
                }
                div.field {
                    label for="xks-key-usage" { "Usage" }
                    select #xks-key-usage name="usage"
                        aria-invalid=[usage_error.map(|_| "true")] autofocus[usage_error.is_some()]
                        aria-describedby=[described_by("xks-key-usage", true, usage_error)] {
                        @for (value, words) in [
                            ("encrypt_decrypt", "Encrypt and decrypt"),
                            ("encrypt", "Encrypt only"),
                            ("decrypt", "Decrypt only"),
                        ] {
                            option value=(value) selected[form.usage == value] { (words) }
                        }
                    }
                    p.hint #xks-key-usage-hint { "AWS KMS creates a KMS key only over a key that encrypts and decrypts; narrow it later to retire a key." }
                    (error_beside("xks-key-usage", usage_error))
                }
                div.field.check {
                    input #xks-key-enabled type="checkbox" name="enabled" value="on" checked[form.enabled.is_some()];
                    label for="xks-key-enabled" { "Enabled" }
                }
                fieldset.rule #xks-key-rule aria-describedby=[rule_error.map(|_| "xks-key-rule-error")] {
                    legend { "Authorization rule (optional)" }
                    p.hint #xks-key-rule-hint {
                        "One pattern a line; " code { "*" } " matches any run of characters. Every list that is not empty must match the request AWS KMS sends; "
                        "leave them all empty to admit every request SigV4 admits."
                    }
                    (error_beside("xks-key-rule", rule_error))
                    (rule_field("xks-key-principals", "principals", "AWS principals (awsPrincipalArn)", &form.principals, "arn:aws:iam::111122223333:role/app-*"))
                    (rule_field("xks-key-arns", "kms_key_arns", "KMS key ARNs (kmsKeyArn)", &form.kms_key_arns, "arn:aws:kms:eu-west-1:111122223333:key/*"))
                    (rule_field("xks-key-operations", "kms_operations", "KMS operations (kmsOperation)", &form.kms_operations, "Decrypt"))
                    (rule_field("xks-key-vpcs", "source_vpcs", "Source VPCs (awsSourceVpc)", &form.source_vpcs, "vpc-0123456789abcdef0"))
                }
                p.actions { button type="submit" #create-key-button { "Create key" } }
            }
        }
    }
}

fn keys_section(ui: &UiSession, detail: &Detail) -> Markup {
    html! {
        section.card #xks-keys aria-labelledby="xks-keys-title" {
            h2 #xks-keys-title { "Keys" }
            @if may(ui, Operation::RESTRICT_XKS_KEY) {
                p.hint #xks-keys-hint {
                    "One key officer may disable a key; enabling it again, creating and deleting need two (dual control). "
                    "Only a disabled key can be deleted."
                }
            }
            (keys_table(ui, detail))
            (key_commands(&detail.keys))
        }
    }
}

fn detail_body(
    ui: &UiSession,
    detail: &Detail,
    now: chrono::DateTime<chrono::Utc>,
    sent: Sent<'_>,
    error: Option<&ApiError>,
) -> Markup {
    let default = KeyForm::default();
    let (key_draft, key_error) = match sent {
        Sent::Key(form) => (form, error),
        _ => (&default, None),
    };
    html! {
        p { a href="/ui/xks" { "All external key stores" } }
        (store_facts(ui, detail, sent, error))
        (credentials_section(ui, detail, now))
        (keys_section(ui, detail))
        @if may(ui, Operation::MANAGE_XKS_KEYS) {
            (key_form(ui, detail, key_draft, key_error))
        } @else if reads_only(ui) {
            (read_only_note())
        }
        @if may(ui, Operation::MANAGE_XKS_STORES) {
            (delete_store_section(&detail.store))
        }
    }
}

fn detail_title(name: &str) -> String {
    format!("External key store {name}")
}

pub async fn detail(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
    Query(query): Query<XksQuery>,
) -> Response {
    match detail_of(&app, &ui, &name).await {
        Ok(detail) => layout::page(
            &ui,
            Nav::Xks,
            &detail_title(&detail.store.name),
            query.notice().as_ref(),
            detail_body(&ui, &detail, app.keyhold.now(), Sent::Nothing, None),
        )
        .into_response(),
        Err(error) => failure(&ui, Nav::Xks, TITLE, error, back_to_list()),
    }
}

fn back_to_list() -> Markup {
    html! { p { a href="/ui/xks" { "All external key stores" } } }
}

/// The store's page again with why an action was refused; the form that
/// was refused keeps what was sent.
async fn refused(
    app: &AppState,
    ui: &UiSession,
    name: &str,
    error: ApiError,
    sent: Sent<'_>,
) -> Response {
    if let Some(approval) = super::sent_for_approval(&error) {
        return approval;
    }
    match detail_of(app, ui, name).await {
        Ok(detail) => {
            let shown = detail_body(ui, &detail, app.keyhold.now(), sent, Some(&error));
            failure(
                ui,
                Nav::Xks,
                &detail_title(&detail.store.name),
                error,
                shown,
            )
        }
        Err(_) => failure(ui, Nav::Xks, TITLE, error, back_to_list()),
    }
}

/// *Save quota and mutual TLS*: under dual control, or sent for approval
/// when a policy holds `manage_xks_stores` to a quorum.
pub async fn update_settings(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
    axum::Form(limits): axum::Form<Limits>,
) -> Response {
    let result = match xks::show_store(&app, &ui.session, &name).await {
        Ok(store) => match limits.change(&store) {
            Ok(change) => xks::update_store(&app, &ui.session, &name, &change).await,
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(store) => see_other(&format!(
            "{}?done=store_updated&name={}#xks-store-facts",
            store_href(&store.name),
            encode(&store.name)
        )),
        Err(error) => refused(&app, &ui, &name, error, Sent::Settings(&limits)).await,
    }
}

pub async fn confirm_delete_store(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    let detail = match detail_of(&app, &ui, &name).await {
        Ok(detail) => detail,
        Err(error) => return failure(&ui, Nav::Xks, TITLE, error, back_to_list()),
    };
    let store = &detail.store;
    let body = html! {
        p #delete-what {
            "This deletes the external key store " strong { (store.name) } " (" code { (store.uri_path) } ") and its "
            (plural(store.credentials.len() as u64, "credential", "credentials"))
            ": AWS KMS can no longer reach it. Disconnect and delete the custom key store in AWS as well."
        }
        @if !detail.keys.is_empty() {
            p.notice.warn #delete-has-keys role="note" {
                "The store holds " (plural(detail.keys.len() as u64, "key", "keys")) ": keyhold refuses to delete it until they are deleted (disable each, then delete it)."
            }
        }
        (layout::needs(&ui, Operation::MANAGE_XKS_STORES, detail.dual_control))
        form method="post" action=(format!("{}/delete", store_href(&store.name))) {
            (csrf_field(&ui.csrf))
            p.actions {
                button.danger type="submit" #confirm-delete-store { "Delete store " (store.name) }
                a.button.secondary href=(store_href(&store.name)) { "Cancel" }
            }
        }
    };
    layout::page(
        &ui,
        Nav::Xks,
        &format!("Delete external key store {}?", store.name),
        None,
        body,
    )
    .into_response()
}

pub async fn delete_store(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
) -> Response {
    match xks::delete_store(&app, &ui.session, &name).await {
        Ok(()) => see_other(&format!(
            "/ui/xks?done=store_deleted&name={}",
            encode(&name)
        )),
        Err(error) => refused(&app, &ui, &name, error, Sent::Nothing).await,
    }
}

/// *Rotate*: a new credential beside the one in use (the store accepts
/// both until the older is revoked). The answer shows its secret once.
pub async fn rotate(
    State(app): State<AppState>,
    ui: UiSession,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    match xks::add_credential(&app, &ui.session, &name).await {
        Ok(issued) => issued_page(&ui, Issued(issued), &headers, false),
        Err(error) => refused(&app, &ui, &name, error, Sent::Nothing).await,
    }
}

pub async fn confirm_revoke(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, access_key_id)): Path<(String, String)>,
) -> Response {
    let detail = match detail_of(&app, &ui, &name).await {
        Ok(detail) => detail,
        Err(error) => return failure(&ui, Nav::Xks, TITLE, error, back_to_list()),
    };
    let store = &detail.store;
    let Some(credential) = store
        .credentials
        .iter()
        .find(|c| c.access_key_id == access_key_id)
    else {
        let error = CoreError::not_found("credential of this external key store", &access_key_id);
        return refused(&app, &ui, &name, error.into(), Sent::Nothing).await;
    };
    let last = store.credentials.len() == 1;
    let body = html! {
        p #revoke-what {
            "This revokes the credential " code { (credential.access_key_id) } " of external key store " strong { (store.name) }
            ": keyhold refuses every request signed with it from then on."
        }
        @if last {
            p.notice.warn #revoke-last role="note" {
                strong { "It is the store's only credential. " }
                "Without it AWS KMS cannot reach the store, and every KMS key in it stops working until a new credential is issued and given to AWS KMS."
            }
        } @else {
            p.hint { "Revoke it once AWS KMS signs with the newer credential (after update-custom-key-store)." }
        }
        (layout::needs(&ui, Operation::MANAGE_XKS_STORES, detail.dual_control))
        form method="post" action=(format!("{}/credentials/{}/revoke", store_href(&store.name), encode(&credential.access_key_id))) {
            (csrf_field(&ui.csrf))
            p.actions {
                button.danger type="submit" #confirm-revoke { "Revoke credential " (credential.access_key_id) }
                a.button.secondary href=(store_href(&store.name)) { "Cancel" }
            }
        }
    };
    layout::page(
        &ui,
        Nav::Xks,
        &format!("Revoke credential {}?", credential.access_key_id),
        None,
        body,
    )
    .into_response()
}

pub async fn revoke(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, access_key_id)): Path<(String, String)>,
) -> Response {
    match xks::revoke_credential(&app, &ui.session, &name, &access_key_id).await {
        Ok(()) => see_other(&format!(
            "{}?done=credential_revoked&name={}#xks-credentials",
            store_href(&name),
            encode(&access_key_id)
        )),
        Err(error) => refused(&app, &ui, &name, error, Sent::Nothing).await,
    }
}

/// *Create key*: under dual control, or sent for approval when a policy
/// holds `manage_xks_keys` to a quorum.
pub async fn create_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<KeyForm>,
) -> Response {
    match xks::create_key(&app, &ui.session, &name, &form.request()).await {
        Ok(key) => see_other(&format!(
            "{}?done=key_created&name={}#xks-keys",
            store_href(&name),
            encode(&key.id)
        )),
        Err(error) => refused(&app, &ui, &name, error, Sent::Key(&form)).await,
    }
}

/// Enables or disables a key: disabling is one key officer's brake;
/// enabling gives the key back to AWS KMS, under dual control.
async fn set_enabled(
    app: &AppState,
    ui: &UiSession,
    name: &str,
    id: &str,
    enabled: bool,
) -> Response {
    let change = api::UpdateXksKeyRequest {
        enabled: Some(enabled),
        ..api::UpdateXksKeyRequest::default()
    };
    match xks::update_key(app, &ui.session, id, &change).await {
        Ok(key) => see_other(&format!(
            "{}?done={}&name={}#xks-keys",
            store_href(name),
            if enabled {
                "key_enabled"
            } else {
                "key_disabled"
            },
            encode(&key.id)
        )),
        Err(error) => refused(app, ui, name, error, Sent::Nothing).await,
    }
}

pub async fn enable_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    set_enabled(&app, &ui, &name, &id, true).await
}

pub async fn disable_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    set_enabled(&app, &ui, &name, &id, false).await
}

pub async fn confirm_delete_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let detail = match detail_of(&app, &ui, &name).await {
        Ok(detail) => detail,
        Err(error) => return failure(&ui, Nav::Xks, TITLE, error, back_to_list()),
    };
    let Some(key) = detail.keys.iter().find(|k| k.id == id) else {
        let error = CoreError::not_found("XKS key of this external key store", &id);
        return refused(&app, &ui, &name, error.into(), Sent::Nothing).await;
    };
    let store = &detail.store.name;
    let body = html! {
        p #delete-what {
            "This deletes the XKS key " code { (key.id) }
            @if !key.description.is_empty() { " (" (key.description) ")" }
            " of external key store " strong { (store) } " and destroys its material in the keystore. "
            strong { "Whatever AWS KMS encrypted under it can never be decrypted again." }
            " Schedule the KMS key's deletion in AWS as well."
        }
        @if key.enabled {
            p.notice.warn #delete-enabled role="note" {
                "The key is enabled: keyhold refuses to delete it. Disable it first, and wait until nothing needs it."
            }
        }
        (layout::needs(&ui, Operation::MANAGE_XKS_KEYS, detail.dual_control))
        form method="post" action=(format!("{}/delete", key_href(store, &key.id))) {
            (csrf_field(&ui.csrf))
            p.actions {
                button.danger type="submit" #confirm-delete { "Delete key " (key.id) }
                a.button.secondary href=(store_href(store)) { "Cancel" }
            }
        }
    };
    layout::page(
        &ui,
        Nav::Xks,
        &format!("Delete XKS key {}?", key.id),
        None,
        body,
    )
    .into_response()
}

pub async fn delete_key(
    State(app): State<AppState>,
    ui: UiSession,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    match xks::delete_key(&app, &ui.session, &id).await {
        Ok(()) => see_other(&format!(
            "{}?done=key_deleted&name={}#xks-keys",
            store_href(&name),
            encode(&id)
        )),
        Err(error) => refused(&app, &ui, &name, error, Sent::Nothing).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued() -> api::IssuedXksCredentialView {
        let store = api::XksStoreView {
            name: "payments".into(),
            path_prefix: "/xks/payments".into(),
            uri_path: "/xks/payments/kms/xks/v1".into(),
            quota_per_second: 1800,
            mtls: None,
            credentials: vec![],
            key_count: 0,
            created_at: "2026-11-29T09:00:00Z".into(),
            updated_at: "2026-11-29T09:00:00Z".into(),
        };
        api::IssuedXksCredentialView {
            store,
            access_key_id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
            secret_access_key: "c2VjcmV0K3NlY3JldC9zZWNyZXQ9PT09PT09PT09PT0=".into(),
            kms_console_file: api::KmsConsoleFile {
                xks_proxy_uri_path: "/xks/payments/kms/xks/v1".into(),
                xks_proxy_authentication_credential: api::KmsConsoleCredential {
                    access_key_id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
                    raw_secret_access_key: "c2VjcmV0K3NlY3JldC9zZWNyZXQ9PT09PT09PT09PT0=".into(),
                },
            },
        }
    }

    #[test]
    fn the_aws_cli_lines_carry_the_path_and_the_credential() {
        let view = issued();
        let create = create_store_commands(&view, "https://keyhold.example.com");
        for expected in [
            "aws kms create-custom-key-store",
            "--custom-key-store-name payments",
            "--custom-key-store-type EXTERNAL_KEY_STORE",
            "--xks-proxy-uri-endpoint https://keyhold.example.com",
            "--xks-proxy-uri-path /xks/payments/kms/xks/v1",
            "--xks-proxy-authentication-credential 'AccessKeyId=ABCDEFGHIJKLMNOPQRSTUVWXYZ,RawSecretAccessKey=c2VjcmV0K3NlY3JldC9zZWNyZXQ9PT09PT09PT09PT0='",
            "aws kms connect-custom-key-store --custom-key-store-id <custom-key-store-id>",
        ] {
            assert!(create.contains(expected), "{expected} not in {create}");
        }
        let rotate = rotate_command(&view);
        assert!(
            rotate.starts_with("aws kms update-custom-key-store"),
            "{rotate}"
        );
        assert!(rotate.contains("RawSecretAccessKey=c2VjcmV0"), "{rotate}");
    }

    #[test]
    fn the_console_file_downloads_from_the_page() {
        let json = serde_json::to_string_pretty(&issued().kms_console_file).unwrap();
        let href = console_file_href(&json);
        assert!(
            href.starts_with("data:application/json;charset=utf-8,%7B"),
            "{href}"
        );
        assert!(!href.contains('"') && !href.contains(' '), "{href}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["XksProxyUriPath"], "/xks/payments/kms/xks/v1");
        assert_eq!(
            value["XksProxyAuthenticationCredential"]["AccessKeyId"],
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        );
    }

    #[test]
    fn the_endpoint_is_the_host_on_port_443() {
        let with = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            proxy_endpoint(&headers)
        };
        assert_eq!(with("keyhold.example.com"), "https://keyhold.example.com");
        assert_eq!(
            with("keyhold.example.com:8443"),
            "https://keyhold.example.com"
        );
        assert_eq!(with("[::1]:8443"), "https://[::1]");
        assert_eq!(with("evil\"<x>"), "https://<keyhold's public name>");
        assert_eq!(
            proxy_endpoint(&HeaderMap::new()),
            "https://<keyhold's public name>"
        );
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";

    fn limits(quota: &str, subject: &str, ca: &str) -> Limits {
        Limits {
            quota_per_second: quota.into(),
            mtls_subject: subject.into(),
            mtls_ca_pem: ca.into(),
        }
    }

    #[test]
    fn the_store_form_asks_for_both_halves_of_mutual_tls() {
        let form = StoreForm {
            name: " payments ".into(),
            ..StoreForm::default()
        };
        let request = form.request().unwrap();
        assert_eq!(request.name, "payments");
        assert_eq!(request.path_prefix, None);
        assert_eq!(request.quota_per_second, None);
        assert_eq!(request.mtls, None);
        let half = StoreForm {
            name: "p".into(),
            limits: limits("", "cks.kms.eu-west-1.amazonaws.com", ""),
            ..StoreForm::default()
        };
        assert_eq!(half.request().unwrap_err().field, "mtls ca");
        let other_half = limits("", "", PEM);
        assert_eq!(other_half.mtls().unwrap_err().field, "mtls subject");
        let quota = limits("lots", "", "");
        assert!(quota.quota().unwrap_err().message.contains("whole number"));
        let whole = StoreForm {
            name: "p".into(),
            path_prefix: "/tenant/p".into(),
            limits: limits(
                "50",
                "cks.kms.eu-west-1.amazonaws.com",
                &format!("\n{PEM}\n\n"),
            ),
        };
        let request = whole.request().unwrap();
        assert_eq!(request.path_prefix.as_deref(), Some("/tenant/p"));
        assert_eq!(request.quota_per_second, Some(50));
        assert_eq!(request.mtls.unwrap().ca_pem, PEM);
        // As a browser sends it, with the CSRF field beside.
        let sent: StoreForm = serde_urlencoded::from_str(
            "csrf=t&name=p&path_prefix=&quota_per_second=7&mtls_subject=&mtls_ca_pem=",
        )
        .unwrap();
        assert_eq!(sent.request().unwrap().quota_per_second, Some(7));
    }

    #[test]
    fn the_settings_form_changes_only_what_differs() {
        let mut store = issued().store;
        store.mtls = Some(api::XksMtlsView {
            subject: "cks.kms.eu-west-1.amazonaws.com".into(),
            ca_sha256: vec![],
            ca_pem: PEM.into(),
        });
        let same = Limits::of(&store).change(&store).unwrap();
        assert_eq!(same.quota_per_second, Some(1800));
        assert_eq!(same.mtls, None);
        let off = limits("900", "", "").change(&store).unwrap();
        assert_eq!(off.quota_per_second, Some(900));
        assert_eq!(off.mtls, Some(None));
        let other = limits("", "cks.kms.us-east-1.amazonaws.com", PEM)
            .change(&store)
            .unwrap();
        assert_eq!(other.quota_per_second, Some(1800));
        assert_eq!(
            other.mtls.unwrap().unwrap().subject,
            "cks.kms.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn the_key_form_reads_one_pattern_a_line() {
        let form = KeyForm {
            description: " payroll ".into(),
            enabled: None,
            principals:
                "arn:aws:iam::111122223333:role/app-*\r\n\n  arn:aws:iam::111122223333:root \n"
                    .into(),
            kms_operations: "Decrypt\nEncrypt".into(),
            ..KeyForm::default()
        };
        let request = form.request();
        assert_eq!(request.description.as_deref(), Some("payroll"));
        assert_eq!(request.enabled, Some(false));
        assert_eq!(request.usage.as_deref(), Some("encrypt_decrypt"));
        let rule = request.rule.unwrap();
        assert_eq!(
            rule.principals,
            [
                "arn:aws:iam::111122223333:role/app-*",
                "arn:aws:iam::111122223333:root"
            ]
        );
        assert_eq!(rule.kms_operations, ["Decrypt", "Encrypt"]);
        assert!(rule.kms_key_arns.is_empty());
        let plain = KeyForm::default().request();
        assert!(plain.rule.is_none());
        assert_eq!(plain.enabled, Some(true));
        assert!(plain.description.is_none());
    }

    #[test]
    fn errors_are_shown_beside_the_field_they_name() {
        let error = |field: &'static str| ApiError::from(InvalidInput::new(field, "why"));
        for (field, id) in [
            ("external key store name", "xks-name"),
            ("path prefix", "xks-path-prefix"),
            ("quota_per_second", "xks-quota"),
            ("mtls subject", "xks-mtls-subject"),
            ("mtls ca", "xks-mtls-ca"),
            ("description", "xks-key-description"),
            ("usage", "xks-key-usage"),
            ("rule", "xks-key-rule"),
        ] {
            let error = error(field);
            assert_eq!(field_error(Some(&error)).map(|e| e.id), Some(id), "{field}");
        }
        assert!(field_error(Some(&error("somewhere else"))).is_none());
    }

    #[test]
    fn ages_are_whole_days_and_notices_fixed_sentences() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(age("2026-12-04T09:00:00Z", now), "less than a day old");
        assert_eq!(age("2026-12-03T09:00:00Z", now), "1 day old");
        assert_eq!(age("2026-11-29T09:00:00.000000Z", now), "5 days old");
        assert_eq!(age("soon", now), "");
        assert!(
            XksQuery {
                done: "<b>".into(),
                ..XksQuery::default()
            }
            .notice()
            .is_none()
        );
    }

    #[test]
    fn the_result_page_holds_the_secret_and_wipes_it_after() {
        let view = issued();
        let page = issued_body(&view, "https://keyhold.example.com", true).into_string();
        assert!(
            page.contains("c2VjcmV0K3NlY3JldC9zZWNyZXQ9PT09PT09PT09PT0="),
            "{page}"
        );
        assert!(
            page.contains("download=\"payments-xks-proxy.json\""),
            "{page}"
        );
        let mut held = Issued(view);
        held.wipe();
        assert!(held.0.secret_access_key.is_empty());
        assert!(
            held.0
                .kms_console_file
                .xks_proxy_authentication_credential
                .raw_secret_access_key
                .is_empty()
        );
    }
}
