//! Numbers an event can carry exactly.
//!
//! Event data is kept as JSON values whose numbers are 64-bit integers or
//! 64-bit floats. A number outside both (an integer past `u64::MAX`, or
//! more significant digits than a float holds) would be rounded and
//! delivered as another number, silently. Intake refuses such a number
//! instead, naming where it is: `events[0].data.n: 18446744073709551616
//! cannot be kept exactly ...`.

/// Where in an event the scan is: the keys and indexes down to here.
enum Step {
    Key(String),
    Index(usize),
}

/// The first number in `json` (one valid JSON value) that a 64-bit integer
/// or float cannot hold exactly, with its path (`data.n`, `data.list[3]`).
pub(crate) fn first_inexact(json: &str) -> Option<(String, String)> {
    let bytes = json.as_bytes();
    let mut path: Vec<Step> = Vec::new();
    // Whether the next string in an object is a key.
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                path.push(Step::Key(String::new()));
                expect_key = true;
                i += 1;
            }
            b'[' => {
                path.push(Step::Index(0));
                i += 1;
            }
            b'}' | b']' => {
                path.pop();
                i += 1;
            }
            b',' => {
                match path.last_mut() {
                    Some(Step::Index(n)) => *n += 1,
                    Some(Step::Key(_)) => expect_key = true,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                i = start;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if expect_key {
                    if let Some(Step::Key(k)) = path.last_mut() {
                        *k = json[start..i.min(json.len())].to_string();
                    }
                    expect_key = false;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &json[start..i];
                if !exact(token) {
                    return Some((render(&path), token.to_string()));
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Whether the JSON number `token` survives as a 64-bit integer or float:
/// an integer within `i64` or `u64`, or a number whose float, written back
/// in its shortest form, is the same decimal value.
fn exact(token: &str) -> bool {
    let integer = !token.contains(['.', 'e', 'E']);
    if integer {
        return token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok();
    }
    match token.parse::<f64>() {
        // Written back as serde_json writes it: of two shortest forms of
        // a float (a tie), std's `{:e}` and serde_json's (ryu) may differ.
        Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
            .is_some_and(|n| decimal(token) == decimal(&n.to_string())),
        _ => false,
    }
}

/// A decimal number as (negative, significant digits without leading or
/// trailing zeros, exponent of the first digit); zero is `(false, "", 0)`.
fn decimal(s: &str) -> (bool, String, i64) {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], s[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (s, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = whole.chars().chain(frac.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let trimmed = digits.trim_start_matches('0').trim_end_matches('0');
    if trimmed.is_empty() {
        return (false, String::new(), 0);
    }
    // The exponent of the first significant digit.
    // Saturating: `0.01e-9223372036854775808` is past `i64::MIN` here.
    let first = i64::try_from(whole.len())
        .unwrap_or(i64::MAX)
        .saturating_sub(1)
        .saturating_sub(i64::try_from(leading).unwrap_or(i64::MAX))
        .saturating_add(exp);
    (neg, trimmed.to_string(), first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_a_value_holds_pass() {
        for ok in [
            r#"{"a":1,"b":-9223372036854775808,"c":18446744073709551615}"#,
            r#"{"a":0.1,"b":1.50,"c":2.5e-3,"d":1e300,"e":-0.0,"f":0}"#,
            r#"{"a":"18446744073709551616 in a string","b":[1,2,{"c":3.25}]}"#,
            r#"{"a":123456789012345.6}"#,
        ] {
            assert_eq!(first_inexact(ok), None, "{ok}");
        }
    }

    #[test]
    fn a_number_that_would_be_rounded_is_found_with_its_path() {
        assert_eq!(
            first_inexact(r#"{"id":"x","data":{"n":18446744073709551616}}"#),
            Some(("data.n".into(), "18446744073709551616".into()))
        );
        assert_eq!(
            first_inexact(r#"{"data":{"list":[1,2,{"pi":3.14159265358979323846}]}}"#),
            Some(("data.list[2].pi".into(), "3.14159265358979323846".into()))
        );
        assert_eq!(
            first_inexact(r#"{"changes":{"t":{"old":1,"new":-99999999999999999999}}}"#),
            Some(("changes.t.new".into(), "-99999999999999999999".into()))
        );
        assert_eq!(
            first_inexact(r#"{"a\"b":{"c":1e999}}"#),
            Some((r#"a\"b.c"#.into(), "1e999".into()))
        );
    }
}
