//! `ActionExecutor::execute_recorded`: what an attempt's record holds, and
//! what it never holds, against real receivers on 127.0.0.1.
#![cfg(feature = "webhook")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use breakwater::traits::{
    ActionConfig, ActionExecutor, CircuitBreakerActionExecutor, EntityEvent, ErrorKind, EventKind,
    Exchange, SlackAction, WebhookAction,
};
use breakwater::webhook::{Executors, WebhookExecutor};
use breakwater::{CircuitBreakerConfig, PerEndpointCircuitBreaker};
use tokio::net::TcpListener;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Answers by path: `/cookie` 200 with `Set-Cookie`, an `Authorization`
/// header of its own, and a body echoing the request's `Authorization`
/// (so does `/slack/...`);
/// `/big` 200 with 1 MiB; `/fail` 503; `/slow` after 5 s.
async fn receiver() -> SocketAddr {
    async fn cookie(headers: HeaderMap) -> impl IntoResponse {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            [
                ("set-cookie", "session=abc987; HttpOnly"),
                ("authorization", "Bearer echoed-xyz"),
                ("x-served-by", "receiver-1"),
            ],
            format!("you sent {auth}"),
        )
    }
    async fn reject(headers: HeaderMap) -> impl IntoResponse {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (StatusCode::BAD_REQUEST, format!("refused {auth}"))
    }
    let app = Router::new()
        .route("/cookie", any(cookie))
        .route("/reject", any(reject))
        .route("/slack/{*rest}", any(cookie))
        .route("/big", any(|| async { "x".repeat(1 << 20) }))
        .route(
            "/fail",
            any(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance") }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"total": 42}),
    )
}

fn hook(url: String) -> ActionConfig {
    ActionConfig::Webhook(WebhookAction {
        url,
        method: "POST".into(),
        headers: [
            (
                "Authorization".to_string(),
                "Bearer xyz-secret-1".to_string(),
            ),
            ("X-Api-Key".to_string(), "key-secret-2".to_string()),
            ("X-Tenant".to_string(), "acme".to_string()),
        ]
        .into_iter()
        .collect(),
        body_template: None,
        signing_secret: Some(SECRET.into()),
    })
}

fn header<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_record_holds_the_exchange_without_its_secrets() {
    let addr = receiver().await;
    let executor = WebhookExecutor::new().unwrap();
    let mut x = Exchange::new(4096);
    let action = hook(format!("http://{addr}/cookie?token=t0k&page=2"));
    let result = executor
        .execute_recorded(&event(), &action, &mut x)
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(x.method, "POST");
    assert_eq!(x.status, Some(200));
    assert_eq!(x.error_kind, None);
    assert!(
        x.url.contains("/cookie") && x.url.contains("page=2"),
        "{}",
        x.url
    );
    assert_eq!(
        header(&x.request_headers, "authorization"),
        Some("[redacted]")
    );
    assert_eq!(header(&x.request_headers, "x-api-key"), Some("[redacted]"));
    assert_eq!(header(&x.request_headers, "x-tenant"), Some("acme"));
    assert!(header(&x.request_headers, "webhook-signature").is_some_and(|s| s.starts_with("v1,")));
    assert_eq!(
        header(&x.response_headers, "set-cookie"),
        Some("[redacted]")
    );
    assert_eq!(
        header(&x.response_headers, "authorization"),
        Some("[redacted]")
    );
    assert_eq!(
        header(&x.response_headers, "x-served-by"),
        Some("receiver-1")
    );
    assert_eq!(
        String::from_utf8_lossy(&x.response_body),
        "you sent [redacted]"
    );
    // Nothing secret anywhere in the record, however it is printed.
    let all = format!("{x:?} {}", serde_json::to_string(&x).unwrap());
    for secret in [
        "xyz-secret-1",
        "key-secret-2",
        "abc987",
        "echoed-xyz",
        "t0k",
        SECRET,
        "C2FVsBQIhrscChlQIMV",
    ] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
}

