//! The fleet demo's receivers: each answers as its kind says and keeps
//! every request by its `webhook-id`, for the summary.

use super::*;

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Healthy,
    Flaky,
    /// 503 until the recovery time is set and reached.
    Dead,
}

/// One request a receiver got.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hit {
    pub(super) at: Instant,
    pub(super) ok: bool,
}

/// Every request a receiver got, by `webhook-id`.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) hits: Mutex<HashMap<String, Vec<Hit>>>,
    /// Requests without a `webhook-id`.
    pub(super) unsigned: AtomicU64,
}

/// What a ledger holds, counted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    pub(super) requests: u64,
    pub(super) ok: u64,
    pub(super) errors: u64,
    /// `webhook-id`s answered `2xx` at least once.
    pub(super) unique: u64,
    /// `2xx` answers beyond the first per `webhook-id`.
    pub(super) duplicates: u64,
}

impl Ledger {
    pub(super) fn note(&self, id: Option<&str>, ok: bool) {
        let Some(id) = id else {
            self.unsigned.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let hit = Hit {
            at: Instant::now(),
            ok,
        };
        lock(&self.hits)
            .entry(id.to_string())
            .or_default()
            .push(hit);
    }

    pub(super) fn tally(&self) -> Tally {
        let hits = lock(&self.hits);
        let mut t = Tally::default();
        for list in hits.values() {
            let ok = list.iter().filter(|h| h.ok).count() as u64;
            t.requests += list.len() as u64;
            t.ok += ok;
            t.errors += list.len() as u64 - ok;
            t.unique += u64::from(ok > 0);
            t.duplicates += ok.saturating_sub(1);
        }
        t
    }

    /// Each event's requests, by event id (one `webhook-id` per event: a
    /// receiver is the endpoint of one action).
    pub(super) fn by_event(&self) -> HashMap<Uuid, Vec<Hit>> {
        lock(&self.hits)
            .iter()
            .filter_map(|(id, hits)| Some((event_of(id)?, hits.clone())))
            .collect()
    }

    /// The events with a `2xx` answer.
    pub(super) fn delivered(&self) -> HashSet<Uuid> {
        lock(&self.hits)
            .iter()
            .filter(|(_, hits)| hits.iter().any(|h| h.ok))
            .filter_map(|(id, _)| event_of(id))
            .collect()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The event id in a `webhook-id`: `msg_<32 hex digits>_<16 hex digits>`.
pub(super) fn event_of(webhook_id: &str) -> Option<Uuid> {
    let rest = webhook_id.strip_prefix("msg_")?;
    Uuid::try_parse(rest.split('_').next()?).ok()
}

pub(super) async fn receiver(
    name: &'static str,
    answer: Answer,
    recover: Arc<OnceLock<Instant>>,
) -> anyhow::Result<(Receiver, Arc<Ledger>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let ledger = Arc::new(Ledger::default());
    let (ok2, refused2, ledger2) = (ok.clone(), refused.clone(), ledger.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let (ok, refused, ledger) = (ok2.clone(), refused2.clone(), ledger2.clone());
            let recover = recover.clone();
            async move {
                let fail = match answer {
                    Answer::Healthy => false,
                    Answer::Flaky => rand::random::<f64>() < 0.4,
                    Answer::Dead => recover.get().is_none_or(|t| Instant::now() < *t),
                };
                let id = headers.get(ID_HEADER).and_then(|v| v.to_str().ok());
                ledger.note(id, !fail);
                let status = if fail {
                    refused.fetch_add(1, Ordering::Relaxed);
                    if answer == Answer::Flaky {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                };
                // The answer takes a while, as a real receiver's does: an
                // instance killed meanwhile never learns that it was done.
                let ms = rand::random_range(ANSWER_MS.0..=ANSWER_MS.1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://{addr}/hook");
    let endpoint = crate::demo::hook(&url).endpoint();
    let r = Receiver {
        name,
        url,
        endpoint,
        ok,
        refused,
    };
    Ok((r, ledger))
}
