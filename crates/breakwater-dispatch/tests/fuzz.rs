//! Fuzzing what parses untrusted input: `POST /events` bodies
//! ([`parse_events`]) and configuration files ([`Config::parse`]), on
//! stable Rust: proptest generates valid events and configuration files,
//! then breaks them (truncated, bytes inserted, deleted or replaced, values
//! of the wrong type, weird numbers, deep nesting, huge and invalid strings,
//! duplicated and unknown keys, ...), and every answer is checked against
//! what the parser promises.
//!
//! - `cargo test --test fuzz`: each target runs a modest number of cases.
//! - `FUZZ_SECONDS=N`: each target runs for `N` seconds instead and prints
//!   its executions and findings (`scripts/fuzz.sh N` runs both targets so,
//!   in release mode).
//! - `FUZZ_SEED=S` replays a run (the seed is printed); `FUZZ_TIMEOUT_SECS`
//!   (default 10) is how long one input may take: past it the input is
//!   printed and the process exits (a hang is a finding too).
//!
//! A failure is shrunk to a minimal input, printed as a Rust literal (and
//! written whole under the target's tmp directory); each one found is kept
//! at the end of this file as a regression test named after its bug.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use breakwater::traits::{ActionConfig, EntityEvent};
use breakwater_dispatch::config::{Config, ConfigError};
use breakwater_dispatch::error::ApiError;
use breakwater_dispatch::routes::events::parse_events;
use chrono::{DateTime, FixedOffset, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The runner: cases (or seconds) per target, panics caught with their
// location, hangs caught by a watchdog, failures shrunk and deduplicated.
// ---------------------------------------------------------------------------

thread_local! {
    /// Set while a target runs: its panics are recorded, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// What the last input led to (`accepted`, `400 at events[i]`, ...),
    /// set by the checks: counted, to show how deep the inputs reach.
    static OUTCOME: Cell<&'static str> = const { Cell::new("?") };
}

fn outcome(what: &'static str) {
    OUTCOME.with(|o| o.set(what));
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                return default(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-string payload)".into());
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked at {at}: {message}")));
        }));
    });
}

/// Runs `f`, a panic becoming `Err("panicked at file:line:col: message")`.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    QUIET.with(|q| q.set(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    out.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panicked".into())
    })
}

/// A failure's kind: its panic location, or the `[tag]` its message starts with.
fn signature(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("panicked at ") {
        return format!("panic at {}", rest.split(": ").next().unwrap_or(rest));
    }
    match reason.find(']') {
        Some(end) if reason.starts_with('[') => reason[..=end].to_string(),
        _ => reason.chars().take(60).collect(),
    }
}

/// Bugs found and not fixed yet: (two strings the failure's reason
/// contains, the regression test, ignored until fixed). A failure matching
/// one is counted, not reported again. Remove an entry once its bug is
/// fixed. None today.
const KNOWN: &[(&str, &str, &str)] = &[];

fn known(reason: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(at, what, _)| reason.contains(at) && reason.contains(what))
        .map(|(_, _, test)| *test)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// A failure kept: its reason and its input, shrunk.
struct Finding {
    signature: String,
    reason: String,
    literal: String,
    hits: u64,
}

/// Prints the input that has taken longer than the timeout, and exits.
struct Watchdog<T> {
    current: Arc<Mutex<Option<(Instant, T)>>>,
    done: Arc<AtomicBool>,
}

impl<T: Clone + Send + 'static> Watchdog<T> {
    fn start(name: &'static str, literal: fn(&T) -> String, timeout: Duration) -> Self {
        let current: Arc<Mutex<Option<(Instant, T)>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (Arc::clone(&current), Arc::clone(&done));
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let slow = match &*c.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some((since, input)) if since.elapsed() > timeout => Some(input.clone()),
                    _ => None,
                };
                if let Some(input) = slow {
                    let lit = literal(&input);
                    let file = save(name, "timeout", &lit);
                    eprintln!(
                        "\nfuzz {name}: FINDING: one input ran past {timeout:?} (a hang?); \
                         the process exits.\ninput ({} bytes as a literal, whole in {file}):\n{}\n",
                        lit.len(),
                        abbreviate(&lit)
                    );
                    std::process::exit(3);
                }
            }
        });
        Self { current, done }
    }

    fn running(&self, input: Option<&T>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            input.map(|i| (Instant::now(), i.clone()));
    }
}

impl<T> Drop for Watchdog<T> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Writes a finding's whole input; returns where.
fn save(name: &str, what: &str, literal: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    let file = dir.join(format!("{name}-{what}-{}.txt", std::process::id()));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, literal)) {
        Ok(()) => file.display().to_string(),
        Err(e) => format!("(not written: {e})"),
    }
}

fn abbreviate(s: &str) -> String {
    const MAX: usize = 3000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX / 2).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(MAX / 2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head} [... {} chars ...] {tail}", s.chars().count() - MAX)
}

/// Runs `check` on inputs from `strategy`: `default_cases` of them, or for
/// `FUZZ_SECONDS`. Panics at the end if anything new was found.
fn fuzz<T, S>(
    name: &'static str,
    strategy: S,
    literal: fn(&T) -> String,
    check: fn(&T) -> Result<(), String>,
    default_cases: u64,
) where
    T: Clone + Debug + Send + 'static,
    S: Strategy<Value = T>,
{
    install_panic_hook();
    let seconds = env_u64("FUZZ_SECONDS");
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_nanos() as u64)
            ^ name
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b))
    });
    let timeout = Duration::from_secs(env_u64("FUZZ_TIMEOUT_SECS").unwrap_or(10));
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = RunnerConfig {
        failure_persistence: None,
        max_shrink_iters: 50_000,
        max_shrink_time: 60_000,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let watchdog = Watchdog::start(name, literal, timeout);
    let executions = AtomicU64::new(0);
    let findings: RefCell<Vec<Finding>> = RefCell::new(Vec::new());
    let known_hits: RefCell<BTreeMap<&'static str, u64>> = RefCell::new(BTreeMap::new());
    let outcomes: RefCell<BTreeMap<&'static str, u64>> = RefCell::new(BTreeMap::new());
    // While a new failure shrinks, only failures of its kind count.
    let shrinking: RefCell<Option<String>> = RefCell::new(None);
    let test = |input: T| -> Result<(), TestCaseError> {
        executions.fetch_add(1, Ordering::Relaxed);
        watchdog.running(Some(&input));
        outcome("panicked");
        let result = guarded(|| check(&input)).and_then(|r| r);
        watchdog.running(None);
        if shrinking.borrow().is_none() {
            *outcomes
                .borrow_mut()
                .entry(OUTCOME.with(Cell::get))
                .or_default() += 1;
        }
        let Err(reason) = result else { return Ok(()) };
        if let Some(test) = known(&reason) {
            *known_hits.borrow_mut().entry(test).or_default() += 1;
            return Ok(());
        }
        let sig = signature(&reason);
        let mut shrinking = shrinking.borrow_mut();
        match &*shrinking {
            Some(s) if *s != sig => return Ok(()),
            Some(_) => {}
            None => {
                if let Some(f) = findings
                    .borrow_mut()
                    .iter_mut()
                    .find(|f| f.signature == sig)
                {
                    f.hits += 1;
                    return Ok(());
                }
                *shrinking = Some(sig);
            }
        }
        Err(TestCaseError::fail(reason))
    };
    let started = Instant::now();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut cases = 0u64;
    loop {
        let more = match deadline {
            Some(d) => Instant::now() < d,
            None => cases < default_cases,
        };
        if !more {
            break;
        }
        cases += 1;
        let tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{name}: no input generated: {e}"));
        match runner.run_one(tree, test) {
            Ok(_) => {}
            Err(TestError::Fail(reason, minimal)) => {
                let signature = shrinking.borrow_mut().take().unwrap_or_default();
                let literal = literal(&minimal);
                let file = save(name, &findings.borrow().len().to_string(), &literal);
                eprintln!(
                    "\nfuzz {name}: FINDING {signature}\n  {reason}\n  minimal input ({} chars as a \
                     literal, whole in {file}):\n  {}\n",
                    literal.len(),
                    abbreviate(&literal)
                );
                findings.borrow_mut().push(Finding {
                    signature,
                    reason: reason.to_string(),
                    literal,
                    hits: 1,
                });
            }
            Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
        }
        *shrinking.borrow_mut() = None;
    }
    drop(watchdog);
    let elapsed = started.elapsed();
    let executions = executions.load(Ordering::Relaxed);
    let findings = findings.into_inner();
    let known_hits = known_hits.into_inner();
    println!(
        "fuzz {name}: {executions} executions ({cases} cases, the rest shrinking) in {:.1} s \
         ({:.0}/s), seed {seed}; {} finding(s), {} hit(s) of known bugs",
        elapsed.as_secs_f64(),
        executions as f64 / elapsed.as_secs_f64().max(1e-9),
        findings.len(),
        known_hits.values().sum::<u64>(),
    );
    let outcomes = outcomes.into_inner();
    let total = outcomes.values().sum::<u64>().max(1) as f64;
    let outcomes: Vec<String> = outcomes
        .iter()
        .map(|(what, n)| format!("{what} {:.1}%", *n as f64 * 100.0 / total))
        .collect();
    println!("  outcomes of the cases: {}", outcomes.join(", "));
    for (test, hits) in &known_hits {
        println!("  known: {hits} hit(s) of the bug kept as `{test}`");
    }
    for f in &findings {
        println!(
            "  FINDING {} ({} hit(s)): {}\n    minimal input: {}",
            f.signature,
            f.hits,
            f.reason,
            abbreviate(&f.literal)
        );
    }
    assert!(
        findings.is_empty(),
        "fuzz {name}: {} finding(s), seed {seed} (see above)",
        findings.len()
    );
}

