//! Postgres storage: any number of `serve` instances share one database.
//!
//! Tables live in one schema ([`PostgresOptions::schema`]), created and
//! migrated at start under an advisory lock ([`schema`]). Each instance
//! holds a lease (`lease.rs`); every action it claims names it and the
//! lease's epoch, and every outcome it writes matches them, so an instance
//! that lost its lease changes nothing (its late outcomes are counted and
//! logged). Claims are batched and short (`FOR UPDATE SKIP LOCKED`); no
//! transaction is ever held across a delivery.
//!
//! Events are kept as their compact JSON text (never `jsonb`, which would
//! reorder keys and reformat numbers): delivered exactly as received.

mod history;
mod insert;
mod lease;
mod options;
mod outcomes;
mod queries;
pub mod schema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use breakwater::traits::ActionConfig;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::insert::{InsertJob, INSERT_WRITERS};
use self::lease::Lease;
pub use self::options::{check_schema, PostgresOptions};
use self::outcomes::Batch;
use self::queries::{row_to_pending, row_to_record};
use self::schema::{backend, describe, migrate, Migrated};
use super::{
    now_ms, rfc3339, ActionFilter, ActionId, ActionPage, ActionRecord, ActionStatus, AttemptRecord,
    AuditEntry, Backlog, Claimed, DeadLetter, EndpointCounts, EventRecord, FleetStatus, Inserted,
    NewEvent, ReplayJob, ReplayState, Store, StoreError, StoreResult, Update,
};

/// A configured action: its observer and JSON.
type SpecKey = (Arc<str>, Arc<str>);

