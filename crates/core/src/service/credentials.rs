//! Cloud credentials: an access key imported from the AWS console CSV (secret
//! sealed at once), or the server's default credential chain with an
//! optional role to assume (no secret stored).

use super::Keyhold;
use crate::action::Action;
use crate::credential::{
    AccessKeyCsv, CloudService, Credential, CredentialKind, Endpoint, RoleArn,
};
use crate::error::{CoreError, CoreResult, StoreError};
use crate::identity::{Operation, Session};
use crate::names::CredentialName;

impl Keyhold {
    pub async fn import_credential(
        &self,
        session: &Session,
        name: CredentialName,
        csv: AccessKeyCsv,
        endpoint: Option<Endpoint>,
    ) -> CoreResult<Credential> {
        self.authorize(session, Operation::ADD_CREDENTIAL).await?;
        self.check_endpoint(endpoint.as_ref())?;
        let id = uuid::Uuid::new_v4();
        let sealed_secret = self
            .keystore
            .seal_secret(id.as_bytes(), csv.secret().as_bytes())?;
        let kind = CredentialKind::AccessKey {
            access_key_id: csv.access_key_id,
            sealed_secret,
        };
        self.add_credential(session, id, name, kind, endpoint).await
    }

    /// Adds a credential that stores no secret: KMS is called with the
    /// server process's own AWS credentials (the SDK's default chain), or as
    /// `role_arn`, assumed through STS with them.
    pub async fn add_chain_credential(
        &self,
        session: &Session,
        name: CredentialName,
        role_arn: Option<RoleArn>,
        endpoint: Option<Endpoint>,
    ) -> CoreResult<Credential> {
        self.authorize(session, Operation::ADD_CREDENTIAL).await?;
        self.check_endpoint(endpoint.as_ref())?;
        let kind = CredentialKind::DefaultChain { role_arn };
        self.add_credential(session, uuid::Uuid::new_v4(), name, kind, endpoint)
            .await
    }

    /// Stores a new credential with its audit entry. The caller has
    /// authorized the session (and sealed any secret under `id`).
    async fn add_credential(
        &self,
        session: &Session,
        id: uuid::Uuid,
        name: CredentialName,
        kind: CredentialKind,
        endpoint: Option<Endpoint>,
    ) -> CoreResult<Credential> {
        let credential = Credential {
            id,
            name: name.clone(),
            service: CloudService::Aws,
            kind,
            endpoint,
            created_at: self.now(),
        };
        let record = self
            .record_for(session, Action::AddCredential(name.as_str()).succeeded())
            .with_details(details(&credential));
        match self.store.insert_credential(&credential, &record).await {
            Ok(()) => Ok(credential),
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "a cloud credential named '{name}' already exists: choose another name or delete the old one"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_credentials(&self, session: &Session) -> CoreResult<Vec<Credential>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_credentials().await?)
    }

    pub async fn get_credential(
        &self,
        session: &Session,
        name: &CredentialName,
    ) -> CoreResult<Credential> {
        session.authorize(Operation::READ, true)?;
        self.store
            .get_credential(name)
            .await?
            .ok_or_else(|| CoreError::not_found("cloud credential", name))
    }

    pub async fn delete_credential(
        &self,
        session: &Session,
        name: &CredentialName,
    ) -> CoreResult<()> {
        self.authorize(session, Operation::DELETE_CREDENTIAL)
            .await?;
        let Some(credential) = self.store.get_credential(name).await? else {
            return Err(CoreError::not_found("cloud credential", name));
        };
        let users = self.groups_using(name).await?;
        if !users.is_empty() {
            return Err(in_use(name, &users));
        }
        let record = self
            .record_for(session, Action::DeleteCredential(name.as_str()).succeeded())
            .with_details(serde_json::json!({ "before": details(&credential) }));
        match self.store.delete_credential(name, &record).await {
            Ok(()) => Ok(()),
            // A group took the credential between the check and the delete.
            Err(StoreError::InUse) => Err(in_use(name, &self.groups_using(name).await?)),
            Err(StoreError::NotFound) => Err(CoreError::not_found("cloud credential", name)),
            Err(e) => Err(e.into()),
        }
    }

    /// An endpoint an officer gives must be one the operator allows.
    fn check_endpoint(&self, endpoint: Option<&Endpoint>) -> CoreResult<()> {
        match endpoint {
            Some(endpoint) => Ok(self.endpoints.check(endpoint)?),
            None => Ok(()),
        }
    }

    async fn groups_using(&self, name: &CredentialName) -> CoreResult<Vec<String>> {
        Ok(self
            .store
            .list_groups()
            .await?
            .into_iter()
            .filter(|g| &g.credential == name)
            .map(|g| g.name.to_string())
            .collect())
    }
}

fn in_use(name: &CredentialName, groups: &[String]) -> CoreError {
    CoreError::Conflict(format!(
        "cloud credential '{name}' is used by key group(s) {}: give those groups another credential or delete them first",
        groups.join(", ")
    ))
}

/// What a credential is, as its audit entries record it (never its secret).
fn details(credential: &Credential) -> serde_json::Value {
    serde_json::json!({
        "service": credential.service.as_str(),
        "kind": credential.kind.label(),
        "access_name": credential.kind.access_name(),
        "endpoint": credential.endpoint.as_ref().map(Endpoint::as_str),
    })
}
