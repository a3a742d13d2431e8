//! Real headless Chromium for the console's tests: Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver (fantoccini) from a
//! chromedriver this module starts on a free loopback port. Nothing is
//! downloaded: missing programs fail the test with the apt line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to reach a state the test waits for.
pub const WAIT: Duration = Duration::from_secs(45);

/// Browser tests run one at a time: each starts a browser, and two cores
/// do not run several well.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver process, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where axe-core's script is, installed by `npm ci`.
pub fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js")
}

/// axe-core's script.
pub fn axe_source() -> String {
    std::fs::read_to_string(axe_path()).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing ({}: {e}); run: npm ci --prefix crates/breakwater-dispatch/tests/browser",
            axe_path().display()
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// Starts chromedriver and waits until it is ready.
    pub async fn start() -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the console's browser tests need Debian's Chromium; \
                 install them: apt-get install -y chromium chromium-driver"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{CHROMEDRIVER} did not start ({e}); install them: apt-get install -y chromium chromium-driver")
            });
        let url = format!("http://127.0.0.1:{port}");
        let driver = Self { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/status", driver.url))
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready {
                if let Ok(v) = body.await {
                    if v["value"]["ready"] == json!(true) {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new headless browser (its own profile), with JavaScript on or off.
    pub async fn browser(&self, javascript: bool) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut prefs = json!({});
        if !javascript {
            prefs = json!({ "profile.managed_default_content_settings.javascript": 2 });
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args, "prefs": prefs }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}; install them: apt-get install -y chromium chromium-driver"));
        Browser {
            client,
            javascript,
            _profile: profile,
        }
    }
}

/// One browser session.
pub struct Browser {
    pub client: Client,
    pub javascript: bool,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css}: {e}\n{page}")
            }
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits until the page's path (and query) satisfies `ok` (a click
    /// that submits a form returns before the next page is there).
    pub async fn wait_path(&self, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            let ready = self
                .client
                .execute("return document.readyState;", vec![])
                .await
                .map(|v| v == json!("complete"))
                .unwrap_or(false);
            if ok(&path) && ready {
                return path;
            }
            assert!(Instant::now() < deadline, "timed out at {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in through the form with `token`.
    pub async fn login(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console/login")).await;
        self.find("#token").await.send_keys(token).await.unwrap();
        self.find("form.login button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        let path = self.wait_path(|p| p != "/console/login").await;
        if path != "/console" {
            let page = self.client.source().await.unwrap_or_default();
            panic!("logging in led to {path}:\n{page}");
        }
    }

    /// Waits until `css`'s text satisfies `ok`; reloads the page between
    /// looks when `reload` (JavaScript off), else lets the page refresh
    /// itself.
    pub async fn wait_text(
        &self,
        css: &str,
        reload: bool,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if ok(&t) {
                        return t;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({css})"
            );
            if reload {
                self.client.refresh().await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Presses `key` (a WebDriver key action: down, then up).
    pub async fn press(&self, key: Key) {
        let c: char = key.into();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: c })
            .then(KeyAction::Up { value: c });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Types `text`, a key action per character.
    pub async fn type_keys(&self, text: &str) {
        let mut keys = KeyActions::new("keyboard".into());
        for c in text.chars() {
            keys = keys
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Presses Tab until the focused element matches `css` (at most
    /// `limit` times); returns it.
    pub async fn tab_to(&self, css: &str, limit: usize) -> Element {
        let wanted: Vec<String> = {
            let mut ids = Vec::new();
            for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
                ids.push(e.element_id().to_string());
            }
            ids
        };
        assert!(!wanted.is_empty(), "nothing matches {css}");
        for _ in 0..limit {
            self.press(Key::Tab).await;
            let active = self.client.active_element().await.unwrap();
            if wanted.contains(&active.element_id().to_string()) {
                return active;
            }
        }
        panic!("{limit} presses of Tab did not reach {css}");
    }

    /// axe-core's serious and critical violations on the page, as
    /// "rule: impact: where" lines.
    pub async fn axe(&self, source: &str) -> Vec<String> {
        self.client.execute(source, vec![]).await.unwrap();
        let result = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   axe.run(document, { resultTypes: ["violations"] })
                     .then(r => done(JSON.stringify(r.passes.length > 0 ? r.violations
                        : [{ id: "axe-ran-nothing", impact: "critical", help: "no rule passed", nodes: [] }])))
                     .catch(e => done(JSON.stringify([{ id: "axe-error", impact: "critical", help: String(e), nodes: [] }])));"#,
                vec![],
            )
            .await
            .unwrap();
        let violations: Vec<Value> = serde_json::from_str(result.as_str().unwrap()).unwrap();
        violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["target"].to_string())
                    .collect();
                format!(
                    "{}: {}: {} ({})",
                    v["id"].as_str().unwrap_or(""),
                    v["impact"].as_str().unwrap_or(""),
                    v["help"].as_str().unwrap_or(""),
                    targets.join(" ")
                )
            })
            .collect()
    }

    /// Every resource the page loaded, by URL.
    pub async fn resources(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    pub async fn screenshot(&self, to: &Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(to, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
