//! *External Key Stores*: the stores AWS KMS reaches keyhold's XKS proxy
//! under, their SigV4 credentials and their keys, for the API and the web
//! UI alike.
//!
//! Rules (the core's `service::xks` has the rest):
//! - A store, its credentials, and creating, deleting or widening a key go
//!   through [`gate`] (dual control, or the approval classes
//!   `manage_xks_stores` and `manage_xks_keys`); disabling a key, narrowing
//!   its usage or its description needs one key officer.
//! - A credential's secret is in the answer to the call that made it, once.
//!   Made by an approved request, it waits sealed for the requester
//!   ([`collected_credential`]); the approver whose answer ran it never
//!   sees it.
//! - An mTLS CA must parse as PEM certificates here, at the edge, before
//!   the core stores it: the proxy builds its client verifier from it.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::action::{Action, printable};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::service::{IssuedCredential, Keyhold, NewXksKey, NewXksStore};
use keyhold_core::xks::{
    AuthorizationRule, MtlsRule, PathPrefix, Pattern, XksAccessKeyId, XksKey, XksKeyChange,
    XksKeyUsage, XksSecret, XksStore, XksStoreChange, XksStoreName, parse_description, parse_quota,
};
use zeroize::Zeroizing;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

// ---- stores ----

pub async fn list_stores(app: &AppState, session: &Session) -> ApiResult<Vec<api::XksStoreView>> {
    let stores = app.keyhold.list_xks_stores(session).await?;
    Ok(stores
        .iter()
        .map(|d| views::xks_store(&d.store, &d.credentials, d.keys.len()))
        .collect())
}

pub async fn show_store(
    app: &AppState,
    session: &Session,
    name: &str,
) -> ApiResult<api::XksStoreView> {
    let name = XksStoreName::parse(name)?;
    let detail = app.keyhold.get_xks_store(session, &name).await?;
    Ok(views::xks_store(
        &detail.store,
        &detail.credentials,
        detail.keys.len(),
    ))
}

/// Creates a store with its first credential: the answer holds the
/// credential's secret, shown this once.
pub async fn create_store(
    app: &AppState,
    session: &Session,
    req: &api::CreateXksStoreRequest,
) -> ApiResult<api::IssuedXksCredentialView> {
    let issued = create_store_issuing(app, session, req).await?;
    issued_view(app, &issued).await
}

