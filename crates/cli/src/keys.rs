//! `keyhold key list | show | delete`: *Key Management → Keys*.

use keyhold_api::KeyView;

use crate::client::{Context, segment};
use crate::output::{self, Tabular};

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// List the keys, optionally of one group.
    List {
        /// Only the keys of this key group.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// Show one key.
    Show {
        /// The key's name (its KMS key id) or keyhold id.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// The key's name (its KMS key id) or keyhold id.
        key: String,
    },
}

impl Tabular for KeyView {
    fn headers() -> &'static [&'static str] {
        &[
            "Name",
            "Key Group",
            "Certificate",
            "Version",
            "Storage",
            "Key type",
            "Algorithm",
            "Check Digits",
            "Validity",
            "State",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.group.clone(),
            output::or_dash(self.certificate.as_deref()),
            self.version.to_string(),
            self.storage.clone(),
            self.key_type.clone(),
            self.algorithm.clone(),
            self.check_digits.clone(),
            validity(self),
            state(self),
        ]
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Name", self.name.clone()),
            ("ID", self.id.clone()),
            ("Key group", self.group.clone()),
            ("Certificate", output::or_dash(self.certificate.as_deref())),
            ("Version", self.version.to_string()),
            ("Storage", self.storage.clone()),
            ("Key type", self.key_type.clone()),
            ("Algorithm", self.algorithm.clone()),
            ("Check digits", self.check_digits.clone()),
            ("Valid from", output::time(&self.valid_from)),
            (
                "Valid to",
                self.valid_to
                    .as_deref()
                    .map_or_else(|| "no expiry".to_owned(), output::time),
            ),
            ("State", self.state.clone()),
            ("Expired", output::yes_no(self.expired)),
        ]
    }
}

/// `2026-01-01 00:00:00 – 2027-01-01 00:00:00`, or `… – no expiry`.
fn validity(key: &KeyView) -> String {
    let to = key
        .valid_to
        .as_deref()
        .map_or_else(|| "no expiry".to_owned(), output::time);
    format!("{} – {to}", output::time(&key.valid_from))
}

fn state(key: &KeyView) -> String {
    if key.expired {
        format!("{} (expired)", key.state)
    } else {
        key.state.clone()
    }
}

pub async fn run(ctx: &Context, command: KeyCommand) -> anyhow::Result<()> {
    let client = ctx.authenticated()?;
    match command {
        KeyCommand::List { group } => {
            let keys: Vec<KeyView> = match group {
                Some(group) => client.get_query("/keys", &[("group", group)]).await?,
                None => client.get("/keys").await?,
            };
            output::print_list(ctx.output, &keys)
        }
        KeyCommand::Show { key } => {
            let key: KeyView = client.get(&format!("/keys/{}", segment(&key))).await?;
            output::print_item(ctx.output, &key)
        }
        KeyCommand::Delete { key } => {
            client.delete(&format!("/keys/{}", segment(&key))).await?;
            output::print_done(ctx.output, &format!("Deleted HSM protected key {key}."))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(valid_to: Option<&str>, expired: bool) -> KeyView {
        KeyView {
            name: "bbb61d9f-0fba-4585-8c31-988cbc999849".into(),
            id: "k1".into(),
            group: "ig-demo".into(),
            certificate: None,
            version: 2,
            storage: "Protected".into(),
            key_type: "AES".into(),
            algorithm: "AES-256".into(),
            check_digits: "57CF".into(),
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_to: valid_to.map(Into::into),
            state: "enabled".into(),
            expired,
        }
    }

    #[test]
    fn key_rows_follow_the_keys_list_columns() {
        let mut table = output::Table::new(KeyView::headers());
        table.push(key(Some("2027-01-01T00:00:00Z"), false).row());
        table.push(key(None, true).row());
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Name"));
        assert!(
            lines[0].contains("Key Group")
                && lines[0].contains("Check Digits")
                && lines[0].ends_with("State")
        );
        assert!(
            lines[1].contains("ig-demo    -            2"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("2026-01-01 00:00:00 – 2027-01-01 00:00:00"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("enabled"));
        assert!(lines[2].contains("– no expiry"));
        assert!(lines[2].ends_with("enabled (expired)"));
    }

    #[test]
    fn json_keeps_the_api_field_names() {
        let value = serde_json::to_value(vec![key(None, false)]).unwrap();
        let object = value[0].as_object().unwrap();
        for field in [
            "name",
            "group",
            "version",
            "storage",
            "algorithm",
            "check_digits",
            "valid_from",
            "valid_to",
            "state",
        ] {
            assert!(object.contains_key(field), "{field}");
        }
    }
}