/// Postgres storage (see the [module docs](self)).
pub struct PostgresStore {
    pool: Pool,
    lease: Arc<Lease>,
    /// Each endpoint's number, once known.
    lanes: Mutex<HashMap<Arc<str>, i32>>,
    /// Each configured action's spec id, by observer and action JSON.
    specs: Mutex<HashMap<SpecKey, (i32, i32)>>,
    /// The rest of this instance's block of action ids.
    ids: Mutex<std::ops::Range<i64>>,
    /// Inserts waiting for a writer.
    inserts: Mutex<std::collections::VecDeque<InsertJob>>,
    /// The writers' places ([`INSERT_WRITERS`]).
    writers: tokio::sync::Semaphore,
    /// Outcomes that matched no claim of this instance's current lease.
    stale: Arc<AtomicU64>,
    /// Whether the last use of the database failed.
    down: Arc<AtomicBool>,
    stop: CancellationToken,
    options: PostgresOptions,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.lease.instance)
            .field("schema", &self.options.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, migrates the schema (under a lock), takes this instance's
    /// lease (releasing any claims an earlier run under the same instance
    /// name still held) and starts its heartbeat.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached, the URL is not
    /// valid or holds a password, or the schema is newer than this binary.
    pub async fn connect(options: PostgresOptions) -> StoreResult<Self> {
        let pool = pool(&options)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        Self::start_with(pool, &mut client, options).await
    }

    /// [`connect`](Self::connect), waiting for a database that cannot be
    /// reached yet (not started, restarting, a network outage): tried again
    /// with a backoff from half a second to ten, each failure logged, until
    /// `give_up` (if given) has passed. A refusal by the database itself (a
    /// wrong password, a missing database, a newer schema) fails at once.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_waiting(
        options: PostgresOptions,
        give_up: Option<Duration>,
    ) -> StoreResult<Self> {
        let started = tokio::time::Instant::now();
        let pool = pool(&options)?;
        let mut wait = Duration::from_millis(500);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match pool.get().await {
                Ok(mut client) => return Self::start_with(pool, &mut client, options).await,
                Err(e) if unreachable(&e) => {
                    let e = pool_error(e);
                    if give_up.is_some_and(|g| started.elapsed() + wait > g) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, tries, retry_in_ms = wait.as_millis() as u64,
                        "the Postgres store cannot be reached yet; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(pool_error(e)),
            }
        }
    }

    /// Migrates, takes the lease and starts the heartbeat, on `client`.
    async fn start_with(
        pool: Pool,
        client: &mut deadpool_postgres::Object,
        options: PostgresOptions,
    ) -> StoreResult<Self> {
        let client: &mut deadpool_postgres::Object = client;
        migrate(client, &options.schema).await?;
        let lease = Arc::new(Lease::new(options.instance.clone(), options.lease));
        lease.take(client).await?;
        let store = Self {
            pool,
            lease,
            lanes: Mutex::new(HashMap::new()),
            specs: Mutex::new(HashMap::new()),
            ids: Mutex::new(0..0),
            inserts: Mutex::new(std::collections::VecDeque::new()),
            writers: tokio::sync::Semaphore::new(INSERT_WRITERS),
            stale: Arc::new(AtomicU64::new(0)),
            down: Arc::new(AtomicBool::new(false)),
            stop: CancellationToken::new(),
            options,
        };
        store.start_heartbeat();
        Ok(store)
    }

    /// Connects and brings the schema up to date, nothing else (`breakwater
    /// migrate`).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn migrate(options: &PostgresOptions) -> StoreResult<Migrated> {
        let pool = pool(options)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        migrate(&mut client, &options.schema).await
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.lease.instance
    }

    /// The current lease's epoch.
    pub fn epoch(&self) -> i64 {
        self.lease.epoch()
    }

    /// Outcomes written since start that matched no claim of this
    /// instance's current lease (late, after a takeover), and so changed
    /// nothing.
    pub fn stale_outcomes(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Instances whose expired leases this one took over.
    pub fn taken_over(&self) -> u64 {
        self.lease.taken_over.load(Ordering::Relaxed)
    }

    fn start_heartbeat(&self) {
        let pool = self.pool.clone();
        let lease = self.lease.clone();
        let stop = self.stop.clone();
        let down = self.down.clone();
        let every = self.options.heartbeat.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let result = match pool.get().await {
                    Ok(mut c) => lease.beat(&mut c).await,
                    Err(e) => Err(pool_error(e)),
                };
                match result {
                    Ok(_) => down.store(false, Ordering::Relaxed),
                    Err(e) => {
                        lease.unreachable();
                        down.store(true, Ordering::Relaxed);
                        tracing::warn!(error = %e, instance = %lease.instance,
                            "renewing this instance's lease failed; tried again at the next heartbeat");
                    }
                }
            }
        });
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.down.store(true, Ordering::Relaxed);
                Err(pool_error(e))
            }
        }
    }

    /// `result`, noting whether the database answered.
    fn note<T>(&self, result: Result<T, tokio_postgres::Error>) -> StoreResult<T> {
        match result {
            Ok(v) => {
                self.down.store(false, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                if e.is_closed() || e.as_db_error().is_none() {
                    self.down.store(true, Ordering::Relaxed);
                }
                Err(backend(e))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pool(options: &PostgresOptions) -> StoreResult<Pool> {
    let config = options.pg_config()?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot make the connection pool: {e}")))
}

/// Whether `e` is the database out of reach (worth waiting for), rather
/// than a refusal by it.
fn unreachable(e: &deadpool_postgres::PoolError) -> bool {
    match e {
        deadpool_postgres::PoolError::Backend(e) => e.as_db_error().is_none(),
        deadpool_postgres::PoolError::Timeout(_) => true,
        _ => false,
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            StoreError::Backend(format!("cannot reach the database: {}", describe(&e)))
        }
        deadpool_postgres::PoolError::Timeout(_) => {
            StoreError::Backend("cannot reach the database: timed out".into())
        }
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        e => StoreError::Backend(format!("cannot reach the database: {e}")),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert(&self, events: Vec<NewEvent>) -> StoreResult<Vec<Inserted>> {
        let (done, result) = tokio::sync::oneshot::channel();
        lock(&self.inserts).push_back(InsertJob { events, done });
        self.write_inserts().await;
        result.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn prune_delivered(&self, before_ms: i64, limit: usize) -> StoreResult<u64> {
        let client = self.client().await?;
        let n = self.note(
            client
                .execute(
                    "WITH old AS (
                        SELECT e.id FROM events e
                        WHERE e.accepted_at < $1
                          AND NOT EXISTS (SELECT 1 FROM actions a
                                          WHERE a.event = e.id AND a.status <> 'delivered')
                        ORDER BY e.accepted_at LIMIT $2
                        FOR UPDATE SKIP LOCKED),
                     gone AS (DELETE FROM actions a USING old WHERE a.event = old.id
                              RETURNING a.id),
                     attempts_gone AS (DELETE FROM attempts t USING gone
                                       WHERE t.action_id = gone.id)
                     DELETE FROM events e USING old WHERE e.id = old.id",
                    &[&before_ms, &(limit as i64)],
                )
                .await,
        )?;
        Ok(n)
    }

    async fn claim_backlog(
        &self,
        endpoint: &str,
        limit: usize,
        due_by_ms: i64,
    ) -> StoreResult<Claimed> {
        let mut client = self.client().await?;
        let lane: Option<i32> = self
            .note(
                client
                    .query_opt(
                        "SELECT lane FROM endpoints WHERE endpoint = $1",
                        &[&endpoint],
                    )
                    .await,
            )?
            .map(|r| r.get(0));
        let Some(lane) = lane else {
            return Ok(Claimed::default());
        };
        // Read once: the claim and the actions handed back name one epoch.
        let epoch = self.lease.epoch();
        let t = self.note(client.transaction().await)?;
        // One more than the page, to know whether more is left (what
        // another instance is claiming now is not counted).
        let page = self.note(t.prepare_cached(queries::BACKLOG_PAGE).await)?;
        let mut ids: Vec<i64> = self
            .note(
                t.query(
                    &page,
                    &[&lane, &due_by_ms, &(limit.saturating_add(1) as i64)],
                )
                .await,
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let claim = self.note(t.prepare_cached(queries::CLAIM_IDS).await)?;
        let rows = self.note(t.query(&claim, &[&ids, &self.lease.instance, &epoch]).await)?;
        let actions = rows
            .iter()
            .map(|r| row_to_pending(r, epoch))
            .collect::<StoreResult<Vec<_>>>()?;
        self.note(t.commit().await)?;
        Ok(Claimed { actions, more })
    }

    async fn backlogged_endpoints(&self, due_by_ms: i64) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = self.note(client.query(queries::BACKLOGGED, &[&due_by_ms]).await)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        let client = self.client().await?;
        let rows = self.note(client.query(queries::BACKLOGS, &[]).await)?;
        Ok(rows
            .iter()
            .map(|r| Backlog {
                endpoint: r.get(0),
                waiting: r.get::<_, i64>(1).max(0) as u64,
                oldest_ms: r.get(2),
            })
            .collect())
    }

    async fn apply(&self, updates: Vec<Update>) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let batch = Batch::of(&updates);
        let mut client = self.client().await?;
        let (holder, epoch) = (&self.lease.instance, self.lease.epoch());
        // One statement is its own transaction (the usual batch: outcomes
        // of one kind, with their attempts); more go in one.
        let stale = if batch.statements() == 1 {
            batch.apply(&client, holder, epoch).await
        } else {
            let t = self.note(client.transaction().await)?;
            match batch.apply(&t, holder, epoch).await {
                Ok(n) => t.commit().await.map(|()| n),
                Err(e) => Err(e),
            }
        }
        .map_err(|e| self.note::<()>(Err(e)).unwrap_err())?;
        if stale > 0 {
            self.stale.fetch_add(stale, Ordering::Relaxed);
            tracing::warn!(outcomes = stale, instance = %self.lease.instance,
                "outcomes of actions this instance no longer holds (its lease was taken over) \
                 were ignored: another instance has them");
        }
        Ok(())
    }

    async fn event(&self, id: Uuid) -> StoreResult<Option<EventRecord>> {
        let client = self.client().await?;
        let Some(row) = self.note(
            client
                .query_opt("SELECT accepted_at FROM events WHERE id = $1", &[&id])
                .await,
        )?
        else {
            return Ok(None);
        };
        let accepted: i64 = row.get(0);
        let rows = self.note(client.query(queries::EVENT_ACTIONS, &[&id]).await)?;
        let mut actions: Vec<ActionRecord> = rows.iter().map(row_to_record).collect();
        self.fill_attempts(&client, &mut actions).await?;
        Ok(Some(EventRecord {
            id,
            accepted_at: rfc3339(accepted),
            actions,
        }))
    }

    async fn snapshots(&self) -> StoreResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT endpoint, snapshot FROM snapshots WHERE instance = $1
                     ORDER BY endpoint",
                    &[&self.lease.instance],
                )
                .await,
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn disabled_endpoints(&self) -> StoreResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT endpoint, COALESCE(disabled_reason, '') FROM endpoints
                     WHERE disabled ORDER BY endpoint",
                    &[],
                )
                .await,
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn release_held(&self, endpoint: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        self.note(
            client
                .execute(queries::RELEASE_HELD, &[&endpoint, &now_ms()])
                .await,
        )
    }

    async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(queries::DEAD_LETTERS, &[&(limit as i64)])
                .await,
        )?;
        Ok(rows.iter().map(row_to_record).collect())
    }

    async fn replay_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        let client = self.client().await?;
        self.note(
            client
                .execute(queries::REPLAY_DEAD_LETTERS, &[&now_ms(), &ids])
                .await,
        )
    }

    async fn purge_dead_letters(&self, ids: Option<Vec<ActionId>>) -> StoreResult<u64> {
        self.purge(ids.as_deref()).await
    }

    async fn oldest_pending_ms(&self) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let row = self.note(client.query_one(queries::OLDEST_PENDING, &[]).await)?;
        Ok(row.get(0))
    }

    async fn counts(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT status, COUNT(*) FROM actions GROUP BY status ORDER BY status",
                    &[],
                )
                .await,
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let s: String = r.get(0);
                (ActionStatus::parse(&s), r.get::<_, i64>(1).max(0) as u64)
            })
            .collect())
    }

    fn check(&self) -> StoreResult<()> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Backend(
                "cannot reach the database (reconnecting)".into(),
            ));
        }
        Ok(())
    }

    fn claim_epoch(&self) -> i64 {
        self.lease.epoch()
    }

    fn lease_confirmed(&self) -> bool {
        self.lease.confirmed()
    }

    async fn publish_admin(&self, endpoint: &str, op: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = self.note(
            client
                .query_one(
                    "INSERT INTO endpoints (endpoint, admin_op, admin_generation)
                     VALUES ($1, $2, 1)
                     ON CONFLICT (endpoint) DO UPDATE
                       SET admin_op = excluded.admin_op,
                           admin_generation = endpoints.admin_generation + 1
                     RETURNING admin_generation",
                    &[&endpoint, &op],
                )
                .await,
        )?;
        Ok(row.get(0))
    }

    async fn admin_commands(&self) -> StoreResult<Vec<(String, i64, String)>> {
        let client = self.client().await?;
        let rows = self.note(
            client
                .query(
                    "SELECT endpoint, admin_generation, admin_op FROM endpoints
                     WHERE admin_generation > 0 ORDER BY endpoint",
                    &[],
                )
                .await,
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn take_released(&self) -> bool {
        self.lease.released.swap(false, Ordering::AcqRel)
    }

    fn fleet_share(&self) -> Option<(usize, usize)> {
        Some(self.lease.share())
    }

    fn fleet(&self) -> Option<FleetStatus> {
        Some(FleetStatus {
            instance: self.lease.instance.clone(),
            epoch: self.lease.epoch(),
            stale_outcomes: self.stale_outcomes(),
            taken_over: self.taken_over(),
        })
    }

    async fn actions(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
        limit: usize,
    ) -> StoreResult<ActionPage> {
        self.list_actions(filter, before, limit).await
    }

    async fn count_actions(&self, filter: &ActionFilter) -> StoreResult<u64> {
        self.count_matching(filter).await
    }

    async fn action(&self, id: ActionId) -> StoreResult<Option<ActionRecord>> {
        self.one_action(id).await
    }

    async fn replay_actions(&self, ids: &[ActionId], job: Option<i64>) -> StoreResult<u64> {
        self.replay_ids(ids, job).await
    }

    async fn purge_actions(&self, ids: &[ActionId]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.purge(Some(ids)).await
    }

    async fn endpoint_attempts(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        self.attempts_of_endpoint(endpoint, before, limit).await
    }

    async fn endpoint_counts(&self) -> StoreResult<Vec<EndpointCounts>> {
        self.counts_by_endpoint().await
    }

    async fn audit(&self, entry: AuditEntry) -> StoreResult<i64> {
        self.add_audit(&entry).await
    }

    async fn audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.audit_entries(before, limit).await
    }

    async fn create_replay_job(
        &self,
        filter: &ActionFilter,
        actor: &str,
        total: u64,
        adoptable: bool,
    ) -> StoreResult<ReplayJob> {
        self.new_replay_job(filter, actor, total, adoptable).await
    }

    async fn update_replay_job(
        &self,
        id: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<Option<ReplayState>> {
        self.set_replay_job(id, replayed, cursor, state, error.as_deref())
            .await
    }

    async fn adopt_replay_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
        self.adopt_jobs().await
    }

    async fn cancel_replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>> {
        self.stop_replay_job(id).await?;
        self.one_replay_job(id).await
    }

    async fn replay_job(&self, id: i64) -> StoreResult<Option<ReplayJob>> {
        self.one_replay_job(id).await
    }

    async fn replay_jobs(&self, limit: usize) -> StoreResult<Vec<ReplayJob>> {
        self.list_replay_jobs(limit).await
    }

    async fn close(&self) {
        self.stop.cancel();
        // The lease is given up: the fleet need not wait for it to expire
        // to take over what this instance still held.
        if let Ok(mut c) = self.pool.get().await {
            if let Ok(t) = c.transaction().await {
                let _ = t
                    .execute(
                        "UPDATE actions SET holder = NULL, epoch = NULL
                         WHERE status <> 'delivered' AND status IN ('pending', 'parked')
                           AND holder = $1 AND epoch = $2",
                        &[&self.lease.instance, &self.lease.epoch()],
                    )
                    .await;
                let _ = t
                    .execute(
                        "DELETE FROM instances WHERE instance = $1 AND epoch = $2",
                        &[&self.lease.instance, &self.lease.epoch()],
                    )
                    .await;
                let _ = t.commit().await;
            }
        }
        self.pool.close();
    }
}

/// Wraps an action config's JSON parse error (a store's own text).
fn action_from_json(text: &str) -> StoreResult<ActionConfig> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("a stored action is not valid: {e}")))
}
