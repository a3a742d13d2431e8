//! The console in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), with JavaScript on and off: logging in, an endpoint
//! opening and closing during a run, an event's attempts, a dead letter
//! replayed and delivered, a flow by keyboard alone, axe-core on every
//! view, no request leaving the console's origin, and writes refused
//! without the session or from another origin.

mod console_support;

use console_support::browser::{Driver, ONE_AT_A_TIME};
use console_support::{post_events, start, toml, Hook, ADMIN};

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
