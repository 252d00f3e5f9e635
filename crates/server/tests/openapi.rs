//! Checks `src/openapi.json`, the API description served at
//! `GET /api/v1/openapi.json`, against the routes the server really has.

// Test code: a failed expectation should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use serde_json::Value;

const OPENAPI: &str = include_str!("../src/openapi.json");

/// Every (method, path) the server routes. Keep this list in step with
/// `api()` in `src/routes.rs`: a route added there must be added here and
/// documented in `src/openapi.json`, or this test fails.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/session"),
    ("post", "/api/v1/session/login"),
    ("post", "/api/v1/session/logout"),
    ("post", "/api/v1/password"),
    ("get", "/api/v1/identities"),
    ("post", "/api/v1/identities"),
    ("delete", "/api/v1/identities/{name}"),
    ("get", "/api/v1/credentials"),
    ("post", "/api/v1/credentials"),
    // Also routed: GET and DELETE /api/v1/credentials/chain, which are
    // /api/v1/credentials/{name} for a credential named "chain".
    ("post", "/api/v1/credentials/chain"),
    ("get", "/api/v1/credentials/{name}"),
    ("delete", "/api/v1/credentials/{name}"),
    ("get", "/api/v1/groups"),
    ("post", "/api/v1/groups"),
    ("get", "/api/v1/groups/{name}"),
    ("patch", "/api/v1/groups/{name}"),
    ("delete", "/api/v1/groups/{name}"),
    ("post", "/api/v1/groups/{name}/rotate"),
    ("get", "/api/v1/keys"),
    ("get", "/api/v1/keys/{name}"),
    ("delete", "/api/v1/keys/{name}"),
    ("post", "/api/v1/keys/{name}/sync"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/retry"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/drift"),
    ("get", "/api/v1/drift/findings"),
    ("get", "/api/v1/drift/findings/{id}"),
    ("post", "/api/v1/drift/checks"),
    ("post", "/api/v1/drift/groups/{group}/check"),
    ("get", "/api/v1/drift/groups/{group}/plan"),
    ("post", "/api/v1/drift/groups/{group}/reconcile"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/audit/verify"),
    ("post", "/api/v1/audit/verify"),
    ("post", "/api/v1/audit/checkpoints"),
    ("get", "/api/v1/audit/public-key"),
    ("get", "/api/v1/audit/streams"),
    ("get", "/api/v1/audit/export"),
    ("get", "/api/v1/audit/archives"),
    ("post", "/api/v1/audit/archives"),
    ("get", "/api/v1/backups"),
    ("post", "/api/v1/backups"),
    ("get", "/api/v1/backups/custodians"),
    ("put", "/api/v1/backups/custodians"),
    ("get", "/api/v1/backups/{id}"),
    ("get", "/api/v1/backups/{id}/file"),
    ("get", "/api/v1/backups/{id}/shares"),
    ("get", "/api/v1/config"),
    ("patch", "/api/v1/config"),
    ("get", "/api/v1/approvals"),
    ("get", "/api/v1/approvals/{id}"),
    ("post", "/api/v1/approvals/{id}/approve"),
    ("post", "/api/v1/approvals/{id}/deny"),
    ("post", "/api/v1/approvals/{id}/result"),
    ("get", "/api/v1/approval-policies"),
    ("put", "/api/v1/approval-policies"),
    ("get", "/api/v1/xks/stores"),
    ("post", "/api/v1/xks/stores"),
    ("get", "/api/v1/xks/stores/{name}"),
    ("patch", "/api/v1/xks/stores/{name}"),
    ("delete", "/api/v1/xks/stores/{name}"),
    ("post", "/api/v1/xks/stores/{name}/credentials"),
    (
        "delete",
        "/api/v1/xks/stores/{name}/credentials/{access_key_id}",
    ),
    ("get", "/api/v1/xks/stores/{name}/keys"),
    ("post", "/api/v1/xks/stores/{name}/keys"),
    ("get", "/api/v1/xks/keys"),
    ("get", "/api/v1/xks/keys/{id}"),
    ("patch", "/api/v1/xks/keys/{id}"),
    ("delete", "/api/v1/xks/keys/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Routes that need no session. Keep in step with the handlers: these are the
/// ones without the `Caller` extractor.
const WITHOUT_SESSION: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/session/login"),
    ("post", "/api/v1/password"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Operations under dual control by default: the `Operation` consts of
/// keyhold-core marked `dual` (adding and deleting key groups and cloud
/// credentials, changing a group's custody fields, deleting keys, deleting
/// key material, applying a drift reconcile plan, making a backup, setting
/// the backup custodians, changing the
/// configuration, managing identities, managing external key stores and
/// their credentials, creating, deleting and widening XKS keys).
/// `x-keyhold-dual-control` is `true`, or a string naming the condition when
/// only some requests need it (Synchronize with `delete_material`, a group
/// change naming a custody field, an XKS key change that widens the key).
const DUAL_CONTROL: &[(&str, &str)] = &[
    ("post", "/api/v1/identities"),
    ("delete", "/api/v1/identities/{name}"),
    ("post", "/api/v1/credentials"),
    ("post", "/api/v1/credentials/chain"),
    ("delete", "/api/v1/credentials/{name}"),
    ("post", "/api/v1/groups"),
    ("patch", "/api/v1/groups/{name}"),
    ("delete", "/api/v1/groups/{name}"),
    ("delete", "/api/v1/keys/{name}"),
    ("post", "/api/v1/keys/{name}/sync"),
    ("post", "/api/v1/drift/groups/{group}/reconcile"),
    ("post", "/api/v1/backups"),
    ("put", "/api/v1/backups/custodians"),
    ("patch", "/api/v1/config"),
    ("put", "/api/v1/approval-policies"),
    ("post", "/api/v1/xks/stores"),
    ("patch", "/api/v1/xks/stores/{name}"),
    ("delete", "/api/v1/xks/stores/{name}"),
    ("post", "/api/v1/xks/stores/{name}/credentials"),
    (
        "delete",
        "/api/v1/xks/stores/{name}/credentials/{access_key_id}",
    ),
    ("post", "/api/v1/xks/stores/{name}/keys"),
    ("patch", "/api/v1/xks/keys/{id}"),
    ("delete", "/api/v1/xks/keys/{id}"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("src/openapi.json is valid JSON")
}

/// Every operation of the document: (method, path, operation, path item).
fn operations(doc: &Value) -> Vec<(String, String, &Value, &Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut ops = Vec::new();
    for (path, item) in paths {
        let item_obj = item.as_object().expect("a path item is an object");
        for (method, op) in item_obj {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op, item));
            }
        }
    }
    ops
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

/// Whether the operation needs a session: its effective security requirement
/// (its own, else the document's) is non-empty and offers no anonymous `{}`.
fn needs_session(doc: &Value, op: &Value) -> bool {
    let security = op.get("security").or_else(|| doc.get("security"));
    match security.and_then(Value::as_array) {
        None => false,
        Some(requirements) if requirements.is_empty() => false,
        Some(requirements) => !requirements
            .iter()
            .any(|r| r.as_object().is_some_and(serde_json::Map::is_empty)),
    }
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    out.push(v.as_str().expect("$ref is a string"));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn is_openapi_3_1() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(
        version.starts_with("3.1."),
        "openapi is {version}, expected 3.1.x"
    );
    assert_eq!(doc["info"]["title"], "keyhold");
    assert_eq!(doc["info"]["version"], "0.1.0");
    assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:8600");
}

#[test]
fn documents_exactly_the_routes_of_the_router() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _, _)| (method, path))
        .collect();
    let routed = pairs(ROUTES);
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes not documented in openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented but not routed (or ROUTES is out of step with router()): {extra:?}"
    );
}

