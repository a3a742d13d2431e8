//! Operator writes: replays, purges, replay jobs and breaker commands, each
//! left in the audit log. The HTTP routes, the console and the `dlq`
//! command line all go through an [`Operator`], so that a write does the
//! same, and is audited the same, whichever way it came.
//!
//! **What may be replayed.** Dead-lettered and delivered actions (a
//! delivered one is sent again). Pending, parked and held actions are
//! already waiting: replaying one is a [`OpError::Conflict`], and a filter
//! asking for them is refused ([`replay_filter`]). A replayed action is
//! pending, unclaimed, with no attempts used, in its endpoint's backlog:
//! the engine claims it as it claims any backlog, paced by the endpoint's
//! window, lane and breaker (an open endpoint's replayed actions park).
//!
//! **What may be purged.** Dead letters only ([`purge_filter`]).
//!
//! **Audit.** Each write is stored as an [`AuditEntry`] once done: who (the
//! fingerprint of the token used, or `cli`), what, on what (an endpoint, an
//! action id, or the filter as JSON), how many, and the fleet instance. An
//! audit entry that cannot be stored is logged at error, with every field;
//! the write it describes stands.

use std::future::Future;
use std::sync::Arc;

use crate::engine::{AdminOp, Engine};
use crate::replay;
use crate::store::{
    ActionFilter, ActionId, ActionRecord, ActionStatus, AuditEntry, ReplayJob, ReplayState, Store,
    StoreError,
};

/// The most actions read, replayed or purged in one store call.
pub const CHUNK: usize = 500;

