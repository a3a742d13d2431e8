//! `N` webhook requests of one kind to a loopback receiver, all on one
//! thread: a fixed amount of work to count instructions of, where timings
//! on a shared machine move too much to tell a few percent apart.
//!
//! ```sh
//! cargo build --release -p breakwater --features webhook --example webhook_requests
//! valgrind --tool=callgrind target/release/examples/webhook_requests signed 3000
//! ```
//!
//! Kinds: `bare` (a reqwest POST of the event's JSON, ready-made),
//! `headers` (the same with the three Standard Webhooks headers, computed
//! once), `configured` (that, from a client with the executor's timeouts and
//! user agent), `unsigned` and `signed` (a webhook action through
//! [`WebhookExecutor`]), and `recorded` (`signed`, recording each exchange
//! as the service's attempt history does). Run each kind at two counts and divide the
//! difference by the difference of the counts: what one request costs, the
//! start-up left out. Under valgrind SHA-256 takes its portable path (the
//! CPU's SHA extensions are hidden from the program), so hashing weighs far
//! more there than on the machine.
//!
//! [`WebhookExecutor`]: breakwater::webhook::WebhookExecutor

use std::time::Duration;

use breakwater::traits::{
    ActionConfig, ActionExecutor, EntityEvent, EventKind, Exchange, WebhookAction,
};
use breakwater::webhook::{SigningKey, WebhookExecutor};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: webhook_requests bare|headers|configured|unsigned|signed|recorded N";
    let kind = args.next().expect(usage);
    let n: usize = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(&kind, n));
}

async fn run(kind: &str, n: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/orders", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let event = EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"total": 42, "customer": {"name": "Ada", "tier": "gold"}, "items": [1, 2, 3]}),
    );
    let body = serde_json::to_vec(&event).unwrap();
    let hook = WebhookAction {
        url: url.clone(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    };
    let id = WebhookExecutor::message_id(&event, &hook);
    let signature = SigningKey::from_secret(SECRET)
        .unwrap()
        .sign(&id, 1_700_000_000, &body);
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", "1700000000".to_string()),
        ("webhook-signature", signature),
    ];
    let client = |configured: bool| {
        let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        let builder = if configured {
            builder
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .user_agent(concat!("breakwater/", env!("CARGO_PKG_VERSION")))
        } else {
            builder
        };
        builder.build().unwrap()
    };
    let executor = WebhookExecutor::new().unwrap();
    let action = ActionConfig::Webhook(WebhookAction {
        signing_secret: matches!(kind, "signed" | "recorded").then(|| SECRET.to_string()),
        ..hook
    });
    let (http, with_headers) = match kind {
        "bare" => (Some(client(false)), false),
        "headers" => (Some(client(false)), true),
        "configured" => (Some(client(true)), true),
        "unsigned" | "signed" | "recorded" => (None, false),
        other => panic!("unknown kind {other:?}"),
    };
    for _ in 0..n {
        match &http {
            Some(http) => {
                let mut request = http.post(&url).header("content-type", "application/json");
                if with_headers {
                    for (name, value) in &headers {
                        request = request.header(*name, value);
                    }
                }
                let response = request.body(body.clone()).send().await.unwrap();
                assert!(response.status().is_success());
                std::hint::black_box(response.bytes().await.unwrap());
            }
            None if kind == "recorded" => {
                let mut exchange = Exchange::new(4096);
                let result = executor
                    .execute_recorded(&event, &action, &mut exchange)
                    .await
                    .unwrap();
                assert!(result.success);
                std::hint::black_box(exchange);
            }
            None => {
                let result = executor.execute(&event, &action).await.unwrap();
                assert!(result.success);
            }
        }
    }
}
