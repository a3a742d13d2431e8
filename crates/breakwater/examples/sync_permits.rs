//! Sync code protected by a breaker, with permits: no async runtime needed.
//!
//! A "service" that is down for its first 30 requests and healthy after
//! that is called in a loop. The breaker opens after the failures, refuses
//! calls without running them while it is open, lets probes through after
//! its open timeout and closes once they succeed.
//!
//! Run it with `cargo run -p breakwater --example sync_permits`.

use std::thread;
use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};

/// The protected work: fails while `request < 30`.
fn flaky_service(request: u32) -> Result<&'static str, &'static str> {
    if request < 30 {
        Err("connection refused")
    } else {
        Ok("pong")
    }
}

fn main() {
    let breaker = CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 0.5,
        sample_size: 10,
        open_timeout_ms: 200,
        half_open_max_requests: 2,
        jitter_ratio: 0.0,
        ..Default::default()
    });

    let mut last = breaker.state();
    let (mut ran, mut refused) = (0u32, 0u32);
    for request in 0..60 {
        match breaker.try_acquire() {
            Ok(permit) => {
                ran += 1;
                match flaky_service(request) {
                    Ok(_) => permit.success(),
                    Err(_) => permit.failure(),
                }
            }
            Err(CircuitError::Open { retry_after }) => {
                refused += 1;
                if let Some(wait) = retry_after {
                    // A real caller would do other work, or give up; here we wait.
                    thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
            Err(other) => unreachable!("try_acquire only refuses as Open: {other}"),
        }
        let now = breaker.state();
        if now != last {
            println!("request {request:>2}: {last:?} -> {now:?}");
            last = now;
        }
    }

    let m = breaker.metrics();
    println!(
        "ran {ran}, refused {refused}; breaker: {} successes, {} failures, {} blocked, {} probes",
        m.successes, m.failures, m.blocked, m.half_open_tests
    );
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "the service recovered"
    );
    assert!(refused > 0, "the open breaker refused calls");
}
