//! The console in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), with JavaScript on and off: logging in, an endpoint
//! opening and closing during a run, an event's attempts, a dead letter
//! replayed and delivered, a flow by keyboard alone, axe-core on every
//! view, no request leaving the console's origin, and writes refused
//! without the session or from another origin.

mod console_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater_dispatch::store::{ActionStatus, Store};
use console_support::browser::{axe_source, Browser, Driver, ONE_AT_A_TIME, WAIT};
use console_support::{post_events, start, toml, wait_for, Hook, ADMIN, VIEWER};
use fantoccini::key::Key;
use uuid::Uuid;

/// `endpoint` as a path segment.
fn seg(endpoint: &str) -> String {
    endpoint.replace(':', "%3A").replace('/', "%2F")
}

/// How many of the store's actions have `status`.
async fn count(store: &Arc<dyn Store>, status: ActionStatus) -> u64 {
    store
        .counts()
        .await
        .unwrap()
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

/// Waits until the store holds at least `n` actions with `status`.
async fn wait_count(store: &Arc<dyn Store>, status: ActionStatus, n: u64) {
    wait_for(&format!("{n} actions {status:?}"), WAIT, || {
        let store = store.clone();
        async move { count(&store, status).await >= n }
    })
    .await;
}

/// Accepts the confirmation dialog once it is open.
async fn accept_dialog(b: &Browser) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = b.client.get_alert_text().await {
            b.client.accept_alert().await.unwrap();
            return text;
        }
        assert!(Instant::now() < deadline, "no confirmation dialog opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_and_watch_an_endpoint_open_and_close_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let hook = Hook::start(503, "{\"error\":\"down\"}").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 30, "")).await;
    let base = format!("http://{}", svc.addr);
    let driver = Driver::start().await;
    for javascript in [true, false] {
        hook.set(503);
        let b = driver.browser(javascript).await;
        b.login(&base, ADMIN).await;
        // JavaScript is really off (the script adds the pause button).
        assert_eq!(b.exists("#live-toggle").await, javascript);
        let marker = if javascript {
            b.client
                .execute("window.__stay = 1; return 1;", vec![])
                .await
                .unwrap();
            true
        } else {
            false
        };
        let cell = format!("tr[data-endpoint=\"{}\"] td.state-cell", hook.endpoint);
        post_events(&base, 20).await;
        b.wait_text(&cell, !javascript, "the breaker to show open", |t| {
            t.contains("open") && !t.contains("half")
        })
        .await;
        hook.set(200);
        b.wait_text(&cell, !javascript, "the breaker to show closed", |t| {
            t.contains("closed")
        })
        .await;
        if marker {
            // The page refreshed itself: it was never reloaded.
            let v = b
                .client
                .execute("return window.__stay;", vec![])
                .await
                .unwrap();
            assert_eq!(v, serde_json::json!(1));
        }
        b.close().await;
    }
    svc.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_an_event_read_its_attempts_and_replay_it_until_delivered() {
    let _one = ONE_AT_A_TIME.lock().await;
    let driver = Driver::start().await;
    for javascript in [true, false] {
        let hook = Hook::start(503, "{\"error\":\"database <down>\"}").await;
        let dir = tempfile::tempdir().unwrap();
        let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 3, "")).await;
        let base = format!("http://{}", svc.addr);
        let store = svc.state.engine.store().clone();
        let id = post_events(&base, 1).await[0];
        wait_count(&store, ActionStatus::DeadLettered, 1).await;
        let b = driver.browser(javascript).await;
        b.login(&base, ADMIN).await;
        // Find it.
        b.goto(&format!("{base}/console/events")).await;
        b.find("#f-event")
            .await
            .send_keys(&id.to_string())
            .await
            .unwrap();
        b.find("form.filter button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        let path = b.wait_path(|p| p.starts_with("/console/events/")).await;
        assert_eq!(path, format!("/console/events/{id}"));
        // Its three attempts, oldest first.
        let lines: Vec<String> = {
            let mut out = Vec::new();
            for li in b
                .client
                .find_all(fantoccini::Locator::Css("ol.timeline > li p.attempt-line"))
                .await
                .unwrap()
            {
                out.push(li.text().await.unwrap());
            }
            out
        };
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("#1 scheduled"), "{lines:?}");
        assert!(
            lines[1].starts_with("#2 retry") && lines[2].starts_with("#3 retry"),
            "{lines:?}"
        );
        for l in &lines {
            assert!(
                l.contains("breaker closed") && l.contains("http_5xx") && l.contains("HTTP 503"),
                "{l}"
            );
        }
        // The answer, as text (its `<` never became markup).
        b.find("ol.timeline > li details summary")
            .await
            .click()
            .await
            .unwrap();
        assert_eq!(
            b.text("ol.timeline > li details pre").await,
            "{\"error\":\"database <down>\"}"
        );
        assert!(b.text("ol.timeline > li details").await.contains("POST"));
        // Replay it from the dead letters.
        hook.set(200);
        b.goto(&format!("{base}/console/dead-letters")).await;
        assert_eq!(b.text("#dead-count").await, "1");
        let tick = b.find("input[type=checkbox][name=id]").await;
        tick.click().await.unwrap();
        b.find("form.selection button[type=submit]:not([formaction])")
            .await
            .click()
            .await
            .unwrap();
        if javascript {
            let asked = accept_dialog(&b).await;
            assert_eq!(asked, "Replay the 1 selected dead letter(s)?");
        } else {
            b.wait_path(|p| p.starts_with("/console/actions/replay?"))
                .await;
            assert!(b
                .text("form.confirm .question")
                .await
                .starts_with("Replay 1 action(s)?"));
            b.find("form.confirm button[type=submit]")
                .await
                .click()
                .await
                .unwrap();
        }
        b.wait_path(|p| p == "/console/dead-letters").await;
        assert_eq!(b.text(".flash").await, "Replayed 1 action(s).");
        // Delivered: the event's page shows it (by itself with JavaScript).
        b.goto(&format!("{base}/console/events/{id}")).await;
        b.wait_text(
            "#event-live .status",
            !javascript,
            "the replayed action delivered",
            |t| t == "delivered",
        )
        .await;
        assert!(hook.ok.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        let last = b.text("ol.timeline > li:last-child p.attempt-line").await;
        assert!(
            last.starts_with("#1 replay") && last.contains("success"),
            "{last}"
        );
        b.close().await;
        svc.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_with_the_keyboard_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let hook = Hook::start(422, "{\"error\":\"unknown order\"}").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 3, "")).await;
    let base = format!("http://{}", svc.addr);
    let store = svc.state.engine.store().clone();
    post_events(&base, 2).await;
    wait_count(&store, ActionStatus::DeadLettered, 2).await;
    hook.set(200);
    let driver = Driver::start().await;
    let b = driver.browser(false).await;
    b.goto(&format!("{base}/console/login")).await;
    // The first Tab reaches the skip link, and its focus is visible.
    let skip = b.tab_to("a.skip", 1).await;
    assert_ne!(skip.css_value("outline-style").await.unwrap(), "none");
    b.tab_to("#token", 5).await;
    b.type_keys(ADMIN).await;
    b.press(Key::Enter).await;
    b.wait_path(|p| p == "/console").await;
    b.tab_to("nav a[href=\"/console/dead-letters\"]", 10).await;
    b.press(Key::Enter).await;
    b.wait_path(|p| p == "/console/dead-letters").await;
    let first = b.tab_to("input[type=checkbox][name=id]", 30).await;
    b.press(Key::Space).await;
    assert!(first.is_selected().await.unwrap());
    b.tab_to("form.selection button[type=submit]:not([formaction])", 10)
        .await;
    b.press(Key::Enter).await;
    b.wait_path(|p| p.starts_with("/console/actions/replay?"))
        .await;
    b.tab_to("form.confirm button[type=submit]", 20).await;
    b.press(Key::Enter).await;
    b.wait_path(|p| p == "/console/dead-letters").await;
    assert_eq!(b.text(".flash").await, "Replayed 1 action(s).");
    wait_for("the replayed action delivered", WAIT, || {
        let store = store.clone();
        async move { count(&store, ActionStatus::Delivered).await == 1 }
    })
    .await;
    assert_eq!(count(&store, ActionStatus::DeadLettered).await, 1);
    b.close().await;
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A page on another origin (another port of 127.0.0.1: the same site, so
/// a SameSite=Strict cookie goes along) whose button posts to `target`.
async fn foreign_page(target: &str) -> String {
    let html = format!(
        "<!doctype html><html lang=en><title>elsewhere</title><form method=post action=\"{target}\"><button id=go>go</button></form></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_another_origin_or_without_the_session_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 3, "")).await;
    let base = format!("http://{}", svc.addr);
    let open = format!("{base}/console/endpoints/{}/open", seg(&hook.endpoint));
    let elsewhere = foreign_page(&open).await;
    let breaker = svc.state.engine.breakers().get(&hook.endpoint).unwrap();
    let driver = Driver::start().await;
    for javascript in [true, false] {
        // Logged in as admin, then sent a form by another origin.
        let b = driver.browser(javascript).await;
        b.login(&base, ADMIN).await;
        b.goto(&elsewhere).await;
        b.find("#go").await.click().await.unwrap();
        b.wait_path(|p| p.ends_with("/open")).await;
        assert!(b
            .text("main")
            .await
            .contains("Origin is not this console's"));
        assert_eq!(breaker.state(), breakwater::CircuitState::Closed);
        // The console's own form, without a session.
        let fresh = driver.browser(javascript).await;
        fresh.goto(&elsewhere).await;
        fresh.goto(&format!("{base}/console/login")).await;
        fresh
            .client
            .execute(
                "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
                 document.body.appendChild(f); f.submit(); return 1;",
                vec![serde_json::json!(open)],
            )
            .await
            .unwrap();
        fresh.wait_path(|p| p.ends_with("/open")).await;
        assert!(fresh.text("main").await.contains("log in first"));
        assert_eq!(breaker.state(), breakwater::CircuitState::Closed);
        // A viewer's session may not write either.
        let viewer = driver.browser(javascript).await;
        viewer.login(&base, VIEWER).await;
        viewer.goto(&open).await;
        assert!(viewer
            .text("main")
            .await
            .contains("the viewer token reads only"));
        for b in [b, fresh, viewer] {
            b.close().await;
        }
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

/// A run like the demo's: a healthy endpoint, a dead one (its breaker
/// opens) and one that refuses every event (dead letters).
struct Scene {
    svc: breakwater_dispatch::server::Running,
    base: String,
    healthy: Hook,
    dead: Hook,
    refusing: Hook,
    events: Vec<Uuid>,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Self {
        let healthy = Hook::start(200, "{\"ok\":true}").await;
        let dead = Hook::start(503, "{\"error\":\"upstream unavailable\",\"retry\":true}").await;
        let refusing =
            Hook::start(422, "{\"error\":\"order <unknown>\",\"code\":\"E_ORDER\"}").await;
        let dir = tempfile::tempdir().unwrap();
        let text = toml(
            &dir.path().join("t.db"),
            &[&healthy.url, &dead.url, &refusing.url],
            4,
            "",
        )
        .replace("open_timeout_ms = 300", "open_timeout_ms = 2000")
        .replace("max_open_timeout_ms = 1000", "max_open_timeout_ms = 8000");
        let svc = start(&dir, &text).await;
        let base = format!("http://{}", svc.addr);
        let store = svc.state.engine.store().clone();
        let mut events = Vec::new();
        for _ in 0..3 {
            events.extend(post_events(&base, 8).await);
        }
        wait_count(&store, ActionStatus::DeadLettered, 24).await;
        let breaker = svc.state.engine.breakers().get(&dead.endpoint).unwrap();
        wait_for("the dead endpoint's breaker open", WAIT, || {
            let open = breaker.state() == breakwater::CircuitState::Open;
            async move { open }
        })
        .await;
        Self {
            svc,
            base,
            healthy,
            dead,
            refusing,
            events,
            _dir: dir,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.svc.state.engine.store().clone()
    }

    /// A replay job over the refusing endpoint's dead letters, once it
    /// accepts them; waits until it is finished.
    async fn replay_job(&self) -> i64 {
        self.refusing.set(200);
        let op = breakwater_dispatch::operations::Operator::new(
            &self.svc.state.engine,
            breakwater_dispatch::auth::actor(ADMIN),
        );
        let filter = breakwater_dispatch::store::ActionFilter {
            endpoint: Some(self.refusing.endpoint.clone()),
            ..Default::default()
        };
        let job = op.start_replay(filter).await.unwrap();
        let store = self.store();
        wait_for("the replay job finished", WAIT, || {
            let store = store.clone();
            async move {
                store.replay_job(job.id).await.unwrap().unwrap().state
                    == breakwater_dispatch::store::ReplayState::Finished
            }
        })
        .await;
        job.id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_passes_axe_and_loads_nothing_from_elsewhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let axe = axe_source();
    let scene = Scene::start().await;
    let base = &scene.base;
    let dead_letter = scene
        .store()
        .actions(
            &breakwater_dispatch::store::ActionFilter {
                status: Some(ActionStatus::DeadLettered),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap()
        .actions[0]
        .id;
    let job = scene.replay_job().await;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    let mut problems = Vec::new();
    b.goto(&format!("{base}/console/login")).await;
    problems.extend(
        b.axe(&axe)
            .await
            .into_iter()
            .map(|p| format!("/console/login: {p}")),
    );
    b.login(base, ADMIN).await;
    let views = [
        "/console".to_string(),
        format!("/console/endpoints/{}", seg(&scene.dead.endpoint)),
        format!("/console/endpoints/{}/open", seg(&scene.dead.endpoint)),
        "/console/events".to_string(),
        format!(
            "/console/events?endpoint={}&status=dead_lettered",
            seg(&scene.dead.endpoint)
        ),
        format!("/console/events/{}", scene.events[0]),
        "/console/dead-letters".to_string(),
        format!("/console/actions/replay?id={dead_letter}"),
        format!(
            "/console/dead-letters/replay-all?endpoint={}",
            seg(&scene.dead.endpoint)
        ),
        "/console/replays".to_string(),
        format!("/console/replays/{job}"),
        "/console/audit".to_string(),
        "/console/no-such-page".to_string(),
    ];
    let csp_probe = r#"const done = arguments[arguments.length - 1];
        fetch(location.href).then(r => done(r.headers.get('content-security-policy')));"#;
    for path in &views {
        b.goto(&format!("{base}{path}")).await;
        b.wait_path(|_| true).await;
        // Open every attempt's details, so that axe reads them too.
        for s in b
            .client
            .find_all(fantoccini::Locator::Css("details summary"))
            .await
            .unwrap()
        {
            s.click().await.unwrap();
        }
        problems.extend(
            b.axe(&axe)
                .await
                .into_iter()
                .map(|p| format!("{path}: {p}")),
        );
        let elsewhere: Vec<String> = b
            .resources()
            .await
            .into_iter()
            .filter(|r| !r.starts_with(&format!("{base}/")))
            .collect();
        assert!(elsewhere.is_empty(), "{path} loaded {elsewhere:?}");
        let csp = b.client.execute_async(csp_probe, vec![]).await.unwrap();
        assert!(
            csp.as_str()
                .unwrap()
                .starts_with("default-src 'none'; script-src 'self';"),
            "{path}: {csp}"
        );
    }
    assert!(
        problems.is_empty(),
        "axe-core found:\n{}",
        problems.join("\n")
    );
    b.close().await;
    scene.svc.shutdown(Duration::from_secs(5)).await;
}

/// Where screenshots go: `docs/console/` with `BREAKWATER_SCREENSHOTS=1`
/// (to refresh the documentation's), a temporary directory otherwise.
fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    if std::env::var("BREAKWATER_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        (dir, None)
    } else {
        let tmp = tempfile::tempdir().unwrap();
        (tmp.path().to_path_buf(), Some(tmp))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_the_main_views() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, _keep) = screenshot_dir();
    let scene = Scene::start().await;
    let base = &scene.base;
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    b.login(base, ADMIN).await;
    // Endpoints, with the dead endpoint's breaker open.
    b.goto(&format!("{base}/console")).await;
    let cell = format!(
        "tr[data-endpoint=\"{}\"] td.state-cell",
        scene.dead.endpoint
    );
    b.wait_text(&cell, false, "the open breaker", |t| t.starts_with("open"))
        .await;
    b.screenshot(&dir.join("endpoints.png")).await;
    // An event's timeline: the refused attempts, one opened.
    b.goto(&format!("{base}/console/events/{}", scene.events[0]))
        .await;
    let refused = b
        .client
        .execute(
            "const h = [...document.querySelectorAll('h2')].find(h => h.textContent.includes(arguments[0])); \
             const s = h.closest('section'); const d = s.querySelectorAll('details'); \
             d[d.length - 1].open = true; h.scrollIntoView(); return h.id;",
            vec![serde_json::json!(scene.dead.endpoint)],
        )
        .await
        .unwrap();
    assert!(refused.is_string());
    b.screenshot(&dir.join("event.png")).await;
    // Dead letters, two of them ticked.
    b.goto(&format!("{base}/console/dead-letters")).await;
    for tick in b
        .client
        .find_all(fantoccini::Locator::Css("input[type=checkbox][name=id]"))
        .await
        .unwrap()
        .into_iter()
        .take(2)
    {
        tick.click().await.unwrap();
    }
    b.screenshot(&dir.join("dead-letters.png")).await;
    // A replay job of the refusing endpoint's dead letters, started from
    // the console, once the endpoint takes them.
    scene.refusing.set(200);
    b.goto(&format!(
        "{base}/console/dead-letters?endpoint={}",
        seg(&scene.refusing.endpoint)
    ))
    .await;
    b.find("form.inline button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    accept_dialog(&b).await;
    let path = b.wait_path(|p| p.starts_with("/console/replays/")).await;
    b.wait_text("#replay-live .job", false, "the job finished", |t| {
        t == "finished"
    })
    .await;
    b.wait_text("#replay-live table", false, "its actions delivered", |t| {
        t.contains("delivered 24")
    })
    .await;
    assert!(path.len() > "/console/replays/".len());
    b.screenshot(&dir.join("replay.png")).await;
    for name in ["endpoints", "event", "dead-letters", "replay"] {
        let size = std::fs::metadata(dir.join(format!("{name}.png")))
            .unwrap()
            .len();
        assert!(size > 10_000 && size < 600_000, "{name}.png: {size} bytes");
    }
    assert!(scene.healthy.ok.load(std::sync::atomic::Ordering::SeqCst) >= 24);
    b.close().await;
    scene.svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_url_that_opens_the_console() {
    use std::io::BufRead;
    let _one = ONE_AT_A_TIME.lock().await;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(["demo", "--duration", "10", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.trim().strip_prefix("console  ") {
                let _ = tx.send(url.to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo printed no console URL");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/console/login?token="),
        "{url}"
    );
    let driver = Driver::start().await;
    let b = driver.browser(true).await;
    b.goto(&url).await;
    assert_eq!(
        b.wait_path(|p| !p.starts_with("/console/login")).await,
        "/console"
    );
    assert!(b.text("header .who").await.starts_with("admin"));
    // The dead receiver's breaker opens on the page (which refreshes by itself).
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css("tr[data-endpoint]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    b.wait_text(
        "table.endpoints .state-open",
        false,
        "a breaker open",
        |t| t == "open",
    )
    .await;
    b.close().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while demo.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = reader.join().unwrap();
    assert!(out.contains("summary after"), "{out}");
}
