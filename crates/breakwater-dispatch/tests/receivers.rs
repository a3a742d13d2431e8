//! Receivers that misbehave: the service in-process delivering to raw TCP
//! receivers on 127.0.0.1 that hang, drip, cut their answers off, send
//! endless or huge bodies, garbage, redirects, `410 Gone` and `429` with
//! every form of `Retry-After`. Each test asserts what `docs/service.md`
//! ("Delivery", "Guarantees") and the webhook executor's docs promise,
//! through `GET /events/{id}`, `engine.breaker_views()`, `/metrics` and
//! the receiver's own counts and timings.
//!
//! The service's executor (`executor::default_executor`) has a 30 s total
//! timeout, too long for these tests: attempts are bounded here by the
//! configuration's `[circuit_breaker] call_timeout_ms`, and one test builds
//! the service over an executor with a short total timeout of its own.

mod support;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use breakwater::traits::ActionExecutor;
use breakwater::webhook::{Executors, WebhookExecutor};
use breakwater_dispatch::config::Config;
use breakwater_dispatch::engine::{AdminOp, BreakerView};
use breakwater_dispatch::server::{self, Running};
use breakwater_dispatch::store::SqliteStore;
use serde_json::Value;
use support::{event, post_events, start, wait_until, Receiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// How long any wait for a state change may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// The per-call limit the tests configure (`call_timeout_ms`).
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Fast retries: every wait under 20 ms, then doubling up to 200 ms.
const FAST_RETRY: &str = "max_attempts = 30\nbackoff_ms = 20\nmax_backoff_ms = 200\n";

/// What a raw receiver does with one connection, once it has read the
/// request whole.
#[derive(Debug, Clone, PartialEq)]
enum Script {
    /// Never answers; waits for the client to give up.
    Hang,
    /// A `200` head declaring 100 bytes, then one byte of them a second.
    Drip,
    /// A `200` head declaring 100 bytes, 50 of them, then a reset (RST,
    /// `reset`) or a close (FIN).
    CutBody { reset: bool },
    /// A `200` head declaring `declared` bytes, sent as fast as the client
    /// takes them.
    Huge { declared: u64 },
    /// A chunked `200`, its chunks sent for ever.
    EndlessChunks,
    /// Garbage bytes where the status line should be, then a close.
    Garbage,
    /// A well-formed answer, with these headers besides `Content-Length`
    /// and `Connection: close`.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
    },
}

impl Script {
    fn status(status: u16) -> Self {
        Self::Answer {
            status,
            headers: Vec::new(),
        }
    }

    fn with_header(status: u16, name: &str, value: &str) -> Self {
        Self::Answer {
            status,
            headers: vec![(name.to_string(), value.to_string())],
        }
    }
}

/// One connection a raw receiver served.
#[derive(Debug, Clone)]
struct Conn {
    script: Script,
    /// When the request had been read whole.
    at: Instant,
    /// The same, by the wall clock (to compare with `not_before` and dates).
    wall: SystemTime,
    event_id: Option<Uuid>,
    /// When the receiver was done with it: the client closed or reset the
    /// connection, or a write failed, or the script ended.
    ended: Option<Instant>,
    /// Bytes of the answer's body written.
    body_written: u64,
    /// Whether the client went away before the script was over.
    client_left: bool,
}

/// A webhook receiver on 127.0.0.1 that answers each connection by a
/// script: the queued ones first, then `then` (which a test may change).
#[derive(Clone)]
struct RawReceiver {
    url: String,
    endpoint: String,
    queue: Arc<Mutex<VecDeque<Script>>>,
    then: Arc<Mutex<Script>>,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl RawReceiver {
    async fn start(queue: Vec<Script>, then: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self {
            url: format!("http://{addr}/hook"),
            endpoint: format!("http://{addr}"),
            queue: Arc::new(Mutex::new(queue.into())),
            then: Arc::new(Mutex::new(then)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(r.clone().serve(stream));
            }
        });
        receiver
    }

