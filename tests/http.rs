//! The server example's router on a loopback port, driven by a real HTTP client.

#[allow(dead_code)]
#[path = "../examples/server.rs"]
mod server;

use std::sync::Arc;

use relcount::Engine;
use relcount::api::{Api, Limits, TokenScope};
use serde_json::{Value as J, json};

const TOKEN: &str = "http-test-token";

fn post(url: &str, call: &str, auth: Option<&str>, body: &str) -> (u16, J) {
    let mut req = ureq::post(format!("{url}/api/v1.1/{call}")).content_type("application/json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req.send(body).expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("JSON envelope"))
}

#[test]
fn serves_the_api_over_http() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = Api::new(Arc::new(Engine::new())).with_limits(Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    });
    api.add_token(TOKEN, TokenScope::full());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    rt.spawn(async move { axum::serve(listener, server::router(Arc::new(api))).await });

    let bearer = format!("Bearer {TOKEN}");
    let define = json!({"token": TOKEN, "rel_id": 3, "db_a": 1, "db_b": 2, "props": {
        "Donate": {"type": "int", "top": 10}, "Like": {"type": "int", "sum": true},
        "Subscriber": {"type": "bool"}}});
    assert_eq!(
        post(&url, "relations/define", None, &define.to_string()),
        (200, json!({"error": 0, "error_text": ""}))
    );
    let attach = json!({"rel_id": 3, "profile_a": {"profile_id": "5c910f6bc484d023b1309bee"},
        "profile_b": {"profile_id": "5c910938c484d023b1309bab"},
        "weights": {"Donate": 20, "Like": 2, "Subscriber": true}});
    let (status, r) = post(&url, "relations/attach", Some(&bearer), &attach.to_string());
    assert_eq!((status, r["error"].clone()), (200, json!(0)));
    let (status, r) = post(
        &url,
        "relations/get_counter",
        Some(&bearer),
        r#"{"rel_id": 3, "matching": "profile_id", "profile_id": "5c910f6bc484d023b1309bee"}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(r["data"]["profile_xxh"], json!("54ec2d76ac22a964"));
    assert_eq!(
        r["data"]["props"]["Donate"]["top"],
        json!([{"profile_id": "5c910938c484d023b1309bab", "value": 20}])
    );
    // Errors travel as HTTP 200 with the envelope, as the platform does.
    assert_eq!(
        post(&url, "relations/get_counter", None, r#"{"rel_id": 3}"#),
        (
            200,
            json!({"error": 401, "error_text": "API token required"})
        )
    );
    let (status, r) = post(
        &url,
        "relations/attach",
        Some(&bearer),
        &"x".repeat(200_000),
    );
    assert_eq!((status, r["error"].clone()), (200, json!(413)));
    let (status, r) = post(&url, "no/such/call", Some(&bearer), "{}");
    assert_eq!((status, r["error"].clone()), (200, json!(400)));
}
