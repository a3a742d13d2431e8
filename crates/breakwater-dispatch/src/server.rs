//! Running the service: the HTTP listener, the engine, and the signals.
//!
//! SIGHUP re-reads the configuration file: a file with problems is refused
//! (each logged) and the old configuration keeps running; a good one is put
//! in force with every breaker keeping its state (`listen` and `store` need
//! a restart). SIGTERM (or Ctrl-C) stops intake (the listener closes), lets running
//! deliveries finish within `shutdown_grace_ms`, and leaves everything else
//! stored for the next start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use breakwater::traits::ActionExecutor;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppState, Tokens};
use crate::config::{Config, StoreLocation};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::store::{PostgresStore, SqliteStore, Store, StoreFile};

/// A running service.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub state: Arc<AppState>,
    stop: CancellationToken,
    http: JoinHandle<()>,
}

/// The `/metrics` registry: the service's series and the breakers'.
fn registry(engine: &Engine) -> Registry {
    let mut registry = Registry::default();
    engine.metrics().register(&mut registry);
    registry.register_collector(Box::new(
        breakwater::prometheus::BreakerCollector::for_registry(engine.breakers().clone()),
    ));
    registry
}

/// Starts the engine over `store` and the HTTP API on `listen`.
///
/// # Errors
///
/// When the store cannot be read or the address cannot be bound.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    executor: Arc<dyn ActionExecutor>,
    listen: SocketAddr,
) -> anyhow::Result<Running> {
    let tokens = Tokens::from_env(&config);
    start_with_tokens(config, store, executor, listen, tokens).await
}

/// [`start`] with `tokens` given rather than read from the environment
/// (the demo makes its own admin token). A reload reads them from the
/// environment again.
///
/// # Errors
///
/// When the store cannot be read or the address cannot be bound.
pub async fn start_with_tokens(
    config: Config,
    store: Arc<dyn Store>,
    executor: Arc<dyn ActionExecutor>,
    listen: SocketAddr,
    tokens: Tokens,
) -> anyhow::Result<Running> {
    let limits = config.http.clone();
    let engine = Engine::start(store.clone(), executor, &config, Metrics::default())
        .await
        .context("starting the delivery engine")?;
    // Replay jobs of an instance that stopped or died: resumed here.
    tokio::spawn(crate::replay::adopt(store, engine.clone()));
    let registry = registry(&engine);
    let state = AppState::new(engine, config, tokens, registry);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let router = app::router(state.clone());
    let until = stop.clone();
    let http = tokio::spawn(crate::http::serve(listener, router, limits, until));
    Ok(Running {
        addr,
        state,
        stop,
        http,
    })
}

impl Running {
    /// Stops intake, waits up to `grace` for running deliveries, closes the store.
    pub async fn shutdown(self, grace: Duration) {
        let engine = self.state.engine.clone();
        // Intake refuses first (503), then the listener closes.
        let drain = tokio::spawn(async move { engine.shutdown(grace).await });
        self.stop.cancel();
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), self.http).await;
        let _ = drain.await;
    }
}

/// Re-reads `path` and puts it in force, or logs why not.
pub fn reload(state: &AppState, path: &Path) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let old = state.config();
            if config.listen != old.listen
                || config.store != old.store
                || config.store_password_env != old.store_password_env
                || config.store_schema != old.store_schema
                || config.fleet != old.fleet
            {
                tracing::warn!(
                    "listen, store, store_password_env, store_schema and [fleet] take effect \
                     at the next start only; the service keeps {} and {}",
                    old.listen,
                    old.store
                );
            }
            reload_checked(state, path, config)
        }
        Err(e) => {
            for p in &e.problems {
                tracing::error!(problem = %p, "new configuration refused; the old one keeps running");
            }
            false
        }
    }
}

/// Puts a checked `config` in force.
fn reload_checked(state: &AppState, path: &Path, config: Config) -> bool {
    // The rest of the file is in force even when an endpoint's breaker
    // keeps its old settings.
    if let Err(refused) = state.reload(config) {
        for (endpoint, reason) in refused {
            tracing::warn!(%endpoint, %reason, "breaker settings refused on reload");
        }
    }
    tracing::info!(path = %path.display(), "configuration reloaded");
    true
}

