//! Replay jobs: every action matching a filter replayed in the background,
//! by the instance that started the job.
//!
//! A job is a row in the store ([`ReplayJob`]), so every instance of a
//! fleet sees its progress and can cancel it; one task on the instance that
//! started it does the work, in chunks of [`CHUNK`] actions: read a page of
//! the filter ([`Store::actions`], newest first, below the last page), make
//! them pending again ([`Store::replay_actions`], marked as the job's), and
//! record how far it got ([`Store::update_replay_job`]).
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
//! with the error. A job whose service stops is marked failed too (it can
//! be started again: the actions it replayed no longer match a dead-letter
//! filter). A job whose instance dies stays `running` in the store.

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
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<ReplayState>;
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
        state: ReplayState,
        error: Option<String>,
    ) -> StoreResult<ReplayState> {
        self.update_replay_job(job, replayed, state, error).await
    }
}

/// Runs `job` (stored, running) to its end: finished, cancelled or failed
/// (see the [module docs](self)); `engine`, when given, is told of each
/// chunk replayed so that it claims them at once.
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
    let end = run_with(&store, &job, stopping, replayed).await;
    tracing::info!(job = job.id, state = end.as_str(), "replay job ended");
}

/// [`run`] over any [`JobStore`]; returns the state the job ended in.
async fn run_with(
    store: &impl JobStore,
    job: &ReplayJob,
    stopping: impl Fn() -> bool,
    replayed: impl Fn(),
) -> ReplayState {
    let id = job.id;
    let mut before = None;
    let mut done: u64 = job.replayed;
    loop {
        if stopping() {
            let why = "the service stopped before the job finished".to_string();
            return fail(store, id, done, why).await;
        }
        let page = match retried("reading actions", || store.page(&job.filter, before)).await {
            Ok(p) => p,
            Err(e) => return fail(store, id, done, e.to_string()).await,
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
                Err(e) => return fail(store, id, done, e.to_string()).await,
            }
        }
        let last = ids.is_empty() || page.next.is_none();
        let state = if last {
            ReplayState::Finished
        } else {
            ReplayState::Running
        };
        match retried("recording progress", || store.record(id, done, state, None)).await {
            // Cancelled meanwhile (or the end, recorded): stop.
            Ok(ReplayState::Running) if !last => {}
            Ok(now) => return now,
            Err(e) => return fail(store, id, done, e.to_string()).await,
        }
        before = page.next;
    }
}

/// Marks job `id` failed with `error` (unless it was cancelled meanwhile);
/// returns its state after.
async fn fail(store: &impl JobStore, id: i64, done: u64, error: String) -> ReplayState {
    tracing::error!(job = id, %error, "replay job failed");
    match retried("recording the failure", || {
        store.record(id, done, ReplayState::Failed, Some(error.clone()))
    })
    .await
    {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(job = id, error = %e,
                "a failed replay job could not be marked failed: it stays running in the store");
            ReplayState::Failed
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
        /// The job counts as cancelled once this many chunks are recorded.
        cancel_after: Option<usize>,
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
            state: ReplayState,
            _: Option<String>,
        ) -> StoreResult<ReplayState> {
            let mut records = self.records.lock().unwrap();
            if self.cancel_after.is_some_and(|k| records.len() >= k) {
                return Ok(ReplayState::Cancelled);
            }
            records.push((replayed, state));
            Ok(state)
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
        assert_eq!(end, ReplayState::Finished);
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
        assert_eq!(end, ReplayState::Cancelled);
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
            ReplayState::Finished
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
            ReplayState::Failed
        );
        assert!(store.replayed.lock().unwrap().is_empty());
        assert_eq!(*store.records.lock().unwrap(), [(0, ReplayState::Failed)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_service_fails_its_jobs() {
        let store = Fake {
            n: 10,
            ..Fake::default()
        };
        assert_eq!(
            run_with(&store, &job(), || true, || {}).await,
            ReplayState::Failed
        );
        assert!(store.replayed.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_filter_finishes_at_once() {
        let store = Fake::default();
        assert_eq!(
            run_with(&store, &job(), || false, || {}).await,
            ReplayState::Finished
        );
        assert_eq!(*store.records.lock().unwrap(), [(0, ReplayState::Finished)]);
    }
}
