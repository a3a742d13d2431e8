//! The timer task of an opening.

use std::sync::Weak;

use super::Shared;

/// The timer task of one opening: sleeps until the deadline, then moves the
/// breaker to HalfOpen (and publishes that), so that the transition is seen
/// even when no call comes. Admission does not depend on it: a call after
/// the deadline is a probe whether or not this task ran. It holds the
/// breaker weakly and ends as soon as the opening it serves is over.
pub(super) async fn ticker(breaker: Weak<Shared>, generation: u32, until_us: u64) {
    let deadline = match breaker.upgrade() {
        Some(s) => s.instant_of(until_us),
        None => return,
    };
    loop {
        tokio::time::sleep_until(deadline).await;
        let Some(shared) = breaker.upgrade() else {
            return;
        };
        let t = shared.now_us();
        if shared
            .core
            .expire(generation, t, &mut |c| shared.publish(c))
        {
            return;
        }
    }
}
