//! The fleet demo's instances: each a `serve` child of this binary with a
//! configuration file of its own, started, read and stopped.

use super::*;

/// One row of an instance's `GET /breakers`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Row {
    pub(super) endpoint: String,
    pub(super) state: String,
    #[serde(default)]
    pub(super) disabled: bool,
    pub(super) delivered: u64,
    pub(super) pending: u64,
    pub(super) backlog: u64,
    pub(super) in_flight: u64,
}

impl Row {
    pub(super) fn state_name(&self) -> String {
        if self.disabled {
            "DISABLED".into()
        } else {
            self.state.to_uppercase()
        }
    }
}

/// Where an instance stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Status {
    Live,
    /// Killed by the demo, this long after the start of the run.
    Killed(Duration),
    /// Exited on its own.
    Exited(String),
}

/// One `serve` child.
pub(super) struct Instance {
    pub(super) name: String,
    /// `http://ADDR`.
    pub(super) url: String,
    pub(super) child: Option<Child>,
    pub(super) log: PathBuf,
    /// Its `GET /breakers` rows, as last seen.
    pub(super) rows: Vec<Row>,
    pub(super) status: Status,
}

impl Instance {
    pub(super) fn delivered(&self, endpoint: &str) -> u64 {
        self.rows
            .iter()
            .find(|r| r.endpoint == endpoint)
            .map_or(0, |r| r.delivered)
    }
}

/// The hooks of `config`, signed.
pub(super) fn sign_hooks(config: &mut Config) {
    for observer in &mut config.observers {
        for action in &mut observer.actions {
            if let ActionConfig::Webhook(hook) = action {
                hook.signing_secret = Some(SIGNING_SECRET.into());
            }
        }
    }
}

/// `base` as instance `name`'s configuration.
pub(super) fn instance_config(base: &Config, name: &str, listen: SocketAddr, url: &str) -> Config {
    let mut c = base.clone();
    c.listen = listen;
    c.store = StoreLocation::Postgres(url.to_string());
    c.store_password_env = Some(PASSWORD_ENV.into());
    c.admin_token_env = Some(ADMIN_ENV.into());
    c.fleet = FleetConfig {
        instance: Some(name.to_string()),
        lease_ms: LEASE_MS,
        heartbeat_ms: HEARTBEAT_MS,
    };
    c
}

/// The TOML text of `config`: the keys the demo sets. It is read back and
/// compared, so that a setting the text misses cannot go unnoticed.
pub(super) fn to_toml(config: &Config) -> anyhow::Result<String> {
    use toml::{Table as T, Value as V};
    let int = |n: u64| V::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let mut top = T::new();
    top.insert("listen".into(), V::String(config.listen.to_string()));
    top.insert("store".into(), V::String(config.store.to_string()));
    if let Some(var) = &config.store_password_env {
        top.insert("store_password_env".into(), V::String(var.clone()));
    }
    top.insert(
        "store_schema".into(),
        V::String(config.store_schema.clone()),
    );
    if let Some(var) = &config.admin_token_env {
        top.insert("admin_token_env".into(), V::String(var.clone()));
    }
    let mut fleet = T::new();
    if let Some(name) = &config.fleet.instance {
        fleet.insert("instance".into(), V::String(name.clone()));
    }
    fleet.insert("lease_ms".into(), int(config.fleet.lease_ms));
    fleet.insert("heartbeat_ms".into(), int(config.fleet.heartbeat_ms));
    top.insert("fleet".into(), V::Table(fleet));
    let mut breakers = match V::try_from(&config.circuit_breaker.defaults)? {
        V::Table(t) => t,
        other => bail!("breaker settings serialized as {other}"),
    };
    let mut endpoints = T::new();
    for (endpoint, c) in &config.circuit_breaker.endpoints {
        endpoints.insert(endpoint.clone(), V::try_from(c)?);
    }
    breakers.insert("endpoints".into(), V::Table(endpoints));
    top.insert("circuit_breaker".into(), V::Table(breakers));
    let mut retry = T::new();
    retry.insert("max_attempts".into(), int(config.retry.max_attempts.into()));
    retry.insert("backoff_ms".into(), int(config.retry.backoff_ms));
    retry.insert("max_backoff_ms".into(), int(config.retry.max_backoff_ms));
    top.insert("retry".into(), V::Table(retry));
    let mut delivery = T::new();
    delivery.insert(
        "max_in_flight_per_endpoint".into(),
        int(config.delivery.max_in_flight_per_endpoint as u64),
    );
    top.insert("delivery".into(), V::Table(delivery));
    let mut observers = Vec::new();
    for o in &config.observers {
        let mut t = T::new();
        t.insert("name".into(), V::String(o.name.clone()));
        t.insert("entity_type".into(), V::String(o.entity_type.clone()));
        t.insert("event_type".into(), V::try_from(o.event_type)?);
        let mut actions = Vec::new();
        for a in &o.actions {
            let mut action = V::try_from(a)?;
            // No `[observers.actions.headers]` when there are none.
            if let V::Table(t) = &mut action {
                if t.get("headers")
                    .and_then(V::as_table)
                    .is_some_and(T::is_empty)
                {
                    t.remove("headers");
                }
            }
            actions.push(action);
        }
        t.insert("actions".into(), V::Array(actions));
        observers.push(V::Table(t));
    }
    top.insert("observers".into(), V::Array(observers));
    let text = toml::to_string(&top)?;
    let back = Config::parse(&text).map_err(|e| anyhow!("{e}"))?;
    if &back != config {
        bail!("the configuration written for the fleet does not read back the same:\n{text}");
    }
    Ok(text)
}

