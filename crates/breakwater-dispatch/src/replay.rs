//! Replay jobs: every action matching a filter replayed in the background.
//!
//! A job is a row in the store ([`ReplayJob`]), so every instance of a
//! fleet sees its progress and can cancel it; one task on the instance that
//! owns it does the work, in chunks of [`CHUNK`] actions: read a page of
//! the filter ([`Store::actions`], newest first, below the job's cursor),
//! make them pending again ([`Store::replay_actions`], marked as the
//! job's), and record how far it got and where it goes on
//! ([`Store::update_replay_job`]).
//!
//! **Cancel.** An operator cancels a job in the store; the task sees it at
//! its next record (the update answers [`ReplayState::Cancelled`]) and
//! stops: at most the chunk under way is replayed after the cancel.
//!
//! **Pacing.** The job only moves actions into their endpoints' backlogs;
//! the engine delivers them as it delivers any backlog, through each
//! endpoint's window, lane and breaker, so a replay never floods an
//! endpoint, and an open endpoint's replayed actions park like any.
//!
//! **End.** The cursor only moves down, so an action replayed, failed and
//! dead-lettered again while the job runs is not replayed twice by it, and
//! actions dead-lettered after the job started (higher ids) are left for
//! another. A store error is tried again [`TRIES`] times in all, with a
//! wait that doubles from [`RETRY_FIRST`]; then the job is marked failed
//! with the error.
//!
//! **An instance that stops or dies.** A service's jobs are adoptable
//! ([`Store::create_replay_job`]): when the service stops, its jobs stay
//! running in the store with their cursor, and when it dies (`kill -9`, a
//! lost machine) they stay so too. [`adopt`] takes them up, at start and
//! every [`ADOPT_EVERY`] after: a restarted single instance resumes its
//! jobs where they were, and in a fleet another instance resumes them once
//! the dead one's lease is gone. The chunk under way when it died may be
//! read again; the actions it replayed are waiting by then and are not
//! replayed twice. A paused instance whose job was taken up meanwhile
//! learns it at its next record and stops. A command's job (`dlq replay`)
//! is run by the command alone, to its end or until it is interrupted (it
//! is then cancelled).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::Engine;
use crate::operations::CHUNK;
use crate::store::{
    ActionFilter, ActionId, ActionPage, ReplayJob, ReplayState, Store, StoreResult,
};

/// Store calls tried this many times in all before the job fails.
pub const TRIES: u32 = 4;
/// The first wait before a failed store call is tried again; it doubles.
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
/// How often a service looks for jobs to take up ([`adopt`]).
pub const ADOPT_EVERY: Duration = Duration::from_secs(2);

/// What a job needs of the store.
#[async_trait]
trait JobStore: Send + Sync {
    async fn page(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
    ) -> StoreResult<ActionPage>;
    async fn replay(&self, ids: &[ActionId], job: i64) -> StoreResult<u64>;
    async fn record(
        &self,
        job: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<Option<ReplayState>>;
}

#[async_trait]
impl JobStore for Arc<dyn Store> {
    async fn page(
        &self,
        filter: &ActionFilter,
        before: Option<ActionId>,
    ) -> StoreResult<ActionPage> {
        self.actions(filter, before, CHUNK).await
    }

    async fn replay(&self, ids: &[ActionId], job: i64) -> StoreResult<u64> {
        self.replay_actions(ids, Some(job)).await
    }

