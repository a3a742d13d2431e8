//! The backends the suite runs against, and what it asks of each.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use breakwater_dispatch::pg_cluster::PgCluster;
use breakwater_dispatch::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use tempfile::TempDir;

/// A backend the suite runs against.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// A new, empty store, on a database of its own (tests run in
    /// parallel and never see each other's data).
    async fn fresh(&self) -> Box<dyn Handle>;
}

/// One store under test and the database behind it.
#[async_trait]
pub(crate) trait Handle: Send {
    /// The store (the same one until [`reopen`](Handle::reopen)).
    fn store(&self) -> Arc<dyn Store>;

    /// Closes the store and opens the same database again, as a restarted
    /// single instance would: what was stored is all there, and the claims
    /// this instance held are released (its waiting actions are backlog
    /// again). The store closed may already have been closed by the test.
    async fn reopen(&mut self);

    /// Closes the store at the end of a test (the database may go).
    async fn close(&mut self) {
        self.store().close().await;
    }
}

/// The embedded SQLite store, on a file in a temporary directory.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SqliteBackend;

#[async_trait]
impl Backend for SqliteBackend {
    async fn fresh(&self) -> Box<dyn Handle> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("store.db");
        let store = open_sqlite(&path);
        Box::new(SqliteHandle {
            store,
            path,
            _dir: dir,
        })
    }
}

fn open_sqlite(path: &std::path::Path) -> Arc<SqliteStore> {
    match SqliteStore::open(path) {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("opening {}: {e}", path.display()),
    }
}

/// A [`SqliteStore`] and its file. The store is declared first so that it
/// is dropped before the directory is removed.
#[derive(Debug)]
struct SqliteHandle {
    store: Arc<SqliteStore>,
    path: PathBuf,
    _dir: TempDir,
}

#[async_trait]
impl Handle for SqliteHandle {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        // `open` releases every claim: this process owns all the work.
        self.store = open_sqlite(&self.path);
    }
}

/// The Postgres store, each test on a schema of its own in one throwaway
/// cluster shared by the tests that run at the same time (started by the
/// first, stopped when the last lets go of it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PostgresBackend;

/// The cluster the running tests share, while any holds it.
static CLUSTER: std::sync::Mutex<std::sync::Weak<PgCluster>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// Numbers the schemas and instances of this run.
pub(crate) static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The cluster the running tests share (started when none runs).
pub(crate) async fn shared_cluster() -> Arc<PgCluster> {
    tokio::task::spawn_blocking(|| {
        let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.upgrade() {
            return c;
        }
        let cluster = match PgCluster::start() {
            Ok(c) => Arc::new(c),
            Err(e) => panic!("starting a throwaway Postgres cluster: {e}"),
        };
        *slot = Arc::downgrade(&cluster);
        cluster
    })
    .await
    .expect("starting the cluster")
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn fresh(&self) -> Box<dyn Handle> {
        let cluster = shared_cluster().await;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = PostgresOptions::new(cluster.url());
        options.password = Some(cluster.password().to_string());
        options.schema = format!("conformance_{}_{n}", std::process::id());
        options.instance = format!("conformance-{n}");
        options.pool_size = 4;
        let store = connect(options.clone()).await;
        Box::new(PostgresHandle {
            store,
            options,
            _cluster: cluster,
        })
    }
}

async fn connect(options: PostgresOptions) -> Arc<PostgresStore> {
    match PostgresStore::connect(options).await {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("connecting to the throwaway cluster: {e}"),
    }
}

/// A [`PostgresStore`] on its own schema, and the cluster it lives in.
#[derive(Debug)]
struct PostgresHandle {
    store: Arc<PostgresStore>,
    options: PostgresOptions,
    _cluster: Arc<PgCluster>,
}

#[async_trait]
impl Handle for PostgresHandle {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        // The same instance name: a restarted instance takes a new lease,
        // and the claims of its earlier one are released.
        self.store = connect(self.options.clone()).await;
    }
}
