//! SPEC §7: liveness and readiness.

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_a_migrated_database() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["writable"], true, "{body}");
    assert!(body["database_host"].is_string(), "{body}");
}

#[tokio::test]
async fn readyz_is_503_when_the_schema_is_behind() {
    let app = spawn_app().await;
    sqlx::query("delete from refinery_schema_history")
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    let message = assert_error(ready, 503, "unavailable").await;
    assert!(message.contains("Retry later"), "{message}");
}