// ---------------------------------------------------------------------------
// Byte-level mutations, shared by both targets.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Delete(Index, usize),
    Insert(Index, Vec<u8>),
    Replace(Index, Vec<u8>),
    /// Copies a slice of the input to another place.
    Copy(Index, usize, Index),
}

fn mutations(dictionary: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<Mutation>> {
    let bytes = prop_oneof![
        3 => select(dictionary).prop_map(<[u8]>::to_vec),
        1 => vec(any::<u8>(), 1..4),
    ];
    let one = prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), bytes.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), bytes).prop_map(|(i, b)| Mutation::Replace(i, b)),
        1 => (any::<Index>(), 1usize..64, any::<Index>()).prop_map(|(i, n, j)| Mutation::Copy(i, n, j)),
    ];
    prop_oneof![3 => Just(Vec::new()), 1 => vec(one, 1..4)]
}

fn mutate(mut s: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = s.len();
        match m {
            Mutation::Truncate(i) => s.truncate(i.index(len + 1)),
            Mutation::Delete(i, n) => {
                let at = i.index(len + 1);
                s.drain(at..(at + n).min(len));
            }
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                s.splice(at..at, b.iter().copied());
            }
            Mutation::Replace(i, b) => {
                let at = i.index(len + 1);
                s.splice(at..(at + b.len()).min(len), b.iter().copied());
            }
            Mutation::Copy(i, n, j) => {
                let from = i.index(len + 1);
                let piece = s[from..(from + n).min(len)].to_vec();
                let to = j.index(len + 1);
                s.splice(to..to, piece);
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------
// `POST /events` bodies.
// ---------------------------------------------------------------------------

const JSON_DICTIONARY: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"null",
    b"true",
    b"0",
    b"-",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"3.14159265358979323846",
    b"\\ud800",
    b"\\udc00",
    b"\\u0000",
    b"\"\\ud800\"",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xe2\x80\xa8",
    b"\"id\":null,",
    b"\"bogus\":1,",
    b"\"data\":{},",
    b"{\"a\":[",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"\"\\u0069d\":null,",
    b"9223372036854775807",
    b"-9223372036854775809",
    b"1e-9223372036854775808",
    b"0.000001e-400",
];

const UUIDS: &[&str] = &[
    "1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1",
    "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "6A1C2E9E-7D4B-4F7A-9C1E-0B8F3D2A5C11",
    "6a1c2e9e7d4b4f7a9c1e0b8f3d2a5c11",
    "{6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11}",
    "urn:uuid:6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11",
    "01890a5d-ac96-774b-bcce-b302099a8057",
];

const BAD_UUIDS: &[&str] = &[
    "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c1",
    "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11a",
    "g0000000-0000-0000-0000-000000000000",
    "",
    "{6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11",
];

/// Numbers at the edges: of integers, of floats, of what a float keeps.
const WEIRD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1e999",
    "-1e999",
    "1e-999",
    "1E+2",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "4.9e-324",
    "5e-324",
    "2.2250738585072011e-308",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "9223372036854775807",
    "3.14159265358979323846",
    "0.1",
    "1.5",
    "123456789012345.6",
    "9007199254740993",
    "9007199254740993.0",
    "1e23",
    "1e22",
    "100000000000000000000000",
    "0.30000000000000004",
    "2.699038309416696e-307",
    "0e9223372036854775807",
    "0.01e-9223372036854775808",
    "1e-9223372036854775809",
    "1e99999999999999999999",
];

/// Not JSON numbers at all.
const BAD_NUMBERS: &[&str] = &[
    "01", "1.", ".5", "+1", "1e", "-", "NaN", "Infinity", "0x10", "1_000",
];

/// A JSON number: mostly one a 64-bit integer or float keeps; `wild`, often
/// at the edges, built digit by digit, or not JSON.
fn json_number(wild: bool) -> BoxedStrategy<String> {
    let exponent = prop_oneof![
        3 => "[0-9]{1,3}",
        1 => select(&[
            "308", "309", "324", "325", "999", "9223372036854775807", "9223372036854775808",
            "9223372036854775809", "18446744073709551616", "99999999999999999999",
        ][..]).prop_map(String::from),
    ];
    let built = (
        select(&["", "-"][..]),
        prop_oneof!["0", "[1-9][0-9]{0,25}"],
        prop::option::of("0{0,4}[0-9]{1,22}"),
        prop::option::of((
            select(&["e", "E"][..]),
            select(&["", "+", "-"][..]),
            exponent,
        )),
    )
        .prop_map(|(sign, whole, frac, exp)| {
            let mut s = format!("{sign}{whole}");
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            if let Some((e, es, digits)) = exp {
                s.push_str(e);
                s.push_str(es);
                s.push_str(&digits);
            }
            s
        });
    let (odd, bad) = if wild { (4, 1) } else { (1, 0) };
    prop_oneof![
        3 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        3 => any::<f64>().prop_map(|f| match f {
            f if !f.is_finite() => "1e999".to_string(),
            f if f.abs() < 1e15 => format!("{f}"),
            f => format!("{f:e}"),
        }),
        odd => select(WEIRD_NUMBERS).prop_map(String::from),
        odd => built,
        bad => select(BAD_NUMBERS).prop_map(String::from),
    ]
    .boxed()
}

/// A JSON string (with its quotes), written the many ways JSON allows;
/// `wild`, now and then a lone surrogate (valid JSON, no string), not
/// JSON, or huge.
fn json_string(wild: bool) -> BoxedStrategy<String> {
    let piece = prop_oneof![
        6 => "[a-zA-Z0-9 _.:/-]{0,8}",
        3 => any::<char>().prop_map(|c| match c {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        }),
        2 => select(&["\\n", "\\t", "\\/", "\\b", "\\f", "\\r", "\\\"", "\\\\"][..]).prop_map(String::from),
        2 => prop_oneof![0u16..0xd800, 0xe000u16..=0xffff].prop_map(|u| format!("\\u{u:04x}")),
        1 => select(&["\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\u0000", "\u{7f}", "\u{2028}"][..]).prop_map(String::from),
    ];
    let lone = select(
        &[
            "\\ud800",
            "\\udc00",
            "\\udc00\\ud800",
            "\\ud800\\u0041",
            "\\ud800x",
            "\\uDFFF",
        ][..],
    );
    let invalid = select(
        &[
            "\\x", "\\u12", "\\U0041", "\\", "\t", "\n", "\u{0}", "\\ud8",
        ][..],
    );
    let around = |odd: BoxedStrategy<String>| {
        (vec(piece.clone(), 0..3), odd, vec(piece.clone(), 0..3))
            .prop_map(|(a, odd, b)| format!("\"{}{odd}{}\"", a.concat(), b.concat()))
    };
    let (lone_w, invalid_w, huge_w) = if wild { (4, 2, 1) } else { (0, 0, 0) };
    prop_oneof![
        lone_w => around(lone.prop_map(String::from).boxed()),
        invalid_w => around(invalid.prop_map(String::from).boxed()),
        40 => vec(piece.clone(), 0..6).prop_map(|p| format!("\"{}\"", p.concat())),
        huge_w => (1usize..100_000, select(&["x", "\\u00e9", "é", "\\\\", "\u{10ffff}"][..]))
            .prop_map(|(n, s)| format!("\"{}\"", s.repeat(n / s.len()))),
    ]
    .boxed()
}