#[test]
fn every_ref_resolves_to_a_component() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a local reference"));
        assert!(
            pointer.starts_with("/components/"),
            "{reference} does not point into components"
        );
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
}

#[test]
fn every_operation_documents_success_and_its_refusals() {
    let doc = doc();
    let without_session = pairs(WITHOUT_SESSION);
    let dual = pairs(DUAL_CONTROL);
    let mut ids = BTreeSet::new();
    for (method, path, op, _) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        assert!(
            op["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{at} has no description"
        );
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at} has no responses"));
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{at} documents no 2xx response"
        );

        let key = (method.clone(), path.clone());
        let session = needs_session(&doc, op);
        assert_eq!(
            session,
            !without_session.contains(&key),
            "{at}: security does not match whether it needs a session"
        );
        if session {
            assert!(
                responses.contains_key("401"),
                "{at} needs a session but does not document 401"
            );
        }

        let marked_dual = match op.get("x-keyhold-dual-control") {
            None => false,
            Some(Value::Bool(on)) => *on,
            Some(Value::String(condition)) => !condition.is_empty(),
            Some(other) => {
                panic!("{at}: x-keyhold-dual-control is {other}, not a bool or a string")
            }
        };
        assert_eq!(
            marked_dual,
            dual.contains(&key),
            "{at}: x-keyhold-dual-control is wrong"
        );
        if marked_dual {
            assert!(
                responses.contains_key("403"),
                "{at} is under dual control but does not document 403"
            );
        }
        if op.get("requestBody").is_some() {
            for code in ["400", "413", "415"] {
                assert!(
                    responses.contains_key(code),
                    "{at} takes a body but does not document {code}"
                );
            }
        }
    }
}

#[test]
fn path_parameters_are_declared() {
    let doc = doc();
    for (method, path, op, item) in operations(&doc) {
        let declared: BTreeSet<String> = [op, item]
            .iter()
            .filter_map(|v| v.get("parameters").and_then(Value::as_array))
            .flatten()
            .map(|p| match p.get("$ref").and_then(Value::as_str) {
                Some(r) => doc
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or(&Value::Null),
                None => p,
            })
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            declared,
            in_template,
            "{} {path}: path parameters do not match the template",
            method.to_uppercase()
        );
    }
}

#[test]
fn request_bodies_refuse_unknown_fields() {
    let doc = doc();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas is an object");
    for (name, schema) in schemas {
        if name.ends_with("Request") {
            assert_eq!(
                schema["additionalProperties"],
                Value::Bool(false),
                "{name} must set additionalProperties: false"
            );
        }
    }
}
