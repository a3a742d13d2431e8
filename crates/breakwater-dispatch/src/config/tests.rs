//! Tests of the configuration file's parsing and checks.

use breakwater::traits::EventKind;

use super::*;

const EXAMPLE: &str = r#"listen = "127.0.0.1:8080"
store = "breakwater.db"
admin_token_env = "BREAKWATER_ADMIN_TOKEN"
[circuit_breaker]
sample_size = 20
[circuit_breaker.endpoints."http://127.0.0.1:9000"]
open_timeout_ms = 1000
[retry]
max_attempts = 5
backoff_ms = 200
max_backoff_ms = 600000
[delivery]
max_in_flight_per_endpoint = 64
[[observers]]
name = "order-created"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:9000/hooks/orders"
signing_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
"#;

#[test]
fn the_documented_example_parses() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.listen.port(), 8080);
    assert_eq!(c.admin_token_env.as_deref(), Some("BREAKWATER_ADMIN_TOKEN"));
    assert_eq!(c.circuit_breaker.defaults.sample_size, 20);
    let over = c.circuit_breaker.for_endpoint("http://127.0.0.1:9000");
    assert_eq!(over.sample_size, 20, "overrides inherit the defaults");
    assert_eq!(over.open_timeout_ms, 1000);
    assert_eq!(c.retry.max_attempts, 5);
    assert_eq!(c.observers.len(), 1);
    assert_eq!(c.observers[0].event_type, EventKind::Insert);
    assert_eq!(c.endpoints(), ["http://127.0.0.1:9000"]);
}

/// Each problem's key path and line.
fn paths_and_lines(err: &ConfigError) -> Vec<(&str, Option<usize>)> {
    err.problems
        .iter()
        .map(|p| (p.path.as_str(), p.line))
        .collect()
}

#[test]
fn every_problem_is_reported_with_path_and_line() {
    let src = r#"listen = "nowhere"
bogus = 1
[circuit_breaker]
failure_threshold = 2.0
[circuit_breaker.endpoints."http://a:1"]
sample_sise = 3
[[observers]]
name = "x"
entity_type = "Order"
event_type = "UPSERT"
[[observers.actions]]
type = "webhook"
url = "ftp://x"
[[observers.actions]]
type = "sms"
"#;
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [
            ("listen", Some(1)),
            ("bogus", Some(2)),
            ("circuit_breaker.failure_threshold", Some(4)),
            (
                "circuit_breaker.endpoints.\"http://a:1\".sample_sise",
                Some(6)
            ),
            ("observers[0].event_type", Some(10)),
            ("observers[0].actions[0].url", Some(13)),
            ("observers[0].actions[1]", Some(14)),
        ],
        "{err}"
    );
    assert!(err.problems[4].message.contains("UPSERT"), "{err}");
}

#[test]
fn every_problem_of_one_action_is_reported() {
    let src = r#"[[observers]]
name = "o"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:9000/h"
method = "TRACE"
signing_secret = "whsec_!!!notbase64"
headers = { Host = "elsewhere" }
"#;
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [
            ("observers[0].actions[0].method", Some(8)),
            ("observers[0].actions[0].signing_secret", Some(9)),
            ("observers[0].actions[0].headers", Some(10)),
        ],
        "{err}"
    );
    assert!(!err.to_string().contains("notbase64"), "{err}");
}

#[test]
fn a_bad_default_is_reported_once_not_again_under_each_override() {
    let src = r#"[circuit_breaker]
sample_size = "twenty"
unknown_cb = 1
[circuit_breaker.endpoints."http://a:1"]
open_timeout_ms = 1000
[circuit_breaker.endpoints."http://b:2"]
failure_threshold = 3.0
"#;
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [
            ("circuit_breaker.sample_size", Some(2)),
            ("circuit_breaker.unknown_cb", Some(3)),
            (
                "circuit_breaker.endpoints.\"http://b:2\".failure_threshold",
                Some(7)
            ),
        ],
        "{err}"
    );
}

#[test]
fn email_actions_are_refused_with_a_reason() {
    let src = format!(
        "{EXAMPLE}[[observers.actions]]\ntype = \"email\"\nto = [\"ops@example.com\"]\n\
         subject = \"s\"\nbody_template = \"b\"\n"
    );
    let err = Config::parse(&src).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(err.problems[0].path.ends_with(".type"), "{err}");
    assert!(err.problems[0].message.contains("SMTP"), "{err}");
}

