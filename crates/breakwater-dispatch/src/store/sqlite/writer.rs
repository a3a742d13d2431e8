//! The writer thread: it commits whatever jobs have queued up in one
//! transaction (group commit).

use std::collections::HashMap;
use std::sync::{mpsc, Arc};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::store::NewAction;

/// The most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

pub(super) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: run in the batch's transaction, it says whether it succeeded,
/// and what to do once the batch is committed or undone.
pub(super) type Job = Box<dyn FnOnce(&Transaction<'_>, &mut SpecIds) -> (bool, Done) + Send>;

/// The most action specs [`SpecIds`] remembers; past it, it starts again.
const MAX_SPECS: usize = 4096;

/// The `action_specs` ids of the actions the writer has stored, known by the
/// address of their shared observer name and JSON ([`NewAction::shared`]):
/// the engine makes each configured action once and clones it for every
/// event, so after its first event an action's spec costs a hash lookup,
/// not a query comparing its text.
///
/// It holds a clone of both, so no other text can take their address while
/// it remembers them. An action made anew for every event (as callers of
/// [`NewAction::new`] may) is looked up by its text each time, and a spec
/// is found, not stored twice.
///
/// It also remembers the id the next action stored will get, so that an
/// event row can name its actions before they are stored.
///
/// [`NewAction::shared`]: crate::store::NewAction
#[derive(Default)]
pub(super) struct SpecIds {
    by_address: HashMap<(usize, usize), KnownSpec>,
    /// The id SQLite gives the next action stored, once read; forgotten
    /// with the rest when a commit fails or a job stops half way.
    pub(super) next_action: Option<i64>,
}

/// A spec's id and its endpoint's number, and the texts whose addresses
/// name it, held.
struct KnownSpec {
    id: i64,
    lane: i64,
    _held: (Arc<str>, Arc<str>),
}

impl SpecIds {
    /// The id of `action`'s spec and its endpoint's number (in `lanes`),
    /// stored first if they are new.
    pub(super) fn id(
        &mut self,
        t: &Transaction<'_>,
        action: &NewAction,
    ) -> rusqlite::Result<(i64, i64)> {
        let (observer, json) = action.shared();
        let key = (
            Arc::as_ptr(observer).cast::<u8>() as usize,
            Arc::as_ptr(json).cast::<u8>() as usize,
        );
        if let Some(known) = self.by_address.get(&key) {
            return Ok((known.id, known.lane));
        }
        let text = params![
            action.observer(),
            action.endpoint(),
            action.action().action_type(),
            action.json()
        ];
        let found: Option<(i64, i64)> = t
            .prepare_cached(
                "SELECT id, lane FROM action_specs
                 WHERE observer = ?1 AND endpoint = ?2 AND action_type = ?3 AND action = ?4",
            )?
            .query_row(text, |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (id, lane) = match found {
            Some(found) => found,
            None => {
                t.prepare_cached(
                    "INSERT INTO lanes (endpoint) VALUES (?1) ON CONFLICT(endpoint) DO NOTHING",
                )?
                .execute(params![action.endpoint()])?;
                let lane: i64 = t
                    .prepare_cached("SELECT id FROM lanes WHERE endpoint = ?1")?
                    .query_row(params![action.endpoint()], |r| r.get(0))?;
                t.prepare_cached(
                    "INSERT INTO action_specs (observer, endpoint, action_type, action, lane)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    action.observer(),
                    action.endpoint(),
                    action.action().action_type(),
                    action.json(),
                    lane
                ])?;
                (t.last_insert_rowid(), lane)
            }
        };
        if self.by_address.len() >= MAX_SPECS {
            self.by_address.clear();
        }
        let held = (observer.clone(), json.clone());
        self.by_address.insert(
            key,
            KnownSpec {
                id,
                lane,
                _held: held,
            },
        );
        Ok((id, lane))
    }
}

pub(super) fn writer(conn: &mut Connection, rx: &mpsc::Receiver<Job>) {
    let mut specs = SpecIds::default();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a transaction");
                continue;
            }
        };
        let mut failed = false;
        let done: Vec<Done> = jobs
            .into_iter()
            .map(|j| {
                let (ok, done) = j(&tx, &mut specs);
                failed |= !ok;
                done
            })
            .collect();
        // A job that failed half way (say, the disk filled while it stored
        // an event's second action) may have left some of its rows: the
        // whole batch is undone rather than commit an event without its
        // actions, which a retry of the event would then find stored. Every
        // job of the batch reports the failure.
        let committed = if failed {
            tracing::error!("a write failed: its batch is undone");
            if let Err(e) = tx.rollback() {
                tracing::error!(error = %e, "undoing a failed batch failed");
            }
            Err("a write in the same batch failed; the batch was undone".to_string())
        } else {
            tx.commit().map_err(|e| {
                tracing::error!(error = %e, "commit failed");
                e.to_string()
            })
        };
        if committed.is_err() {
            // Specs (and the next action id) of the lost transaction are
            // gone with it.
            specs = SpecIds::default();
        }
        for d in done {
            d(committed.clone());
        }
    }
}