/// Why an operator write was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Nothing is stored under that id or name.
    #[error("{0}")]
    NotFound(String),
    /// The write does not fit what it names now (replaying a pending
    /// action, cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// A value given is not allowed here.
    #[error("{field}: {message}")]
    Invalid {
        /// The parameter or field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `filter` as a replay takes it: dead letters unless it names a status;
/// only dead-lettered or delivered actions.
///
/// # Errors
///
/// [`OpError::Invalid`] naming `status` for any other status.
///
/// ```
/// use breakwater_dispatch::operations::replay_filter;
/// use breakwater_dispatch::store::{ActionFilter, ActionStatus};
///
/// let f = replay_filter(ActionFilter::default()).unwrap();
/// assert_eq!(f.status, Some(ActionStatus::DeadLettered));
/// let pending = ActionFilter { status: Some(ActionStatus::Pending), ..ActionFilter::default() };
/// assert_eq!(replay_filter(pending).unwrap_err().to_string(),
///     "status: only dead_lettered or delivered actions are replayed, not pending");
/// ```
pub fn replay_filter(mut filter: ActionFilter) -> Result<ActionFilter, OpError> {
    match filter.status {
        None => filter.status = Some(ActionStatus::DeadLettered),
        Some(ActionStatus::DeadLettered | ActionStatus::Delivered) => {}
        Some(other) => {
            return Err(OpError::Invalid {
                field: "status",
                message: format!(
                    "only dead_lettered or delivered actions are replayed, not {}",
                    status_name(other)
                ),
            })
        }
    }
    Ok(filter)
}

/// `filter` as a purge takes it: dead letters only.
///
/// # Errors
///
/// [`OpError::Invalid`] naming `status` for any other status.
pub fn purge_filter(mut filter: ActionFilter) -> Result<ActionFilter, OpError> {
    match filter.status {
        None | Some(ActionStatus::DeadLettered) => {
            filter.status = Some(ActionStatus::DeadLettered);
            Ok(filter)
        }
        Some(other) => Err(OpError::Invalid {
            field: "status",
            message: format!(
                "only dead_lettered actions are purged, not {}",
                status_name(other)
            ),
        }),
    }
}

/// A status's name as the API writes it.
fn status_name(status: ActionStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Who writes, through which store (and engine, in the service): see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Operator {
    store: Arc<dyn Store>,
    engine: Option<Engine>,
    actor: String,
}

impl Operator {
    /// `actor` (`token:<fingerprint>`, see [`crate::auth::actor`]) writing
    /// through the service's `engine`: replayed actions are looked for at
    /// once, breaker commands are run.
    pub fn new(engine: &Engine, actor: impl Into<String>) -> Self {
        Self {
            store: engine.store().clone(),
            engine: Some(engine.clone()),
            actor: actor.into(),
        }
    }

    /// The command line writing straight to `store` (actor `cli`): a
    /// running service finds replayed actions at its next sweep (within a
    /// second); breaker commands need the service.
    pub fn cli(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            engine: None,
            actor: "cli".into(),
        }
    }

    /// Who writes.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// How many actions match `filter` (a dry run; nothing is written or
    /// audited).
    ///
    /// # Errors
    ///
    /// [`OpError::Store`].
    pub async fn count(&self, filter: &ActionFilter) -> Result<u64, OpError> {
        Ok(self.store.count_actions(filter).await?)
    }

    /// Replays the action `id`; returns it as it is after.
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] for an unknown id, [`OpError::Conflict`] for
    /// an action that is pending, parked or held; [`OpError::Store`].
    pub async fn replay_one(&self, id: ActionId) -> Result<ActionRecord, OpError> {
        let action = self.action(id).await?;
        if !matches!(
            action.status,
            ActionStatus::DeadLettered | ActionStatus::Delivered
        ) {
            return Err(OpError::Conflict(format!(
                "action {id} is {}: only dead-lettered or delivered actions are replayed",
                status_name(action.status)
            )));
        }
        if self.store.replay_actions(&[id], None).await? == 0 {
            return Err(OpError::Conflict(format!(
                "action {id} changed while it was being replayed; look at it again"
            )));
        }
        self.replayed();
        self.audit("replay", id.to_string(), Some(1)).await;
        self.action(id).await
    }

    /// Replays the dead-lettered or delivered actions among `ids` (others
    /// are left alone); returns how many.
    ///
    /// # Errors
    ///
    /// [`OpError::Store`]; the chunks of [`CHUNK`] ids before the failure
    /// stay replayed.
    pub async fn replay_ids(&self, ids: &[ActionId]) -> Result<u64, OpError> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            n += self.store.replay_actions(chunk, None).await?;
        }
        if n > 0 {
            self.replayed();
        }
        self.audit("replay", ids_target(ids), Some(n)).await;
        Ok(n)
    }

    /// Replays the dead letters among `ids` (the `dlq replay` command: an
    /// action in any other state, delivered ones included, is left alone);
    /// returns how many.
    ///
    /// # Errors
    ///
    /// [`OpError::Store`].
    pub async fn replay_dead_letters(&self, ids: &[ActionId]) -> Result<u64, OpError> {
        let mut dead = Vec::with_capacity(ids.len());
        for &id in ids {
            let status = self.store.action(id).await?.map(|a| a.status);
            if status == Some(ActionStatus::DeadLettered) {
                dead.push(id);
            }
        }
        if dead.is_empty() {
            return Ok(0);
        }
        self.replay_ids(&dead).await
    }

    /// Stores a replay job of every action matching `filter` (see
    /// [`replay_filter`]) and returns it, running; [`replay::run`] does it.
    async fn create_job(&self, filter: ActionFilter) -> Result<ReplayJob, OpError> {
        let filter = replay_filter(filter)?;
        let total = self.store.count_actions(&filter).await?;
        // A service's job is taken up by another instance, or at the next
        // start, if this one dies; a command runs its own to the end.
        let adoptable = self.engine.is_some();
        let job = self
            .store
            .create_replay_job(&filter, &self.actor, total, adoptable)
            .await?;
        self.audit("replay", filter_target(&filter), Some(total))
            .await;
        Ok(job)
    }

    /// Starts a replay job of every action matching `filter` (dead letters
    /// unless it names a status; see [`replay_filter`]) in the background,
    /// on this instance; returns the job, running. Its progress is in the
    /// store ([`Store::replay_job`]), where any instance can cancel it.
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] for a status that is not replayed;
    /// [`OpError::Store`].
    pub async fn start_replay(&self, filter: ActionFilter) -> Result<ReplayJob, OpError> {
        let job = self.create_job(filter).await?;
        tokio::spawn(replay::run(
            self.store.clone(),
            self.engine.clone(),
            job.clone(),
        ));
        Ok(job)
    }

    /// Replays every action matching `filter` as a replay job run here to
    /// its end (the command line), or until `interrupted` resolves (Ctrl-C):
    /// the job is then cancelled. Returns the job as it ended.
    ///
    /// # Errors
    ///
    /// As [`start_replay`](Self::start_replay); a job that failed is
    /// returned, with its error, not an error.
    pub async fn replay_all(
        &self,
        filter: ActionFilter,
        interrupted: impl Future<Output = ()>,
    ) -> Result<ReplayJob, OpError> {
        let job = self.create_job(filter).await?;
        let id = job.id;
        tokio::select! {
            () = replay::run(self.store.clone(), self.engine.clone(), job) => {}
            () = interrupted => {
                tracing::warn!(job = id, "interrupted: the replay job is cancelled");
                self.store.cancel_replay_job(id).await?;
                self.audit("cancel_replay", id.to_string(), None).await;
            }
        }
        self.store
            .replay_job(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no replay job {id}")))
    }

    /// Cancels the running replay job `id`; returns it as it is after.
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] for an unknown job, [`OpError::Conflict`] for
    /// one no longer running; [`OpError::Store`].
    pub async fn cancel_replay(&self, id: i64) -> Result<ReplayJob, OpError> {
        let job = self
            .store
            .replay_job(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no replay job {id}")))?;
        if job.state != ReplayState::Running {
            return Err(OpError::Conflict(format!(
                "replay job {id} is {}, not running",
                job.state.as_str()
            )));
        }
        let job = self
            .store
            .cancel_replay_job(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no replay job {id}")))?;
        self.audit("cancel_replay", id.to_string(), Some(job.replayed))
            .await;
        Ok(job)
    }

    /// Deletes every dead letter matching `filter` (see [`purge_filter`]),
    /// with its attempts; returns how many.
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] for a status other than dead-lettered;
    /// [`OpError::Store`] (the chunks before it stay deleted, and are
    /// audited).
    pub async fn purge(&self, filter: ActionFilter) -> Result<u64, OpError> {
        let filter = purge_filter(filter)?;
        let mut n = 0;
        let mut before = None;
        let result = loop {
            let page = match self.store.actions(&filter, before, CHUNK).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            let ids: Vec<ActionId> = page.actions.iter().map(|a| a.id).collect();
            if !ids.is_empty() {
                match self.store.purge_actions(&ids).await {
                    Ok(k) => n += k,
                    Err(e) => break Err(e),
                }
            }
            match page.next {
                Some(next) if !ids.is_empty() => before = Some(next),
                _ => break Ok(()),
            }
        };
        if n > 0 || result.is_ok() {
            self.audit("purge", filter_target(&filter), Some(n)).await;
        }
        result?;
        Ok(n)
    }

    /// Deletes the dead letters among `ids` (others are left alone), with
    /// their attempts; returns how many.
    ///
    /// # Errors
    ///
    /// [`OpError::Store`]; the chunks before the failure stay deleted.
    pub async fn purge_ids(&self, ids: &[ActionId]) -> Result<u64, OpError> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            n += self.store.purge_actions(chunk).await?;
        }
        self.audit("purge", ids_target(ids), Some(n)).await;
        Ok(n)
    }

    /// Runs `op` on `endpoint`'s breaker (every instance of a fleet follows
    /// it); false for an endpoint no observer calls (nothing is audited
    /// then).
    ///
    /// # Errors
    ///
    /// [`OpError::Store`]; [`OpError::Conflict`] without the service (the
    /// command line).
    pub async fn breaker(&self, endpoint: &str, op: AdminOp) -> Result<bool, OpError> {
        let Some(engine) = &self.engine else {
            return Err(OpError::Conflict(
                "breaker commands go to the running service (POST /breakers/...)".into(),
            ));
        };
        if !engine.admin(endpoint, op).await? {
            return Ok(false);
        }
        self.audit(op.as_str(), endpoint.to_string(), None).await;
        Ok(true)
    }

    async fn action(&self, id: ActionId) -> Result<ActionRecord, OpError> {
        self.store
            .action(id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no action {id}")))
    }

    /// Tells the engine, if there is one here, to claim replayed work now.
    fn replayed(&self) {
        if let Some(engine) = &self.engine {
            engine.replayed();
        }
    }

    /// Stores an audit entry of a write done.
    async fn audit(&self, action: &str, target: String, count: Option<u64>) {
        let entry = AuditEntry {
            id: 0,
            at_ms: chrono::Utc::now().timestamp_millis(),
            actor: self.actor.clone(),
            action: action.to_string(),
            target,
            count,
            instance: self.store.fleet().map(|f| f.instance),
        };
        if let Err(e) = self.store.audit(entry.clone()).await {
            tracing::error!(error = %e, actor = %entry.actor, action = %entry.action,
                target = %entry.target, count = ?entry.count, at_ms = entry.at_ms,
                "an operator write was done but its audit entry could not be stored");
        }
    }
}

