//! The outcome recorder: delivery outcomes written to the store in batches.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::window::Load;
use super::Engine;
use crate::store::{ActionId, Attempt, Update};

/// The most delivery outcomes written to the store in one call.
const RECORD_BATCH: usize = 1024;
/// Below this many outcomes, the recorder waits [`RECORD_LINGER`] for more
/// before writing them.
const RECORD_LINGER_BELOW: usize = 128;
/// How long the recorder waits for more outcomes when it has few.
const RECORD_LINGER: Duration = Duration::from_millis(1);
/// How long shutdown waits for the last outcomes to be written.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// The first wait before a failed write of outcomes is tried again; it
/// doubles up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a failed write of outcomes.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// An attempt to record with its action's outcome.
pub(super) type Noted = Option<(ActionId, Box<Attempt>)>;

/// A message to the outcome recorder.
pub(super) enum Record {
    /// Write `attempt`, if any, then `update` (in the same batch); then
    /// `release` stops counting as held.
    Update {
        update: Update,
        release: Load,
        attempt: Noted,
    },
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

impl Engine {
    /// Queues `update` for the outcome recorder; `release` stops counting
    /// as held once it is written.
    pub(super) fn record(&self, update: Update, release: Load) {
        self.record_with(update, release, None);
    }

    /// Queues `update`, and before it the record of the attempt that led
    /// to it, if any: one message, so that both are written in the same
    /// batch (one commit).
    pub(super) fn record_with(&self, update: Update, release: Load, attempt: Noted) {
        if self
            .inner
            .records
            .send(Record::Update {
                update,
                release,
                attempt,
            })
            .is_err()
        {
            // The recorder stopped (shutdown): the action stays as stored.
            self.release(release);
        }
    }

    /// Waits until every outcome queued so far is written.
    pub(super) async fn flush_records(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.records.send(Record::Flush(tx)).is_ok()
            && tokio::time::timeout(FLUSH_GRACE, rx).await.is_err()
        {
            tracing::warn!("delivery outcomes not written by the shutdown deadline");
        }
    }
}

/// Writes delivery outcomes in batches: whatever has queued up while the
/// previous batch was being written goes to the store in one call (one
/// transaction), and only then do its actions stop counting as held.
///
/// A batch of fewer than [`RECORD_LINGER_BELOW`] outcomes waits
/// [`RECORD_LINGER`] for more (not when a flush is asked for). Without that,
/// deliveries that finish one by one while no events come in (a backlog
/// being worked off) were written about a dozen a commit, each commit with
/// its own fsync and thread hand-offs (some 2 000 commits a second under
/// load, against 300 to 700 with the wait).
///
/// A delivery does not wait for its outcome to be written, so its
/// concurrency permit is free for the next action during the commit. An
/// outcome lost in a crash leaves its action pending in the store, and it
/// is delivered again after the restart (at-least-once).
///
/// A write that fails (a full disk, say) is tried again, with a wait that
/// doubles from [`RECORD_RETRY_FIRST`] to [`RECORD_RETRY_MAX`], until it
/// succeeds: an outcome is never dropped while the service runs, so an
/// action is never left claimed in the store with nothing in memory to
/// finish it. Its actions count as held until then. Only at shutdown,
/// after [`FLUSH_GRACE`], are unwritten outcomes given up (their actions
/// are delivered again after the restart).
pub(super) async fn record_task(engine: Engine, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut buf = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut buf, RECORD_BATCH).await > 0 {
        if buf.len() < RECORD_LINGER_BELOW && !buf.iter().any(|r| matches!(r, Record::Flush(_))) {
            tokio::time::sleep(RECORD_LINGER).await;
            while buf.len() < RECORD_BATCH {
                match rx.try_recv() {
                    Ok(r) => buf.push(r),
                    Err(_) => break,
                }
            }
        }
        // Room for an attempt's record beside each outcome.
        let mut updates = Vec::with_capacity(buf.len() * 2);
        let mut release = Load::default();
        let mut flushed = Vec::new();
        for r in buf.drain(..) {
            match r {
                Record::Update {
                    update,
                    release: n,
                    attempt,
                } => {
                    if let Some((id, attempt)) = attempt {
                        updates.push(Update::Attempt { id, attempt });
                    }
                    updates.push(update);
                    release.add(n);
                }
                Record::Flush(done) => flushed.push(done),
            }
        }
        if !updates.is_empty() {
            write_until_done(&engine, updates).await;
        }
        engine.release(release);
        let last = !flushed.is_empty() && engine.is_stopping();
        for done in flushed {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

/// Writes `updates`, trying again after a failure until the write succeeds
/// or the service has been stopping for [`FLUSH_GRACE`].
async fn write_until_done(engine: &Engine, updates: Vec<Update>) {
    let mut wait = RECORD_RETRY_FIRST;
    let mut tries = 0u32;
    let mut stopping_since: Option<tokio::time::Instant> = None;
    loop {
        tries += 1;
        // A copy each try (a few small structs each): a failed try has
        // consumed its own.
        match engine.inner.store.apply(updates.clone()).await {
            Ok(()) => {
                if tries > 1 {
                    tracing::info!(
                        outcomes = updates.len(),
                        tries,
                        "delivery outcomes recorded after the store failed"
                    );
                }
                return;
            }
            Err(e) => {
                if engine.is_stopping() {
                    let since = *stopping_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= FLUSH_GRACE {
                        tracing::error!(
                            error = %e,
                            outcomes = updates.len(),
                            "delivery outcomes not recorded at shutdown: their actions stay \
                             pending in the store and are delivered again after the restart"
                        );
                        return;
                    }
                }
                tracing::error!(
                    error = %e,
                    outcomes = updates.len(),
                    tries,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "recording delivery outcomes failed; they are kept and tried again \
                     (their actions stay claimed until then)"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECORD_RETRY_MAX);
            }
        }
    }
}