/// Any JSON value; `wild`, with wild leaves (now and then not JSON).
fn json_value(wild: bool) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        1 => Just("null".to_string()),
        1 => Just("true".to_string()),
        1 => Just("false".to_string()),
        4 => json_number(wild),
        4 => json_string(wild),
    ];
    let (size, width) = if wild { (48, 6) } else { (16, 4) };
    leaf.prop_recursive(4, size, width, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..width as usize).prop_map(|v| format!("[{}]", v.join(","))),
            vec((json_string(wild), inner), 0..width as usize).prop_map(|members| {
                let members: Vec<String> =
                    members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
    .boxed()
}

/// Values nested up to 12 000 deep, closed or not.
fn deep_json() -> BoxedStrategy<String> {
    (
        1usize..12_000,
        select(&[("[", "]"), ("{\"a\":", "}"), ("[{\"a\":", "}]")][..]),
        prop_oneof![4 => Just(true), 1 => Just(false)],
        select(&["1", "[]", "{}", "\"x\"", "1e999"][..]),
    )
        .prop_map(|(n, (open, close), closed, core)| {
            let mut s = open.repeat(n);
            s.push_str(core);
            if closed {
                s.push_str(&close.repeat(n));
            }
            s
        })
        .boxed()
}

fn data_value() -> BoxedStrategy<String> {
    prop_oneof![
        12 => json_value(false),
        2 => json_value(true),
        1 => deep_json(),
        // Nested near serde_json's limit of 128.
        1 => (100usize..140).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
    .boxed()
}

fn uuid_text() -> BoxedStrategy<String> {
    prop_oneof![
        12 => select(UUIDS).prop_map(|s| format!("\"{s}\"")),
        12 => any::<u128>().prop_map(|n| format!("\"{}\"", Uuid::from_u128(n))),
        1 => select(BAD_UUIDS).prop_map(|s| format!("\"{s}\"")),
    ]
    .boxed()
}

fn timestamp() -> BoxedStrategy<String> {
    let frac = prop::option::of("[0-9]{1,12}")
        .prop_map(|f| f.map(|f| format!(".{f}")).unwrap_or_default());
    let zone = select(&["Z", "z", "+00:00", "-00:00", "+05:30", "-23:59", "+23:59"][..]);
    let odd_zone = select(&["Z", "+24:00", "+0000", "", "+5:30", "UTC"][..]);
    prop_oneof![
        16 => (1970u32..2100, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, frac.clone(), zone)
            .prop_map(|(y, mo, d, h, mi, s, f, z)| format!("\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}{z}\"")),
        2 => (0u32..100_000, 0u32..15, 0u32..33, 0u32..26, 0u32..62, 0u32..62, frac, odd_zone, select(&["T", "t", " ", "_"][..]))
            .prop_map(|(y, mo, d, h, mi, s, f, z, t)| format!("\"{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{f}{z}\"")),
        1 => select(&[
            "\"2026-01-22T10:00:00Z\"", "\"2016-12-31T23:59:60Z\"", "\"2016-12-31T23:59:60.5Z\"",
            "\"+275760-09-13T00:00:00Z\"", "\"9999-12-31T23:59:59.999999999Z\"",
            "\"0000-01-01T00:00:00Z\"", "\"2026-01-22T10:00:00+23:59\"",
            "\"2026-01-22T10:00:00.0000000001Z\"", "\"2026-02-30T10:00:00Z\"", "\"2026-01-22\"",
            "\"\"", "\"yesterday\"", "1769076000", "null",
        ][..]).prop_map(String::from),
    ]
    .boxed()
}

fn changes() -> BoxedStrategy<String> {
    let change =
        (json_value(false), json_value(false), 0u8..12).prop_map(|(old, new, how)| match how {
            0 => format!("{{\"old\":{old}}}"),
            1 => format!("{{\"old\":{old},\"new\":{new},\"extra\":1}}"),
            2 => format!("[{old},{new}]"),
            3 => format!("{{\"new\":{new},\"old\":{old},\"old\":{old}}}"),
            _ => format!("{{\"old\":{old},\"new\":{new}}}"),
        });
    prop_oneof![
        1 => Just("null".to_string()),
        6 => vec((json_string(false), change), 0..4).prop_map(|c| {
            let c: Vec<String> = c.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", c.join(","))
        }),
        1 => json_value(true),
    ]
    .boxed()
}

/// One field: valid (mostly), left out, or any value at all.
fn field(
    name: &'static str,
    valid: BoxedStrategy<String>,
    omit: u32,
) -> BoxedStrategy<Option<(String, String)>> {
    prop_oneof![
        100 => valid.prop_map(move |v| Some((format!("\"{name}\""), v))),
        omit => Just(None),
        2 => json_value(true).prop_map(move |v| Some((format!("\"{name}\""), v))),
    ]
    .boxed()
}

/// An event's members (key, value), as JSON texts, in some order.
fn event_members() -> BoxedStrategy<Vec<(String, String)>> {
    let fields = (
        field("id", prop_oneof![3 => uuid_text(), 1 => Just("null".to_string())].boxed(), 30),
        field(
            "event_type",
            prop_oneof![
                40 => select(&["\"INSERT\"", "\"UPDATE\"", "\"DELETE\"", "\"CUSTOM\""][..]),
                1 => select(&["{\"INSERT\":null}", "\"insert\"", "\"INSERT \"", "[\"INSERT\"]", "\"\\u0049NSERT\""][..]),
            ]
            .prop_map(String::from)
            .boxed(),
            1,
        ),
        field("entity_type", prop_oneof![20 => json_string(false), 1 => json_string(true)].boxed(), 1),
        field("entity_id", uuid_text(), 1),
        field("data", data_value(), 1),
        field("changes", changes(), 50),
        field("user_id", prop_oneof![json_string(false), Just("null".to_string())].boxed(), 40),
        field("timestamp", timestamp(), 30),
    );
    let extra_key = select(
        &[
            "\"bogus\"",
            "\"id\"",
            "\"data\"",
            "\"ID\"",
            "\"event_type \"",
            "\"\"",
            "\"\\u0069d\"",
            "\"entity_id\"",
            "\"timestamp\"",
        ][..],
    )
    .prop_map(String::from);
    let extras = prop_oneof![
        10 => Just(Vec::new()),
        1 => vec((extra_key, json_value(false), any::<Index>()), 1..3),
    ];
    (fields, extras, any::<bool>())
        .prop_flat_map(|((a, b, c, d, e, f, g, h), extras, shuffle)| {
            let members: Vec<(String, String)> =
                [a, b, c, d, e, f, g, h].into_iter().flatten().collect();
            let members = if shuffle {
                Just(members).prop_shuffle().boxed()
            } else {
                Just(members).boxed()
            };
            (members, Just(extras))
        })
        .prop_map(|(mut members, extras)| {
            for (k, v, at) in extras {
                let at = at.index(members.len() + 1);
                members.insert(at, (k, v));
            }
            members
        })
        .boxed()
}

fn object(members: &[(String, String)], ws: &str) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{k}{ws}:{ws}{v}"))
        .collect();
    format!("{{{ws}{}{ws}}}", members.join(&format!("{ws},{ws}")))
}

/// An item of an array of events: mostly an event, now and then not.
fn item() -> BoxedStrategy<String> {
    prop_oneof![
        12 => event_members().prop_map(|m| object(&m, "")),
        1 => event_members().prop_map(|m| {
            // An event given as an array of its field values.
            let values: Vec<&str> = m.iter().map(|(_, v)| v.as_str()).collect();
            format!("[{}]", values.join(","))
        }),
        1 => json_value(true),
        1 => Just("[]".to_string()),
    ]
    .boxed()
}

fn body() -> BoxedStrategy<Vec<u8>> {
    let ws = select(&["", " ", "\n\t", "\r\n  "][..]);
    let structured = prop_oneof![
        6 => (event_members(), ws.clone()).prop_map(|(m, ws)| format!("{ws}{}{ws}", object(&m, ws))),
        5 => (vec(item(), 0..5), ws).prop_map(|(items, ws)| format!("{ws}[{ws}{}{ws}]{ws}", items.join(&format!("{ws},{ws}")))),
        1 => json_value(true),
        1 => deep_json(),
        1 => select(&["", " ", "\u{feff}{}", "null", "true", "false", "0", "\"\"", "{}", "[[]]", "[{}]", "[null]"][..])
            .prop_map(String::from),
    ];
    (structured, mutations(JSON_DICTIONARY))
        .prop_map(|(text, m)| mutate(text.into_bytes(), &m))
        .boxed()
}

#[allow(clippy::ptr_arg)]
fn bytes_literal(b: &Vec<u8>) -> String {
    format!("b\"{}\"", b.escape_ascii())
}

/// What `parse_events` promises, for any body:
///
/// - it answers `Ok` or `Err(ApiError::BadRequest(message))`, the message
///   non-empty and naming where the problem is: `malformed JSON: ` when the
///   body is not JSON; `event` + `.field` or `: ` for one event; for an
///   array, the first bad item's problem as it would be for that item alone,
///   at `events[i]`; an array or other non-object item is refused at its
///   index; an empty array, or a body that is neither an object nor an
///   array, is said to be so;
/// - `Ok` holds one event per item, each read as written: ids given are
///   kept (a missing or null one is a fresh version 7 UUID), every number
///   is the number written (exactly: a number it cannot keep is refused),
///   strings as written; and each event serialises back to JSON that parses
///   to the same event.
#[allow(clippy::ptr_arg)]
fn check_body(body: &Vec<u8>) -> Result<(), String> {
    let answer = parse_events(body);
    outcome(match &answer {
        Ok(_) => "accepted",
        Err(ApiError::BadRequest(m)) if m.starts_with("malformed JSON") => "400 malformed JSON",
        Err(ApiError::BadRequest(m)) if m.starts_with("events[") => "400 at events[i]",
        Err(ApiError::BadRequest(m)) if m.starts_with("event") => "400 at event",
        Err(ApiError::BadRequest(_)) => "400 other",
        Err(_) => "not a 400",
    });
    let Ok(raw) = serde_json::from_slice::<&RawValue>(body) else {
        return match answer {
            Err(ApiError::BadRequest(m)) if m.starts_with("malformed JSON: ") && m.len() > 16 => {
                Ok(())
            }
            other => Err(format!(
                "[not JSON] expected `malformed JSON: ...`, got {other:?}"
            )),
        };
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => match answer {
            Ok(events) if events.len() == 1 => accepted(text, &events[0]),
            Ok(events) => Err(format!("[count] one event in, {} out", events.len())),
            Err(e) => single_refusal(&e, "event"),
        },
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| format!("[oracle] {e}"))?;
            if items.is_empty() {
                return match answer {
                    Err(ApiError::BadRequest(m)) if m == "the array holds no event" => Ok(()),
                    other => Err(format!("[empty array] got {other:?}")),
                };
            }
            for (i, item) in items.iter().enumerate() {
                let item = item.get();
                let expected = if item.starts_with('[') {
                    Some(format!(
                        "events[{i}]: invalid type: array, expected an event object"
                    ))
                } else if item.starts_with('{') {
                    match parse_events(item.as_bytes()) {
                        Ok(_) => None,
                        Err(ApiError::BadRequest(m)) => match m.strip_prefix("event") {
                            Some(rest) => Some(format!("events[{i}]{rest}")),
                            None => {
                                return Err(format!(
                                    "[item alone] {m:?} does not start with `event`"
                                ))
                            }
                        },
                        Err(e) => return Err(format!("[not 400] item alone: {e:?}")),
                    }
                } else {
                    // A scalar (`7`, `null`, `1e999`): refused at its index.
                    match &answer {
                        Err(ApiError::BadRequest(m))
                            if m.len() > format!("events[{i}]: ").len()
                                && m.starts_with(&format!("events[{i}]: ")) =>
                        {
                            return Ok(())
                        }
                        other => {
                            return Err(format!(
                                "[scalar item] events[{i}] is {item:.40}: expected `events[{i}]: ...`, got {other:?}"
                            ))
                        }
                    }
                };
                if let Some(expected) = expected {
                    return match answer {
                        Err(ApiError::BadRequest(m)) if m == expected => Ok(()),
                        other => Err(format!(
                            "[array index] expected {expected:?}, got {other:?}"
                        )),
                    };
                }
            }
            let events = answer
                .map_err(|e| format!("[good items refused] every item parses alone, yet {e:?}"))?;
            if events.len() != items.len() {
                return Err(format!(
                    "[count] {} items in, {} events out",
                    items.len(),
                    events.len()
                ));
            }
            for (item, event) in items.iter().zip(&events) {
                accepted(item.get(), event)?;
            }
            Ok(())
        }
        _ => match answer {
            Err(ApiError::BadRequest(m))
                if m == "expected an event object or an array of events" =>
            {
                Ok(())
            }
            other => Err(format!("[not an event] expected a 400, got {other:?}")),
        },
    }
}

