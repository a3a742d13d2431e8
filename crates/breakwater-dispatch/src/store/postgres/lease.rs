//! An instance's lease: one row in `instances`, kept alive by a heartbeat on
//! the database clock, and the takeover of the claims of instances whose
//! lease expired.
//!
//! Every claim an instance makes names it and its lease's epoch (`holder`,
//! `epoch` on the action row), and every outcome it writes matches both. An
//! instance whose lease expired (it died, or was paused past `lease_ms`) is
//! fenced: the first live instance to notice deletes its row and releases
//! its claims into their endpoints' backlogs, where any instance claims
//! them again. When the paused instance wakes, its heartbeat finds no row
//! with its epoch: it takes a new lease (a new epoch, never reused), and
//! its late outcomes under the old epoch match no row, so they change
//! nothing (they are counted and logged).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::schema::backend;
use crate::store::StoreResult;

/// This instance's lease, as last taken or renewed.
#[derive(Debug)]
pub(super) struct Lease {
    /// The instance's name.
    pub(super) instance: String,
    /// The lease's length.
    pub(super) lease: Duration,
    /// The current epoch (0 before the first is taken).
    epoch: AtomicI64,
    /// Leases taken over from expired instances.
    pub(super) taken_over: AtomicU64,
    /// Set when a takeover released claims into the backlogs.
    pub(super) released: AtomicBool,
    /// This instance's rank among the live instances (by name) and their
    /// number, packed `rank << 32 | live`; `live` is 0 until a heartbeat
    /// after the lease was taken has counted them, so that the others have
    /// had a heartbeat to count this one before it takes a share.
    share: AtomicU64,
    /// When the last renewal (or the lease's taking) was sent: the database
    /// counts the lease from a moment after it, so until `lease` has passed
    /// since then the lease is certainly this instance's.
    renewed_at: Mutex<Instant>,
    /// Since when this instance has reached the database at every
    /// heartbeat (`None` after a failed one): it takes over no other lease
    /// before it has been up a whole lease, so that an outage everyone saw
    /// does not read as everyone else's death.
    up_since: Mutex<Option<Instant>>,
}

impl Lease {
    pub(super) fn new(instance: String, lease: Duration) -> Self {
        Self {
            instance,
            lease,
            epoch: AtomicI64::new(0),
            taken_over: AtomicU64::new(0),
            released: AtomicBool::new(false),
            share: AtomicU64::new(0),
            renewed_at: Mutex::new(Instant::now()),
            up_since: Mutex::new(None),
        }
    }

    /// The current epoch.
    pub(super) fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the lease is certainly this instance's: renewed less than a
    /// lease ago. After a pause or an outage it is not, until a heartbeat
    /// renews it (nobody took it over) or takes a new one (somebody did).
    pub(super) fn confirmed(&self) -> bool {
        !self.is_stale()
    }

    fn is_stale(&self) -> bool {
        lock(&self.renewed_at).elapsed() >= self.lease
    }

    /// A heartbeat failed to reach the database.
    pub(super) fn unreachable(&self) {
        *lock(&self.up_since) = None;
    }