    /// From now on, connections beyond the queued scripts get `script`.
    fn then(&self, script: Script) {
        *self.then.lock().unwrap() = script;
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// The gaps between the starts of consecutive requests.
    fn gaps(&self) -> Vec<Duration> {
        self.conns()
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .collect()
    }

    async fn serve(self, mut stream: TcpStream) {
        let Ok(Some(body)) = tokio::time::timeout(LIMIT, read_request(&mut stream)).await else {
            return;
        };
        let script = {
            let mut queue = self.queue.lock().unwrap();
            queue
                .pop_front()
                .unwrap_or_else(|| self.then.lock().unwrap().clone())
        };
        let event_id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("id")?.as_str()?.parse().ok());
        let index = {
            let mut conns = self.conns.lock().unwrap();
            conns.push(Conn {
                script: script.clone(),
                at: Instant::now(),
                wall: SystemTime::now(),
                event_id,
                ended: None,
                body_written: 0,
                client_left: false,
            });
            conns.len() - 1
        };
        let (written, client_left) = play(&mut stream, &script).await;
        let mut conns = self.conns.lock().unwrap();
        conns[index].ended = Some(Instant::now());
        conns[index].body_written = written;
        conns[index].client_left = client_left;
    }
}

/// Reads one request (head and `Content-Length` body); its body, or `None`
/// when the client went away first.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let start = end + 4;
            while buf.len() < start + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[start..start + len].to_vec());
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the client closes or resets the connection.
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        410 => "Gone",
        429 => "Too Many Requests",
        _ => "Whatever",
    }
}

const HEAD_100: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";

/// Plays `script` on `stream`: the body bytes written, and whether the
/// client went away before the script was over.
async fn play(stream: &mut TcpStream, script: &Script) -> (u64, bool) {
    match script {
        Script::Hang => {
            until_closed(stream).await;
            (0, true)
        }
        Script::Drip => {
            if stream.write_all(HEAD_100).await.is_err() {
                return (0, true);
            }
            let mut written = 0;
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return (written, true),
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if written == 100 {
                            // The whole body went out: the client was not
                            // cut off. Wait for it to close.
                            until_closed(stream).await;
                            return (written, false);
                        }
                        if stream.write_all(b"x").await.is_err() {
                            return (written, true);
                        }
                        written += 1;
                    }
                }
            }
        }
        Script::CutBody { reset } => {
            let mut answer = HEAD_100.to_vec();
            answer.extend_from_slice(&[b'x'; 50]);
            if stream.write_all(&answer).await.is_err() {
                return (0, true);
            }
            // Let the head and the half body reach the client first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if *reset {
                stream.set_zero_linger().unwrap();
            } else {
                let _ = stream.shutdown().await;
                until_closed(stream).await;
            }
            (50, false)
        }
        Script::Huge { declared } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {declared}\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return (0, true);
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0u64;
            while written < *declared {
                let n = chunk
                    .len()
                    .min(usize::try_from(declared - written).unwrap());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return (written, true);
                }
                written += n as u64;
            }
            until_closed(stream).await;
            (written, false)
        }
        Script::EndlessChunks => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return (0, true);
            }
            let mut chunk = b"4000\r\n".to_vec();
            chunk.extend_from_slice(&[b'x'; 0x4000]);
            chunk.extend_from_slice(b"\r\n");
            let mut written = 0u64;
            loop {
                if stream.write_all(&chunk).await.is_err() {
                    return (written, true);
                }
                written += 0x4000;
            }
        }
        Script::Garbage => {
            let _ = stream
                .write_all(b"\x00\x01GARBAGE\xff\xfe is no status line\r\nat: all\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
            until_closed(stream).await;
            (0, false)
        }
        Script::Answer { status, headers } => {
            let mut answer = format!("HTTP/1.1 {status} {}\r\n", reason(*status));
            for (name, value) in headers {
                answer.push_str(&format!("{name}: {value}\r\n"));
            }
            answer.push_str(
                "Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            until_closed(stream).await;
            (2, false)
        }
    }
}

/// A configuration with one observer (`Order` `INSERT`) calling `urls`; a
/// breaker that does not open before 20 calls (so that a few failures only
/// retry), `breaker` added to `[circuit_breaker]` and `retry` as `[retry]`.
fn config(db: &Path, urls: &[&str], breaker: &str, retry: &str) -> String {
    let mut s = format!(
        r#"listen = "127.0.0.1:0"
store = "{}"
admin_token_env = "BW_TEST_ADMIN_TOKEN"
[circuit_breaker]
sample_size = 20
minimum_calls = 20
failure_threshold = 0.5
open_timeout_ms = 300
max_open_timeout_ms = 1000
half_open_max_requests = 2
{breaker}
[retry]
{retry}
[[observers]]
name = "orders"
entity_type = "Order"
event_type = "INSERT"
"#,
        db.display()
    );
    for u in urls {
        s.push_str(&format!(
            "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{u}\"\n"
        ));
    }
    s
}

