//! What drift checks read and their repairs write: key policies, tags,
//! aliases, the listings, and the key's life (enable, disable, deletion).
//!
//! Sources: AWS KMS API Reference (GetKeyPolicy, PutKeyPolicy, ListKeys,
//! ListAliases, ListResourceTags, TagResource, UntagResource, CreateAlias,
//! UpdateAlias, DeleteAlias, EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion) and the Developer Guide's key-state table (*Key states
//! of AWS KMS keys*), whose footnotes the errors quote.

use serde_json::{Value, json};

use super::{
    ACCOUNT, AliasRecord, Answer, Inner, KeyRecord, KmsError, PENDING_DELETION, arn, field,
    now_epoch, page, pending_import, resolve,
};

/// The only key policy name KMS has; GetKeyPolicy and PutKeyPolicy default to it.
const POLICY_NAME: &str = "default";
/// "The key policy cannot exceed 32 kilobytes (32768 bytes)" (PutKeyPolicy).
const MAX_POLICY_BYTES: usize = 32 * 1024;
/// ScheduleKeyDeletion's `PendingWindowInDays`: 7 to 30, 30 when absent.
const PENDING_WINDOW_DAYS: std::ops::RangeInclusive<u64> = 7..=30;
const DEFAULT_PENDING_WINDOW_DAYS: u64 = 30;
const SECONDS_PER_DAY: f64 = 86_400.0;
/// "Tags per KMS key: 50" (Developer Guide, *Resource quotas*).
const MAX_TAGS_PER_KEY: usize = 50;
/// The aliases AWS predefines in every account and Region for its managed
/// keys: ListAliases lists them without a `TargetKeyId` until a service
/// first uses them ("The response might include several aliases that have
/// no TargetKeyId field. These are predefined aliases that AWS has created
/// but has not yet associated with a KMS key", ListAliases). A few of them,
/// so a client sees the shape of a real account's listing.
const PREDEFINED_AWS_ALIASES: &[&str] = &["alias/aws/ebs", "alias/aws/rds", "alias/aws/s3"];
/// The prefix AWS keeps for its own aliases.
const AWS_ALIAS_PREFIX: &str = "alias/aws/";

/// AWS's default key policy, which CreateKey gives a key when the request
/// names none: the account's root may do everything, which lets IAM policies
/// grant access (Developer Guide, *Default key policy*).
pub(super) fn default_policy() -> String {
    let policy = json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*",
            "Resource": "*",
        }],
    });
    serde_json::to_string_pretty(&policy).unwrap_or_default()
}

/// A policy KMS would take: at most 32 KiB of JSON with a statement. AWS
/// checks far more (principals that exist, the lockout check); the peer
/// refuses what is not a policy at all, and keeps the text verbatim.
pub(super) fn check_policy(policy: &str) -> Result<String, KmsError> {
    let malformed = |why: &str| {
        KmsError::new(
            "MalformedPolicyDocumentException",
            format!("the key policy is not valid: {why}"),
        )
    };
    if policy.len() > MAX_POLICY_BYTES {
        return Err(malformed("it exceeds 32768 bytes"));
    }
    let document: Value = serde_json::from_str(policy).map_err(|_| malformed("it is not JSON"))?;
    match document.get("Statement") {
        Some(Value::Array(statements)) if !statements.is_empty() => Ok(policy.to_owned()),
        Some(Value::Object(_)) => Ok(policy.to_owned()),
        _ => Err(malformed("it has no Statement")),
    }
}

/// `PolicyName`, which may only be `default`.
fn check_policy_name(request: &Value) -> Result<(), KmsError> {
    match field(request, "PolicyName") {
        None | Some(POLICY_NAME) => Ok(()),
        Some(other) => Err(KmsError::new(
            "NotFoundException",
            format!("No such policy exists: {other} (the only key policy name is default)"),
        )),
    }
}

/// The key `KeyId` names (required).
fn key_named<'a>(
    inner: &'a mut Inner,
    request: &Value,
) -> Result<(String, &'a mut KeyRecord), KmsError> {
    let raw = field(request, "KeyId").unwrap_or_default();
    if raw.is_empty() {
        return Err(KmsError::validation("KeyId is required"));
    }
    inner.key_mut(raw)
}

/// GetKeyPolicy: allowed in every key state.
pub(super) fn get_key_policy(inner: &mut Inner, request: &Value) -> Answer {
    check_policy_name(request)?;
    let (_, key) = key_named(inner, request)?;
    Ok(json!({"Policy": key.policy, "PolicyName": POLICY_NAME}))
}

