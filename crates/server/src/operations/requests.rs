//! API requests parsed into domain types. Every field goes through the core's
//! parser, so the first invalid field is named in the answer.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::cloud::aws::{Alias, Description, KeyPolicy, KmsKeyId, Region};
use keyhold_core::credential::CloudService;
use keyhold_core::group::{
    AtRotationLimit, AwsProperties, GroupChange, GroupInfo, InfoChange, KeySpec, NewGroup,
    RotationStrategy,
};
use keyhold_core::interval::Interval;
use keyhold_core::names::{CredentialName, GroupName};
use keyhold_core::schedule::parse_rotation_interval;

fn optional<T>(
    raw: Option<&str>,
    parse: impl Fn(&str) -> Result<T, InvalidInput>,
) -> Result<Option<T>, InvalidInput> {
    raw.map(parse).transpose()
}

/// A field that may be absent (keep), `null` (clear) or a value (set).
fn clearable<T>(
    raw: &Option<Option<String>>,
    parse: impl Fn(&str) -> Result<T, InvalidInput>,
) -> Result<Option<Option<T>>, InvalidInput> {
    match raw {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(v)) => parse(v).map(|p| Some(Some(p))),
    }
}

pub fn new_group(req: &api::CreateGroupRequest) -> Result<NewGroup, InvalidInput> {
    if let Some(service) = &req.service {
        CloudService::parse(service)?;
    }
    KeySpec::parse(
        req.key_type.as_deref(),
        req.key_length,
        req.usage.as_deref(),
    )?;
    Ok(NewGroup {
        name: GroupName::parse(&req.name)?,
        credential: CredentialName::parse(&req.credential)?,
        rotate_every: optional(req.rotate_every.as_deref(), parse_rotation_interval)?,
        valid_for: optional(req.valid_for.as_deref(), Interval::parse)?,
        info: GroupInfo::parse(
            req.owner.as_deref().unwrap_or(""),
            req.notes.as_deref().unwrap_or(""),
        )?,
        aws: AwsProperties {
            alias: Alias::parse(&req.alias)?,
            description: Description::parse(req.description.as_deref().unwrap_or(""))?,
            region: Region::parse(&req.region)?,
            active_key_id: optional(req.active_key_id.as_deref(), KmsKeyId::parse)?,
            policy: optional(req.policy.as_deref(), KeyPolicy::parse)?,
            disable_after_rotate: req.disable_after_rotate.unwrap_or(false),
            rotation: optional(req.rotation_strategy.as_deref(), RotationStrategy::parse)?
                .unwrap_or_default(),
            at_rotation_limit: optional(req.at_rotation_limit.as_deref(), AtRotationLimit::parse)?
                .unwrap_or_default(),
            self_heal: req.self_heal.unwrap_or(false),
        },
    })
}

pub fn group_change(req: &api::UpdateGroupRequest) -> Result<GroupChange, InvalidInput> {
    let info = InfoChange::parse(req.owner.as_deref(), req.notes.as_deref())?;
    Ok(GroupChange {
        credential: optional(req.credential.as_deref(), CredentialName::parse)?,
        rotate_every: clearable(&req.rotate_every, parse_rotation_interval)?,
        valid_for: clearable(&req.valid_for, Interval::parse)?,
        info,
        alias: optional(req.alias.as_deref(), Alias::parse)?,
        description: optional(req.description.as_deref(), Description::parse)?,
        region: optional(req.region.as_deref(), Region::parse)?,
        active_key_id: clearable(&req.active_key_id, KmsKeyId::parse)?,
        policy: clearable(&req.policy, KeyPolicy::parse)?,
        disable_after_rotate: req.disable_after_rotate,
        rotation: optional(req.rotation_strategy.as_deref(), RotationStrategy::parse)?,
        at_rotation_limit: optional(req.at_rotation_limit.as_deref(), AtRotationLimit::parse)?,
        self_heal: req.self_heal,
    })
}
