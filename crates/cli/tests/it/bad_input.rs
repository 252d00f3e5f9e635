//! Hostile and careless requests: each gets a 4xx with a JSON message, never a
//! 500, and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn transport_level_mistakes_get_clear_4xx_answers() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let url = |p: &str| format!("{}{p}", app.base);

    let huge = json!({"name": "big", "csv": "x".repeat(1024 * 1024 + 10)});
    let r = app
        .http
        .post(url("/api/v1/credentials"))
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );

    let r = app
        .http
        .post(url("/api/v1/groups"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.text().await.unwrap().contains("application/json"));

    for body in [
        "{",
        "[]",
        "{\"name\": 5}",
        "null",
        "{\"name\":\"a\",\"credential\":\"c\",\"alias\":\"alias/a\",\"region\":\"eu-west-1\",\"colour\":\"red\"}",
    ] {
        let r = app
            .http
            .post(url("/api/v1/groups"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{body}: {}", r.status());
        let answer: serde_json::Value = r.json().await.unwrap();
        assert!(
            answer["error"]["message"].as_str().unwrap().len() > 10,
            "{answer}"
        );
    }

    let (status, body) = app.get("/api/v1/nowhere", &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    let (status, _) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/groups",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = app.get("/api/v1/keys?colour=red", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, groups) = app.get("/api/v1/groups", &token).await;
    assert_eq!(groups, json!([]));
    let (_, creds) = app.get("/api/v1/credentials", &token).await;
    assert_eq!(creds, json!([]));
}

#[tokio::test]
async fn requests_without_a_valid_session_are_refused() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .request(reqwest::Method::GET, "/api/v1/groups", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keyhold login")
    );
    for token in ["garbage", "Bearer", &"A".repeat(5000), "\u{7f}"] {
        let r = app
            .http
            .get(format!("{}/api/v1/groups", app.base))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        }
    }
    let (status, _) = app
        .post("/api/v1/groups", Some("forged-token"), group_body("g", "c"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn odd_names_in_paths_are_refused_or_not_found_never_a_server_error() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    for path in [
        "/api/v1/groups/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/groups/%00",
        "/api/v1/groups/%E2%80%AEevil",
        "/api/v1/credentials/a%20b",
        "/api/v1/keys/not-a-key",
        "/api/v1/keys/7907323e-ea39-4542-b198-ef4a4ca5793c",
        "/api/v1/identities/Admin1%0Ainjected",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let (status, body) = app.request(method.clone(), path, Some(&token), None).await;
            assert!(status.is_client_error(), "{method} {path}: {status} {body}");
        }
    }
    let (_, audit) = app.get("/api/v1/audit?limit=1000", &token).await;
    assert!(
        !audit.to_string().contains("\ninjected"),
        "control characters never reach the audit log"
    );
}

#[tokio::test]
async fn health_readiness_metrics_and_the_api_description_are_served() {
    let app = TestApp::spawn().await;
    let get = |p: &'static str| app.http.get(format!("{}{p}", app.base)).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["ready"], true);
    let r = get("/api/v1/openapi.json").await.unwrap();
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(
        doc["paths"]["/api/v1/groups"].is_object(),
        "the API description documents the groups"
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keyhold_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/readyz\""), "{metrics}");
}