/// The configuration shown in `docs/service.md` is valid as written.
#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../../docs/service.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("its end");
    if let Err(e) = Config::parse(&doc[start..end]) {
        panic!("docs/service.md's example: {e}");
    }
}

/// Regression: a type error was reported at its table's header line
/// without the key, and one problem per table hid the others.
#[test]
fn every_mistyped_key_is_named_at_its_own_line() {
    let src = "[delivery]\nmax_in_flight_per_endpoint = 4\nmax_pending = \"x\"\n\
               [circuit_breaker]\nsample_size = \"twenty\"\nfailure_threshold = 1.5\n\
               open_timout_ms = 100\n[retry]\nmax_attempts = 0\nbogus = 1\n";
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [
            ("delivery.max_pending", Some(3)),
            ("circuit_breaker.sample_size", Some(5)),
            ("circuit_breaker.failure_threshold", Some(6)),
            ("circuit_breaker.open_timout_ms", Some(7)),
            ("retry.max_attempts", Some(9)),
            ("retry.bogus", Some(10)),
        ],
        "{err}"
    );
}

#[test]
fn mistyped_action_fields_are_named() {
    let src = EXAMPLE.replace(
        "url = \"http://127.0.0.1:9000/hooks/orders\"",
        "url = 5\nmethod = 7",
    );
    let err = Config::parse(&src).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "observers[0].actions[0].url",
            "observers[0].actions[0].method"
        ],
        "{err}"
    );
}

#[test]
fn breaker_overrides_must_be_keyed_by_endpoint() {
    for key in [
        "http://127.0.0.1:9000/",
        "http://127.0.0.1:9000/path",
        "garbage",
        "HTTP://Host:80",
    ] {
        let src = format!("[circuit_breaker.endpoints.\"{key}\"]\nopen_timeout_ms = 1000\n");
        let err = Config::parse(&src).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{key}: {err}");
        assert!(
            err.problems[0]
                .path
                .starts_with("circuit_breaker.endpoints."),
            "{err}"
        );
    }
    let ok = "[circuit_breaker.endpoints.\"http://127.0.0.1:9000\"]\nopen_timeout_ms = 1000\n";
    assert!(Config::parse(ok).is_ok());
}

/// Regression: a backoff beyond the timer's range panicked the timer
/// task, and every waiting action stayed put until a restart.
#[test]
fn waits_longer_than_a_year_are_refused() {
    let src = EXAMPLE
        .replace("backoff_ms = 200", "backoff_ms = 9223372036854775807")
        .replace(
            "max_backoff_ms = 600000",
            "max_backoff_ms = 9223372036854775807",
        );
    let err = Config::parse(&src).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["retry.backoff_ms", "retry.max_backoff_ms"], "{err}");
    assert!(err.problems[0].message.contains("one year"), "{err}");
}

#[test]
fn syntax_errors_name_the_line() {
    let err = Config::parse("listen = \n").unwrap_err();
    assert_eq!(err.problems[0].line, Some(1));
}

#[test]
fn secrets_never_appear_in_problems() {
    let src = EXAMPLE.replace("max_attempts = 5", "max_attempts = 0");
    let err = Config::parse(&src).unwrap_err();
    assert!(!err.to_string().contains("C2FVsBQ"), "{err}");
}

#[test]
fn the_history_section_has_defaults_and_bounds() {
    let c = Config::parse("").unwrap();
    assert!(c.history.enabled);
    assert_eq!(c.history.response_body_bytes, 4096);
    let c = Config::parse("[history]\nenabled = false\nresponse_body_bytes = 0\n").unwrap();
    assert_eq!(
        c.history,
        HistoryConfig {
            enabled: false,
            response_body_bytes: 0
        }
    );
    let c = Config::parse("[history]\nresponse_body_bytes = 65536\n").unwrap();
    assert_eq!(c.history.response_body_bytes, 65_536);
    let src = "[history]\nresponse_body_bytes = 65537\nenabled = \"yes\"\nbody = 1\n";
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [
            ("history.response_body_bytes", Some(2)),
            ("history.enabled", Some(3)),
            ("history.body", Some(4)),
        ],
        "{err}"
    );
    let src = "[history]\nresponse_body_bytes = 65537\n";
    let err = Config::parse(src).unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [("history.response_body_bytes", Some(2))]
    );
    assert!(
        err.problems[0].message.contains("between 0 and 65536"),
        "{err}"
    );
    let err = Config::parse("[history]\nresponse_body_bytes = -1\n").unwrap_err();
    assert_eq!(
        paths_and_lines(&err),
        [("history.response_body_bytes", Some(2))]
    );
}