/// The 400 for one object (`at` is `event`).
fn single_refusal(e: &ApiError, at: &str) -> Result<(), String> {
    match e {
        ApiError::BadRequest(m) => {
            let rest = m.strip_prefix(at).unwrap_or("");
            if !(rest.starts_with(": ") || rest.starts_with('.'))
                || rest.trim_start_matches([':', '.', ' ']).is_empty()
            {
                return Err(format!(
                    "[message] {m:?} does not start with `{at}.field: ` or `{at}: `"
                ));
            }
            if m.contains("not a valid event") {
                return Err(format!("[unnamed problem] {m:?}"));
            }
            Ok(())
        }
        other => Err(format!("[not 400] {other:?}")),
    }
}

/// `event` is `item` (an object's JSON) read exactly.
fn accepted(item: &str, event: &EntityEvent) -> Result<(), String> {
    let Some(J::Obj(members)) = Reader::parse(item) else {
        return Err(format!("[oracle] not an object: {item:.80}"));
    };
    let mut fields: BTreeMap<&str, &J> = BTreeMap::new();
    for (k, v) in &members {
        if fields.insert(k.as_str(), v).is_some() {
            return Err(format!("[duplicate field accepted] {k:?}"));
        }
    }
    let known = [
        "id",
        "event_type",
        "entity_type",
        "entity_id",
        "data",
        "changes",
        "user_id",
        "timestamp",
    ];
    if let Some(k) = fields.keys().find(|k| !known.contains(k)) {
        return Err(format!("[unknown field accepted] {k:?}"));
    }
    let string = |name: &str| match fields.get(name) {
        Some(J::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    match fields.get("id") {
        None | Some(J::Null) if event.id.get_version_num() == 7 => {}
        Some(J::Str(s)) if Uuid::parse_str(s).ok() == Some(event.id) => {}
        other => return Err(format!("[id] {other:?} read as {}", event.id)),
    }
    if string("event_type") != Some(event.event_type.as_str()) {
        return Err(format!(
            "[event_type] {:?} read as {}",
            fields.get("event_type"),
            event.event_type
        ));
    }
    if string("entity_type") != Some(event.entity_type.as_str()) {
        return Err(format!(
            "[entity_type] {:?} read as {:?}",
            fields.get("entity_type"),
            event.entity_type
        ));
    }
    if string("entity_id").and_then(|s| Uuid::parse_str(s).ok()) != Some(event.entity_id) {
        return Err(format!(
            "[entity_id] {:?} read as {}",
            fields.get("entity_id"),
            event.entity_id
        ));
    }
    match fields.get("user_id") {
        None | Some(J::Null) if event.user_id.is_none() => {}
        Some(J::Str(s)) if event.user_id.as_deref() == Some(s.as_str()) => {}
        other => return Err(format!("[user_id] {other:?} read as {:?}", event.user_id)),
    }
    match fields.get("timestamp") {
        None | Some(J::Null) => {}
        Some(J::Str(s)) => {
            let given = s
                .parse::<DateTime<FixedOffset>>()
                .map(|t| t.with_timezone(&Utc));
            if given.as_ref().ok() != Some(&event.timestamp) {
                return Err(format!("[timestamp] {s:?} read as {}", event.timestamp));
            }
        }
        other => return Err(format!("[timestamp] {other:?} accepted")),
    }
    let data = fields.get("data").ok_or("[data] missing, yet accepted")?;
    same(data, &event.data, "data")?;
    match (fields.get("changes"), &event.changes) {
        (None | Some(J::Null), None) => {}
        (Some(J::Obj(changes)), Some(read)) => {
            let mut last: BTreeMap<&str, &J> = BTreeMap::new();
            for (k, v) in changes {
                last.insert(k, v);
            }
            if last.len() != read.len() {
                return Err(format!(
                    "[changes] {} fields read as {}",
                    last.len(),
                    read.len()
                ));
            }
            for (k, change) in last {
                let J::Obj(m) = change else {
                    return Err(format!("[changes] {k:?} is not an object, yet accepted"));
                };
                let r = read.get(k).ok_or_else(|| format!("[changes] {k:?} lost"))?;
                let get = |name: &str| m.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v);
                same(
                    get("old").ok_or("[changes] no old")?,
                    &r.old,
                    &format!("changes.{k}.old"),
                )?;
                same(
                    get("new").ok_or("[changes] no new")?,
                    &r.new,
                    &format!("changes.{k}.new"),
                )?;
            }
        }
        (given, read) => return Err(format!("[changes] {given:?} read as {read:?}")),
    }
    // Serialised, the event parses back to itself.
    let json = serde_json::to_string(event).map_err(|e| format!("[serialise] {e}"))?;
    match parse_events(json.as_bytes()) {
        Ok(back) if back.len() == 1 && back[0] == *event => Ok(()),
        other => Err(format!("[round trip] {json:.200} parsed as {other:?}")),
    }
}

/// The value written (`j`) is the value read (`v`); numbers exactly.
fn same(j: &J, v: &Value, at: &str) -> Result<(), String> {
    match (j, v) {
        (J::Null, Value::Null) => Ok(()),
        (J::Bool(a), Value::Bool(b)) if a == b => Ok(()),
        (J::Str(a), Value::String(b)) if a == b => Ok(()),
        // The same decimal number (`-0` may be read as `-0.0`: zero).
        (J::Num(token), Value::Number(n))
            if decimal(token).is_some() && decimal(token) == decimal(&n.to_string()) =>
        {
            Ok(())
        }
        // The same float, written back as another decimal: `token` is one of
        // two shortest forms of its float, and not the one written.
        (J::Num(token), Value::Number(n))
            if n.is_f64() && token.parse::<f64>().ok() == n.as_f64() =>
        {
            Err(format!(
                "[number rewritten, same float] {at}: {token} written back as {n}"
            ))
        }
        (J::Num(token), Value::Number(n)) => {
            Err(format!("[number altered] {at}: {token} read as {n}"))
        }
        (J::Arr(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (J::Obj(members), Value::Object(b)) => {
            let mut last: BTreeMap<&str, &J> = BTreeMap::new();
            for (k, x) in members {
                last.insert(k, x);
            }
            if last.len() != b.len() {
                return Err(format!(
                    "[object altered] {at}: {} keys read as {}",
                    last.len(),
                    b.len()
                ));
            }
            for (k, x) in last {
                let y = b
                    .get(k)
                    .ok_or_else(|| format!("[object altered] {at}.{k} lost"))?;
                same(x, y, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (j, v) => Err(format!("[value altered] {at}: {j:?} read as {v}")),
    }
}

/// A decimal number, `(negative, significant digits, exponent of the first
/// digit)`, zero as `(false, "", 0)`; `None` for an exponent past `i128`.
fn decimal(s: &str) -> Option<(bool, String, i128)> {
    let (negative, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i128>().ok()?),
        None => (s, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{frac}");
    let significant = digits.trim_start_matches('0');
    let leading = digits.len() - significant.len();
    let significant = significant.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let first = whole.len() as i128 - 1 - leading as i128 + exponent;
    Some((negative, significant.to_string(), first))
}

/// A JSON value as written: numbers as their text, members in order and
/// all kept (duplicates too).
#[derive(Debug)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// Reads valid JSON (what the parser accepted) into [`J`].
struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn parse(text: &str) -> Option<J> {
        let mut r = Reader {
            s: text.as_bytes(),
            i: 0,
        };
        let v = r.value()?;
        r.ws();
        (r.i == r.s.len()).then_some(v)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        let yes = self.s.get(self.i) == Some(&b);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn value(&mut self) -> Option<J> {
        self.ws();
        match *self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Some(J::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    members.push((k, self.value()?));
                    if self.eat(b'}') {
                        return Some(J::Obj(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(J::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    if self.eat(b']') {
                        return Some(J::Arr(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(J::Str),
            _ => {
                for (word, v) in [
                    ("true", J::Bool(true)),
                    ("false", J::Bool(false)),
                    ("null", J::Null),
                ] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Some(v);
                    }
                }
                let start = self.i;
                while matches!(
                    self.s.get(self.i),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                (self.i > start)
                    .then(|| J::Num(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.s.get(self.i)?;
                    self.i += 1;
                    let ch = match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xd800..0xdc00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2)? != b"\\u" {
                                    return None;
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                            } else {
                                char::from_u32(hi)?
                            }
                        }
                        _ => return None,
                    };
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                b => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[test]
fn fuzz_parse_events() {
    fuzz("parse_events", body(), bytes_literal, check_body, 1500);
}

// ---------------------------------------------------------------------------
// Configuration files.
// ---------------------------------------------------------------------------

const TOML_DICTIONARY: &[&[u8]] = &[
    b"=",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"\n",
    b"#",
    b".",
    b",",
    b"{",
    b"}",
    b"\\",
    b"\\u",
    b"\\U0010FFFF",
    b"\\ud800",
    b"1e999",
    b"nan",
    b"inf",
    b"-inf",
    b"0x",
    b"-0",
    b"9223372036854775808",
    b"\r",
    b"\t",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xa8",
    b"=\"\"\n",
    b"[[observers]]\n",
    b"type = \"webhook\"\n",
    b"x`y = 1\n",
    b"[circuit_breaker]\n",
    b"1979-05-27T07:32:00Z",
    b"true",
    b"0",
    b"\"\"",
];

/// A section of a configuration file: its header (`""` for the top) and
/// `key = value` lines, as TOML text.
#[derive(Debug, Clone)]
struct Section {
    header: String,
    entries: Vec<(String, String)>,
}

fn section(header: &str, entries: Vec<Option<(&'static str, String)>>) -> Section {
    Section {
        header: header.to_string(),
        entries: entries
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// `key = value` for `key`, a third of the time left out.
fn maybe(
    key: &'static str,
    value: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<Option<(&'static str, String)>> {
    prop::option::weighted(0.6, value.prop_map(move |v| (key, v))).boxed()
}

fn int(range: std::ops::RangeInclusive<u64>) -> BoxedStrategy<String> {
    range.prop_map(|n| n.to_string()).boxed()
}

fn words(w: &'static [&'static str]) -> BoxedStrategy<String> {
    select(w).prop_map(String::from).boxed()
}

/// `s` as a TOML basic string.
fn toml_basic(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML string, with its quotes: basic, literal or multi-line, with
/// escapes; `wild`, now and then invalid or huge.
fn toml_string(wild: bool) -> BoxedStrategy<String> {
    let w = u32::from(wild);
    prop_oneof![
        8 => "[a-zA-Z0-9 _.:/-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        2 => any::<String>().prop_map(|s| toml_basic(&s)),
        1 => "[a-z ]{0,8}".prop_map(|s| format!("'{s}'")),
        1 => "[a-z \n]{0,8}".prop_map(|s| format!("\"\"\"{s}\"\"\"")),
        w => select(&[
            "\"\\u00e9\"", "\"\\U0001F600\"", "\"\\ud800\"", "\"\\x41\"", "\"a\nb\"", "\"\\\"",
            "\"`\"", "\"\u{0}\"", "''", "\"\"",
        ][..]).prop_map(String::from),
        w => (1usize..50_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ]
    .boxed()
}

fn breaker_entries() -> BoxedStrategy<Vec<Option<(&'static str, String)>>> {
    vec![
        maybe("enabled", words(&["true", "false"])),
        maybe("failure_threshold", words(&["0.5", "1.0", "0.01", "1"])),
        maybe("sample_size", int(20..=1000)),
        maybe("minimum_calls", int(1..=20)),
        maybe("open_timeout_ms", int(1..=30_000)),
        maybe("half_open_max_requests", int(1..=5)),
        maybe("backoff_multiplier", words(&["1.0", "2.0", "2.5", "1"])),
        maybe("max_open_timeout_ms", int(300_000..=600_000)),
        maybe("jitter_ratio", words(&["0.0", "0.1", "0.5"])),
        maybe("window_ms", int(1000..=60_000)),
        maybe("slow_call_ms", int(1..=10_000)),
        maybe("slow_call_rate_threshold", words(&["0.5", "1.0"])),
        maybe("probe_timeout_ms", int(1..=10_000)),
        maybe("call_timeout_ms", int(1..=10_000)),
    ]
    .boxed()
}

const ENDPOINTS: &[&str] = &[
    "http://127.0.0.1:9000",
    "https://hooks.example.com:443",
    "http://[::1]:8080",
    "https://hooks.slack.com:443",
];

fn action() -> BoxedStrategy<Section> {
    let webhook = vec![
        Just(Some(("type", "\"webhook\"".to_string()))).boxed(),
        Just(None).boxed(),
        maybe(
            "url",
            words(&[
                "\"http://127.0.0.1:9000/hooks/orders\"",
                "\"https://hooks.example.com/x?y=1\"",
                "\"http://[::1]:8080/\"",
            ]),
        ),
        maybe(
            "method",
            words(&["\"POST\"", "\"PUT\"", "\"PATCH\"", "\"DELETE\""]),
        ),
        maybe(
            "headers",
            words(&[
                "{ X-Trace = \"1\" }",
                "{}",
                "{ \"X-A\" = \"b\", X-B = \"c\" }",
            ]),
        ),
        maybe("body_template", words(&["\"{{ event.id }}\"", "\"plain\""])),
        maybe(
            "signing_secret",
            words(&["\"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\""]),
        ),
    ];
    let slack = vec![
        Just(Some(("type", "\"slack\"".to_string()))).boxed(),
        Just(Some((
            "webhook_url",
            "\"https://hooks.slack.com/services/T/B/x\"".to_string(),
        )))
        .boxed(),
        maybe("channel", words(&["\"#ops\""])),
        maybe("message_template", words(&["\"{{ event.entity_type }}\""])),
    ];
    let log = vec![
        Just(Some(("type", "\"log\"".to_string()))).boxed(),
        maybe(
            "level",
            words(&[
                "\"trace\"",
                "\"debug\"",
                "\"info\"",
                "\"warn\"",
                "\"error\"",
            ]),
        ),
        maybe("message_template", words(&["\"x {{ event.id }}\""])),
    ];
    prop_oneof![
        4 => webhook.prop_map(|mut e| {
            // The URL is required.
            if e[2].is_none() {
                e[2] = Some(("url", "\"http://127.0.0.1:9000/h\"".into()));
            }
            section("[[observers.actions]]", e)
        }),
        1 => slack.prop_map(|e| section("[[observers.actions]]", e)),
        1 => log.prop_map(|e| section("[[observers.actions]]", e)),
    ]
    .boxed()
}

/// A valid configuration file, as sections.
fn valid_config() -> BoxedStrategy<Vec<Section>> {
    let top = vec![
        maybe(
            "listen",
            words(&["\"127.0.0.1:8080\"", "\"[::1]:0\"", "\"0.0.0.0:65535\""]),
        ),
        maybe("store", words(&["\"breakwater.db\"", "\"/var/lib/x.db\""])),
        maybe("admin_token_env", words(&["\"ADMIN\""])),
        maybe("intake_token_env", words(&["\"INTAKE\""])),
    ];
    let overrides = (
        proptest::sample::subsequence(ENDPOINTS, 0..3),
        vec(breaker_entries(), 2),
    )
        .prop_map(|(endpoints, entries)| endpoints.into_iter().zip(entries).collect::<Vec<_>>());
    let breaker = prop::option::weighted(0.6, (breaker_entries(), overrides));
    let retry = vec![
        maybe("max_attempts", int(1..=10)),
        maybe("backoff_ms", int(1..=1000)),
        maybe("max_backoff_ms", int(1000..=600_000)),
    ];
    let delivery = vec![
        maybe("max_in_flight_per_endpoint", int(1..=128)),
        maybe("max_pending", int(1..=1_000_000)),
        maybe("max_pending_per_endpoint", int(1..=100_000)),
        maybe("max_pending_bytes", int(1..=1 << 30)),
        maybe("max_pending_bytes_per_endpoint", int(1..=1 << 28)),
        maybe("max_backlog_per_endpoint", int(0..=10_000_000)),
        maybe("max_body_bytes", int(1..=1 << 24)),
        maybe("shutdown_grace_ms", int(0..=60_000)),
        maybe("keep_delivered_hours", int(0..=1000)),
    ];
    let http = vec![
        maybe("max_connections", int(1..=1024)),
        maybe("header_read_timeout_ms", int(1..=60_000)),
        maybe("body_read_timeout_ms", int(1..=60_000)),
    ];
    let observer = (
        toml_string(false),
        words(&["\"INSERT\"", "\"UPDATE\"", "\"DELETE\"", "\"CUSTOM\""]),
        vec(action(), 0..3),
    );
    let observers = vec(observer, 0..4);
    (
        top,
        breaker,
        prop::option::weighted(0.5, retry),
        prop::option::weighted(0.5, delivery),
        prop::option::weighted(0.4, http),
        observers,
    )
        .prop_map(|(top, breaker, retry, delivery, http, observers)| {
            let mut out = vec![section("", top)];
            if let Some((defaults, overrides)) = breaker {
                out.push(section("[circuit_breaker]", defaults));
                for (endpoint, entries) in overrides {
                    out.push(section(
                        &format!("[circuit_breaker.endpoints.\"{endpoint}\"]"),
                        entries,
                    ));
                }
            }
            for (header, entries) in [
                ("[retry]", retry),
                ("[delivery]", delivery),
                ("[http]", http),
            ] {
                if let Some(e) = entries {
                    out.push(section(header, e));
                }
            }
            for (i, (entity_type, event_type, actions)) in observers.into_iter().enumerate() {
                out.push(Section {
                    header: "[[observers]]".into(),
                    entries: vec![
                        ("name".into(), format!("\"o{i}\"")),
                        ("entity_type".into(), entity_type),
                        ("event_type".into(), event_type),
                    ],
                });
                out.extend(actions);
            }
            out
        })
        .boxed()
}

const KEYS: &[&str] = &[
    "listen",
    "store",
    "admin_token_env",
    "circuit_breaker",
    "retry",
    "delivery",
    "http",
    "observers",
    "endpoints",
    "actions",
    "type",
    "url",
    "name",
    "event_type",
    "entity_type",
    "sample_size",
    "failure_threshold",
    "max_attempts",
    "backoff_ms",
    "max_pending",
    "max_connections",
    "headers",
    "signing_secret",
    "method",
    "level",
    "webhook_url",
    "bogus",
    "sample_sise",
    "x`y",
    "\"x`y\"",
    "`",
    "\"`\"",
    "\"unknown field `a`\"",
    "\"\"",
    "a.b",
    "\"a.b\"",
    "\"é\"",
    "\"`, expected\"",
    "\"\\u0060\"",
];

const WEIRD_TOML: &[&str] = &[
    "\"str\"",
    "true",
    "1.5",
    "[1, 2]",
    "[]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "1979-05-27",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "1e999",
    "nan",
    "+inf",
    "-inf",
    "-0.0",
    "0x7fffffffffffffff",
    "0o777",
    "0b1",
    "1_000",
    "\"ftp://x\"",
    "\"http://\"",
    "\"http://[::1\"",
    "\"http://a:99999\"",
    "\"\"",
    "\"http://a b\"",
    "\"whsec_!!!\"",
    "\"GARBAGE\"",
    "\"insert\"",
    "\"email\"",
    "\"sms\"",
    "[{ type = \"webhook\" }]",
    "[{ type = \"webhook\", url = \"http://a:1\" }]",
    "{ Host = \"x\" }",
    "\"http://127.0.0.1:9000/h\"",
    "\"127.0.0.1:99999\"",
    "\"localhost:80\"",
];

/// A value of any type, often not what its key wants.
fn weird_toml() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(WEIRD_TOML).prop_map(String::from),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        2 => toml_string(true),
        1 => (prop_oneof![1usize..100, 100usize..12_000], select(&[("[", "]"), ("{a=", "}"), ("[{a=", "}]")][..]), any::<bool>())
            .prop_map(|(n, (open, close), closed)| {
                let mut s = open.repeat(n);
                s.push('1');
                if closed {
                    s.push_str(&close.repeat(n));
                }
                s
            }),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Edit {
    Set(Index, Index, String),
    Rename(Index, Index, String),
    Remove(Index, Index),
    Add(Index, String, String),
    DuplicateEntry(Index, Index),
    /// Every observer named as the first one.
    SameObserverNames,
    AddSection(String, Vec<(String, String)>),
    DuplicateSection(Index),
}

fn edit() -> BoxedStrategy<Edit> {
    let key = prop_oneof![4 => select(KEYS).prop_map(String::from), 1 => toml_string(true)];
    let header = prop_oneof![
        6 => select(&[
            "[circuit_breaker.endpoints.\"garbage\"]", "[circuit_breaker.endpoints.\"http://a:1/x\"]",
            "[circuit_breaker.endpoints.\"HTTP://A:1\"]", "[circuit_breaker.endpoints]", "[[circuit_breaker]]",
            "[[retry]]", "[observers]", "[[observers.actions]]", "[observers.actions]",
            "[[observers.actions.headers]]", "[delivery.x]", "[bogus]", "[retry.backoff_ms]", "[http]",
            "[[http.x]]", "[[observers]]", "[circuit_breaker]", "[\"x`y\"]",
        ][..]).prop_map(String::from),
        1 => (1usize..300).prop_map(|n| format!("[{}a]", "a.".repeat(n))),
    ];
    prop_oneof![
        6 => (any::<Index>(), any::<Index>(), weird_toml()).prop_map(|(s, e, v)| Edit::Set(s, e, v)),
        3 => (any::<Index>(), any::<Index>(), key.clone()).prop_map(|(s, e, k)| Edit::Rename(s, e, k)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(s, e)| Edit::Remove(s, e)),
        4 => (any::<Index>(), key.clone(), weird_toml()).prop_map(|(s, k, v)| Edit::Add(s, k, v)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(s, e)| Edit::DuplicateEntry(s, e)),
        1 => Just(Edit::SameObserverNames),
        2 => (header, vec((key, weird_toml()), 0..3)).prop_map(|(h, e)| Edit::AddSection(h, e)),
        1 => any::<Index>().prop_map(Edit::DuplicateSection),
    ]
    .boxed()
}

fn apply(sections: &mut Vec<Section>, edit: &Edit) {
    let entry = |sections: &mut Vec<Section>, s: &Index, e: &Index| -> Option<(usize, usize)> {
        let s = s.index(sections.len());
        let n = sections[s].entries.len();
        (n > 0).then(|| (s, e.index(n)))
    };
    match edit {
        Edit::Set(s, e, v) => {
            if let Some((s, e)) = entry(sections, s, e) {
                sections[s].entries[e].1 = v.clone();
            }
        }
        Edit::Rename(s, e, k) => {
            if let Some((s, e)) = entry(sections, s, e) {
                sections[s].entries[e].0 = k.clone();
            }
        }
        Edit::Remove(s, e) => {
            if let Some((s, e)) = entry(sections, s, e) {
                sections[s].entries.remove(e);
            }
        }
        Edit::Add(s, k, v) => {
            let s = s.index(sections.len());
            sections[s].entries.push((k.clone(), v.clone()));
        }
        Edit::DuplicateEntry(s, e) => {
            if let Some((s, e)) = entry(sections, s, e) {
                let dup = sections[s].entries[e].clone();
                sections[s].entries.push(dup);
            }
        }
        Edit::SameObserverNames => {
            let mut first = None;
            for section in sections.iter_mut().filter(|s| s.header == "[[observers]]") {
                for (k, v) in &mut section.entries {
                    if k == "name" {
                        *v = first.get_or_insert_with(|| v.clone()).clone();
                    }
                }
            }
        }
        Edit::AddSection(h, entries) => sections.push(Section {
            header: h.clone(),
            entries: entries.clone(),
        }),
        Edit::DuplicateSection(s) => {
            let s = s.index(sections.len());
            let dup = sections[s].clone();
            sections.push(dup);
        }
    }
}

fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        if !s.header.is_empty() {
            out.push_str(&s.header);
            out.push('\n');
        }
        for (k, v) in &s.entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}

fn config_source() -> BoxedStrategy<String> {
    (
        valid_config(),
        vec(edit(), 0..4),
        mutations(TOML_DICTIONARY),
    )
        .prop_map(|(mut sections, edits, m)| {
            for e in &edits {
                apply(&mut sections, e);
            }
            let bytes = mutate(render(&sections).into_bytes(), &m);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .boxed()
}

#[allow(clippy::ptr_arg)]
fn str_literal(s: &String) -> String {
    format!("{s:?}")
}

/// What `Config::parse` promises, for any text: `Ok`, or every problem, at
/// least one, each with a non-empty key path and message and a line within
/// the file (or none), sorted by line. The same text gives the same answer,
/// and the file written back by `toml` (the same values) the same
/// configuration or the same problems. A configuration it takes passes the
/// checks it makes: no zero, no wait past a year, valid breakers, unique
/// observer names, valid actions and none by email.
#[allow(clippy::ptr_arg)]
fn check_config(src: &String) -> Result<(), String> {
    let first = Config::parse(src);
    outcome(match &first {
        Ok(_) => "accepted",
        Err(e) if e.problems.iter().any(|p| p.path == "(file)") => "TOML syntax error",
        Err(_) => "refused, problems named",
    });
    let again = Config::parse(src);
    // By `Debug`: a NaN is never equal to itself.
    if format!("{first:?}") != format!("{again:?}") {
        return Err(format!("[not deterministic] {first:?} then {again:?}"));
    }
    // The same values written back by `toml`, when it can read what it
    // writes (a table nested 80 deep inline is written as a dotted header
    // that its reader refuses as too deep).
    let written_back = toml::from_str::<toml::Table>(src)
        .ok()
        .and_then(|t| toml::to_string(&t).ok())
        .filter(|back| toml::from_str::<toml::Table>(back).is_ok());
    match &first {
        Err(e) => {
            refusal(src, e)?;
            if let Some(back) = written_back {
                let key = |e: &ConfigError| {
                    let mut p: Vec<(String, String)> = e
                        .problems
                        .iter()
                        .map(|p| (p.path.clone(), p.message.clone()))
                        .collect();
                    p.sort();
                    p
                };
                match Config::parse(&back) {
                    Err(e2) if key(e) == key(&e2) => {}
                    other => {
                        return Err(format!(
                            "[written back] {back:?} gives {other:?}, not {e:?}"
                        ))
                    }
                }
            }
        }
        Ok(c) => {
            valid(c)?;
            if let Some(back) = written_back {
                let again = Config::parse(&back);
                if format!("{again:?}") != format!("{first:?}") {
                    return Err(format!(
                        "[written back] {back:?} gives {again:?}, not {first:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn refusal(src: &str, e: &ConfigError) -> Result<(), String> {
    if e.problems.is_empty() {
        return Err("[no problem] refused without a problem".into());
    }
    let lines = src.split('\n').count();
    for p in &e.problems {
        if p.path.trim().is_empty() || p.message.trim().is_empty() {
            return Err(format!("[empty problem] {p:?}"));
        }
        if p.line.is_some_and(|l| l == 0 || l > lines) {
            return Err(format!("[line out of the file] {p:?}, {lines} lines"));
        }
    }
    let order: Vec<usize> = e
        .problems
        .iter()
        .map(|p| p.line.unwrap_or(usize::MAX))
        .collect();
    if !order.windows(2).all(|w| w[0] <= w[1]) {
        return Err(format!("[order] problems not sorted by line: {order:?}"));
    }
    let _ = e.to_string();
    Ok(())
}

fn valid(c: &Config) -> Result<(), String> {
    let bad = |what: &str| Err(format!("[accepted] {what}: {c:?}"));
    if c.retry.max_attempts == 0
        || c.retry.backoff_ms == 0
        || c.retry.max_backoff_ms < c.retry.backoff_ms
    {
        return bad("retry");
    }
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    if c.retry.max_backoff_ms > YEAR_MS {
        return bad("a retry wait past a year");
    }
    let d = &c.delivery;
    if [
        d.max_in_flight_per_endpoint,
        d.max_pending,
        d.max_pending_bytes,
        d.max_body_bytes,
    ]
    .contains(&0)
        || d.max_pending_per_endpoint == Some(0)
        || d.max_pending_bytes_per_endpoint == Some(0)
    {
        return bad("a delivery limit of 0");
    }
    if c.http.max_connections == 0
        || c.http.header_read_timeout_ms == 0
        || c.http.body_read_timeout_ms == 0
    {
        return bad("an http limit of 0");
    }
    if c.circuit_breaker.defaults.validate().is_err()
        || c.circuit_breaker
            .endpoints
            .values()
            .any(|b| b.validate().is_err())
    {
        return bad("an invalid breaker");
    }
    let mut names = std::collections::HashSet::new();
    for o in &c.observers {
        if !names.insert(&o.name) {
            return bad("duplicate observer names");
        }
        for a in &o.actions {
            if a.validate().is_err() || matches!(a, ActionConfig::Email(_)) {
                return bad("an invalid action");
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_config_parse() {
    fuzz(
        "config_parse",
        config_source(),
        str_literal,
        check_config,
        1500,
    );
}

// ---------------------------------------------------------------------------
// Regression tests: what fuzzing found, minimised.
// ---------------------------------------------------------------------------

const EVENT: &str = r#"{"event_type":"INSERT","entity_type":"Order","entity_id":"1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1","data":{}}"#;

/// Runs `f` on its own thread; a panic if it has not returned within ten
/// seconds (rather than a test that never ends).
fn within_10s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("still running after 10 s (a loop?)")
}

/// Found by fuzzing (`[number altered]`): serde_json's default float
/// parsing is best effort and can be one ulp off, so a number that intake
/// rightly judged exact was delivered altered (`2.699038309416696e-307` as
/// `2.6990383094166964e-307`). Fixed by serde_json's `float_roundtrip`.
#[test]
fn events_a_float_is_delivered_as_written_not_one_ulp_off() {
    for n in [
        "2.699038309416696e-307",
        "-1.6810777060633125e53",
        "1.9152320786075119e86",
    ] {
        let body = EVENT.replace(r#""data":{}"#, &format!(r#""data":{{"":{n}}}"#));
        let events = parse_events(body.as_bytes()).unwrap();
        assert_eq!(events[0].data[""].as_f64(), n.parse::<f64>().ok(), "{n}");
        assert_eq!(check_body(&body.into_bytes()), Ok(()), "{n}");
    }
}

/// Known, not fixed here (the fix is in src/routes/numbers.rs, outside this
/// change): a number whose mantissa starts with zeros and whose exponent is
/// near `i64::MIN` overflows `decimal`'s exponent arithmetic, a panic where
/// overflow is checked (debug builds, `scripts/fuzz.sh`); elsewhere it wraps
/// and the number is refused, as it should be. Found by fuzzing.
#[test]
fn events_a_zero_with_an_exponent_near_i64_min_does_not_overflow() {
    let body = EVENT.replace(r#""data":{}"#, r#""data":{"n":0.01e-9223372036854775808}"#);
    match parse_events(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => assert!(
            m.starts_with("event.data.n: the number 0.01e-9223372036854775808 cannot be kept"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Found by fuzzing (a hang): an unknown key holding a backtick was named
/// from serde's message cut at the next backtick, a key the table does not
/// have; leaving it out changed nothing, and the same problem was recorded
/// again forever (`check-config` and start-up hung, memory growing).
#[test]
fn config_an_unknown_key_with_a_backtick_is_reported_not_looped_on() {
    let src = "[retry]\n\"`, expected\" = 1\n\"x`y\" = 2\n\"a`b\" = 3\nmax_attempts = 0\n\
               [[observers]]\nname = \"o\"\nentity_type = \"Order\"\nevent_type = \"INSERT\"\n\
               \"`\" = 4\n[[observers.actions]]\ntype = \"log\"\n\"`\" = 5\n";
    let err = within_10s(move || Config::parse(src)).unwrap_err();
    let paths: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.line))
        .collect();
    assert_eq!(
        paths,
        [
            ("retry.\"`, expected\"", Some(2)),
            ("retry.\"x`y\"", Some(3)),
            ("retry.\"a`b\"", Some(4)),
            ("retry.max_attempts", Some(5)),
            ("observers[0].\"`\"", Some(10)),
            ("observers[0].actions[0].\"`\"", Some(13)),
        ],
        "{err}"
    );
    assert!(
        err.problems[0].message.starts_with("unknown field"),
        "{err}"
    );
}

/// Found by fuzzing (`[empty problem]`): an unknown empty key (`"" = 1`)
/// was reported at an empty path.
#[test]
fn config_an_empty_key_is_named_by_a_non_empty_path() {
    let err = Config::parse("\"\" = \"str\"\n[retry]\n\"\" = 1\n").unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["\"\"", "retry.\"\""], "{err}");
}

/// Found by fuzzing (`[changes]`): a change given as an array, `[old,
/// new]`, was taken (serde reads a struct from an array of its fields), as
/// an event given as an array once was. Minimised.
#[test]
fn events_a_change_given_as_an_array_is_refused() {
    let body = EVENT.replace(r#""data":{}"#, r#""data":null,"changes":{"a":[null,null]}"#);
    match parse_events(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => assert!(
            m.starts_with("event.changes.a: invalid type: sequence, expected an object"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(check_body(&body.into_bytes()), Ok(()));
    // As an object it is taken, to the letter.
    let body = EVENT.replace(
        r#""data":{}"#,
        r#""data":null,"changes":{"":{"old":null,"new":1}}"#,
    );
    assert_eq!(
        parse_events(body.as_bytes()).unwrap()[0]
            .changes
            .as_ref()
            .unwrap()[""]
            .new,
        1
    );
}

/// Found by fuzzing (`[event_type]`): an event type given as
/// `{"INSERT":null}` was taken (serde reads a unit variant from a map too).
#[test]
fn events_an_event_type_given_as_an_object_is_refused() {
    let body = EVENT.replace(r#""INSERT""#, r#"{"INSERT":null}"#);
    match parse_events(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => assert!(
            m.starts_with("event.event_type: invalid type: map, expected one of `INSERT`"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(check_body(&body.into_bytes()), Ok(()));
    let body = EVENT.replace(r#""INSERT""#, r#""insert""#);
    match parse_events(body.as_bytes()) {
        Err(ApiError::BadRequest(m)) => assert!(
            m.starts_with("event.event_type: unknown variant `insert`"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Known, not fixed here (the fix is in src/routes/numbers.rs, outside this
/// change): `1.2713923693950573e15` and `1271392369395057.2` are both
/// shortest forms of the float `1271392369395057.25` (a tie). Intake judges
/// a number exact when Rust's `{:e}` writes it back as posted, and Rust
/// breaks the tie upwards (`...57.3`); serde_json (ryu) writes `...57.2`. So
/// the number is taken and delivered as another decimal (and `...57.2`, which
/// would be delivered as posted, is refused). Found by fuzzing, minimised.
#[test]
fn events_a_number_at_a_tie_of_two_shortest_forms_is_delivered_as_written() {
    for n in ["1.2713923693950573e15", "1271392369395057.2"] {
        let body = EVENT.replace(r#""data":{}"#, &format!(r#""data":{{"n":{n}}}"#));
        if let Ok(events) = parse_events(body.as_bytes()) {
            let written = events[0].data["n"].to_string();
            assert_eq!(decimal(&written), decimal(n), "{n} delivered as {written}");
        }
        assert_eq!(check_body(&body.into_bytes()), Ok(()), "{n}");
    }
    let body = EVENT.replace(r#""data":{}"#, r#""data":{"n":1271392369395057.2}"#);
    assert!(
        parse_events(body.as_bytes()).is_ok(),
        "refused, yet kept exactly"
    );
}
