//! The real binary: `kill -9` and restart, SIGHUP, SIGTERM.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{config_toml, event, wait_until, Receiver};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(90);

struct Service {
    child: Child,
    base: String,
}

impl Service {
    /// Starts `breakwater serve --config FILE` and reads its address from
    /// the first line it prints.
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args(["serve", "--config"])
            .arg(config)
            .env("BREAKWATER_LOG", "error")
            .env("BW_TEST_ADMIN_TOKEN", "t")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("breakwater listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, base }
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    async fn breakers(&self) -> serde_json::Value {
        reqwest::get(format!("{}/breakers", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post_batch(client: &reqwest::Client, base: &str, n: usize) -> Vec<Uuid> {
    let batch: Vec<_> = (0..n).map(|_| event(Some(Uuid::new_v4()))).collect();
    let r = client
        .post(format!("{base}/events"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing_answered_202() {
    let receiver = Receiver::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config_toml(&dir.path().join("k.db"), &[&receiver.url], ""),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let svc = Service::start(&path);
    for _ in 0..10 {
        accepted.extend(post_batch(&client, &svc.base, 50).await);
    }
    // The receiver comes back while the first process is still running: some
    // deliveries are done, others in flight or parked when it is killed.
    receiver.set(200);
    wait_until("some deliveries", LIMIT, || {
        !receiver.delivered().is_empty()
    })
    .await;
    drop(svc); // SIGKILL
    let svc = Service::start(&path);
    for _ in 0..10 {
        accepted.extend(post_batch(&client, &svc.base, 50).await);
    }
    assert_eq!(accepted.len(), 1000);
    let all: HashSet<Uuid> = accepted.iter().copied().collect();
    wait_until("every accepted event delivered", LIMIT, || {
        let got = receiver.delivered();
        all.iter().all(|id| got.contains_key(id))
    })
    .await;
    drop(svc);
    // The kills left no row pointing at nothing.
    let db = rusqlite::Connection::open(dir.path().join("k.db")).unwrap();
    let broken: i64 = db
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0, "rows pointing at nothing after kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_keeps_an_open_breaker_open() {
    let receiver = Receiver::start(503).await;
    let other = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let db = dir.path().join("h.db");
    let slow_open = |extra: &str| {
        config_toml(&db, &[&receiver.url], extra)
            .replace("open_timeout_ms = 300", "open_timeout_ms = 60000")
            .replace("max_open_timeout_ms = 1000", "max_open_timeout_ms = 60000")
    };
    std::fs::write(&path, slow_open("")).unwrap();
    let svc = Service::start(&path);
    let client = reqwest::Client::new();
    post_batch(&client, &svc.base, 20).await;
    let mut open = false;
    for _ in 0..500 {
        let b = svc.breakers().await;
        if b[0]["state"] == "open" {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(open, "the breaker opened");
    // A bad file is refused; the service keeps running.
    std::fs::write(&path, "listen = 7\n").unwrap();
    svc.signal(Signal::SIGHUP);
    // A good file with a second endpoint: once it shows, the reload happened.
    let mut good = slow_open("");
    good.push_str(&format!(
        "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        other.url
    ));
    std::fs::write(&path, good).unwrap();
    svc.signal(Signal::SIGHUP);
    let mut reloaded = serde_json::Value::Null;
    for _ in 0..500 {
        reloaded = svc.breakers().await;
        if reloaded.as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = reloaded.as_array().unwrap();
    assert_eq!(list.len(), 2, "{reloaded}");
    let first = list
        .iter()
        .find(|b| b["endpoint"] == receiver.endpoint.as_str())
        .unwrap();
    assert_eq!(first["state"], "open", "{reloaded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_deliveries_and_keeps_the_rest() {
    let receiver = Receiver::start(200).await;
    receiver
        .delay_ms
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config_toml(
            &dir.path().join("t.db"),
            &[&receiver.url],
            "[delivery]\nmax_in_flight_per_endpoint = 2\nshutdown_grace_ms = 10000\n",
        ),
    )
    .unwrap();
    let mut svc = Service::start(&path);
    let client = reqwest::Client::new();
    let ids = post_batch(&client, &svc.base, 20).await;
    wait_until("deliveries in flight", LIMIT, || {
        receiver.started.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    svc.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| svc.child.wait()).unwrap();
    assert!(status.success(), "{status}");
    let started = receiver.started.load(std::sync::atomic::Ordering::SeqCst);
    let finished = receiver.finished.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(started, finished, "every started delivery finished");
    assert!(finished < 20, "the rest was left stored, not rushed");
    // The rest is delivered after a restart.
    receiver
        .delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let _svc = Service::start(&path);
    wait_until("every event after the restart", LIMIT, || {
        let got = receiver.delivered();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["demo", "--help"],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["dlq", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "replay", "--help"],
        &["dlq", "purge", "--help"],
    ] {
        let (ok, out) = run(args);
        assert!(ok && out.contains("Usage:"), "{args:?}: {out}");
    }
}

/// Regression: two `serve` processes on one store both ran and delivered
/// every action twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_store_is_refused() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        config_toml(&dir.path().join("one.db"), &[&receiver.url], ""),
    )
    .unwrap();
    let first = Service::start(&config);
    let out = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BREAKWATER_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another breakwater serve"), "{stderr}");
    // The first one is untouched, and the store is free once it stops.
    assert_eq!(
        reqwest::get(format!("{}/health", first.base))
            .await
            .unwrap()
            .status(),
        200
    );
    first.signal(Signal::SIGTERM);
    drop(first);
    let again = Service::start(&config);
    assert_eq!(
        reqwest::get(format!("{}/health", again.base))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Regression: a second `serve` on a symbolic or hard link to a store
/// another `serve` holds started (the lock file was named after the path
/// as written), released the first one's claims and delivered the same
/// work again. The lock is on the database file itself now, and the
/// refusal names the process that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_through_a_link_to_the_store_is_refused() {
    let receiver = Receiver::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one.db");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_toml(&db, &[&receiver.url], "")).unwrap();
    let first = Service::start(&config);
    let soft = dir.path().join("soft.db");
    let hard = dir.path().join("hard.db");
    std::os::unix::fs::symlink(&db, &soft).unwrap();
    std::fs::hard_link(&db, &hard).unwrap();
    for link in [&soft, &hard] {
        let other = dir.path().join("other.toml");
        std::fs::write(&other, config_toml(link, &[&receiver.url], "")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args(["serve", "--config"])
            .arg(&other)
            .env("BREAKWATER_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", link.display());
        assert!(stderr.contains("another breakwater serve"), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", first.child.id())),
            "names the holder: {stderr}"
        );
    }
}

/// Regression: a newline in event data rendered by a `log` action started
/// a line of its own on stderr, one that could pass for the service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstore = \"{}\"\n[[observers]]\nname = \"audit\"\n\
             entity_type = \"Order\"\nevent_type = \"INSERT\"\n[[observers.actions]]\n\
             type = \"log\"\nlevel = \"info\"\nmessage_template = \"order {{{{ data.note }}}}\"\n",
            dir.path().join("l.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BREAKWATER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("breakwater listening on ")
        .unwrap()
        .to_string();
    let mut ev = event(None);
    ev["data"] = serde_json::json!({
        "note": "x\n2026-12-07T10:00:00.000000Z ERROR breakwater_dispatch::server: forged\r\u{2028}done"
    });
    let r = reqwest::Client::new()
        .post(format!("{base}/events"))
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Read stderr until the action's line shows, then stop the service.
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("breakwater::action");
            out.push(line);
            if done {
                break;
            }
        }
        out
    });
    let deadline = std::time::Instant::now() + LIMIT;
    while !lines.is_finished() {
        assert!(std::time::Instant::now() < deadline, "no log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.join().unwrap();
    let action = lines.last().unwrap();
    assert!(action.contains("order x\\n2026-12-07"), "{action}");
    assert!(action.contains("\\r\\u{2028}done"), "{action}");
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-12-07T10:00:00")),
        "a forged line: {lines:?}"
    );
}

/// Regression: `--duration 10000000000000000000` panicked on an Instant
/// overflow, and `--listen 0.0.0.0:0` was taken.
#[test]
fn demo_refuses_durations_and_addresses_out_of_range() {
    for args in [
        &["demo", "--duration", "10000000000000000000"][..],
        &["demo", "--duration", "0"],
        &["demo", "--listen", "0.0.0.0:0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[1]),
            "{args:?} names the option: {stderr}"
        );
    }
}

#[test]
fn check_config_lists_every_problem_with_its_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"nowhere\"\nbogus = 1\n[retry]\nmax_attempts = 0\n[[observers]]\nname = \"o\"\nentity_type = \"Order\"\nevent_type = \"INSERT\"\n[[observers.actions]]\ntype = \"webhook\"\nurl = \"http://x\"\nsigning_secret = \"whsec_topsecretvalue\"\nbogus_key = 1\n",
    )
    .unwrap();
    let (ok, out) = run(&["check-config", bad.to_str().unwrap()]);
    assert!(!ok);
    for want in [
        "line 1: listen:",
        "line 2: bogus:",
        "line 4: retry.max_attempts:",
        "line 12: observers[0].actions[0].signing_secret:",
        "line 13: observers[0].actions[0].bogus_key:",
        "5 problem(s)",
    ] {
        assert!(out.contains(want), "{want} missing from\n{out}");
    }
    assert!(!out.contains("topsecretvalue"), "{out}");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config_toml(&dir.path().join("g.db"), &["http://127.0.0.1:9/h"], ""),
    )
    .unwrap();
    let (ok, out) = run(&["check-config", good.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_replays_and_purges() {
    let receiver = Receiver::start(400).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config_toml(&dir.path().join("q.db"), &[&receiver.url], ""),
    )
    .unwrap();
    let svc = Service::start(&path);
    let client = reqwest::Client::new();
    post_batch(&client, &svc.base, 2).await;
    wait_until("two refusals", LIMIT, || receiver.hits().len() == 2).await;
    let p = path.to_str().unwrap();
    let mut listed = String::new();
    for _ in 0..500 {
        listed = run(&["dlq", "list", "--config", p]).1;
        if listed.contains("2 dead letter(s)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed.contains("2 dead letter(s)"), "{listed}");
    let first_id = listed.split('\t').next().unwrap().to_string();
    // Replayed while the service runs: the running service picks it up.
    receiver.set(200);
    let (ok, out) = run(&["dlq", "replay", "--config", p, &first_id]);
    assert!(ok && out.contains("1 dead letter(s) queued"), "{out}");
    wait_until("the replayed delivery", LIMIT, || {
        receiver.hits().iter().any(|h| h.answered == 200)
    })
    .await;
    // An id that is no dead letter (any more) fails the command.
    let (ok, out) = run(&["dlq", "replay", "--config", p, &first_id]);
    assert!(!ok && out.contains("0 dead letter(s) queued"), "{out}");
    let (ok, out) = run(&["dlq", "list", "--config", p, "--limit", "1"]);
    assert!(ok && out.contains("there may be more"), "{out}");
    let (ok, out) = run(&["dlq", "purge", "--config", p, "--all"]);
    assert!(ok && out.contains("1 dead letter(s) deleted"), "{out}");
    let (_, out) = run(&["dlq", "list", "--config", p]);
    assert!(out.contains("0 dead letter(s)"), "{out}");
    // Neither ids nor --all: refused (on stderr), nothing done.
    let (ok, out) = run(&["dlq", "purge", "--config", p]);
    assert!(!ok && !out.contains("deleted"), "{out}");
    // A store that is not there is not created by looking at it.
    let missing = dir.path().join("m.toml");
    std::fs::write(
        &missing,
        config_toml(&dir.path().join("nothing.db"), &[&receiver.url], ""),
    )
    .unwrap();
    let (ok, _) = run(&["dlq", "list", "--config", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(!dir.path().join("nothing.db").exists());
}

/// A replay job of the service is resumed where it was when its process
/// was killed (`kill -9`), at the next start: it ends `finished`, every
/// dead letter replayed once and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_job_killed_mid_run_is_resumed_at_the_next_start() {
    const N: usize = 3_000;
    let receiver = Receiver::start(400).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let db = dir.path().join("r.db");
    std::fs::write(&path, config_toml(&db, &[&receiver.url], "")).unwrap();
    let svc = Service::start(&path);
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for _ in 0..N / 500 {
        accepted.extend(post_batch(&client, &svc.base, 500).await);
    }
    wait_until("every event refused once", LIMIT, || {
        receiver.hits().len() == N
    })
    .await;
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth("t");
    let dead = |base: String| async move {
        let r = admin(reqwest::Client::new().post(format!("{base}/actions/replay")))
            .json(&serde_json::json!({"dry_run": true}))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()["count"]
            .as_u64()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while dead(svc.base.clone()).await < N as u64 {
        assert!(std::time::Instant::now() < deadline, "dead letters stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.set(200);
    let r = admin(client.post(format!("{}/actions/replay", svc.base)))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: serde_json::Value = r.json().await.unwrap();
    let id = job["id"].as_i64().unwrap();
    // Killed once its first chunk is recorded (or at once, if the job is
    // seen running no more by then): it goes on from its cursor.
    let progress = || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT state, replayed FROM replay_jobs WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .unwrap()
    };
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let (state, replayed) = progress();
        if state != "running" || replayed > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job moves");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(svc); // SIGKILL
    let (state, replayed) = progress();
    eprintln!("at the kill the job was {state} with {replayed} of {N} replayed");
    let svc = Service::start(&path);
    let deadline = std::time::Instant::now() + LIMIT;
    let last = loop {
        let last: serde_json::Value = admin(client.get(format!("{}/replays/{id}", svc.base)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["state"] != "running" {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job still running: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last["state"], "finished", "{last}");
    let all: HashSet<Uuid> = accepted.iter().copied().collect();
    wait_until("every dead letter delivered", LIMIT, || {
        let got = receiver.delivered();
        all.iter().all(|id| got.contains_key(id))
    })
    .await;
    // Replayed once each by the job: a chunk replayed twice would deliver
    // 500 again. What the killed process had sent and not yet recorded is
    // sent again (at least once): at most its in-flight limit (64) and the
    // answers its recorder had not written.
    let delivered = receiver.hits().iter().filter(|h| h.answered == 200).count();
    assert!(
        (N..N + 200).contains(&delivered),
        "{delivered} deliveries of {N} replayed dead letters"
    );
    assert_eq!(dead(svc.base.clone()).await, 0);
    drop(svc);
}