/// Starts instance `index` (`bw-{index + 1}`) and waits for its address.
pub(super) async fn start_instance(
    exe: &Path,
    dir: &Path,
    config: &Config,
    password: &str,
    admin: &str,
    index: usize,
) -> anyhow::Result<Instance> {
    let name = format!("bw-{}", index + 1);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, to_toml(config)?)
        .with_context(|| format!("writing {}", file.display()))?;
    let log = dir.join(format!("{name}.log"));
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .env(PASSWORD_ENV, password)
        .env(ADMIN_ENV, admin)
        // Warnings (a lease taken over) and errors go to its log file.
        .env("BREAKWATER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", exe.display()))?;
    let stdout = child.stdout.take().context("the child's standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let addr = match first {
        Ok(Ok(Some(line))) => line
            .strip_prefix("breakwater listening on http://")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok()),
        _ => None,
    };
    let Some(addr) = addr else {
        let _ = child.kill().await;
        bail!(
            "{name} did not start (no \"breakwater listening on\" line); the end of its log:\n{}",
            log_tail(&log, 20)
        );
    };
    // Whatever else it prints is read and dropped.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Instance {
        name,
        url: format!("http://{addr}"),
        child: Some(child),
        log,
        rows: Vec::new(),
        status: Status::Live,
    })
}

pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the N instances together.
pub(super) async fn start_fleet(
    base: &Config,
    cluster: &PgCluster,
    dir: &Path,
    n: usize,
    listen: SocketAddr,
    admin: &str,
) -> anyhow::Result<Vec<Instance>> {
    let exe = std::env::current_exe().context("finding this program")?;
    // A taken --listen port falls back to a free one, as in the plain demo.
    let first = match std::net::TcpListener::bind(listen) {
        Ok(probe) => {
            drop(probe);
            listen
        }
        Err(e) => {
            eprintln!("cannot listen on {listen} ({e}); bw-1 uses a free port instead");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let free = SocketAddr::from(([127, 0, 0, 1], 0));
    let url = cluster.url();
    let starts = (0..n).map(|i| {
        let config = instance_config(
            base,
            &format!("bw-{}", i + 1),
            if i == 0 { first } else { free },
            &url,
        );
        let exe = exe.clone();
        async move { start_instance(&exe, dir, &config, cluster.password(), admin, i).await }
    });
    futures_util::future::join_all(starts)
        .await
        .into_iter()
        .collect()
}

pub(super) async fn fetch_rows(client: &reqwest::Client, url: &str) -> Option<Vec<Row>> {
    let answer = client
        .get(format!("{url}/breakers"))
        .timeout(Duration::from_millis(900))
        .send()
        .await
        .ok()?;
    answer.json::<Vec<Row>>().await.ok()
}

/// Stops every child still running: SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`].
pub(super) async fn stop_fleet(instances: &mut [Instance]) {
    for inst in instances.iter() {
        if let Some(pid) = inst.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let waits = instances
        .iter_mut()
        .filter_map(|i| i.child.take())
        .map(|mut child| async move {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        });
    futures_util::future::join_all(waits).await;
}