/// PutKeyPolicy: allowed in every key state; answers nothing.
pub(super) fn put_key_policy(inner: &mut Inner, request: &Value) -> Answer {
    check_policy_name(request)?;
    let policy = field(request, "Policy")
        .ok_or_else(|| KmsError::validation("Policy is required"))
        .and_then(check_policy)?;
    let (_, key) = key_named(inner, request)?;
    key.policy = policy;
    Ok(json!({}))
}

/// DisableKey: refused while the key waits for its material (faithful mode;
/// the benchmarks' mode never refused it) or its deletion.
pub(super) fn disable_key(inner: &mut Inner, request: &Value) -> Answer {
    let faithful = inner.faithful;
    let (id, key) = key_named(inner, request)?;
    key.not_pending_deletion(&id)?;
    // Key-state table: DisableKey on a key pending import, [5].
    if faithful && key.state == "PendingImport" {
        return Err(pending_import(&id));
    }
    key.state = "Disabled";
    Ok(json!({}))
}

/// EnableKey: refused while the key waits for its material ([5]) or its
/// deletion ([3]).
pub(super) fn enable_key(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = key_named(inner, request)?;
    key.not_pending_deletion(&id)?;
    if key.state == "PendingImport" {
        return Err(pending_import(&id));
    }
    key.state = "Enabled";
    Ok(json!({}))
}

/// ScheduleKeyDeletion: PendingDeletion until `DeletionDate`,
/// `PendingWindowInDays` (7 to 30, 30 by default) from now. AWS may set the
/// date up to a day later than that; the peer sets it exactly. Refused on a
/// key already pending deletion ([3]).
pub(super) fn schedule_key_deletion(inner: &mut Inner, request: &Value) -> Answer {
    let days = match &request["PendingWindowInDays"] {
        Value::Null => DEFAULT_PENDING_WINDOW_DAYS,
        days => days
            .as_u64()
            .filter(|d| PENDING_WINDOW_DAYS.contains(d))
            .ok_or_else(|| KmsError::validation("PendingWindowInDays must be between 7 and 30"))?,
    };
    let (id, key) = key_named(inner, request)?;
    key.not_pending_deletion(&id)?;
    let deletion_date = now_epoch() + days as f64 * SECONDS_PER_DAY;
    key.state = PENDING_DELETION;
    key.deletion_date = Some(deletion_date);
    Ok(json!({
        "KeyId": arn(&id),
        "DeletionDate": deletion_date,
        "KeyState": PENDING_DELETION,
        "PendingWindowInDays": days,
    }))
}

/// CancelKeyDeletion: "When this operation succeeds, the key state of the
/// KMS key is Disabled" — or PendingImport for a key with imported material
/// that lacks some of it, the state the peer derives from its materials.
/// Refused on a key not pending deletion ([4]).
pub(super) fn cancel_key_deletion(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = key_named(inner, request)?;
    if !key.pending_deletion() {
        return Err(KmsError::new(
            "KMSInvalidStateException",
            format!("{} is not pending deletion.", arn(&id)),
        ));
    }
    key.state = "Disabled";
    key.deletion_date = None;
    key.settle_state();
    Ok(json!({"KeyId": arn(&id)}))
}

/// `AliasName`: `alias/` and 1 to 250 of `[a-zA-Z0-9/_-]`, and not under
/// `alias/aws/`, which AWS keeps for its own keys.
fn check_alias_name(name: &str) -> Result<(), KmsError> {
    let invalid = |why: &str| {
        KmsError::new(
            "InvalidAliasNameException",
            format!("alias name '{name}' is not valid: {why}"),
        )
    };
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(invalid("it must begin with alias/"));
    };
    if name.starts_with(AWS_ALIAS_PREFIX) {
        return Err(invalid(
            "the alias/aws/ prefix is reserved for AWS managed keys",
        ));
    }
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
    {
        return Err(invalid(
            "it must be 1 to 256 characters of letters, digits, '/', '_' and '-'",
        ));
    }
    Ok(())
}

