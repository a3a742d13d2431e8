//! The console over plain HTTP: sessions and their cookie, the origin check
//! on writes, the security headers, who may write, and page sizes.

mod console_support;

use std::time::Duration;

use console_support::{post_events, start, toml, wait_for, Hook, Web, ADMIN, VIEWER};

const LIMIT: Duration = Duration::from_secs(60);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'";

/// No inline script, no inline style, no event handler attribute.
fn assert_no_inline_code(page: &str, path: &str) {
    let lower = page.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "{path}: inline script {tag}");
    }
    assert!(!lower.contains("<style"), "{path}: a <style> element");
    assert!(!lower.contains(" style="), "{path}: a style attribute");
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onerror=",
        "javascript:",
    ] {
        assert!(!lower.contains(handler), "{path}: {handler}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_pages_redirect_to_the_login_and_writes_are_refused() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 5, "")).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    for path in [
        "/console",
        "/console/events?status=delivered",
        "/console/dead-letters",
    ] {
        let r = web.get(path, None).await;
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/console/login?next=%2Fconsole"), "{to}");
    }
    let endpoint = format!(
        "/console/endpoints/{}/open",
        hook.endpoint.replace(':', "%3A").replace('/', "%2F")
    );
    for path in [
        endpoint.as_str(),
        "/console/actions/replay",
        "/console/replays/1/cancel",
    ] {
        let r = web.post(path, None, Some(&base), &[("id", "1")]).await;
        assert_eq!(r.status(), 401, "{path}");
        let r = web
            .post(path, Some("bw_console=forged"), Some(&base), &[])
            .await;
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(
        svc.state
            .engine
            .breakers()
            .get(&hook.endpoint)
            .unwrap()
            .state(),
        breakwater::CircuitState::Closed
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_holds_no_token_and_its_flags_are_strict() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 5, "")).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let r = web
        .post(
            "/console/login",
            None,
            Some(&base),
            &[("token", ADMIN), ("next", "/console/audit")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/audit");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("bw_console="), "{cookie}");
    for flag in ["; HttpOnly", "; SameSite=Strict", "; Path=/console"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}: plain http");
    assert!(!cookie.contains(ADMIN), "the cookie holds the token");
    let id = cookie.split(';').next().unwrap();
    assert_eq!(id.len(), "bw_console=".len() + 64);
    // Behind a proxy that ends TLS.
    let r = web
        .client
        .post(format!("{base}/console/login"))
        .header("origin", base.replace("http:", "https:"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", VIEWER)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));
    // A wrong token, and a token in a URL (serve never takes one).
    let r = web
        .post("/console/login", None, Some(&base), &[("token", "nope")])
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = web
        .get(&format!("/console/login?token={ADMIN}"), None)
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
    // The session reads; logging out ends it.
    assert_eq!(web.get("/console", Some(id)).await.status(), 200);
    let r = web
        .post("/console/logout", Some(id), Some(&base), &[])
        .await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(web.get("/console", Some(id)).await.status(), 303);
    svc.shutdown(Duration::from_secs(5)).await;
}

/// Guessing tokens is throttled: past a burst of refused logins, every
/// login is refused (`429`, `Retry-After`) before its token is looked at,
/// the right token too; sessions already open go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_tokens_throttles_every_login_for_a_while() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 5, "")).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let r = web
        .post("/console/login", None, Some(&base), &[("token", VIEWER)])
        .await;
    assert_eq!(r.status(), 303);
    let open = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let open = open.split(';').next().unwrap().to_string();
    let guesses = (0..60).map(|i| {
        let token = format!("guess-{i}");
        let web = &web;
        let base = &base;
        async move {
            web.post("/console/login", None, Some(base), &[("token", &token)])
                .await
        }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let refused = answers.iter().filter(|r| r.status() == 401).count();
    let throttled: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert!((20..=22).contains(&refused), "{refused} looked at");
    assert_eq!(refused + throttled.len(), 60);
    for r in &throttled {
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    // The right token, at once: refused without a look.
    let r = web
        .post("/console/login", None, Some(&base), &[("token", ADMIN)])
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Too many logins were refused lately"));
    // The open session reads on.
    assert_eq!(web.get("/console", Some(&open)).await.status(), 200);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_policy_and_no_inline_code() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 5, "")).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let ids = post_events(&base, 3).await;
    let cookie = web.login(ADMIN).await;
    let login = web.get("/console/login", None).await;
    let css = {
        let page = web
            .get("/console", Some(&cookie))
            .await
            .text()
            .await
            .unwrap();
        let at = page.find("/console/assets/console.").unwrap();
        page[at..at + page[at..].find('"').unwrap()].to_string()
    };
    let mut answers = vec![("/console/login".to_string(), login)];
    for path in [
        "/console".to_string(),
        format!(
            "/console/endpoints/{}",
            hook.endpoint.replace(':', "%3A").replace('/', "%2F")
        ),
        "/console/events".to_string(),
        format!("/console/events/{}", ids[0]),
        "/console/dead-letters".to_string(),
        "/console/replays".to_string(),
        "/console/audit".to_string(),
        "/console/no-such-page".to_string(),
        css.clone(),
    ] {
        let r = web.get(&path, Some(&cookie)).await;
        answers.push((path, r));
    }
    for (path, r) in answers {
        let h = r.headers().clone();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        if path == css {
            assert_eq!(r.status(), 200);
            assert!(h["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=31536000"));
            assert!(h.contains_key("etag"));
            continue;
        }
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let status = r.status();
        let page = r.text().await.unwrap();
        assert_eq!(
            status,
            if path.contains("no-such") { 404 } else { 200 },
            "{path}: {page}"
        );
        assert_no_inline_code(&page, &path);
        assert!(
            !page.contains(ADMIN) && !page.contains(VIEWER),
            "{path} shows a token"
        );
    }
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_admin_session_and_the_console_origin() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir, &toml(&dir.path().join("t.db"), &[&hook.url], 5, "")).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let admin = web.login(ADMIN).await;
    let viewer = web.login(VIEWER).await;
    let open = format!(
        "/console/endpoints/{}/open",
        hook.endpoint.replace(':', "%3A").replace('/', "%2F")
    );
    let breaker = svc.state.engine.breakers().get(&hook.endpoint).unwrap();
    // The viewer reads, sees no write button, and may not write.
    let page = web.get("/console", Some(&viewer)).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        !page.contains("data-confirm") && page.contains("viewer"),
        "{page}"
    );
    assert_eq!(
        web.post(&open, Some(&viewer), Some(&base), &[])
            .await
            .status(),
        403
    );
    assert_eq!(web.get(&open, Some(&viewer)).await.status(), 403);
    // Another origin, no origin at all, a look-alike referer.
    for origin in [
        "http://evil.example",
        "null",
        &base.replace("http:", "https:"),
    ] {
        let r = web.post(&open, Some(&admin), Some(origin), &[]).await;
        assert_eq!(r.status(), 403, "{origin}");
    }
    assert_eq!(web.post(&open, Some(&admin), None, &[]).await.status(), 403);
    let r = web
        .client
        .post(format!("{base}{open}"))
        .header("cookie", &admin)
        .header("referer", format!("{base}.evil.example/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Login and logout are writes too.
    let r = web
        .post(
            "/console/login",
            None,
            Some("http://evil.example"),
            &[("token", ADMIN)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(breaker.state(), breakwater::CircuitState::Closed);
    // The confirmation page, then the write itself, from the console.
    let page = web.get(&open, Some(&admin)).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Open the breaker of"));
    let r = web
        .client
        .post(format!("{base}{open}"))
        .header("cookie", &admin)
        .header("referer", format!("{base}{open}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(breaker.state(), breakwater::CircuitState::Open);
    // The write is in the audit log, under the token's fingerprint.
    let audit = web
        .get("/console/audit", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    let who = breakwater_dispatch::auth::actor(ADMIN);
    assert!(
        audit.contains(&who) && audit.contains(&hook.endpoint),
        "{audit}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_is_changed_by_a_reload() {
    let hook = Hook::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let text = toml(&dir.path().join("t.db"), &[&hook.url], 5, "")
        .replace("BW_CONSOLE_VIEWER_TOKEN", "BW_CONSOLE_RELOADED_VIEWER");
    std::env::set_var("BW_CONSOLE_RELOADED_VIEWER", "first-viewer-token");
    let svc = start(&dir, &text).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let viewer = web.login("first-viewer-token").await;
    let admin = web.login(ADMIN).await;
    assert_eq!(web.get("/console", Some(&viewer)).await.status(), 200);
    std::env::set_var("BW_CONSOLE_RELOADED_VIEWER", "second-viewer-token");
    svc.state
        .reload(breakwater_dispatch::config::Config::parse(&text).unwrap())
        .unwrap();
    assert_eq!(web.get("/console", Some(&viewer)).await.status(), 303);
    assert_eq!(web.get("/console", Some(&admin)).await.status(), 200);
    let again = web.login("second-viewer-token").await;
    assert_eq!(web.get("/console", Some(&again)).await.status(), 200);
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_under_100_kb_with_long_answers_and_many_dead_letters() {
    // Every attempt is answered with a 60 KB body; every action fails for
    // good (400) and is dead-lettered.
    let body = format!("{{\"error\":\"<{}>\"}}", "x".repeat(60_000));
    let hook = Hook::start(400, &body).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[history]\nresponse_body_bytes = 65536\n";
    let svc = start(
        &dir,
        &toml(
            &dir.path().join("t.db"),
            &[&hook.url, &hook.url.replace("/hook", "/hook?b")],
            5,
            extra,
        ),
    )
    .await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(post_events(&base, 40).await);
    }
    let store = svc.state.engine.store().clone();
    wait_for("every action dead-lettered", LIMIT, || {
        let store = store.clone();
        async move {
            store.counts().await.unwrap().iter().any(|(s, n)| {
                *s == breakwater_dispatch::store::ActionStatus::DeadLettered && *n == 240
            })
        }
    })
    .await;
    let cookie = web.login(ADMIN).await;
    let endpoint = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    for path in [
        "/console".to_string(),
        format!("/console/endpoints/{endpoint}"),
        "/console/events".to_string(),
        format!("/console/events/{}", ids[0]),
        "/console/dead-letters".to_string(),
        "/console/replays".to_string(),
        "/console/audit".to_string(),
    ] {
        let r = web.get(&path, Some(&cookie)).await;
        assert_eq!(r.status(), 200, "{path}");
        let page = r.text().await.unwrap();
        assert!(page.len() <= 100 * 1024, "{path}: {} bytes", page.len());
        // The receiver's `<` is escaped, never markup.
        assert!(!page.contains("<xxxx"), "{path}: unescaped body");
    }
    let event = web
        .get(&format!("/console/events/{}", ids[0]), Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        event.contains("&lt;xxxx"),
        "the body's start is shown, escaped"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_shows_a_secret() {
    let hook = Hook::start(503, "{\"error\":\"down\"}").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let mut text = toml(&dir.path().join("t.db"), &[], 2, "");
    text.push_str(&format!(
        "[[observers.actions]]\ntype = \"webhook\"\nurl = \"{}\"\nsigning_secret = \"{secret}\"\n\
         headers = {{ X-Customer = \"customer-private-value\", X-Api-Key = \"api-key-private-value\" }}\n",
        hook.url
    ));
    let svc = start(&dir, &text).await;
    let base = format!("http://{}", svc.addr);
    let web = Web::new(&base);
    let ids = post_events(&base, 1).await;
    let store = svc.state.engine.store().clone();
    wait_for("the action dead-lettered", LIMIT, || {
        let store = store.clone();
        async move {
            store.counts().await.unwrap().iter().any(|(s, n)| {
                *s == breakwater_dispatch::store::ActionStatus::DeadLettered && *n == 1
            })
        }
    })
    .await;
    let cookie = web.login(ADMIN).await;
    let endpoint = hook.endpoint.replace(':', "%3A").replace('/', "%2F");
    for path in [
        "/console".to_string(),
        format!("/console/endpoints/{endpoint}"),
        "/console/events".to_string(),
        format!("/console/events/{}", ids[0]),
        "/console/dead-letters".to_string(),
        "/console/audit".to_string(),
    ] {
        let page = web.get(&path, Some(&cookie)).await.text().await.unwrap();
        for secret in [
            secret,
            "C2FVsBQIhrscChlQIMV",
            "customer-private-value",
            "api-key-private-value",
            ADMIN,
        ] {
            assert!(!page.contains(secret), "{path} shows {secret}");
        }
    }
    // The headers are named; the signature (which cannot give the secret
    // back) is shown.
    let event = web
        .get(&format!("/console/events/{}", ids[0]), Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(event.to_ascii_lowercase().contains("x-customer"), "{event}");
    assert!(event.contains("value not shown"));
    assert!(
        event.contains("webhook-signature</span>: <span class=\"mono\">v1,"),
        "{event}"
    );
    svc.shutdown(Duration::from_secs(5)).await;
}
