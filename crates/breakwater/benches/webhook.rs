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
//! - `executor_unsigned`: the same action without a secret;
//! - `bare_reqwest_signature_headers`: the bare POST with the three
//!   signature headers added (computed once): a signed request's bytes on
//!   the wire without the signing work, to tell the two costs apart.
//!
//! After the run it prints each executor time divided by `bare_reqwest`'s,
//! from criterion's medians, and then from a paired run: requests of the
//! four kinds, and a fifth (a client with the executor's limits set on
//! reqwest: connect and total timeouts, a user agent, sending the three
//! headers) that shows what those limits cost the usual way (the executor
//! keeps its total timeout itself, one timer a request), taken in turn, each timed alone, the order rotating every
//! round, so that a load that changes during the run weighs on all alike;
//! the medians of each kind and their ratios are printed. Every kind gets new
//! connections every 500 rounds (a request's time depends on its
//! connection). The paired run is done twice: with the requests driven from
//! the calling thread and the receiver on the runtime's one worker thread,
//! and with requests and receiver on one thread, where every cost is CPU
//! and no thread hand-off hides or adds any.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use breakwater::traits::{ActionConfig, ActionExecutor, EntityEvent, EventKind, WebhookAction};
use breakwater::webhook::{SigningKey, WebhookExecutor};
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