/// `call_timeout_ms` of [`CALL_TIMEOUT`], for `[circuit_breaker]`.
fn call_timeout() -> String {
    format!("call_timeout_ms = {}", CALL_TIMEOUT.as_millis())
}

/// The service started like [`support::start`] but over an executor whose
/// own total timeout is `timeout` (the service's is 30 s).
async fn start_with_total_timeout(
    dir: &tempfile::TempDir,
    toml: &str,
    timeout: Duration,
) -> Running {
    let config = Config::parse(toml).unwrap();
    let store =
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap_or_else(|e| panic!("{e}")));
    let webhook = WebhookExecutor::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .max_response_bytes(64 * 1024)
        .build()
        .unwrap();
    let executor: Arc<dyn ActionExecutor> = Arc::new(Executors::new(webhook));
    server::start(config, store, executor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Posts one event; its id.
async fn post_one(base: &str) -> Uuid {
    let id = Uuid::new_v4();
    let r = post_events(base, &event(Some(id))).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    id
}

/// `GET /events/{id}`: the action for `endpoint`.
async fn action(base: &str, id: Uuid, endpoint: &str) -> Value {
    let r = reqwest::get(format!("{base}/events/{id}")).await.unwrap();
    assert_eq!(r.status(), 200, "GET /events/{id}");
    let rec: Value = r.json().await.unwrap();
    rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("no action for {endpoint} in {rec}"))
        .clone()
}

/// Polls `f` (every 20 ms, on real I/O) until it gives a value; panics
/// with `what` after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The action for `endpoint` once its status is `status`.
async fn action_when(base: &str, id: Uuid, endpoint: &str, status: &str) -> Value {
    poll(
        &format!("the action for {endpoint} to be {status}"),
        LIMIT,
        || async {
            let a = action(base, id, endpoint).await;
            (a["status"] == status).then_some(a)
        },
    )
    .await
}

fn view(svc: &Running, endpoint: &str) -> BreakerView {
    svc.state
        .engine
        .breaker_views()
        .into_iter()
        .find(|v| v.endpoint == endpoint)
        .unwrap()
}