/// CreateAlias and UpdateAlias. The target must exist and not be pending
/// deletion ([3]; for UpdateAlias, "If the source KMS key is pending
/// deletion, the command succeeds. If the destination KMS key is pending
/// deletion, the command fails", [10]).
pub(super) fn create_or_update_alias(inner: &mut Inner, op: &str, request: &Value) -> Answer {
    let name = field(request, "AliasName").unwrap_or_default().to_owned();
    if inner.faithful {
        check_alias_name(&name)?;
    }
    let raw_target = field(request, "TargetKeyId").unwrap_or_default();
    let Some(target) = resolve(inner, raw_target) else {
        return Err(KmsError::new(
            "NotFoundException",
            format!("Key '{raw_target}' does not exist"),
        ));
    };
    let (id, key) = inner.key_mut(&target)?;
    key.not_pending_deletion(&id)?;
    let now = now_epoch();
    match (op, inner.aliases.get_mut(&name)) {
        ("CreateAlias", Some(_)) => Err(KmsError::new(
            "AlreadyExistsException",
            format!("An alias with the name {} already exists", alias_arn(&name)),
        )),
        ("CreateAlias", None) => {
            inner.aliases.insert(
                name,
                AliasRecord {
                    target,
                    created: now,
                    updated: now,
                },
            );
            Ok(json!({}))
        }
        (_, Some(alias)) => {
            alias.target = target;
            alias.updated = now;
            Ok(json!({}))
        }
        (_, None) => Err(alias_not_found(&name)),
    }
}

/// DeleteAlias: allowed whatever the state of the key it points at.
pub(super) fn delete_alias(inner: &mut Inner, request: &Value) -> Answer {
    let name = field(request, "AliasName").unwrap_or_default();
    match inner.aliases.remove(name) {
        Some(_) => Ok(json!({})),
        None => Err(alias_not_found(name)),
    }
}

fn alias_not_found(name: &str) -> KmsError {
    KmsError::new(
        "NotFoundException",
        format!("Alias {} is not found.", alias_arn(name)),
    )
}

fn alias_arn(name: &str) -> String {
    format!("arn:aws:kms:eu-west-1:{ACCOUNT}:{name}")
}