/// The audit target of a filter: its JSON, without the fields it leaves
/// open (`{"status":"dead_lettered","endpoint":"http://127.0.0.1:9000"}`).
fn filter_target(filter: &ActionFilter) -> String {
    match serde_json::to_value(filter) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.retain(|_, v| !v.is_null());
            serde_json::Value::Object(fields).to_string()
        }
        _ => String::new(),
    }
}

/// The audit target of a list of ids: the ids, the first 20 when more
/// (with how many in all).
fn ids_target(ids: &[ActionId]) -> String {
    const SHOWN: usize = 20;
    let shown: Vec<String> = ids.iter().take(SHOWN).map(ToString::to_string).collect();
    if ids.len() > SHOWN {
        format!("{},... ({} ids)", shown.join(","), ids.len())
    } else {
        shown.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_to_what_may_be_replayed_or_purged() {
        let with = |status| ActionFilter {
            status: Some(status),
            ..ActionFilter::default()
        };
        assert_eq!(
            replay_filter(with(ActionStatus::Delivered)).unwrap().status,
            Some(ActionStatus::Delivered)
        );
        for s in [
            ActionStatus::Pending,
            ActionStatus::Parked,
            ActionStatus::Held,
        ] {
            let e = replay_filter(with(s)).unwrap_err();
            assert!(
                matches!(
                    e,
                    OpError::Invalid {
                        field: "status",
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert_eq!(
            purge_filter(ActionFilter::default()).unwrap().status,
            Some(ActionStatus::DeadLettered)
        );
        let e = purge_filter(with(ActionStatus::Delivered)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "status: only dead_lettered actions are purged, not delivered"
        );
    }

    #[test]
    fn a_filter_is_audited_with_what_it_sets() {
        let f = ActionFilter {
            status: Some(ActionStatus::DeadLettered),
            endpoint: Some("http://127.0.0.1:9".into()),
            ..ActionFilter::default()
        };
        let shown: serde_json::Value = serde_json::from_str(&filter_target(&f)).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"endpoint": "http://127.0.0.1:9", "status": "dead_lettered"})
        );
    }

    #[test]
    fn long_id_lists_are_cut_in_the_audit_log() {
        assert_eq!(ids_target(&[3, 1]), "3,1");
        let many: Vec<ActionId> = (1..=25).collect();
        let t = ids_target(&many);
        assert!(
            t.starts_with("1,2,3,") && t.ends_with("20,... (25 ids)"),
            "{t}"
        );
    }
}
