//! Request extractors whose failures answer in the API's JSON error format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use keyhold_core::CoreError;
use keyhold_core::action::refused_session;
use keyhold_core::identity::Session;
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use crate::app::AppState;

/// A JSON object body; the wrong content type, a body over the limit,
/// malformed JSON, a value other than an object (array, string, number, null)
/// and unknown fields each get a 4xx with a message saying which.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(value))) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// `T` read only from a JSON object. serde reads a struct from an array too,
/// field by field in order (`[null, 7]` would set a struct's second field):
/// every body of the API is an object, and anything else is refused.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object ({ … }) with the endpoint's fields")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
    }
}

/// Whether reading the body failed because it stalled (see [`crate::routes::BODY_IDLE_TIMEOUT`]).
fn stalled(rejection: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    if stalled(rejection) {
        return ApiError::BodyStalled;
    }
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        _ => ApiError::BadRequest(format!(
            "the request body is not what this endpoint expects: {}",
            rejection.body_text()
        )),
    }
}

/// A JSON body that may be left out: a request with no body and no
/// Content-Type reads as `T::default()`; anything else is read as [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
            return Ok(Self(value));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if stalled(&rejection) {
                    ApiError::BodyStalled
                } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(format!(
                        "the request body could not be read: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        if body.is_empty() {
            Ok(Self(T::default()))
        } else {
            Err(ApiError::UnsupportedMediaType)
        }
    }
}

/// Query parameters, with errors in the API's format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::BadRequest(format!(
        "the query string is not valid: {}",
        rejection.body_text()
    ))
}

/// The bearer token of the request, if any.
pub fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Audits a request whose token is no live session (expired, forged,
/// replayed after logout), API and web UI alike, naming the path the client
/// sent: nested routers see a shortened one. The request is refused all the
/// same; an entry that cannot be written is in the server log and metrics
/// (the core's AuditFallback).
pub(crate) async fn audit_refused_session(app: &AppState, parts: &Parts, error: &CoreError) {
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path().to_owned(), |uri| uri.path().to_owned());
    let summary = refused_session(parts.method.as_str(), &path);
    let _ = app
        .keyhold
        .audit_refusal(
            keyhold_core::audit::ANONYMOUS_USER,
            summary,
            &error.to_string(),
        )
        .await;
}

/// The caller's live session. Requests without one get 401; a token that is
/// presented but not valid (expired, forged, replayed after logout) is audited.
pub struct Caller(pub Session);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer_token(parts) else {
            return Err(CoreError::Unauthenticated(
                "this request needs a session: log in first (keyhold login --user NAME) and send Authorization: Bearer <token>".into(),
            )
            .into());
        };
        match app.keyhold.session(&token).await {
            Ok(session) => Ok(Self(session)),
            Err(e @ CoreError::Unauthenticated(_)) => {
                audit_refused_session(app, parts, &e).await;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_api::SettingsChangeRequest;

    fn read(body: &str) -> Result<SettingsChangeRequest, String> {
        serde_json::from_str::<Object<SettingsChangeRequest>>(body)
            .map(|Object(value)| value)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn only_a_json_object_is_read_as_a_request() {
        let read_back = read(r#"{"lockout_threshold": 7}"#).unwrap();
        assert_eq!(read_back.lockout_threshold, Some(7));
        for body in ["[null,7]", "[]", "7", "\"x\"", "null", "true"] {
            let message = read(body).unwrap_err();
            assert!(message.contains("a JSON object"), "{body}: {message}");
        }
        // What the struct itself refuses is still refused.
        assert!(read(r#"{"lockout_threshold": 7, "lockout_threshold": 8}"#).is_err());
        assert!(read(r#"{"no_such_setting": 1}"#).is_err());
        assert!(read(r#"{"lockout_threshold": "7"}"#).is_err());
    }
}