/// ListAliases: every alias of the Region, AWS's predefined ones included,
/// or with `KeyId` only those pointing at that key (which must exist).
/// `Limit` 1 to 100, 50 by default.
pub(super) fn list_aliases(inner: &mut Inner, request: &Value) -> Answer {
    let only = match field(request, "KeyId") {
        None => None,
        Some(raw) => Some(inner.key_mut(raw)?.0),
    };
    let mut entries: Vec<(String, Value)> = inner
        .aliases
        .iter()
        .filter(|(_, alias)| only.as_ref().is_none_or(|id| *id == alias.target))
        .map(|(name, alias)| {
            let entry = json!({
                "AliasName": name,
                "AliasArn": alias_arn(name),
                "TargetKeyId": alias.target,
                "CreationDate": alias.created,
                "LastUpdatedDate": alias.updated,
            });
            (name.clone(), entry)
        })
        .collect();
    if only.is_none() {
        entries.extend(PREDEFINED_AWS_ALIASES.iter().map(|name| {
            let entry = json!({"AliasName": name, "AliasArn": alias_arn(name)});
            ((*name).to_owned(), entry)
        }));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    page(
        request,
        "Aliases",
        entries.into_iter().map(|(_, entry)| entry).collect(),
        50,
        100,
    )
}

/// ListKeys: every key of the Region, those pending deletion included, in
/// the order they were created. `Limit` 1 to 1000, 100 by default.
pub(super) fn list_keys(inner: &mut Inner, request: &Value) -> Answer {
    let mut keys: Vec<(&String, usize)> = inner
        .keys
        .iter()
        .map(|(id, key)| (id, key.serial))
        .collect();
    keys.sort_by_key(|(_, serial)| *serial);
    let entries = keys
        .into_iter()
        .map(|(id, _)| json!({"KeyId": id, "KeyArn": arn(id)}))
        .collect();
    page(request, "Keys", entries, 100, 1000)
}

/// ListResourceTags: allowed in every key state. `Limit` 1 to 50, 50 by default.
pub(super) fn list_resource_tags(inner: &mut Inner, request: &Value) -> Answer {
    let (_, key) = key_named(inner, request)?;
    let entries = key
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    page(request, "Tags", entries, 50, 50)
}

/// `existing` with `tags` (a request's `Tags`) added, a key already there
/// getting the new value in place. Checks what TagResource and CreateKey
/// check: 1 to 128 characters of key, not under `aws:`, at most 256 of
/// value, at most 50 tags on the key.
pub(super) fn tags_to_add(
    existing: &[(String, String)],
    tags: &Value,
) -> Result<Vec<(String, String)>, KmsError> {
    let invalid = |why: String| KmsError::new("TagException", why);
    let Some(tags) = tags.as_array() else {
        return Err(KmsError::validation("Tags must be a list of tags"));
    };
    let mut merged = existing.to_vec();
    for tag in tags {
        let (Some(key), Some(value)) = (tag["TagKey"].as_str(), tag["TagValue"].as_str()) else {
            return Err(KmsError::validation(
                "each tag needs a TagKey and a TagValue",
            ));
        };
        if key.is_empty() || key.chars().count() > 128 {
            return Err(invalid(format!(
                "tag key '{key}' must be 1 to 128 characters"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "tag key '{key}': the aws: prefix is reserved for AWS"
            )));
        }
        if value.chars().count() > 256 {
            return Err(invalid(format!(
                "the value of tag '{key}' must be at most 256 characters"
            )));
        }
        match merged.iter_mut().find(|(k, _)| k == key) {
            Some(existing) => existing.1 = value.to_owned(),
            None => merged.push((key.to_owned(), value.to_owned())),
        }
    }
    if merged.len() > MAX_TAGS_PER_KEY {
        return Err(invalid(format!(
            "a KMS key can have at most {MAX_TAGS_PER_KEY} tags"
        )));
    }
    Ok(merged)
}

/// TagResource: adds tags or overwrites their values; refused on a key
/// pending deletion ([3]).
pub(super) fn tag_resource(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = key_named(inner, request)?;
    key.not_pending_deletion(&id)?;
    if request["Tags"].as_array().is_none_or(Vec::is_empty) {
        return Err(KmsError::validation("Tags must hold at least one tag"));
    }
    key.tags = tags_to_add(&key.tags, &request["Tags"])?;
    Ok(json!({}))
}

/// UntagResource: removes the tags named (absent ones are no error);
/// refused on a key pending deletion ([3]).
pub(super) fn untag_resource(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = key_named(inner, request)?;
    key.not_pending_deletion(&id)?;
    let Some(names) = request["TagKeys"].as_array().filter(|n| !n.is_empty()) else {
        return Err(KmsError::validation(
            "TagKeys must hold at least one tag key",
        ));
    };
    let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
    key.tags.retain(|(k, _)| !names.contains(&k.as_str()));
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_a_policy_and_names_the_accounts_root() {
        let policy = default_policy();
        assert_eq!(check_policy(&policy).unwrap(), policy);
        assert!(policy.contains("arn:aws:iam::111122223333:root"));
    }

    #[test]
    fn policies_that_are_no_policy_are_malformed() {
        for bad in ["", "not json", "{}", r#"{"Statement":[]}"#] {
            assert_eq!(
                check_policy(bad).unwrap_err().code,
                "MalformedPolicyDocumentException",
                "{bad}"
            );
        }
        let big = format!(
            r#"{{"Statement":[],"Pad":"{}"}}"#,
            "x".repeat(MAX_POLICY_BYTES)
        );
        assert!(check_policy(&big).is_err());
    }

    #[test]
    fn alias_names_follow_awss_rules() {
        assert!(check_alias_name("alias/payments/eu-1_a").is_ok());
        for bad in ["payments", "alias/", "alias/aws/s3", "alias/with space"] {
            assert_eq!(
                check_alias_name(bad).unwrap_err().code,
                "InvalidAliasNameException",
                "{bad}"
            );
        }
    }

    #[test]
    fn tags_overwrite_in_place_and_are_checked() {
        let existing = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        let merged = tags_to_add(
            &existing,
            &json!([{"TagKey": "b", "TagValue": "3"}, {"TagKey": "c", "TagValue": ""}]),
        )
        .unwrap();
        assert_eq!(
            merged,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "3".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        let reserved = tags_to_add(&[], &json!([{"TagKey": "aws:x", "TagValue": "v"}]));
        assert_eq!(reserved.unwrap_err().code, "TagException");
        let many: Vec<Value> = (0..=MAX_TAGS_PER_KEY)
            .map(|i| json!({"TagKey": format!("k{i}"), "TagValue": "v"}))
            .collect();
        assert_eq!(
            tags_to_add(&[], &Value::Array(many)).unwrap_err().code,
            "TagException"
        );
    }
}
