//! The timer: actions waiting for a retry or for an open circuit's end.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{schedule, Engine};
use crate::store::PendingAction;

pub(super) async fn timer_task(
    engine: Engine,
    mut rx: mpsc::UnboundedReceiver<(PendingAction, Duration)>,
) {
    let mut timer = Timer::new(tokio::time::Instant::now());
    let stop = engine.inner.stop.clone();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            msg = rx.recv() => match msg {
                Some((action, wait)) => timer.insert(action, wait, tokio::time::Instant::now()),
                None => return,
            },
            Some(due) = std::future::poll_fn(|cx| timer.poll_due(cx)), if !timer.is_empty() => {
                for mut action in due.into_iter().flatten() {
                    action.not_before_ms = None;
                    engine.route(action);
                }
            }
        }
    }
}

/// The waiting actions, grouped by the millisecond they are due: one
/// [`DelayQueue`](tokio_util::time::DelayQueue) entry for each group. The
/// actions an open circuit parks during one opening all wait for its end,
/// so thousands of them cost one timer entry and a slot each.
struct Timer {
    /// Time zero of the group keys.
    start: tokio::time::Instant,
    /// One entry for each group, keyed by its due time in milliseconds
    /// after `start`.
    queue: tokio_util::time::DelayQueue<u64>,
    /// Each group in chunks of [`TIMER_CHUNK`], in the order they came: a
    /// group of a hundred thousand grows without copying what it holds.
    groups: HashMap<u64, Vec<Vec<PendingAction>>>,
}

/// The actions in one chunk of a [`Timer`] group.
const TIMER_CHUNK: usize = 256;

impl Timer {
    fn new(start: tokio::time::Instant) -> Self {
        Self {
            start,
            queue: tokio_util::time::DelayQueue::new(),
            groups: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Holds `action` until `wait` after `now`, rounded up to the next
    /// millisecond (the timer's resolution).
    fn insert(&mut self, action: PendingAction, wait: Duration, now: tokio::time::Instant) {
        // The timer wheel holds about two years; the configuration allows
        // one at most.
        let due = now.saturating_duration_since(self.start) + wait.min(schedule::MAX_WAIT);
        let key = u64::try_from(due.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        match self.groups.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut group) => {
                let chunks = group.get_mut();
                match chunks.last_mut() {
                    Some(last) if last.len() < TIMER_CHUNK => last.push(action),
                    _ => {
                        let mut chunk = Vec::with_capacity(TIMER_CHUNK);
                        chunk.push(action);
                        chunks.push(chunk);
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(vec![vec![action]]);
                self.queue
                    .insert_at(key, self.start + Duration::from_millis(key));
            }
        }
    }

    /// The next group whose time has come, if any.
    fn poll_due(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<Vec<PendingAction>>>> {
        match self.queue.poll_expired(cx) {
            std::task::Poll::Ready(Some(expired)) => std::task::Poll::Ready(Some(
                self.groups.remove(expired.get_ref()).unwrap_or_default(),
            )),
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use breakwater::traits::{ActionConfig, EntityEvent, EventKind, WebhookAction};
    use tokio::time::Instant;

    use crate::store::EventJson;

    fn action(id: i64) -> PendingAction {
        PendingAction {
            id,
            event: Arc::new(EventJson::new(&EntityEvent::new(
                EventKind::Insert,
                "Order",
                uuid::Uuid::new_v4(),
                serde_json::json!({}),
            ))),
            observer: "o".into(),
            endpoint: "e".into(),
            action: Arc::new(ActionConfig::Webhook(WebhookAction {
                url: "http://127.0.0.1:9/hook".into(),
                method: "POST".into(),
                headers: Default::default(),
                body_template: None,
                signing_secret: None,
            })),
            attempts: 0,
            replays: 0,
            accepted_at_ms: 0,
            not_before_ms: None,
            parked: false,
            size: 0,
            claim_epoch: 0,
        }
    }

    /// The groups that come due within `within`, in order, as action ids.
    async fn due(timer: &mut Timer, within: Duration) -> Vec<(u128, Vec<i64>)> {
        let start = Instant::now();
        let mut out = Vec::new();
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        while !timer.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                Some(group) = std::future::poll_fn(|cx| timer.poll_due(cx)) => {
                    let ids = group.iter().flatten().map(|a| a.id).collect();
                    out.push((start.elapsed().as_millis(), ids));
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_actions_due_in_one_millisecond_share_one_timer_entry() {
        let now = Instant::now();
        let mut timer = Timer::new(now);
        let ms = Duration::from_millis;
        timer.insert(action(1), ms(100), now);
        timer.insert(action(2), ms(50), now);
        // Parked during one opening: the same end, asked at other times.
        timer.insert(action(3), ms(99), now + ms(1));
        timer.insert(action(4), Duration::from_micros(99_600), now);
        // Not due in time: stays.
        timer.insert(action(5), ms(10_000), now);
        assert_eq!(timer.queue.len(), 3, "three due times");
        let got = due(&mut timer, ms(1_000)).await;
        assert_eq!(got, vec![(50, vec![2]), (100, vec![1, 3, 4])]);
        assert!(!timer.is_empty());
        assert_eq!(due(&mut timer, ms(10_000)).await, vec![(9_000, vec![5])]);
        assert!(timer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_parked_actions_take_one_timer_entry() {
        let now = Instant::now();
        let mut timer = Timer::new(now);
        for id in 0..10_000 {
            timer.insert(action(id), Duration::from_secs(5), now);
        }
        assert_eq!(timer.queue.len(), 1);
        let got = due(&mut timer, Duration::from_secs(6)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 5_000);
        assert_eq!(got[0].1, (0..10_000).collect::<Vec<_>>());
    }
}