    async fn record(
        &self,
        job: i64,
        replayed: u64,
        cursor: Option<ActionId>,
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<Option<ReplayState>> {
        self.update_replay_job(job, replayed, cursor, state, error)
            .await
    }
}

/// Runs `job` (stored, running) from its cursor to its end: finished,
/// cancelled or failed (see the [module docs](self)); `engine`, when given,
/// is told of each chunk replayed so that it claims them at once. A
/// service's job whose service stops is left running, to be taken up at
/// the next start ([`adopt`]).
///
/// # Cancel safety
///
/// Dropped between two store calls, the job stays `running` in the store
/// with the progress last recorded; the actions it replayed stay replayed.
pub async fn run(store: Arc<dyn Store>, engine: Option<Engine>, job: ReplayJob) {
    let stopping = {
        let engine = engine.clone();
        move || engine.as_ref().is_some_and(Engine::is_stopping)
    };
    let replayed = move || {
        if let Some(e) = &engine {
            e.replayed();
        }
    };
    match run_with(&store, &job, stopping, replayed).await {
        Some(end) => tracing::info!(job = job.id, state = end.as_str(), "replay job ended"),
        None => tracing::info!(
            job = job.id,
            "replay job left for another instance or the next start"
        ),
    }
}

/// Takes up the jobs of instances that are gone, now and every
/// [`ADOPT_EVERY`] until `engine` stops, and runs each here
/// ([`Store::adopt_replay_jobs`]).
pub async fn adopt(store: Arc<dyn Store>, engine: Engine) {
    loop {
        if engine.is_stopping() {
            return;
        }
        match store.adopt_replay_jobs().await {
            Ok(jobs) => {
                for job in jobs {
                    tracing::info!(
                        job = job.id,
                        replayed = job.replayed,
                        "replay job taken up where its instance left it"
                    );
                    tokio::spawn(run(store.clone(), Some(engine.clone()), job));
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for replay jobs to take up failed"),
        }
        tokio::time::sleep(ADOPT_EVERY).await;
    }
}

/// [`run`] over any [`JobStore`]; returns the state the job ended in, or
/// `None` when it was left running (its service stopping, or another
/// instance having taken it up).
async fn run_with(
    store: &impl JobStore,
    job: &ReplayJob,
    stopping: impl Fn() -> bool,
    replayed: impl Fn(),
) -> Option<ReplayState> {
    let id = job.id;
    let mut before = job.cursor;
    let mut done: u64 = job.replayed;
    loop {
        if stopping() {
            // Left running, its cursor recorded: taken up again at the
            // next start, or by another instance of the fleet.
            return None;
        }
        let page = match retried("reading actions", || store.page(&job.filter, before)).await {
            Ok(p) => p,
            Err(e) => return fail(store, id, done, before, e.to_string()).await,
        };
        let ids: Vec<ActionId> = page.actions.iter().map(|a| a.id).collect();
        if !ids.is_empty() {
            match retried("replaying actions", || store.replay(&ids, id)).await {
                Ok(n) => {
                    done += n;
                    if n > 0 {
                        replayed();
                    }
                }
                Err(e) => return fail(store, id, done, before, e.to_string()).await,
            }
        }
        let last = ids.is_empty() || page.next.is_none();
        let state = if last {
            ReplayState::Finished
        } else {
            ReplayState::Running
        };
        let cursor = if last { before } else { page.next };
        match retried("recording progress", || {
            store.record(id, done, cursor, state, None)
        })
        .await
        {
            // Cancelled meanwhile (or the end, recorded): stop.
            Ok(Some(ReplayState::Running)) if !last => {}
            Ok(Some(now)) => return Some(now),
            Ok(None) => {
                tracing::warn!(
                    job = id,
                    "replay job taken up by another instance; stopped here"
                );
                return None;
            }
            Err(e) => return fail(store, id, done, before, e.to_string()).await,
        }
        before = cursor;
    }
}

/// Marks job `id` failed with `error` (unless it was cancelled or taken up
/// meanwhile); returns its state after.
async fn fail(
    store: &impl JobStore,
    id: i64,
    done: u64,
    cursor: Option<ActionId>,
    error: String,
) -> Option<ReplayState> {
    tracing::error!(job = id, %error, "replay job failed");
    match retried("recording the failure", || {
        store.record(id, done, cursor, ReplayState::Failed, Some(error.clone()))
    })
    .await
    {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(job = id, error = %e,
                "a failed replay job could not be marked failed: it stays running in the store");
            Some(ReplayState::Failed)
        }
    }
}

/// `call`, tried [`TRIES`] times in all while it fails.
async fn retried<T, F, Fut>(what: &str, mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut wait = RETRY_FIRST;
    let mut tries = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < TRIES => {
                tracing::warn!(error = %e, tries, "replay job: {what} failed; tried again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::{ActionRecord, ActionStatus, StoreError};

    /// A store of `n` dead letters (ids 1..=n) that can be told to fail or
    /// to cancel the job after some chunks.
    #[derive(Default)]
    struct Fake {
        n: i64,
        replayed: Mutex<Vec<ActionId>>,
        records: Mutex<Vec<(u64, ReplayState)>>,
        /// The cursors recorded.
        cursors: Mutex<Vec<Option<ActionId>>>,
        /// The job counts as cancelled once this many chunks are recorded.
        cancel_after: Option<usize>,
        /// The job counts as another instance's once this many chunks are
        /// recorded.
        taken_after: Option<usize>,
        /// Page reads that fail before one succeeds.
        failures: Mutex<u32>,
    }

    fn record(id: ActionId) -> ActionRecord {
        ActionRecord {
            id,
            event_id: uuid::Uuid::nil(),
            observer: "o".into(),
            action_type: "webhook".into(),
            endpoint: "http://e".into(),
            status: ActionStatus::DeadLettered,
            attempts: 1,
            not_before: None,
            last_error: None,
            last_status: None,
            accepted_at: String::new(),
            event_type: "insert".into(),
            entity_type: "Order".into(),
            replays: 0,
            attempt_history: None,
        }
    }

    #[async_trait]
    impl JobStore for Fake {
        async fn page(
            &self,
            _: &ActionFilter,
            before: Option<ActionId>,
        ) -> StoreResult<ActionPage> {
            {
                let mut f = self.failures.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return Err(StoreError::Backend("disk full".into()));
                }
            }
            let top = before.unwrap_or(self.n + 1);
            let chunk = i64::try_from(CHUNK).unwrap();
            let low = (top - chunk).max(1);
            let actions: Vec<ActionRecord> = (low..top).rev().map(record).collect();
            let next = (low > 1).then_some(low);
            Ok(ActionPage { actions, next })
        }

        async fn replay(&self, ids: &[ActionId], _: i64) -> StoreResult<u64> {
            self.replayed.lock().unwrap().extend_from_slice(ids);
            Ok(ids.len() as u64)
        }

        async fn record(
            &self,
            _: i64,
            replayed: u64,
            cursor: Option<ActionId>,
            state: ReplayState,
            _: Option<String>,
        ) -> StoreResult<Option<ReplayState>> {
            let mut records = self.records.lock().unwrap();
            if self.cancel_after.is_some_and(|k| records.len() >= k) {
                return Ok(Some(ReplayState::Cancelled));
            }
            if self.taken_after.is_some_and(|k| records.len() >= k) {
                return Ok(None);
            }
            records.push((replayed, state));
            self.cursors.lock().unwrap().push(cursor);
            Ok(Some(state))
        }
    }

    fn job() -> ReplayJob {
        ReplayJob {
            id: 1,
            filter: ActionFilter::default(),
            actor: "cli".into(),
            state: ReplayState::Running,
            total: 0,
            replayed: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            error: None,
            cursor: None,
            progress: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_replays_every_match_in_chunks_then_finishes() {
        let store = Fake {
            n: 1_234,
            ..Fake::default()
        };
        let end = run_with(&store, &job(), || false, || {}).await;
        assert_eq!(end, Some(ReplayState::Finished));
        let replayed = store.replayed.lock().unwrap().clone();
        assert_eq!(replayed.len(), 1_234);
        assert_eq!(replayed[0], 1_234, "newest first");
        assert_eq!(
            *store.records.lock().unwrap(),
            [
                (500, ReplayState::Running),
                (1_000, ReplayState::Running),
                (1_234, ReplayState::Finished)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_job_stops_at_its_next_chunk() {
        let store = Fake {
            n: 5_000,
            cancel_after: Some(2),
            ..Fake::default()
        };
        let end = run_with(&store, &job(), || false, || {}).await;
        assert_eq!(end, Some(ReplayState::Cancelled));
        // Two chunks recorded, the third replayed when the cancel was seen.
        assert_eq!(store.replayed.lock().unwrap().len(), 3 * CHUNK);
    }

    #[tokio::test(start_paused = true)]
    async fn store_errors_are_tried_again_then_fail_the_job() {
        let store = Fake {
            n: 10,
            failures: Mutex::new(TRIES - 1),
            ..Fake::default()
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            run_with(&store, &job(), || false, || {}).await,
            Some(ReplayState::Finished)
        );
        // 200 + 400 + 800 ms of waits.
        assert_eq!(started.elapsed(), Duration::from_millis(1_400));
        let store = Fake {
            n: 10,
            failures: Mutex::new(TRIES),
            ..Fake::default()
        };
        assert_eq!(
            run_with(&store, &job(), || false, || {}).await,
            Some(ReplayState::Failed)
        );
        assert!(store.replayed.lock().unwrap().is_empty());
        assert_eq!(*store.records.lock().unwrap(), [(0, ReplayState::Failed)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_service_leaves_its_jobs_running_for_the_next_start() {
        let store = Fake {
            n: 10,
            ..Fake::default()
        };
        assert_eq!(run_with(&store, &job(), || true, || {}).await, None);
        assert!(store.replayed.lock().unwrap().is_empty());
        assert!(store.records.lock().unwrap().is_empty(), "nothing recorded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_taken_up_goes_on_from_its_cursor_and_count() {
        let store = Fake {
            n: 1_234,
            ..Fake::default()
        };
        // Left after its first chunk: 500 replayed, the next page below 735.
        let mut left = job();
        left.replayed = 500;
        left.cursor = Some(735);
        assert_eq!(
            run_with(&store, &left, || false, || {}).await,
            Some(ReplayState::Finished)
        );
        let replayed = store.replayed.lock().unwrap().clone();
        assert_eq!(replayed.len(), 734, "only what lies below the cursor");
        assert_eq!(replayed[0], 734);
        assert_eq!(
            *store.records.lock().unwrap(),
            [
                (1_000, ReplayState::Running),
                (1_234, ReplayState::Finished)
            ]
        );
        assert_eq!(*store.cursors.lock().unwrap(), [Some(235), Some(235)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_another_instance_took_up_stops_here() {
        let store = Fake {
            n: 5_000,
            taken_after: Some(1),
            ..Fake::default()
        };
        assert_eq!(run_with(&store, &job(), || false, || {}).await, None);
        // The first chunk recorded, the second replayed when the loss was
        // seen (replaying is idempotent: the other instance skips it).
        assert_eq!(store.replayed.lock().unwrap().len(), 2 * CHUNK);
        assert_eq!(*store.cursors.lock().unwrap(), [Some(4_501)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_filter_finishes_at_once() {
        let store = Fake::default();
        assert_eq!(
            run_with(&store, &job(), || false, || {}).await,
            Some(ReplayState::Finished)
        );
        assert_eq!(*store.records.lock().unwrap(), [(0, ReplayState::Finished)]);
    }
}