    /// `(rank, live)`: see [`Lease::share`]'s field.
    pub(super) fn share(&self) -> (usize, usize) {
        let packed = self.share.load(Ordering::Acquire);
        ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes a new lease (a new epoch) and releases every claim an earlier
    /// lease of this instance's name still holds: a restarted instance owns
    /// none of the work it had.
    pub(super) async fn take(&self, client: &mut Client) -> StoreResult<i64> {
        let sent = Instant::now();
        let t = client.transaction().await.map_err(backend)?;
        let epoch: i64 = t
            .query_one(
                "INSERT INTO instances (instance, epoch, expires_at)
                 VALUES ($1, nextval('lease_epochs'), now() + $2 * interval '1 millisecond')
                 ON CONFLICT (instance) DO UPDATE
                   SET epoch = excluded.epoch, started_at = now(), heartbeat_at = now(),
                       expires_at = excluded.expires_at
                 RETURNING epoch",
                &[&self.instance, &(self.lease_ms() as f64)],
            )
            .await
            .map_err(backend)?
            .get(0);
        t.execute(
            "UPDATE actions SET holder = NULL, epoch = NULL
             WHERE status <> 'delivered' AND status IN ('pending', 'parked')
               AND holder = $1 AND epoch <> $2",
            &[&self.instance, &epoch],
        )
        .await
        .map_err(backend)?;
        let others: i64 = t
            .query_one(
                "SELECT COUNT(*) FROM instances WHERE expires_at >= now() AND instance <> $1",
                &[&self.instance],
            )
            .await
            .map_err(backend)?
            .get(0);
        t.commit().await.map_err(backend)?;
        self.epoch.store(epoch, Ordering::Release);
        *lock(&self.renewed_at) = sent;
        lock(&self.up_since).get_or_insert(sent);
        // Alone, the whole limit is this instance's at once; beside others,
        // it takes its share at its next heartbeat, when they have had one
        // to count it and shrink theirs.
        self.share
            .store(if others == 0 { 1 } else { 0 }, Ordering::Release);
        Ok(epoch)
    }

    /// Renews the lease; when it is gone (another instance fenced it), takes
    /// a new one. Then takes over the claims of
    /// every instance whose lease expired. Returns how many instances were
    /// taken over.
    pub(super) async fn beat(&self, client: &mut Client) -> StoreResult<u64> {
        let sent = Instant::now();
        let renewed = client
            .execute(
                "UPDATE instances SET heartbeat_at = now(),
                        expires_at = now() + $3 * interval '1 millisecond'
                 WHERE instance = $1 AND epoch = $2",
                &[&self.instance, &self.epoch(), &(self.lease_ms() as f64)],
            )
            .await
            .map_err(backend)?;
        if renewed > 0 {
            *lock(&self.renewed_at) = sent;
            lock(&self.up_since).get_or_insert(sent);
        }
        if renewed == 0 {
            let old = self.epoch();
            let new = self.take(client).await?;
            tracing::warn!(instance = %self.instance, old_epoch = old, new_epoch = new,
                "this instance's lease had expired and another instance took it over; this one \
                 lets go of what it held, took a new lease, and outcomes of its old claims are \
                 ignored");
            return Ok(0);
        }
        let n = self.take_over(client).await?;
        let live = client
            .query(
                "SELECT instance FROM instances WHERE expires_at >= now() ORDER BY instance",
                &[],
            )
            .await
            .map_err(backend)?;
        let rank = live
            .iter()
            .position(|r| r.get::<_, &str>(0) == self.instance)
            .unwrap_or(0);
        let packed = ((rank as u64) << 32) | (live.len() as u64 & 0xffff_ffff);
        if self.share.swap(packed, Ordering::AcqRel) != packed {
            tracing::info!(instance = %self.instance, rank, live = live.len(),
                "the fleet's live instances changed: each endpoint's max_in_flight is shared anew");
        }
        Ok(n)
    }

    /// Deletes the rows of instances whose lease expired (database clock)
    /// and releases their claims into the backlogs. Returns how many.
    pub(super) async fn take_over(&self, client: &mut Client) -> StoreResult<u64> {
        let up_a_lease = lock(&self.up_since).is_some_and(|t| t.elapsed() >= self.lease);
        if !up_a_lease {
            return Ok(0);
        }
        let t = client.transaction().await.map_err(backend)?;
        // Rows a paused instance locked are not waited for: the next
        // heartbeat tries again (the server ends an idle transaction after
        // half a lease).
        t.batch_execute("SET LOCAL lock_timeout = '1s'")
            .await
            .map_err(backend)?;
        let dead = t
            .query(
                "DELETE FROM instances WHERE expires_at < now() AND instance <> $1
                 RETURNING instance, epoch",
                &[&self.instance],
            )
            .await
            .map_err(backend)?;
        if dead.is_empty() {
            return Ok(0);
        }
        let mut released = 0;
        for row in &dead {
            let (instance, epoch): (String, i64) = (row.get(0), row.get(1));
            let n = t
                .execute(
                    "UPDATE actions SET holder = NULL, epoch = NULL
                     WHERE status <> 'delivered' AND status IN ('pending', 'parked')
                       AND holder = $1 AND epoch <= $2",
                    &[&instance, &epoch],
                )
                .await
                .map_err(backend)?;
            released += n;
            tracing::warn!(instance = %instance, epoch, actions = n, by = %self.instance,
                "an instance's lease expired: its claimed actions were released for the fleet");
        }
        t.commit().await.map_err(backend)?;
        if released > 0 {
            self.released.store(true, Ordering::Release);
        }
        let n = dead.len() as u64;
        self.taken_over.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