#[tokio::test]
async fn an_echoed_credential_stays_out_of_error_messages() {
    let addr = receiver().await;
    let executor = WebhookExecutor::new().unwrap();
    let action = hook(format!("http://{addr}/reject"));
    // Recorded or not, the error quotes the answer without the secret.
    let plain = executor.execute(&event(), &action).await.unwrap_err();
    let mut x = Exchange::new(4096);
    let recorded = executor
        .execute_recorded(&event(), &action, &mut x)
        .await
        .unwrap_err();
    for e in [plain, recorded] {
        let text = e.to_string();
        assert!(e.is_permanent(), "{text}");
        assert!(text.contains("refused [redacted]"), "{text}");
        assert!(!text.contains("xyz-secret-1"), "{text}");
    }
    assert_eq!(
        String::from_utf8_lossy(&x.response_body),
        "refused [redacted]"
    );
}

#[tokio::test]
async fn only_the_start_of_a_big_body_is_kept() {
    let addr = receiver().await;
    let executor = WebhookExecutor::new().unwrap();
    let mut x = Exchange::new(4096);
    executor
        .execute_recorded(&event(), &hook(format!("http://{addr}/big")), &mut x)
        .await
        .unwrap();
    assert_eq!(x.response_body.len(), 4096);
    let mut none = Exchange::new(0);
    executor
        .execute_recorded(&event(), &hook(format!("http://{addr}/big")), &mut none)
        .await
        .unwrap();
    assert!(none.response_body.is_empty() && none.status == Some(200));
}

#[tokio::test]
async fn failures_have_their_kinds() {
    let addr = receiver().await;
    let executor = WebhookExecutor::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut x = Exchange::new(4096);
    let e = executor
        .execute_recorded(&event(), &hook(format!("http://{addr}/fail")), &mut x)
        .await
        .unwrap_err();
    assert!(e.is_transient());
    assert_eq!(
        (x.status, x.error_kind),
        (Some(503), Some(ErrorKind::Http5xx))
    );
    assert_eq!(
        String::from_utf8_lossy(&x.response_body),
        "down for maintenance"
    );

    let mut x = Exchange::new(4096);
    executor
        .execute_recorded(&event(), &hook(format!("http://{addr}/slow")), &mut x)
        .await
        .unwrap_err();
    assert_eq!(x.error_kind, Some(ErrorKind::Timeout));

    // A port nobody listens on: refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let mut x = Exchange::new(4096);
    executor
        .execute_recorded(&event(), &hook(format!("http://{closed_addr}/")), &mut x)
        .await
        .unwrap_err();
    assert_eq!((x.status, x.error_kind), (None, Some(ErrorKind::Connect)));
    assert_eq!(
        x.method, "POST",
        "the request is recorded though no answer came"
    );

    let mut x = Exchange::new(4096);
    let mut bad = hook(format!("http://{addr}/"));
    if let ActionConfig::Webhook(w) = &mut bad {
        w.body_template = Some("{{ unclosed".into());
    }
    executor
        .execute_recorded(&event(), &bad, &mut x)
        .await
        .unwrap_err();
    assert_eq!(x.error_kind, Some(ErrorKind::Request));
}

#[tokio::test]
async fn slack_paths_are_secret_and_an_open_breaker_records_nothing() {
    let addr = receiver().await;
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 0.5,
        minimum_calls: Some(1),
        ..CircuitBreakerConfig::default()
    }));
    let executor = CircuitBreakerActionExecutor::per_endpoint(
        Arc::new(Executors::new(WebhookExecutor::new().unwrap())) as Arc<dyn ActionExecutor>,
        breakers,
    );
    let slack = ActionConfig::Slack(SlackAction {
        webhook_url: format!("http://{addr}/slack/T000/B000/sl4ck-path-secret"),
        channel: None,
        message_template: None,
    });
    let mut x = Exchange::new(4096);
    executor
        .execute_recorded(&event(), &slack, &mut x)
        .await
        .unwrap();
    assert_eq!(x.status, Some(200));
    assert!(!x.url.contains("sl4ck-path-secret"), "{}", x.url);

    // One failure opens this breaker; the next call is refused unsent.
    let failing = hook(format!("http://{addr}/fail"));
    let mut x = Exchange::new(4096);
    executor
        .execute_recorded(&event(), &failing, &mut x)
        .await
        .unwrap_err();
    assert_eq!(x.status, Some(503));
    let mut refused = Exchange::new(4096);
    let e = executor
        .execute_recorded(&event(), &failing, &mut refused)
        .await
        .unwrap_err();
    assert!(e.is_circuit_open(), "{e}");
    assert_eq!(refused, Exchange::new(4096), "nothing was sent");
}
