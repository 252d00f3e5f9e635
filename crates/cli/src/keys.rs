//! `keyhold key list | show | sync | delete`: *Key Management → Keys*.

use keyhold_api::{JobView, KeyView, SyncRequest};
use reqwest::Method;

use crate::client::{Context, segment};
use crate::error::CliError;
use crate::jobs;
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
    /// Synchronize: start a job that re-imports the key's material into AWS
    /// KMS and puts the group's policy on it (or deletes the material).
    Sync(SyncArgs),
    /// Delete a key.
    Delete {
        /// The key's name (its KMS key id) or keyhold id.
        key: String,
    },
}

/// The options of *Cloud → Synchronize*. All three are always sent, so the
/// job does exactly what the command line says: update the policy and
/// import the material unless told not to, delete the material only when
/// asked (deleting runs first, so `--delete-material` alone deletes and
/// imports again; add `--no-import-material` to leave the key pending import).
#[derive(Debug, Default, clap::Args)]
pub struct SyncArgs {
    /// The key's name (its KMS key id) or keyhold id.
    pub key: String,
    /// Do not put the group's key policy on the KMS key.
    #[arg(long)]
    pub no_update_policy: bool,
    /// Do not import the key's material into the KMS key.
    #[arg(long)]
    pub no_import_material: bool,
    /// Delete the imported key material from AWS KMS (the KMS key becomes pending import).
    #[arg(long)]
    pub delete_material: bool,
    /// Follow the job until it ends, printing its messages; exits 1 if it
    /// fails or is cancelled.
    #[arg(long)]
    pub wait: bool,
}

/// The request a `key sync` sends: every option, explicitly.
pub fn sync_request(args: &SyncArgs) -> Result<SyncRequest, CliError> {
    let request = SyncRequest {
        update_policy: Some(!args.no_update_policy),
        import_material: Some(!args.no_import_material),
        delete_material: Some(args.delete_material),
    };
    if request.update_policy == Some(false)
        && request.import_material == Some(false)
        && request.delete_material == Some(false)
    {
        return Err(CliError::Input(
            "nothing to synchronize: --no-update-policy and --no-import-material leave no step; drop one, or add --delete-material".into(),
        ));
    }
    Ok(request)
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
            ("State note", output::or_dash(self.state_note.as_deref())),
            ("Expired", output::yes_no(self.expired)),
            ("Key material", self.material.clone()),
            ("KMS key", output::or_dash(self.kms_key_id.as_deref())),
            (
                "KMS key material id",
                output::or_dash(self.kms_material_id.as_deref()),
            ),
            ("Material in KMS", material_in_kms(self).to_owned()),
            ("Drift", key_drift(self)),
        ]
    }
}

/// The open drift findings that concern the key, and where to read them.
fn key_drift(key: &KeyView) -> String {
    match key.drift_open {
        0 => "no open findings".to_owned(),
        n => format!("{n} open finding(s) (keyhold drift list --key {})", key.id),
    }
}

