//! `breakwater demo --fleet`: three `serve` processes on a throwaway
//! PostgreSQL cluster, one killed with SIGKILL mid-run; the summary says
//! nothing was lost and how long the takeover took.
//!
//! This test needs PostgreSQL's server programs. Without them it fails, with
//! the message that says what to install; it never skips.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The most a 12-second demo may take, start-up and drain included.
const DEADLINE: Duration = Duration::from_secs(180);

/// Runs the binary with `args`, stopping it (SIGTERM, then SIGKILL) if it
/// is still running at `deadline`.
fn run(args: &[&str], deadline: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let started = Instant::now();
    let mut overdue = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline && !overdue {
            overdue = true;
            // SIGTERM lets the demo stop its children and its cluster.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        if started.elapsed() > deadline + Duration::from_secs(30) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        !overdue,
        "{args:?} was still running after {deadline:?}; its output:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The first line of `text` that starts with `prefix`, with the indented
/// lines that continue it, joined by spaces.
fn line(text: &str, prefix: &str) -> String {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(prefix));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with("  ")).map(str::trim))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The number right after `before` in `text`.
fn number_after(text: &str, before: &str) -> f64 {
    let rest = &text[text
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {text:?}"))
        + before.len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("no number after {before:?} in {text:?}: {e}"))
}

#[test]
fn a_fleet_of_three_loses_nothing_when_one_is_killed() {
    let output = run(
        &[
            "demo",
            "--fleet",
            "3",
            "--duration",
            "12",
            "--listen",
            "127.0.0.1:0",
        ],
        DEADLINE,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the fleet demo failed ({}); it needs PostgreSQL's server programs \
         (apt-get update && apt-get install -y postgresql).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    assert!(
        line(&stdout, "RESULT: ").starts_with("RESULT: ok"),
        "{stdout}"
    );
    // The console of a live instance, and the run's token to log in with.
    let find = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
    };
    let console = find("  console  http://127.0.0.1:");
    assert!(
        console.ends_with("/console (any instance serves it; each keeps its own logins)"),
        "{console}"
    );
    let token = find("           log in with the admin token ");
    assert_eq!(token.rsplit(' ').next().map(str::len), Some(48), "{token}");

    // Every action of every accepted event delivered or dead-lettered.
    let summary = line(&stdout, "summary after ");
    let events = number_after(&summary, ": ");
    assert!(events > 0.0, "{summary}");
    let actions = line(&stdout, "actions: ");
    let accounted = number_after(&actions, "actions: ");
    let of = number_after(&actions, "/");
    assert_eq!(accounted, of, "{actions}");
    assert_eq!(of, events * 3.0, "{actions}\n{summary}");
    assert!(actions.contains(", 0 lost"), "{actions}");

    // bw-2 was killed, holding claims, and a survivor delivered them after
    // its lease (3 s, renewed every 0.5 s) had expired, not before.
    let killed = line(&stdout, "killed: ");
    assert!(
        killed.starts_with("killed: bw-2 with SIGKILL at "),
        "{killed}"
    );
    let takeover = line(&stdout, "takeover: ");
    let after = number_after(&takeover, "the first of them ");
    assert!(
        takeover.contains("after the kill") && (2.0..30.0).contains(&after),
        "{takeover}"
    );
    assert!(line(&stdout, "caught up: ").contains("healthy"), "{stdout}");

    // Duplicates, if any, are all the killed instance's in-flight work.
    let duplicates = line(&stdout, "duplicates: ");
    assert!(!stdout.contains("WARNING"), "{stdout}");
    if !duplicates.starts_with("duplicates: none") {
        assert!(
            duplicates.contains("bw-2 had claimed when it was killed"),
            "{duplicates}"
        );
        assert_eq!(
            number_after(&duplicates, "duplicates: "),
            number_after(&duplicates, "webhook-id), "),
            "{duplicates}"
        );
    }
}

#[test]
fn a_fleet_of_one_or_nine_is_refused() {
    for n in ["1", "9", "0", "many"] {
        let output = run(&["demo", "--fleet", n], Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--fleet {n}: {stderr}");
        assert!(stderr.contains("--fleet"), "--fleet {n}: {stderr}");
        assert!(!stderr.contains("panicked"), "--fleet {n}: {stderr}");
        if n != "many" {
            assert!(
                stderr.contains("a fleet has 2 to 8 instances"),
                "--fleet {n}: {stderr}"
            );
        }
    }
}
