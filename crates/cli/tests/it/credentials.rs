//! Cloud credentials from the AWS console CSV; the secret never comes back out.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_csv_shape_aws_hands_out_is_imported() {
    let app = TestApp::spawn_with(|args| {
        allow_endpoints(
            args,
            &["https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com"],
        )
    })
    .await;
    let token = app.dual_session().await;
    let variants = [
        ("plain", console_csv()),
        (
            "bom-crlf",
            format!(
                "\u{feff}Access key ID,Secret access key\r\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\r\n"
            ),
        ),
        (
            "spaces",
            format!(
                "Access key ID , Secret access key \n {ACCESS_KEY_ID} , {SECRET_ACCESS_KEY} \n"
            ),
        ),
        (
            "iam-user",
            format!(
                "User name,Password,Access key ID,Secret access key,Console login link\nkeyhold,,{ACCESS_KEY_ID},{SECRET_ACCESS_KEY},https://111122223333.signin.aws.amazon.com/console\n"
            ),
        ),
    ];
    for (name, csv) in &variants {
        let (status, body) = app
            .post(
                "/api/v1/credentials",
                Some(&token),
                json!({"name": name, "csv": csv}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["access_name"], ACCESS_KEY_ID);
        assert_eq!(body["service"], "aws");
    }
    let (_, list) = app.get("/api/v1/credentials", &token).await;
    assert_eq!(list.as_array().unwrap().len(), variants.len());

    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&token),
            json!({"name": "vpce", "csv": console_csv(), "endpoint": "https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, shown) = app.get("/api/v1/credentials/vpce", &token).await;
    assert_eq!(
        shown["endpoint"],
        "https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com"
    );
}

#[tokio::test]
async fn the_secret_is_never_returned_stored_in_clear_or_audited() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let mut seen = String::new();
    for path in [
        "/api/v1/credentials",
        "/api/v1/credentials/aws-prod",
        "/api/v1/audit?limit=1000",
    ] {
        let (_, body) = app.get(path, &token).await;
        seen.push_str(&body.to_string());
    }
    let export = app
        .http
        .get(format!("{}/api/v1/audit/export", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.push_str(&export);
    assert!(
        seen.contains(ACCESS_KEY_ID),
        "the access key id is shown (it is not secret)"
    );
    assert!(
        !seen.contains(SECRET_ACCESS_KEY),
        "the secret access key leaked through the API"
    );

    // On disk: neither the database nor its WAL holds the secret in clear.
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes
                .windows(SECRET_ACCESS_KEY.len())
                .any(|w| w == SECRET_ACCESS_KEY.as_bytes());
            assert!(!found, "{} holds the secret in clear", path.display());
        }
    }
}

#[tokio::test]
async fn malformed_csv_is_refused_with_a_reason_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.single_session().await;
    let audit_before = app.audit_count(&token).await;
    let cases = [
        String::new(),
        "Access key ID,Secret access key\n".to_owned(),
        format!("Name,Value\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\n"),
        format!("Access key ID,Secret access key\n{ACCESS_KEY_ID}\n"),
        format!(
            "Access key ID,Secret access key\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\n"
        ),
        "x".repeat(20_000),
    ];
    for csv in &cases {
        let (status, body) = app
            .post(
                "/api/v1/credentials",
                Some(&token),
                json!({"name": "bad", "csv": csv}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "csv");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains(SECRET_ACCESS_KEY), "{message}");
        assert!(
            message.contains("CSV") || message.contains("csv"),
            "{message}"
        );
    }
    let (_, list) = app.get("/api/v1/credentials", &token).await;
    assert_eq!(list, json!([]));
    let after = app.audit_summaries(&token).await;
    assert_eq!(
        after.len(),
        audit_before + cases.len(),
        "each refusal is audited once"
    );
    assert!(
        after
            .last()
            .unwrap()
            .contains("Failed to add cloud credential bad")
    );
}

#[tokio::test]
async fn a_credential_in_use_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let (status, _) = app
        .create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = app.delete("/api/v1/credentials/aws-prod", &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ig-demo"),
        "the message names the group: {message}"
    );
    let (status, _) = app.get("/api/v1/credentials/aws-prod", &token).await;
    assert_eq!(status, StatusCode::OK, "still there");

    let (status, _) = app.delete("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete("/api/v1/credentials/aws-prod", &token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/credentials/aws-prod", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&token),
            json!({"name": "dup", "csv": console_csv()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&token),
            json!({"name": "dup", "csv": console_csv()}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}