/// The bare client, a client with the executor's settings, and the executor.
fn clients() -> (reqwest::Client, reqwest::Client, WebhookExecutor) {
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let configured = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("breakwater/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap();
    (bare, configured, WebhookExecutor::new().unwrap())
}

/// The receiver, both clients and the actions, on one runtime.
struct Setup {
    rt: tokio::runtime::Runtime,
    url: String,
    event: EntityEvent,
    body: Vec<u8>,
    bare: reqwest::Client,
    /// A client with the executor's limits set on reqwest (timeouts, user
    /// agent).
    configured: reqwest::Client,
    executor: WebhookExecutor,
    signed: ActionConfig,
    unsigned: ActionConfig,
    signature_headers: Vec<(&'static str, String)>,
}

impl Setup {
    /// The receiver on a runtime with one worker thread; each request is
    /// driven from the calling thread.
    fn new() -> Self {
        Self::on(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        )
    }

    /// The receiver and the requests on `rt`.
    fn on(rt: tokio::runtime::Runtime) -> Self {
        let addr = receiver(&rt);
        let url = format!("http://{addr}/hooks/orders");
        let event = event();
        let body = serde_json::to_vec(&event).unwrap();
        let (bare, configured, executor) = clients();
        let hook = WebhookAction {
            url: url.clone(),
            method: "POST".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        };
        let signed = ActionConfig::Webhook(WebhookAction {
            signing_secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
            ..hook.clone()
        });
        let key = SigningKey::from_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let id = match &signed {
            ActionConfig::Webhook(w) => WebhookExecutor::message_id(&event, w),
            _ => unreachable!(),
        };
        let signature_headers = vec![
            ("webhook-id", id.clone()),
            ("webhook-timestamp", "1700000000".to_string()),
            ("webhook-signature", key.sign(&id, 1_700_000_000, &body)),
        ];
        Self {
            rt,
            url,
            event,
            body,
            bare,
            configured,
            executor,
            signed,
            unsigned: ActionConfig::Webhook(hook),
            signature_headers,
        }
    }

    /// New clients and a new executor: new connections to the receiver.
    fn reconnect(&mut self) {
        (self.bare, self.configured, self.executor) = clients();
    }

    /// One bare POST of the event's JSON, its answer read; with
    /// `signature_headers`, also the three Standard Webhooks headers
    /// (computed once, outside the measurement: the same bytes on the wire
    /// as a signed request, none of the signing work).
    fn bare_post(&self, signature_headers: bool) {
        self.post(&self.bare, signature_headers)
    }

    /// [`Setup::bare_post`] through `client`.
    fn post(&self, client: &reqwest::Client, signature_headers: bool) {
        self.rt.block_on(async {
            let mut request = client
                .post(&self.url)
                .header("content-type", "application/json");
            if signature_headers {
                for (name, value) in &self.signature_headers {
                    request = request.header(*name, value);
                }
            }
            let response = request.body(self.body.clone()).send().await.unwrap();
            assert!(response.status().is_success());
            black_box(response.bytes().await.unwrap());
        })
    }

    /// One action through the executor.
    fn execute(&self, action: &ActionConfig) {
        self.rt.block_on(async {
            let result = self.executor.execute(&self.event, action).await.unwrap();
            assert!(result.success);
            black_box(result);
        })
    }
}

fn webhook_post(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("webhook_post");
    group.bench_function("bare_reqwest", |b| b.iter(|| setup.bare_post(false)));
    group.bench_function("bare_reqwest_signature_headers", |b| {
        b.iter(|| setup.bare_post(true))
    });
    group.bench_function("executor_signed", |b| {
        b.iter(|| setup.execute(&setup.signed))
    });
    group.bench_function("executor_unsigned", |b| {
        b.iter(|| setup.execute(&setup.unsigned))
    });
    group.finish();
    // The signing work alone (decode the secret, derive the id, sign).
    let mut group = c.benchmark_group("webhook_sign");
    let ActionConfig::Webhook(hook) = &setup.signed else {
        unreachable!()
    };
    group.bench_function("key_id_and_signature", |b| {
        b.iter(|| {
            let key = SigningKey::from_secret(black_box(hook.signing_secret.as_deref().unwrap()))
                .unwrap();
            let id = WebhookExecutor::message_id(&setup.event, hook);
            black_box(key.sign(&id, black_box(1_700_000_000), &setup.body))
        })
    });
    group.finish();
}

/// Rounds between new connections in [`paired`].
const ROUNDS_A_CONNECTION: usize = 500;

/// Requests of the five kinds in turn, each timed alone; prints the
/// median of each kind and the executor's over the bare POST's.
///
/// Each kind has a pooled connection of its own, and the time of a request
/// depends on its connection (the same code measures up to 10% apart on
/// two connections). So every [`ROUNDS_A_CONNECTION`] rounds all kinds get
/// new connections, and that luck evens out.
fn paired(setup: &mut Setup, rounds: usize, title: &str) {
    let mut times: [Vec<Duration>; 5] = Default::default();
    for round in 0..rounds {
        if round % ROUNDS_A_CONNECTION == 0 {
            setup.reconnect();
            // The first request of each kind opens its connection.
            setup.bare_post(false);
            setup.post(&setup.configured, true);
            setup.execute(&setup.signed);
        }
        // Each kind takes each place in the order in turn, so none always
        // pays for following another client's connection.
        for slot in 0..5 {
            let kind = (round + slot) % 5;
            let t = Instant::now();
            match kind {
                0 => setup.bare_post(false),
                1 => setup.execute(&setup.signed),
                2 => setup.execute(&setup.unsigned),
                3 => setup.bare_post(true),
                _ => setup.post(&setup.configured, true),
            }
            times[kind].push(t.elapsed());
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let [bare, signed, unsigned, bare_headers, configured] = times.each_mut().map(median);
    println!(
        "\npaired run, {title} ({rounds} rounds of the five kinds, order rotating, new \
         connections every {ROUNDS_A_CONNECTION} rounds; medians):"
    );
    println!("  bare_reqwest {bare:.1} µs");
    println!(
        "  bare_reqwest_signature_headers {bare_headers:.1} µs, ratio {:.3}",
        bare_headers / bare
    );
    println!(
        "  executor_signed / bare_reqwest_signature_headers {:.3}",
        signed / bare_headers
    );
    println!(
        "  configured_client_signature_headers {configured:.1} µs, ratio {:.3}; executor_signed / it {:.3}",
        configured / bare,
        signed / configured
    );
    println!(
        "  executor_signed {signed:.1} µs, ratio {:.3}",
        signed / bare
    );
    println!(
        "  executor_unsigned {unsigned:.1} µs, ratio {:.3}",
        unsigned / bare
    );
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

/// The median, in nanoseconds, criterion measured for `webhook_post/function`
/// in this run: estimates written before `since` (a run filtered out that
/// function, and criterion left an older run's file) do not count.
fn median_ns(dir: &std::path::Path, function: &str, since: SystemTime) -> Option<f64> {
    let path = dir
        .join("webhook_post")
        .join(function)
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints the executor's time over the bare POST's, as criterion measured
/// them since `since`; false when this is not a measuring run.
fn report(since: SystemTime) -> bool {
    // Only `cargo bench` passes `--bench`; `cargo test --benches` runs each
    // benchmark once and measures nothing.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return false;
    }
    let Some(dir) = criterion_dir() else {
        return true;
    };
    let Some(bare) = median_ns(&dir, "bare_reqwest", since) else {
        return true;
    };
    println!("\nwebhook executor / bare reqwest POST (criterion medians, target <= 1.1):");
    println!("  bare_reqwest {:.1} µs", bare / 1e3);
    for function in [
        "bare_reqwest_signature_headers",
        "executor_signed",
        "executor_unsigned",
    ] {
        if let Some(t) = median_ns(&dir, function, since) {
            println!("  {function} {:.1} µs, ratio {:.3}", t / 1e3, t / bare);
        }
    }
    true
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    let mut setup = Setup::new();
    webhook_post(&mut c, &setup);
    c.final_summary();
    if report(started) {
        paired(
            &mut setup,
            10_000,
            "requests driven from outside the runtime, the receiver on its worker thread",
        );
        let one_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        paired(
            &mut Setup::on(one_thread),
            10_000,
            "requests and receiver on one thread's runtime",
        );
    }
}
