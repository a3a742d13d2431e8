//! Calls through one breaker (breakwater's or a peer's) in a loop, for
//! counting instructions per call with `valgrind --tool=callgrind`, which
//! the machine's load does not move:
//!
//! ```sh
//! cargo build --release -p breakwater --example breaker_calls
//! valgrind --tool=callgrind target/release/examples/breaker_calls closed_async breakwater 100000
//! ```
//!
//! Scenarios: `closed_sync`, `closed_async`, `open`, `failures_10pct`;
//! libraries: `breakwater`, `recloser`. Run each with two counts
//! (say 100 000 and 200 000): the difference over the difference of the
//! counts is the cost of one call, without the set-up.

use std::hint::black_box;
use std::time::Duration;

use breakwater::{CircuitBreaker, CircuitBreakerConfig};
use futures_util::FutureExt;
use recloser::{AsyncRecloser, Recloser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Oops;

const HOUR: Duration = Duration::from_secs(3600);

fn breakwater(window: usize, tripped: bool) -> CircuitBreaker {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 0.5,
        sample_size: window,
        minimum_calls: Some(window),
        open_timeout_ms: HOUR.as_millis() as u64,
        max_open_timeout_ms: HOUR.as_millis() as u64,
        ..Default::default()
    });
    if tripped {
        for _ in 0..window {
            cb.try_acquire().unwrap().failure();
        }
        // The first rejection starts measuring the processor's counter (a
        // background thread, at most 0.2 s); wait for it without spending
        // instructions, so that the loop measures rejections that read it.
        assert!(cb.try_acquire().is_err());
        std::thread::sleep(Duration::from_millis(500));
        assert!(cb.try_acquire().is_err());
    }
    cb
}

fn recloser(window: usize, tripped: bool) -> Recloser {
    let r = Recloser::custom()
        .error_rate(0.5)
        .closed_len(window)
        .half_open_len(1)
        .open_wait(HOUR)
        .build();
    if tripped {
        for _ in 0..=window {
            let _ = r.call(|| Result::<(), Oops>::Err(Oops));
        }
    }
    r
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (scenario, lib, n) = match args.as_slice() {
        [_, s, l, n] => (s.as_str(), l.as_str(), n.parse::<u64>().expect("a count")),
        _ => {
            eprintln!("usage: breaker_calls SCENARIO LIBRARY COUNT");
            std::process::exit(2);
        }
    };
    let tripped = scenario == "open";
    let fail = |i: u64| scenario == "failures_10pct" && i % 10 == 0;
    match lib {
        "breakwater" => {
            let cb = breakwater(100, tripped);
            for i in 0..n {
                match scenario {
                    "closed_async" | "open" => {
                        let _ = black_box(&cb)
                            .call(|| async { Ok::<u64, Oops>(1) })
                            .now_or_never();
                    }
                    _ => {
                        if let Ok(p) = black_box(&cb).try_acquire() {
                            if fail(i) {
                                p.failure();
                            } else {
                                p.success();
                            }
                        }
                    }
                }
            }
        }
        "recloser" => {
            let r = recloser(100, tripped);
            if scenario == "closed_async" || scenario == "open" {
                let r = AsyncRecloser::from(r);
                for _ in 0..n {
                    let _ = black_box(&r)
                        .call(async { Ok::<u64, Oops>(1) })
                        .now_or_never();
                }
            } else {
                for i in 0..n {
                    let _ = black_box(&r).call(|| {
                        if fail(i) {
                            Err(Oops)
                        } else {
                            Ok::<u64, Oops>(1)
                        }
                    });
                }
            }
        }
        other => {
            eprintln!("unknown library {other:?}: breakwater or recloser");
            std::process::exit(2);
        }
    }
}
