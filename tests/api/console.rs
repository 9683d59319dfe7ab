//! The console's assets and the channel list it signs in with.

use serde_json::Value;

use crate::helpers::{PASSWORD, assert_error, spawn_app};

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let r = client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let policy = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{policy}");
        // The SVG namespace is a name, not an address.
        let body = r
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} fetches from elsewhere"
        );
    }
}

#[tokio::test]
async fn a_token_lists_the_channels_of_its_scope() {
    let app = spawn_app().await;
    for id in ["a", "b", "c"] {
        app.add_channel(id, PASSWORD).await;
    }
    let list = |token: String| {
        let app = &app;
        async move {
            let r = app.get("/api/v1/channels", &token).await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(app.create_token("all", &[]).await).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        list(app.create_token("some", &["c", "a"]).await).await,
        ["a", "c"]
    );
    assert_error(
        app.get("/api/v1/channels", "kst_wrong").await,
        401,
        "unauthorized",
    )
    .await;
}
