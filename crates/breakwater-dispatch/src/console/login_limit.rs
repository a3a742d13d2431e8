//! A budget of failed console logins, so that a token cannot be guessed at
//! the speed of the network.
//!
//! Every refused login spends one unit of a budget of [`BURST`], which
//! refills at [`REFILL_PER_SEC`] a second. While it is empty every login is
//! refused with `429` before its token is looked at (so a guess then tells
//! nothing), until the budget has a unit again. A login with a good token
//! spends nothing. The budget is the instance's, not a client's: the
//! console does not see client addresses behind a proxy, and a limit an
//! attacker dodges by changing address limits nothing. A flood of bad
//! guesses therefore delays everyone's new logins for a while; sessions
//! already open and the HTTP API are not touched.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failed logins allowed at once.
pub(crate) const BURST: f64 = 20.0;
/// Failed logins allowed a second, after the burst.
pub(crate) const REFILL_PER_SEC: f64 = 1.0;

/// The budget: units left, as of when.
#[derive(Debug)]
pub(crate) struct LoginLimit {
    state: Mutex<(f64, Instant)>,
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self {
            state: Mutex::new((BURST, Instant::now())),
        }
    }
}

impl LoginLimit {
    fn refilled(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (units, at) = *s;
        let refill = now.duration_since(at).as_secs_f64() * REFILL_PER_SEC;
        *s = ((units + refill).min(BURST), now);
        s
    }

    /// `None` when a login may be tried now; else how long until one may.
    pub(crate) fn wait(&self) -> Option<Duration> {
        let s = self.refilled();
        (s.0 < 1.0).then(|| Duration::from_secs_f64((1.0 - s.0) / REFILL_PER_SEC))
    }

    /// Spends a unit for a refused login.
    pub(crate) fn refused(&self) {
        let mut s = self.refilled();
        s.0 = (s.0 - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_empties_the_budget_and_time_refills_it() {
        let limit = LoginLimit::default();
        for _ in 0..20 {
            assert_eq!(limit.wait(), None);
            limit.refused();
        }
        let wait = limit.wait().expect("empty after the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert_eq!(limit.wait(), None, "a unit a second");
        limit.refused();
        assert!(limit.wait().is_some());
        tokio::time::advance(Duration::from_secs(3_600)).await;
        for _ in 0..20 {
            assert_eq!(limit.wait(), None, "refilled to the burst, no more");
            limit.refused();
        }
        assert!(limit.wait().is_some());
    }
}
