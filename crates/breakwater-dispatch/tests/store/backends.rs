//! The backends the suite runs against, and what it asks of each.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use breakwater_dispatch::store::{SqliteStore, Store};
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
