//! What an HTTP answer or a transport error means for the next attempt.
//!
//! | outcome | error |
//! | --- | --- |
//! | 2xx | none: delivered |
//! | 5xx, 408, 429 | transient (`Retry-After` kept on 429 and 503) |
//! | 410 | `Error::Gone`: the receiver asks to be disabled |
//! | 1xx, 3xx (redirects are not followed), other 4xx | permanent |
//! | timeout (connect or total) | `Error::Timeout` with the limit that fired |
//! | refused or reset connection, DNS, TLS, a response cut off | transient |
//! | a request that cannot be built | permanent |

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::traits::Error;

/// The error for a non-2xx `status`. `body` is a (capped) start of the
/// response body, quoted in the message.
pub(crate) fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    max_retry_after: Duration,
    now: SystemTime,
) -> Error {
    let retry_after = match status.as_u16() {
        429 | 503 => retry_after(headers, max_retry_after, now),
        _ => None,
    };
    Error::from_status(status.as_u16(), describe(status, body), retry_after)
}

/// `HTTP 503 Service Unavailable: <start of the body>`.
pub(crate) fn describe(status: StatusCode, body: &[u8]) -> String {
    let snippet = snippet(body);
    let mut text = String::with_capacity(32 + snippet.len());
    // What `Display` for a status writes ("200 OK"), without the formatter.
    text.push_str("HTTP ");
    text.push_str(status.as_str());
    if let Some(reason) = status.canonical_reason() {
        text.push(' ');
        text.push_str(reason);
    }
    if !snippet.is_empty() {
        text.push_str(": ");
        text.push_str(&snippet);
    }
    text
}

/// At most this many characters of a response body go into a message.
const SNIPPET_CHARS: usize = 200;

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push_str("...");
    }
    out
}

/// `Retry-After` as delay-seconds or an HTTP date, at most `cap`. A date in
/// the past means "now" (zero); a value that is neither is ignored.
pub(crate) fn retry_after(headers: &HeaderMap, cap: Duration, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Seconds; more than a u64 holds is "longer than the cap".
        value.parse::<u64>().map_or(cap, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

/// The error for a request that got no (complete) answer.
pub(crate) fn transport_error(
    e: &reqwest::Error,
    connect_timeout: Duration,
    timeout: Duration,
) -> Error {
    if e.is_timeout() {
        // A connect timeout is a connect error too; name the limit that fired.
        return Error::Timeout(if e.is_connect() {
            connect_timeout
        } else {
            timeout
        });
    }
    let message = chain(e);
    if e.is_builder() {
        return Error::permanent(format!("cannot build the request: {message}"));
    }
    // Refused, reset, DNS, TLS, a connection closed before or during the
    // answer: the endpoint may be back later.
    Error::transient(message)
}

/// The error and its sources, one line, without the URL (a URL may carry a
/// token, as Slack's do).
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, retry_after.parse().unwrap());
        h
    }

    const CAP: Duration = Duration::from_secs(600);

    #[test]
    fn retry_after_reads_seconds_and_dates_within_the_cap() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            retry_after(&headers("120"), CAP, now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:29:30 GMT"), CAP, now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), CAP, now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&headers("86400"), CAP, now), Some(CAP));
        assert_eq!(
            retry_after(&headers("99999999999999999999999"), CAP, now),
            Some(CAP),
            "more seconds than a u64 holds is still a wait, at the cap"
        );
        assert_eq!(
            retry_after(&headers(" 30 "), CAP, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Thu, 01 Jan 2099 00:00:00 GMT"), CAP, now),
            Some(CAP)
        );
        assert_eq!(retry_after(&headers("soon"), CAP, now), None);
        assert_eq!(retry_after(&headers("-5"), CAP, now), None);
        assert_eq!(retry_after(&HeaderMap::new(), CAP, now), None);
    }

    #[test]
    fn retry_after_counts_on_429_and_503_only() {
        let now = SystemTime::UNIX_EPOCH;
        let h = headers("7");
        for (status, want) in [
            (429, Some(Duration::from_secs(7))),
            (503, Some(Duration::from_secs(7))),
            (500, None),
            (502, None),
        ] {
            let e = status_error(StatusCode::from_u16(status).unwrap(), &h, b"", CAP, now);
            assert!(e.is_transient(), "{status}");
            assert_eq!(e.retry_after(), want, "{status}");
        }
    }

    #[test]
    fn messages_quote_a_short_clean_start_of_the_body() {
        let long = "x".repeat(1000);
        let text = describe(StatusCode::BAD_REQUEST, long.as_bytes());
        assert!(text.starts_with("HTTP 400 Bad Request: xxx"), "{text}");
        assert!(text.len() < 250 && text.ends_with("..."), "{text}");
        assert_eq!(
            describe(StatusCode::BAD_GATEWAY, b"  bad\r\nline \xff "),
            "HTTP 502 Bad Gateway: bad  line \u{fffd}"
        );
        assert_eq!(describe(StatusCode::NOT_FOUND, b""), "HTTP 404 Not Found");
        assert_eq!(describe(StatusCode::OK, b"ok\n"), "HTTP 200 OK: ok");
        // A status without a standard reason is given by its number alone.
        let odd = StatusCode::from_u16(599).unwrap();
        assert_eq!(describe(odd, b"busy"), "HTTP 599: busy");
    }
}
