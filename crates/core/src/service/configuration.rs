//! *Administration → Configuration*: settings changed under dual control.

use super::Keyhold;
use crate::error::CoreResult;
use crate::identity::{Operation, Session};
use crate::settings::{Settings, SettingsChange};

impl Keyhold {
    pub async fn settings(&self, session: &Session) -> CoreResult<Settings> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.get_settings().await?)
    }

    pub async fn change_settings(
        &self,
        session: &Session,
        change: SettingsChange,
    ) -> CoreResult<Settings> {
        self.authorize(session, Operation::CHANGE_CONFIGURATION)
            .await?;
        let current = self.store.get_settings().await?;
        let next = change.apply(&current)?;
        let record = self
            .record(session.users(), "Changed configuration")
            .with_details(serde_json::json!({ "before": current, "after": next }));
        self.store.put_settings(&next, &record).await?;
        Ok(next)
    }
}