/// `breakwater serve --config FILE`: runs until SIGTERM or Ctrl-C.
///
/// # Errors
///
/// When the configuration, the store or the listener fails at start.
pub async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (store, _lock) = open_store(&config, StoreUse::Serve).await?;
    let executor = crate::executor::default_executor().map_err(|e| anyhow::anyhow!(e))?;
    let listen = config.listen;
    let grace = Duration::from_millis(config.delivery.shutdown_grace_ms);
    let running = start(config, store, executor, listen).await?;
    tracing::info!(addr = %running.addr, "breakwater listening");
    println!("breakwater listening on http://{}", running.addr);
    wait_for_stop(&running.state, &path).await;
    tracing::info!("stopping: intake closed, draining deliveries");
    running.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUse {
    /// To serve: a SQLite file is locked for this process and every claim
    /// in it released; a Postgres instance takes its lease.
    Serve,
    /// For a tool beside running services (`dlq`, `migrate`): a SQLite
    /// file is neither locked nor are its claims released; on Postgres the
    /// tool takes a lease of its own name, holding nothing.
    Tool,
}

/// Opens the configured store: a SQLite file (locked for `serve`), or the
/// Postgres database (migrated under a lock, this instance's lease taken).
/// The returned lock, if any, is held as long as the store is used.
///
/// # Errors
///
/// When the store cannot be opened, is locked by another `serve`, or (a
/// tool) the SQLite file does not exist.
pub async fn open_store(
    config: &Config,
    purpose: StoreUse,
) -> anyhow::Result<(Arc<dyn Store>, Option<StoreFile>)> {
    match &config.store {
        StoreLocation::Sqlite(path) => {
            if purpose == StoreUse::Tool {
                // Reading a store that is not there would create an empty one.
                if !path.exists() {
                    anyhow::bail!(
                        "no store at {} (the configuration's `store`, relative to the working \
                         directory); `serve` creates it",
                        path.display()
                    );
                }
                let store = SqliteStore::open_shared(path)
                    .with_context(|| format!("opening the store {}", path.display()))?;
                return Ok((Arc::new(store), None));
            }
            // One instance per store file: a second one would deliver
            // everything the first does, again.
            let lock = lock_store(path)?;
            let store = SqliteStore::open(path)
                .with_context(|| format!("opening the store {}", path.display()))?;
            Ok((Arc::new(store), Some(lock)))
        }
        StoreLocation::Postgres(url) => {
            let mut options = crate::config::postgres_options(
                url,
                config.store_password_env.as_deref(),
                &config.store_schema,
                &config.fleet,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            if purpose == StoreUse::Tool {
                options.instance = format!("tool-{}", options.instance);
                options.pool_size = 2;
            }
            // A service waits for its database (started together, or
            // restarting); a tool does not.
            let give_up = (purpose == StoreUse::Tool).then_some(Duration::ZERO);
            let store = PostgresStore::connect_waiting(options, give_up)
                .await
                .with_context(|| format!("opening the store {url}"))?;
            tracing::info!(
                instance = store.instance(),
                epoch = store.epoch(),
                "connected to the Postgres store; this instance's lease is taken"
            );
            Ok((Arc::new(store), None))
        }
    }
}

/// Takes the one-service lock on the store's database file itself (so a
/// link to it, symbolic or hard, is the same store), held until the
/// returned file is dropped (or the process ends, however it ends).
///
/// # Errors
///
/// When another process holds it (named, where the system says which), or
/// the file cannot be opened.
pub fn lock_store(store: &Path) -> anyhow::Result<StoreFile> {
    let file =
        StoreFile::open(store).with_context(|| format!("opening the store {}", store.display()))?;
    file.lock().map_err(|e| anyhow::anyhow!(e))?;
    Ok(file)
}

#[cfg(unix)]
async fn wait_for_stop(state: &AppState, path: &Path) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                reload(state, path);
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop(_state: &AppState, _path: &Path) {
    let _ = tokio::signal::ctrl_c().await;
}
