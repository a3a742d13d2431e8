//! `WebhookExecutor` against a bare reqwest POST of the same body to the same
//! loopback receiver, in the same run.
//!
//! ```text
//! cargo bench -p breakwater --features webhook --bench webhook
//! ```
//!
//! The receiver is an axum server on 127.0.0.1 answering `200 ok`. Group
//! `webhook_post`:
//! - `bare_reqwest`: a `reqwest::Client` (the same settings: no redirects,
//!   rustls) POSTs the event's JSON with `Content-Type: application/json`
//!   and reads the answer's body;
//! - `executor_signed`: [`WebhookExecutor::execute`] of a webhook action
//!   with a signing secret (the event encoded as JSON, the message id
//!   derived, HMAC-SHA256 signed, answer read and classified);
//! - `executor_unsigned`: the same action without a secret.
//!
//! After the run it prints each executor time divided by `bare_reqwest`'s.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use breakwater::traits::{ActionConfig, ActionExecutor, EntityEvent, EventKind, WebhookAction};
use breakwater::webhook::WebhookExecutor;
use criterion::Criterion;

/// Starts the receiver on `rt` and returns its address.
fn receiver(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"total": 42, "customer": {"name": "Ada", "tier": "gold"}, "items": [1, 2, 3]}),
    )
}

fn webhook_post(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = receiver(&rt);
    let url = format!("http://{addr}/hooks/orders");
    let event = event();
    let body = serde_json::to_vec(&event).unwrap();

    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let executor = WebhookExecutor::new().unwrap();
    let signed = ActionConfig::Webhook(WebhookAction {
        url: url.clone(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
    });
    let unsigned = match &signed {
        ActionConfig::Webhook(w) => ActionConfig::Webhook(WebhookAction {
            signing_secret: None,
            ..w.clone()
        }),
        _ => unreachable!(),
    };

    let mut group = c.benchmark_group("webhook_post");
    group.bench_function("bare_reqwest", |b| {
        b.iter(|| {
            rt.block_on(async {
                let response = bare
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                black_box(response.bytes().await.unwrap())
            })
        })
    });
    for (name, action) in [
        ("executor_signed", &signed),
        ("executor_unsigned", &unsigned),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let result = executor.execute(&event, action).await.unwrap();
                    assert!(result.success);
                    black_box(result)
                })
            })
        });
    }
    group.finish();
}

/// Where criterion writes its estimates: `$CARGO_TARGET_DIR/criterion`, else
/// `<target>/criterion` next to this binary's `<target>/<profile>/deps`.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median, in nanoseconds, criterion measured for `webhook_post/function`.
fn median_ns(dir: &std::path::Path, function: &str) -> Option<f64> {
    let path = dir
        .join("webhook_post")
        .join(function)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints the executor's time over the bare POST's.
fn report() {
    // Only `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once and measures nothing.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let Some(dir) = criterion_dir() else { return };
    let Some(bare) = median_ns(&dir, "bare_reqwest") else {
        return;
    };
    println!("\nwebhook executor / bare reqwest POST (criterion medians, target <= 1.1):");
    println!("  bare_reqwest {:.1} µs", bare / 1e3);
    for function in ["executor_signed", "executor_unsigned"] {
        if let Some(t) = median_ns(&dir, function) {
            println!("  {function} {:.1} µs, ratio {:.3}", t / 1e3, t / bare);
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    webhook_post(&mut c);
    c.final_summary();
    report();
}