/// Whether KMS encrypts with this version's material: what an officer
/// needs from `material_state`, most of all when versions share a KMS key.
fn material_in_kms(key: &KeyView) -> &'static str {
    match key.material_state.as_str() {
        "current" => "current (encrypts and decrypts)",
        "non_current" => "non-current (decrypts only)",
        "pending_rotation" => "pending rotation (not used yet)",
        _ => "unknown",
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

/// The KMS state, with what an officer must notice before acting on the key.
fn state(key: &KeyView) -> String {
    let mut state = key.state.clone();
    match key.material_state.as_str() {
        "non_current" => state.push_str(" (non-current material)"),
        "pending_rotation" => state.push_str(" (material pending rotation)"),
        _ => {}
    }
    if key.expired {
        state.push_str(" (expired)");
    }
    if key.material == "missing" {
        state.push_str(" (material missing)");
    }
    // A key that never reached KMS: its state alone says neither why nor
    // what to do.
    if let Some(note) = &key.state_note {
        state = note.clone();
    }
    state
}

pub async fn run(ctx: &Context, command: KeyCommand) -> anyhow::Result<()> {
    if let KeyCommand::Sync(args) = &command {
        // Refuse an empty synchronization before asking for the session.
        sync_request(args)?;
    }
    let client = ctx.authenticated()?;
    match command {
        KeyCommand::List { group } => {
            // Every key, page after page (the API answers at most 1000 at once).
            const PAGE: usize = 1000;
            let mut keys: Vec<KeyView> = Vec::new();
            loop {
                let mut query = vec![("limit", PAGE.to_string())];
                if let Some(group) = &group {
                    query.push(("group", group.clone()));
                }
                if let Some(last) = keys.last() {
                    query.push(("after", format!("{}:{}", last.group, last.version)));
                }
                let page: Vec<KeyView> = client.get_query("/keys", &query).await?;
                let complete = page.len() < PAGE;
                keys.extend(page);
                if complete {
                    break;
                }
            }
            output::print_list(ctx.output, &keys)
        }
        KeyCommand::Show { key } => {
            let key: KeyView = client.get(&format!("/keys/{}", segment(&key))).await?;
            output::print_item(ctx.output, &key)
        }
        KeyCommand::Sync(args) => {
            let request = sync_request(&args)?;
            let job: JobView = client
                .call(
                    Method::POST,
                    &format!("/keys/{}/sync", segment(&args.key)),
                    &request,
                )
                .await?;
            jobs::started(ctx, &client, job, args.wait).await
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
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: KeyCommand,
    }

    fn sync_json(args: &[&str]) -> Result<serde_json::Value, CliError> {
        let line = [&["key", "sync", "k1"][..], args].concat();
        let Ok(Harness {
            command: KeyCommand::Sync(sync),
        }) = Harness::try_parse_from(line)
        else {
            panic!("not a sync: {args:?}");
        };
        sync_request(&sync).map(|r| serde_json::to_value(r).unwrap())
    }

    #[test]
    fn sync_flags_become_the_request() {
        assert_eq!(
            sync_json(&[]).unwrap(),
            json!({"update_policy": true, "import_material": true, "delete_material": false})
        );
        assert_eq!(
            sync_json(&["--no-update-policy"]).unwrap(),
            json!({"update_policy": false, "import_material": true, "delete_material": false})
        );
        assert_eq!(
            sync_json(&["--no-import-material", "--wait"]).unwrap(),
            json!({"update_policy": true, "import_material": false, "delete_material": false})
        );
        assert_eq!(
            sync_json(&[
                "--delete-material",
                "--no-import-material",
                "--no-update-policy"
            ])
            .unwrap(),
            json!({"update_policy": false, "import_material": false, "delete_material": true})
        );
        let err = sync_json(&["--no-update-policy", "--no-import-material"]).unwrap_err();
        assert!(err.to_string().contains("nothing to synchronize"), "{err}");
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

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
            material: "present".into(),
            state_note: None,
            kms_key_id: Some("bbb61d9f-0fba-4585-8c31-988cbc999849".into()),
            kms_material_id: None,
            material_state: "current".into(),
            drift_open: 0,
        }
    }

    #[test]
    fn show_counts_the_open_drift_findings() {
        let mut drifted = key(None, false);
        assert!(
            drifted
                .fields()
                .contains(&("Drift", "no open findings".to_owned()))
        );
        drifted.drift_open = 2;
        assert!(drifted.fields().contains(&(
            "Drift",
            "2 open finding(s) (keyhold drift list --key k1)".to_owned()
        )));
    }

    #[test]
    fn a_key_without_a_kms_key_shows_why_in_its_state() {
        let mut pending = key(None, false);
        pending.name = "ig-demo v3 (no KMS key)".into();
        pending.state = "pre_active".into();
        pending.state_note =
            Some("pre_active: its rotation job j1 failed before the key reached KMS".into());
        let row = pending.row();
        assert_eq!(row[0], "ig-demo v3 (no KMS key)");
        assert_eq!(
            row[9],
            "pre_active: its rotation job j1 failed before the key reached KMS"
        );
        let fields = pending.fields();
        assert!(fields.contains(&("State", "pre_active".to_owned())));
        assert!(
            fields
                .iter()
                .any(|(k, v)| *k == "State note" && v.contains("job j1 failed"))
        );
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
