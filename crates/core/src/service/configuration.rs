//! *Administration → Configuration*: settings changed under dual control.

use super::Keyhold;
use crate::action::Action;
use crate::cluster::RotatorChoice;
use crate::error::{CoreError, CoreResult, InvalidInput};
use crate::identity::{Operation, Session};
use crate::settings::{Settings, SettingsChange};

/// How often a change is applied again to settings that changed meanwhile.
const MAX_CHANGE_ROUNDS: usize = 64;

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
        if let Some(RotatorChoice::Node(node)) = &change.designated_rotator {
            let nodes = self.store.list_nodes().await?;
            if !nodes.iter().any(|n| &n.id == node) {
                let known: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                return Err(InvalidInput::new(
                    "designated_rotator",
                    format!(
                        "no node '{node}' has joined this cluster (known: {}); start it first, or choose 'automatic'",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                )
                .into());
            }
        }
        // Applied to the settings as they are when written: a parallel
        // change in between makes the write refuse and this one is applied
        // again on top of it, so no change of another field is lost.
        for _ in 0..MAX_CHANGE_ROUNDS {
            let current = self.store.get_settings().await?;
            let next = change.clone().apply(&current)?;
            let record = self
                .record_for(session, Action::ChangeConfiguration.succeeded())
                .with_details(serde_json::json!({ "before": current, "after": next }));
            if self
                .store
                .replace_settings(&current, &next, &record)
                .await?
            {
                return Ok(next);
            }
        }
        Err(CoreError::Conflict(
            "the configuration kept changing while this change was applied: try again".into(),
        ))
    }
}