/// [`create_store`] without the view: what an approved request runs (its
/// secret is sealed for the requester by the core, and wiped here when the
/// result is dropped).
pub async fn create_store_issuing(
    app: &AppState,
    session: &Session,
    req: &api::CreateXksStoreRequest,
) -> ApiResult<IssuedCredential> {
    audited(app, session, Action::CreateXksStore(&req.name), async {
        let new = new_store(req)?;
        gate(app, session, Operation::MANAGE_XKS_STORES, async || {
            let prefix = match &new.path_prefix {
                Some(prefix) => prefix.clone(),
                None => PathPrefix::for_store(&new.name)?,
            };
            Ok((
                PendingOperation::CreateXksStore { store: req.clone() },
                format!(
                    "Create external key store '{}' at {} (its first credential's secret goes to the requester)",
                    new.name,
                    prefix.uri_path()
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.create_xks_store(session, new).await?)
    })
    .await
}

/// Changes a store's quota or mutual-TLS rule.
pub async fn update_store(
    app: &AppState,
    session: &Session,
    name: &str,
    req: &api::UpdateXksStoreRequest,
) -> ApiResult<api::XksStoreView> {
    let store = audited(app, session, Action::UpdateXksStore(name), async {
        let parsed = XksStoreName::parse(name)?;
        let change = store_change(req)?;
        gate(app, session, Operation::MANAGE_XKS_STORES, async || {
            app.keyhold.get_xks_store(session, &parsed).await?;
            Ok((
                PendingOperation::UpdateXksStore {
                    store: parsed.to_string(),
                    change: req.clone(),
                },
                format!(
                    "Change external key store '{parsed}': {}",
                    describe_store_change(&change)
                ),
            ))
        })
        .await?;
        Ok(app
            .keyhold
            .update_xks_store(session, &parsed, change)
            .await?)
    })
    .await?;
    store_view(app, &store).await
}

/// Deletes a store and its credentials (refused while it holds keys).
pub async fn delete_store(app: &AppState, session: &Session, name: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteXksStore(name), async {
        let parsed = XksStoreName::parse(name)?;
        gate(app, session, Operation::MANAGE_XKS_STORES, async || {
            app.keyhold.get_xks_store(session, &parsed).await?;
            Ok((
                PendingOperation::DeleteXksStore {
                    store: parsed.to_string(),
                },
                format!("Delete external key store '{parsed}' and its credentials"),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_xks_store(session, &parsed).await?)
    })
    .await
}

// ---- credentials ----

/// A new credential for the store (the first step of a rotation): the
/// answer holds its secret, shown this once.
pub async fn add_credential(
    app: &AppState,
    session: &Session,
    name: &str,
) -> ApiResult<api::IssuedXksCredentialView> {
    let issued = add_credential_issuing(app, session, name).await?;
    issued_view(app, &issued).await
}

/// [`add_credential`] without the view (what an approved request runs).
pub async fn add_credential_issuing(
    app: &AppState,
    session: &Session,
    name: &str,
) -> ApiResult<IssuedCredential> {
    audited(app, session, Action::AddXksCredential(name), async {
        let parsed = XksStoreName::parse(name)?;
        gate(app, session, Operation::MANAGE_XKS_STORES, async || {
            app.keyhold.get_xks_store(session, &parsed).await?;
            Ok((
                PendingOperation::AddXksCredential {
                    store: parsed.to_string(),
                },
                format!(
                    "Add a credential to external key store '{parsed}' (its secret goes to the requester)"
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.add_xks_credential(session, &parsed).await?)
    })
    .await
}

/// Revokes one of a store's credentials: KMS calls signed with it are
/// refused within seconds.
pub async fn revoke_credential(
    app: &AppState,
    session: &Session,
    name: &str,
    access_key_id: &str,
) -> ApiResult<()> {
    let action = Action::RevokeXksCredential(name, access_key_id);
    audited(app, session, action, async {
        let parsed = XksStoreName::parse(name)?;
        let access_key_id = XksAccessKeyId::parse(access_key_id)?;
        gate(app, session, Operation::MANAGE_XKS_STORES, async || {
            app.keyhold.get_xks_store(session, &parsed).await?;
            Ok((
                PendingOperation::RevokeXksCredential {
                    store: parsed.to_string(),
                    access_key_id: access_key_id.to_string(),
                },
                format!(
                    "Revoke credential {access_key_id} of external key store '{parsed}' (KMS calls signed with it are refused)"
                ),
            ))
        })
        .await?;
        Ok(app
            .keyhold
            .revoke_xks_credential(session, &parsed, &access_key_id)
            .await?)
    })
    .await
}

/// The credential an executed request made, from the result sealed for
/// its requester (the AWS KMS console's file, which holds the access key
/// id and the secret). `store` is the store the request named; `None`
/// when the store is gone since (the secret is still handed over, it is
/// the requester's).
pub(super) async fn collected_credential(
    app: &AppState,
    store: &str,
    result: &[u8],
) -> ApiResult<(Zeroizing<String>, Option<api::IssuedXksCredentialView>)> {
    let corrupt = || {
        keyhold_core::CoreError::Store(keyhold_core::StoreError::Corrupt(
            "a sealed XKS credential is not the KMS console's file".into(),
        ))
    };
    let file: api::KmsConsoleFile = serde_json::from_slice(result).map_err(|_| corrupt())?;
    let secret = Zeroizing::new(
        file.xks_proxy_authentication_credential
            .raw_secret_access_key
            .clone(),
    );
    let access_key_id =
        XksAccessKeyId::parse(&file.xks_proxy_authentication_credential.access_key_id)
            .map_err(|_| corrupt())?;
    let name = XksStoreName::parse(store).map_err(|_| corrupt())?;
    let stored = app.keyhold.store().list_xks_stores().await?;
    let Some(found) = stored.iter().find(|s| s.name == name) else {
        return Ok((secret, None));
    };
    let view = store_view(app, found).await?;
    let secret_value = XksSecret::from_opened(Zeroizing::new(secret.as_bytes().to_vec()))
        .map_err(|_| corrupt())?;
    Ok((
        secret,
        Some(views::xks_issued(view, &access_key_id, &secret_value)),
    ))
}

// ---- keys ----

/// Generates a key in the store's keystore; its id is the `XksKeyId` for
/// KMS `CreateKey`.
pub async fn create_key(
    app: &AppState,
    session: &Session,
    store: &str,
    req: &api::CreateXksKeyRequest,
) -> ApiResult<api::XksKeyView> {
    let key = audited(app, session, Action::CreateXksKey(store), async {
        let parsed = XksStoreName::parse(store)?;
        let new = new_key(req)?;
        gate(app, session, Operation::MANAGE_XKS_KEYS, async || {
            app.keyhold.get_xks_store(session, &parsed).await?;
            Ok((
                PendingOperation::CreateXksKey {
                    store: parsed.to_string(),
                    key: req.clone(),
                },
                format!(
                    "Create an XKS key in external key store '{parsed}' (usage {}, {}{})",
                    new.usage.as_str(),
                    if new.enabled { "enabled" } else { "disabled" },
                    if new.rule.is_empty() {
                        ", no authorization rule"
                    } else {
                        ", with an authorization rule"
                    }
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.create_xks_key(session, &parsed, new).await?)
    })
    .await?;
    key_view(app, &key).await
}

/// Every key, or one store's.
pub async fn list_keys(
    app: &AppState,
    session: &Session,
    store: Option<&str>,
) -> ApiResult<Vec<api::XksKeyView>> {
    let store = store.map(XksStoreName::parse).transpose()?;
    let keys = app.keyhold.list_xks_keys(session, store.as_ref()).await?;
    // The caller read the keys, so may read the stores they belong to.
    let stores = app.keyhold.store().list_xks_stores().await?;
    Ok(keys
        .iter()
        .filter_map(|key| {
            // A key whose store was deleted in between is gone with it.
            let store = stores.iter().find(|s| s.id == key.store_id)?;
            Some(views::xks_key(key, store))
        })
        .collect())
}

pub async fn show_key(app: &AppState, session: &Session, id: &str) -> ApiResult<api::XksKeyView> {
    let key = app.keyhold.get_xks_key(session, key_id(id)?).await?;
    key_view(app, &key).await
}

/// Changes a key. What it needs depends on the key as it is: enabling,
/// widening the usage or changing the rule needs two officers (or the
/// approval class `manage_xks_keys`), the rest one.
pub async fn update_key(
    app: &AppState,
    session: &Session,
    id: &str,
    req: &api::UpdateXksKeyRequest,
) -> ApiResult<api::XksKeyView> {
    let key = audited(app, session, Action::UpdateXksKey(id), async {
        // The least any change needs, before the key is read: a refusal for
        // want of a role never tells which keys exist. An approved request's
        // session was checked when it was asked for, and may run only its
        // own class, which this check (of no class) is not.
        if session.grant.is_none() {
            session.authorize(Operation::RESTRICT_XKS_KEY, false)?;
        }
        let parsed = key_id(id)?;
        let change = key_change(req)?;
        let current = app.keyhold.get_xks_key(session, parsed).await?;
        let op = Keyhold::xks_key_operation(&change, &current);
        gate(app, session, op, async || {
            Ok((
                PendingOperation::UpdateXksKey {
                    key: parsed.to_string(),
                    change: req.clone(),
                },
                format!(
                    "Change XKS key {parsed}: {}",
                    describe_key_change(&change, &current)
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.update_xks_key(session, parsed, change).await?)
    })
    .await?;
    key_view(app, &key).await
}

/// Deletes a disabled key and destroys its material.
pub async fn delete_key(app: &AppState, session: &Session, id: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteXksKey(id), async {
        let parsed = key_id(id)?;
        gate(app, session, Operation::MANAGE_XKS_KEYS, async || {
            app.keyhold.get_xks_key(session, parsed).await?;
            Ok((
                PendingOperation::DeleteXksKey {
                    key: parsed.to_string(),
                },
                format!(
                    "Delete XKS key {parsed} and destroy its material (whatever AWS encrypted under it becomes unreadable)"
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_xks_key(session, parsed).await?)
    })
    .await
}

// ---- views ----

/// A store as the API shows it, its credentials and keys read now (the
/// caller has read or written the store already).
async fn store_view(app: &AppState, store: &XksStore) -> ApiResult<api::XksStoreView> {
    let credentials = app.keyhold.store().list_xks_credentials().await?;
    let keys = app.keyhold.store().list_xks_keys(Some(store.id)).await?;
    Ok(views::xks_store(store, &credentials, keys.len()))
}

async fn issued_view(
    app: &AppState,
    issued: &IssuedCredential,
) -> ApiResult<api::IssuedXksCredentialView> {
    let store = store_view(app, &issued.store).await?;
    Ok(views::xks_issued(
        store,
        &issued.access_key_id,
        &issued.secret,
    ))
}

async fn key_view(app: &AppState, key: &XksKey) -> ApiResult<api::XksKeyView> {
    let stores = app.keyhold.store().list_xks_stores().await?;
    let store = stores
        .iter()
        .find(|s| s.id == key.store_id)
        .ok_or_else(|| keyhold_core::CoreError::not_found("external key store", key.store_id))?;
    Ok(views::xks_key(key, store))
}

// ---- requests ----

/// An XKS key id is the UUID keyhold showed, hyphenated (the form KMS is given).
fn key_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    keyhold_core::id::parse_uuid(raw).ok_or_else(|| {
        InvalidInput::new(
            "id",
            format!(
                "'{}' is not an XKS key id: use the id a listing shows (a UUID such as 7907323e-ea39-4542-b198-ef4a4ca5793c), see GET /api/v1/xks/keys or `keyhold xks key list`",
                printable(raw)
            ),
        )
    })
}

fn new_store(req: &api::CreateXksStoreRequest) -> Result<NewXksStore, InvalidInput> {
    Ok(NewXksStore {
        name: XksStoreName::parse(&req.name)?,
        path_prefix: req
            .path_prefix
            .as_deref()
            .map(PathPrefix::parse)
            .transpose()?,
        quota_per_second: req.quota_per_second.map(parse_quota).transpose()?,
        mtls: req.mtls.as_ref().map(mtls_rule).transpose()?,
    })
}

fn store_change(req: &api::UpdateXksStoreRequest) -> Result<XksStoreChange, InvalidInput> {
    if req.quota_per_second.is_none() && req.mtls.is_none() {
        return Err(InvalidInput::new(
            "body",
            "nothing to change: give quota_per_second, or mtls ({\"subject\": …, \"ca_pem\": …}, or null to turn mutual TLS off)",
        ));
    }
    Ok(XksStoreChange {
        quota_per_second: req.quota_per_second.map(parse_quota).transpose()?,
        mtls: req
            .mtls
            .as_ref()
            .map(|rule| rule.as_ref().map(mtls_rule).transpose())
            .transpose()?,
    })
}

/// The mutual-TLS rule, its CA checked to be PEM certificates that parse
/// (nothing else in the file: a private key pasted by mistake is refused,
/// not stored).
fn mtls_rule(req: &api::XksMtlsRequest) -> Result<MtlsRule, InvalidInput> {
    use rustls::pki_types::pem::{PemObject, SectionKind};
    let rule = MtlsRule::new(&req.subject, &req.ca_pem)?;
    let invalid = |why: String| {
        InvalidInput::new(
            "mtls ca",
            format!(
                "the mTLS CA {why}: give the PEM file (BEGIN CERTIFICATE blocks only) of the root CA that KMS's client certificate chains to"
            ),
        )
    };
    let mut certificates = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(rule.ca_pem.as_bytes()) {
        let (kind, der) = section.map_err(|e| invalid(format!("is not valid PEM ({e})")))?;
        if kind != SectionKind::Certificate {
            return Err(invalid(format!(
                "holds a {kind:?} block, which is not a certificate"
            )));
        }
        certificates += 1;
        rustls::RootCertStore::empty()
            .add(der.into())
            .map_err(|e| {
                invalid(format!(
                    "has a block {certificates} that is not an X.509 certificate ({e})"
                ))
            })?;
    }
    if certificates == 0 {
        return Err(invalid("holds no certificate".to_owned()));
    }
    Ok(rule)
}

fn new_key(req: &api::CreateXksKeyRequest) -> Result<NewXksKey, InvalidInput> {
    Ok(NewXksKey {
        description: parse_description(req.description.as_deref().unwrap_or(""))?,
        usage: req
            .usage
            .as_deref()
            .map(XksKeyUsage::parse)
            .transpose()?
            .unwrap_or(XksKeyUsage::EncryptDecrypt),
        rule: req.rule.as_ref().map(rule).transpose()?.unwrap_or_default(),
        enabled: req.enabled.unwrap_or(true),
    })
}

fn key_change(req: &api::UpdateXksKeyRequest) -> Result<XksKeyChange, InvalidInput> {
    if req.description.is_none()
        && req.usage.is_none()
        && req.enabled.is_none()
        && req.rule.is_none()
    {
        return Err(InvalidInput::new(
            "body",
            "nothing to change: give description, usage, enabled or rule",
        ));
    }
    Ok(XksKeyChange {
        description: req
            .description
            .as_deref()
            .map(parse_description)
            .transpose()?,
        usage: req.usage.as_deref().map(XksKeyUsage::parse).transpose()?,
        enabled: req.enabled,
        rule: req.rule.as_ref().map(rule).transpose()?,
    })
}

/// A rule's patterns parsed, each refusal naming its list.
fn rule(view: &api::XksRuleView) -> Result<AuthorizationRule, InvalidInput> {
    let list = |name: &str, raw: &[String]| -> Result<Vec<Pattern>, InvalidInput> {
        raw.iter()
            .map(|p| {
                Pattern::parse(p)
                    .map_err(|e| InvalidInput::new("rule", format!("rule.{name}: {}", e.message)))
            })
            .collect()
    };
    let rule = AuthorizationRule {
        principals: list("principals", &view.principals)?,
        kms_key_arns: list("kms_key_arns", &view.kms_key_arns)?,
        kms_operations: list("kms_operations", &view.kms_operations)?,
        source_vpcs: list("source_vpcs", &view.source_vpcs)?,
    };
    rule.check()?;
    Ok(rule)
}

/// What a store change does, for the approvers.
fn describe_store_change(change: &XksStoreChange) -> String {
    let mut parts = Vec::new();
    if let Some(quota) = change.quota_per_second {
        parts.push(format!("quota {quota} requests per second"));
    }
    match &change.mtls {
        Some(Some(rule)) => parts.push(format!("mutual TLS with subject {}", rule.subject)),
        Some(None) => parts.push("mutual TLS off".to_owned()),
        None => {}
    }
    parts.join(", ")
}

/// What a key change does to `key`, for the approvers.
fn describe_key_change(change: &XksKeyChange, key: &XksKey) -> String {
    let mut parts = Vec::new();
    if let Some(enabled) = change.enabled
        && enabled != key.enabled
    {
        parts.push(if enabled { "enable it" } else { "disable it" }.to_owned());
    }
    if let Some(usage) = change.usage
        && usage != key.usage
    {
        parts.push(format!(
            "usage {} (was {})",
            usage.as_str(),
            key.usage.as_str()
        ));
    }
    if let Some(rule) = &change.rule
        && rule != &key.rule
    {
        parts.push(if rule.is_empty() {
            "remove its authorization rule".to_owned()
        } else {
            "replace its authorization rule".to_owned()
        });
    }
    if change.description.is_some() {
        parts.push("its description".to_owned());
    }
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate of the server's TLS tests (any X.509 certificate will do).
    const CA_PEM: &str = include_str!("../../tests/fixtures/tls/certificate.pem");

    fn mtls(ca: &str) -> api::XksMtlsRequest {
        api::XksMtlsRequest {
            subject: "cks.kms.eu-west-1.amazonaws.com".into(),
            ca_pem: ca.into(),
        }
    }

    #[test]
    fn an_mtls_ca_must_be_certificates_that_parse() {
        assert!(mtls_rule(&mtls(CA_PEM)).is_ok());
        let two = format!("{CA_PEM}{CA_PEM}");
        assert!(mtls_rule(&mtls(&two)).is_ok());
        for (bad, says) in [
            ("no pem at all", "CERTIFICATE"),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
                "not an X.509 certificate",
            ),
        ] {
            let error = mtls_rule(&mtls(bad)).unwrap_err();
            assert_eq!(error.field, "mtls ca", "{bad}");
            assert!(error.message.contains(says), "{bad}: {}", error.message);
        }
        let with_key = format!(
            "{CA_PEM}-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
        );
        let error = mtls_rule(&mtls(&with_key)).unwrap_err();
        assert!(
            error.message.contains("not a certificate"),
            "{}",
            error.message
        );
    }

    #[test]
    fn rules_name_the_list_at_fault_and_changes_must_change_something() {
        let error = rule(&api::XksRuleView {
            kms_operations: vec!["has space".into()],
            ..api::XksRuleView::default()
        })
        .unwrap_err();
        assert!(error.message.starts_with("rule.kms_operations:"), "{error}");
        assert_eq!(
            key_change(&api::UpdateXksKeyRequest::default())
                .unwrap_err()
                .field,
            "body"
        );
        assert_eq!(
            store_change(&api::UpdateXksStoreRequest::default())
                .unwrap_err()
                .field,
            "body"
        );
        let off = store_change(&api::UpdateXksStoreRequest {
            mtls: Some(None),
            ..api::UpdateXksStoreRequest::default()
        })
        .unwrap();
        assert_eq!(off.mtls, Some(None));
    }

    #[test]
    fn a_new_key_defaults_to_what_kms_create_key_needs() {
        let key = new_key(&api::CreateXksKeyRequest::default()).unwrap();
        assert_eq!(key.usage, XksKeyUsage::EncryptDecrypt);
        assert!(key.enabled);
        assert!(key.rule.is_empty());
        let error = new_key(&api::CreateXksKeyRequest {
            usage: Some("sign".into()),
            ..api::CreateXksKeyRequest::default()
        })
        .unwrap_err();
        assert!(error.message.contains("encrypt_decrypt"), "{error}");
    }

    #[test]
    fn key_ids_are_hyphenated_uuids_only() {
        assert!(key_id("7907323e-ea39-4542-b198-ef4a4ca5793c").is_ok());
        for bad in [
            "7907323eea394542b198ef4a4ca5793c",
            "{7907323e-ea39-4542-b198-ef4a4ca5793c}",
            "../etc",
        ] {
            assert_eq!(key_id(bad).unwrap_err().field, "id", "{bad}");
        }
    }

    /// A store shows only its own credentials, oldest first, and each CA
    /// certificate's fingerprint.
    #[test]
    fn a_store_view_shows_its_own_credentials_and_its_cas_fingerprints() {
        let at = |secs: i64| chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        let store = XksStore {
            id: uuid::Uuid::new_v4(),
            name: XksStoreName::parse("payments").unwrap(),
            path_prefix: PathPrefix::parse("/tenant/payments").unwrap(),
            quota_per_second: 900,
            mtls: Some(mtls_rule(&mtls(CA_PEM)).unwrap()),
            created_at: at(0),
            updated_at: at(1),
        };
        let credential = |store_id, secs| {
            let (access_key_id, _) = keyhold_core::xks::generate_credential().unwrap();
            keyhold_core::xks::XksCredential {
                id: uuid::Uuid::new_v4(),
                store_id,
                access_key_id,
                sealed_secret: vec![1, 2, 3],
                created_at: at(secs),
            }
        };
        let newer = credential(store.id, 20);
        let older = credential(store.id, 10);
        let others = credential(uuid::Uuid::new_v4(), 5);
        let view = views::xks_store(&store, &[newer.clone(), others, older.clone()], 3);
        let shown: Vec<&str> = view
            .credentials
            .iter()
            .map(|c| c.access_key_id.as_str())
            .collect();
        assert_eq!(
            shown,
            [older.access_key_id.as_str(), newer.access_key_id.as_str()]
        );
        assert_eq!(view.uri_path, "/tenant/payments/kms/xks/v1");
        assert_eq!(view.key_count, 3);
        let mtls = view.mtls.unwrap();
        assert_eq!(mtls.ca_sha256.len(), 1);
        assert_eq!(mtls.ca_sha256[0].len(), 64);
    }

    /// The console file the API shows is the one the core seals for an
    /// approved request's requester: the same fields, the same values.
    #[test]
    fn the_console_file_matches_the_cores() {
        let (access_key_id, secret) = keyhold_core::xks::generate_credential().unwrap();
        let prefix = PathPrefix::parse("/xks/payments").unwrap();
        let core = keyhold_core::xks::kms_console_file(&prefix, &access_key_id, &secret);
        let store = api::XksStoreView {
            name: "payments".into(),
            path_prefix: prefix.to_string(),
            uri_path: prefix.uri_path(),
            quota_per_second: 1800,
            mtls: None,
            credentials: vec![],
            key_count: 0,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let issued = views::xks_issued(store, &access_key_id, &secret);
        assert_eq!(
            serde_json::to_value(&issued.kms_console_file).unwrap(),
            core
        );
        let read_back: api::KmsConsoleFile = serde_json::from_value(core).unwrap();
        assert_eq!(read_back, issued.kms_console_file);
    }
}