/// The `/metrics` value of `breakwater_dispatch_attempts_total` for
/// `endpoint` and `outcome`.
async fn attempts_metric(base: &str, endpoint: &str, outcome: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let endpoint_label = format!("endpoint=\"{endpoint}\"");
    let outcome_label = format!("outcome=\"{outcome}\"");
    text.lines()
        .find(|l| {
            l.starts_with("breakwater_dispatch_attempts_total{")
                && l.contains(&endpoint_label)
                && l.contains(&outcome_label)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Milliseconds since the Unix epoch.
fn unix_ms(t: SystemTime) -> i64 {
    i64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An action's `not_before`, in Unix milliseconds.
fn not_before_ms(action: &Value) -> i64 {
    let text = action["not_before"]
        .as_str()
        .unwrap_or_else(|| panic!("no not_before in {action}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// `unix_secs` as an HTTP date (`IMF-fixdate`).
fn http_date(unix_secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix_secs, 0)
        .unwrap()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The process's peak resident set (`VmHWM`), in KiB, where Linux tells.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Waits until every connection `receiver` served is over (the client
/// went away or the script ended), so that its timings are complete.
async fn wait_all_ended(receiver: &RawReceiver) {
    wait_until("the receiver's connections to end", LIMIT, || {
        receiver.conns().iter().all(|c| c.ended.is_some())
    })
    .await;
}

/// Every request `receiver` got carried event `id`.
fn assert_all_for(receiver: &RawReceiver, id: Uuid) {
    let conns = receiver.conns();
    assert!(
        conns.iter().all(|c| c.event_id == Some(id)),
        "requests for another event: {conns:?}"
    );
}

/// An attempt the receiver never answers is timed out (`call_timeout_ms`)
/// and retried; once the receiver answers, the action is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_is_timed_out_and_retried_until_it_answers() {
    let receiver = RawReceiver::start(vec![Script::Hang, Script::Hang], Script::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(
        &dir.path().join("t.db"),
        &[&receiver.url],
        &call_timeout(),
        FAST_RETRY,
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    // While the second attempt hangs, the first one's timeout is on record.
    let retrying = poll("the first timeout on record", LIMIT, || async {
        let a = action(&base, id, &receiver.endpoint).await;
        (a["attempts"] == 1 && a["status"] == "pending").then_some(a)
    })
    .await;
    let error = retrying["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{retrying}");
    assert!(retrying["last_status"].is_null(), "{retrying}");
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["last_status"], 200, "{done}");
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let conns = receiver.conns();
    assert_eq!(conns.len(), 3, "one connection an attempt: {conns:?}");
    for c in &conns[..2] {
        let held = c.ended.unwrap().duration_since(c.at);
        assert!(
            held >= CALL_TIMEOUT - Duration::from_millis(50) && held < CALL_TIMEOUT * 3,
            "a hung attempt lasted {held:?} (limit {CALL_TIMEOUT:?})"
        );
        assert!(c.client_left, "{c:?}");
    }
    let v = view(&svc, &receiver.endpoint);
    assert_eq!(
        (v.delivered, v.retried, v.dead_lettered),
        (1, 2, 0),
        "{v:?}"
    );
    assert_eq!(
        attempts_metric(&base, &receiver.endpoint, "timeout").await,
        2.0
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A `200` whose body comes a byte a second is cut off by the call's time
/// limit (`call_timeout_ms`), retried, and delivered by the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripped_a_byte_a_second_is_cut_off_by_the_call_timeout_and_retried() {
    let receiver = RawReceiver::start(vec![Script::Drip], Script::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(
        &dir.path().join("t.db"),
        &[&receiver.url],
        &call_timeout(),
        FAST_RETRY,
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 2, "{done}");
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let drip = &receiver.conns()[0];
    assert_eq!(drip.script, Script::Drip);
    let held = drip.ended.unwrap().duration_since(drip.at);
    assert!(
        held >= CALL_TIMEOUT - Duration::from_millis(50) && held < CALL_TIMEOUT * 3,
        "the dripping attempt lasted {held:?} (limit {CALL_TIMEOUT:?})"
    );
    assert!(drip.client_left && drip.body_written < 5, "{drip:?}");
    assert_eq!(receiver.count(), 2);
    assert_eq!(
        attempts_metric(&base, &receiver.endpoint, "timeout").await,
        1.0
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The webhook executor's total timeout runs "up to the end of the response
/// body": with no `call_timeout_ms`, a dripping body is cut off by the
/// executor's own deadline (here 1.2 s; the service's is 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripped_a_byte_a_second_is_cut_off_by_the_executors_total_timeout() {
    let total = Duration::from_millis(1200);
    let receiver = RawReceiver::start(vec![Script::Drip], Script::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start_with_total_timeout(&dir, &toml, total).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 2, "{done}");
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let drip = &receiver.conns()[0];
    let held = drip.ended.unwrap().duration_since(drip.at);
    assert!(
        held >= total - Duration::from_millis(50) && held < total * 3,
        "the dripping attempt lasted {held:?} (total timeout {total:?})"
    );
    assert!(drip.client_left && drip.body_written < 5, "{drip:?}");
    assert_eq!(
        attempts_metric(&base, &receiver.endpoint, "timeout").await,
        1.0
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A `200` cut off after half its declared `Content-Length`, by a reset or
/// by a close, is transient: retried, and delivered once the receiver
/// behaves; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_by_a_reset_or_a_close_is_transient_and_delivered_once_the_receiver_behaves()
{
    let receiver = RawReceiver::start(
        vec![
            Script::CutBody { reset: true },
            Script::CutBody { reset: false },
        ],
        Script::CutBody { reset: true },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let retrying = poll("two cut-off attempts on record", LIMIT, || async {
        let a = action(&base, id, &receiver.endpoint).await;
        (a["attempts"].as_u64() >= Some(2) && a["status"] == "pending").then_some(a)
    })
    .await;
    let error = retrying["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("transient"), "{retrying}");
    receiver.then(Script::status(200));
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let conns = receiver.conns();
    assert_eq!(done["attempts"], conns.len(), "{done} {conns:?}");
    assert_eq!(conns[0].script, Script::CutBody { reset: true });
    assert_eq!(conns[1].script, Script::CutBody { reset: false });
    assert_eq!(conns.last().unwrap().script, Script::status(200));
    let v = view(&svc, &receiver.endpoint);
    assert_eq!(v.dead_lettered, 0, "{v:?}");
    assert_eq!(v.retried as usize, conns.len() - 1, "{v:?}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A `200` declaring 100 MB and sending it as fast as it can: the executor
/// reads a bounded prefix, the attempt ends at once (delivered), the
/// connection is dropped long before 100 MB went through, and the
/// process's memory does not grow by the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_read_only_up_to_a_bounded_prefix_and_the_attempt_ends_at_once() {
    const DECLARED: u64 = 100_000_000;
    let receiver = RawReceiver::start(Vec::new(), Script::Huge { declared: DECLARED }).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let peak_before = peak_rss_kib();
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 1, "{done}");
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let conns = receiver.conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_body_cut_short(&conns[0], peak_before);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// The client read a bounded prefix of `c`'s body and left (under 32 MiB
/// through, within 5 s), and the process's peak memory grew by under
/// 48 MiB since `peak_before`.
fn assert_body_cut_short(c: &Conn, peak_before: Option<u64>) {
    assert!(c.client_left, "the client dropped the connection: {c:?}");
    assert!(
        c.body_written < 32 << 20,
        "{} bytes went through",
        c.body_written
    );
    let took = c.ended.unwrap().duration_since(c.at);
    assert!(took < Duration::from_secs(5), "the attempt took {took:?}");
    if let (Some(before), Some(after)) = (peak_before, peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 48 * 1024,
            "peak RSS grew from {before} KiB to {after} KiB"
        );
    }
}

/// A chunked `200` whose chunks never end: the executor reads a bounded
/// prefix and the attempt ends (delivered); the receiver's writes fail
/// soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_after_a_200_is_read_only_up_to_a_bounded_prefix() {
    let receiver = RawReceiver::start(Vec::new(), Script::EndlessChunks).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let peak_before = peak_rss_kib();
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 1, "{done}");
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    assert_body_cut_short(&receiver.conns()[0], peak_before);
    assert_eq!(receiver.count(), 1);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Garbage where the status line should be is transient: retried, and
/// delivered once the receiver speaks HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_status_line_is_transient_and_retried() {
    let receiver = RawReceiver::start(Vec::new(), Script::Garbage).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let retrying = poll("two garbage answers on record", LIMIT, || async {
        let a = action(&base, id, &receiver.endpoint).await;
        (a["attempts"].as_u64() >= Some(2) && a["status"] == "pending").then_some(a)
    })
    .await;
    let error = retrying["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("transient"), "{retrying}");
    assert!(retrying["last_status"].is_null(), "{retrying}");
    receiver.then(Script::status(200));
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    wait_all_ended(&receiver).await;
    assert_all_for(&receiver, id);
    let conns = receiver.conns();
    assert_eq!(done["attempts"], conns.len(), "{done}");
    assert!(conns.len() >= 3, "{conns:?}");
    let v = view(&svc, &receiver.endpoint);
    assert_eq!((v.delivered, v.dead_lettered), (1, 0), "{v:?}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Every redirect status with a `Location` is permanent: the action is
/// dead-lettered after its one attempt, and the `Location` is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_dead_letters_the_action_at_once() {
    let elsewhere = Receiver::start(200).await;
    let mut receivers = Vec::new();
    for status in [301, 302, 303, 307, 308] {
        let script = Script::with_header(status, "Location", &elsewhere.url);
        receivers.push((status, RawReceiver::start(Vec::new(), script).await));
    }
    let urls: Vec<&str> = receivers.iter().map(|(_, r)| r.url.as_str()).collect();
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &urls, "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    for (status, receiver) in &receivers {
        let a = action_when(&base, id, &receiver.endpoint, "dead_lettered").await;
        assert_eq!(a["attempts"], 1, "{status}: {a}");
        assert_eq!(a["last_status"], *status, "{a}");
        let error = a["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("permanent") && error.contains(&status.to_string()),
            "{a}"
        );
        assert_eq!(receiver.count(), 1, "{status}: one attempt");
        let v = view(&svc, &receiver.endpoint);
        assert_eq!(
            (v.delivered, v.retried, v.dead_lettered),
            (0, 0, 1),
            "{status}: {v:?}"
        );
    }
    assert!(elsewhere.hits().is_empty(), "a redirect was followed");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `410 Gone` disables the endpoint (`disabled` in `/breakers`, the gauge
/// at 1) and holds its actions, new ones included, without attempts; an
/// admin `reset` (over HTTP) enables it and delivers them, and so does
/// `close` (through `engine.admin`) the next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_holds_its_actions_and_reset_or_close_delivers_them() {
    std::env::set_var("BW_TEST_ADMIN_TOKEN", "test-admin-token");
    let receiver = Receiver::start(410).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", FAST_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let engine = svc.state.engine.clone();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch = Value::Array(ids.iter().map(|id| event(Some(*id))).collect());
    assert_eq!(post_events(&base, &batch).await.status(), 202);
    wait_until("the endpoint to be disabled", LIMIT, || {
        view(&svc, &receiver.endpoint).disabled
    })
    .await;
    let v = view(&svc, &receiver.endpoint);
    assert!(
        v.disabled_reason
            .as_deref()
            .unwrap_or_default()
            .contains("410"),
        "{v:?}"
    );
    for id in &ids {
        let a = action_when(&base, *id, &receiver.endpoint, "held").await;
        assert!(a["attempts"].as_u64() <= Some(1), "{a}");
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = format!(
        "breakwater_dispatch_endpoint_disabled{{endpoint=\"{}\"}} 1",
        receiver.endpoint
    );
    assert!(metrics.contains(&gauge), "{gauge} not in\n{metrics}");
    let gone_answers = receiver.hits().len();
    assert!((1..=3).contains(&gone_answers), "{gone_answers} attempts");
    // An event accepted while the endpoint is disabled is held without an
    // attempt.
    let late = post_one(&base).await;
    let a = action_when(&base, late, &receiver.endpoint, "held").await;
    assert_eq!(a["attempts"], 0, "{a}");
    assert_eq!(
        receiver.hits().len(),
        gone_answers,
        "no attempt while disabled"
    );

    receiver.set(200);
    let encoded = receiver.endpoint.replace(':', "%3A").replace('/', "%2F");
    let r = reqwest::Client::new()
        .post(format!("{base}/breakers/{encoded}/reset"))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let all: Vec<Uuid> = ids.iter().copied().chain([late]).collect();
    for id in &all {
        action_when(&base, *id, &receiver.endpoint, "delivered").await;
    }
    let delivered = receiver.delivered();
    assert!(
        all.iter().all(|id| delivered.get(id) == Some(&1)),
        "{delivered:?}"
    );
    assert!(!view(&svc, &receiver.endpoint).disabled);

    // Gone again; `close` enables it this time.
    receiver.set(410);
    let again = post_one(&base).await;
    let a = action_when(&base, again, &receiver.endpoint, "held").await;
    assert_eq!(
        (a["attempts"].as_u64(), a["last_status"].as_u64()),
        (Some(1), Some(410))
    );
    assert!(view(&svc, &receiver.endpoint).disabled);
    receiver.set(200);
    assert!(engine
        .admin(&receiver.endpoint, AdminOp::Close)
        .await
        .unwrap());
    action_when(&base, again, &receiver.endpoint, "delivered").await;
    assert_eq!(receiver.delivered().get(&again), Some(&1));
    assert!(!view(&svc, &receiver.endpoint).disabled);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Fast retries capped at 100 ms, so that any wait longer than that is the
/// receiver's `Retry-After`.
const CAPPED_RETRY: &str = "max_attempts = 10\nbackoff_ms = 50\nmax_backoff_ms = 100\n";

/// `429` with `Retry-After: 2`: the next attempt comes no sooner than 2 s
/// later, though `max_backoff_ms` is 100; `not_before` says so meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_in_seconds_is_waited_out_even_past_max_backoff() {
    let receiver = RawReceiver::start(
        vec![Script::with_header(429, "Retry-After", "2")],
        Script::status(200),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", CAPPED_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let waiting = poll("the 429 on record", LIMIT, || async {
        let a = action(&base, id, &receiver.endpoint).await;
        (a["attempts"] == 1 && a["status"] == "pending").then_some(a)
    })
    .await;
    assert_eq!(waiting["last_status"], 429, "{waiting}");
    let first = receiver.conns()[0].wall;
    let ahead = not_before_ms(&waiting) - unix_ms(first);
    assert!(
        ahead >= 2000,
        "not_before {ahead} ms after the 429: {waiting}"
    );
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 2, "{done}");
    let gap = receiver.gaps()[0];
    assert!(
        gap >= Duration::from_secs(2) && gap < Duration::from_millis(3500),
        "the next attempt came {gap:?} after the 429"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `429` with `Retry-After` as an HTTP date a few seconds ahead: the next
/// attempt comes no sooner than that date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_http_date_is_waited_out() {
    let date_secs = unix_ms(SystemTime::now()) / 1000 + 3;
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(date_secs.unsigned_abs());
    let receiver = RawReceiver::start(
        vec![Script::with_header(
            429,
            "Retry-After",
            &http_date(date_secs),
        )],
        Script::status(200),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", CAPPED_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let waiting = poll("the 429 on record", LIMIT, || async {
        let a = action(&base, id, &receiver.endpoint).await;
        (a["attempts"] == 1 && a["status"] == "pending").then_some(a)
    })
    .await;
    assert!(
        not_before_ms(&waiting) >= unix_ms(date) - 5,
        "not_before before the date {}: {waiting}",
        http_date(date_secs)
    );
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 2, "{done}");
    let second = receiver.conns()[1].wall;
    assert!(
        second >= date,
        "the next attempt came {:?} before the date",
        date.duration_since(second).unwrap_or_default()
    );
    let late = second.duration_since(date).unwrap();
    assert!(
        late < Duration::from_millis(1500),
        "{late:?} after the date"
    );
    assert!(
        receiver.gaps()[0] >= Duration::from_secs(1),
        "{:?}",
        receiver.gaps()
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `429` with `Retry-After` as an HTTP date in the past: no wait of its
/// own, the normal backoff (at most `max_backoff_ms`) applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_date_in_the_past_falls_back_to_the_normal_backoff() {
    let past = unix_ms(SystemTime::now()) / 1000 - 60;
    let receiver = RawReceiver::start(
        vec![Script::with_header(429, "Retry-After", &http_date(past))],
        Script::status(200),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", CAPPED_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], 2, "{done}");
    let gap = receiver.gaps()[0];
    assert!(gap < Duration::from_secs(1), "the retry waited {gap:?}");
    svc.shutdown(Duration::from_secs(5)).await;
}

/// `429` with a `Retry-After` that is neither seconds nor a date: ignored,
/// the normal backoff applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_an_unreadable_retry_after_falls_back_to_the_normal_backoff() {
    let garbage = ["soon", "-5", "1.5", "Wed, 99 Foo 2026 25:61:00 GMT"];
    let receiver = RawReceiver::start(
        garbage
            .iter()
            .map(|g| Script::with_header(429, "Retry-After", g))
            .collect(),
        Script::status(200),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&dir.path().join("t.db"), &[&receiver.url], "", CAPPED_RETRY);
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let done = action_when(&base, id, &receiver.endpoint, "delivered").await;
    assert_eq!(done["attempts"], garbage.len() + 1, "{done}");
    for (g, gap) in garbage.iter().zip(receiver.gaps()) {
        assert!(
            gap < Duration::from_secs(1),
            "Retry-After: {g:?} held the retry back {gap:?}"
        );
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

/// "never sooner than a `Retry-After` the receiver sent (honoured up to an
/// hour, even past `max_backoff_ms`)": half an hour is waited in full, and
/// two hours are cut to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_is_honoured_up_to_an_hour() {
    let half_hour = RawReceiver::start(
        vec![Script::with_header(429, "Retry-After", "1800")],
        Script::status(200),
    )
    .await;
    let two_hours = RawReceiver::start(
        vec![Script::with_header(429, "Retry-After", "7200")],
        Script::status(200),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(
        &dir.path().join("t.db"),
        &[&half_hour.url, &two_hours.url],
        "",
        CAPPED_RETRY,
    );
    let svc = start(&dir, &toml).await;
    let base = format!("http://{}", svc.addr);
    let id = post_one(&base).await;
    let mut waits = Vec::new();
    for (receiver, want) in [(&half_hour, 1800), (&two_hours, 3600)] {
        let waiting = poll("the 429 on record", LIMIT, || async {
            let a = action(&base, id, &receiver.endpoint).await;
            (a["attempts"] == 1 && a["status"] == "pending").then_some(a)
        })
        .await;
        let ahead = not_before_ms(&waiting) - unix_ms(receiver.conns()[0].wall);
        waits.push((want, ahead / 1000));
    }
    assert!(
        waits
            .iter()
            .all(|(want, got)| *got >= want - 1 && *got <= want + 5),
        "(seconds wanted, seconds of not_before ahead of the 429): {waits:?}"
    );
    assert_eq!((half_hour.count(), two_hours.count()), (1, 1));
    svc.shutdown(Duration::from_secs(5)).await;
}
