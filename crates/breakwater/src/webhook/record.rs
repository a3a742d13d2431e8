//! What goes into an [`Exchange`]: requests and answers with their secrets
//! taken out, and the kind of each failure.
//!
//! A header is secret when its name is a known credential (`Authorization`,
//! `Proxy-Authorization`, `Cookie`, `Set-Cookie`) or says it carries one
//! (`token`, `secret`, `password`, `passwd`, `api-key`, `apikey`, `auth`,
//! `session`, `credential`, `signature-key`). Standard Webhooks' own
//! `webhook-signature` is kept: it cannot be turned back into the secret,
//! and a receiver's operator compares it with theirs. A URL loses its user
//! name and password, the values of query parameters whose names look
//! secret, and (for Slack, whose incoming-webhook path is the secret) its
//! whole path.

use http::{HeaderMap, StatusCode};

use crate::traits::{ErrorKind, Exchange};

/// What a secret is recorded as.
pub(crate) const REDACTED: &str = "[redacted]";

/// Parts of header or parameter names that mark a secret.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "api_key",
    "auth",
    "session",
    "credential",
    "signature-key",
    "cookie",
];

/// Which bytes (lower case) begin a word of [`SECRET_WORDS`].
const FIRST_BYTES: [bool; 256] = {
    let mut firsts = [false; 256];
    let mut i = 0;
    while i < SECRET_WORDS.len() {
        firsts[SECRET_WORDS[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    firsts
};

/// Whether a header or query parameter named `name` carries a secret.
///
/// Every header of every recorded attempt goes through this, so it looks
/// at each byte once and compares words only where one may begin (a
/// search for each word at each place cost more than the rest of the
/// recording).
pub(crate) fn is_secret(name: &str) -> bool {
    let name = name.as_bytes();
    (0..name.len()).any(|at| {
        let first = name[at].to_ascii_lowercase();
        FIRST_BYTES[usize::from(first)]
            && SECRET_WORDS.iter().any(|w| {
                let w = w.as_bytes();
                w[0] == first
                    && name.len() - at >= w.len()
                    && name[at..at + w.len()].eq_ignore_ascii_case(w)
            })
    })
}

/// Headers every exchange has that carry no secret (lower case, as `http`
/// keeps names): known at a glance, not searched for secret words.
const COMMON_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "date",
    "server",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-encoding",
    "cache-control",
    "accept",
    "host",
    "vary",
    "etag",
    "location",
    "retry-after",
    "x-request-id",
];

/// `headers` as (name, value) pairs, secrets redacted; a value that is not
/// text is shown lossily.
pub(crate) fn headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str();
            let value = if !COMMON_HEADERS.contains(&name) && is_secret(name) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.to_string(), value)
        })
        .collect()
}

/// `url` without its credentials; without its path too when
/// `secret_path` (a Slack incoming webhook).
pub(crate) fn url(url: &url::Url, secret_path: bool) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        // Only a URL that cannot have a user name refuses one: this one has.
        let _ = shown.set_username(REDACTED);
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some(REDACTED));
    }
    if secret_path {
        shown.set_path(&format!("/{REDACTED}"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// The kind of a non-2xx answer.
pub(crate) fn status_kind(status: StatusCode) -> ErrorKind {
    if status.is_client_error() {
        ErrorKind::Http4xx
    } else if status.is_server_error() {
        ErrorKind::Http5xx
    } else {
        ErrorKind::HttpOther
    }
}

/// The kind of a request that got no (complete) answer.
pub(crate) fn transport_kind(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if e.is_builder() {
        return ErrorKind::Request;
    }
    if e.is_body() || e.is_decode() {
        return ErrorKind::BodyRead;
    }
    if source_says(
        e,
        &["dns error", "failed to lookup address", "name or service"],
    ) {
        return ErrorKind::Dns;
    }
    if source_says(
        e,
        &["tls", "certificate", "handshake", "invalid peer", "alert"],
    ) {
        return ErrorKind::Tls;
    }
    if e.is_connect() {
        return ErrorKind::Connect;
    }
    // A connection closed before the answer came: the connection broke.
    ErrorKind::Connect
}

/// Whether `e` or one of its sources mentions one of `words`.
fn source_says(e: &reqwest::Error, words: &[&str]) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string().to_ascii_lowercase();
        if words.iter().any(|w| text.contains(w)) {
            return true;
        }
        source = s.source();
    }
    false
}

/// The values of `headers`' secret headers (as [`headers`] redacts them),
/// long enough to look for: a receiver that echoes one in its answer's
/// body must not put it into the record that way.
pub(crate) fn secret_values(headers: &HeaderMap) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for (name, value) in headers {
        if is_secret(name.as_str()) {
            let value = value.as_bytes();
            values.push(value.to_vec());
            // `Bearer xyz`: the credential alone may be echoed too.
            if let Some(at) = value.iter().position(|b| *b == b' ') {
                values.push(value[at + 1..].to_vec());
            }
        }
    }
    values.retain(|v| v.len() >= MIN_SECRET);
    // Longest first, so that a whole value is replaced before its part.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// Shorter secret values are not looked for in bodies (too many false
/// matches; a credential is longer).
const MIN_SECRET: usize = 3;

/// `body` with every occurrence of one of `secrets` replaced by
/// `[redacted]`: what an answer's body may be quoted as, in a record or an
/// error's message.
pub(crate) fn scrub(body: Vec<u8>, secrets: &[Vec<u8>]) -> Vec<u8> {
    if secrets.is_empty() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    'scan: while at < body.len() {
        for secret in secrets {
            if body[at..].starts_with(secret) {
                out.extend_from_slice(REDACTED.as_bytes());
                at += secret.len();
                continue 'scan;
            }
        }
        out.push(body[at]);
        at += 1;
    }
    out
}

/// Keeps the start of `body` in `exchange`, up to its limit.
pub(crate) fn body(exchange: &mut Exchange, body: &[u8]) {
    let take = body.len().min(exchange.body_limit);
    exchange.response_body.clear();
    exchange.response_body.extend_from_slice(&body[..take]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn secret_headers_are_redacted_and_signatures_kept() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer xyz"),
            ("proxy-authorization", "Basic abc"),
            ("cookie", "s=abc"),
            ("set-cookie", "s=abc; HttpOnly"),
            ("x-api-key", "k1"),
            ("x-auth-token", "t1"),
            ("x-client-secret", "c1"),
            ("webhook-signature", "v1,abc="),
            ("webhook-id", "msg_1"),
            ("content-type", "application/json"),
        ] {
            h.append(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let shown = headers(&h);
        let get = |n: &str| shown.iter().find(|(k, _)| k == n).unwrap().1.clone();
        for secret in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
            "x-client-secret",
        ] {
            assert_eq!(get(secret), REDACTED, "{secret}");
        }
        assert_eq!(get("webhook-signature"), "v1,abc=");
        assert_eq!(get("webhook-id"), "msg_1");
        assert_eq!(get("content-type"), "application/json");
        let all = format!("{shown:?}");
        for leaked in ["xyz", "s=abc", "k1", "t1", "c1", "Basic"] {
            assert!(!all.contains(leaked), "{leaked} in {all}");
        }
    }

    #[test]
    fn urls_lose_credentials_secret_parameters_and_slack_paths() {
        let u =
            url::Url::parse("https://user:pw@h.example:8443/hook?x=1&token=abc&api_key=k").unwrap();
        let shown = url(&u, false);
        assert!(
            !shown.contains("user:") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(!shown.contains("abc") && !shown.contains("=k"), "{shown}");
        assert!(shown.contains("x=1") && shown.contains("/hook"), "{shown}");
        let slack = url::Url::parse("https://hooks.slack.com/services/T0/B0/XXXX").unwrap();
        let shown = url(&slack, true);
        assert!(!shown.contains("XXXX") && shown.starts_with("https://hooks.slack.com/"));
        let plain = url::Url::parse("http://127.0.0.1:9000/a").unwrap();
        assert_eq!(url(&plain, false), "http://127.0.0.1:9000/a");
    }

    #[test]
    fn statuses_have_their_kinds_and_bodies_their_prefix() {
        assert_eq!(status_kind(StatusCode::BAD_REQUEST), ErrorKind::Http4xx);
        assert_eq!(status_kind(StatusCode::BAD_GATEWAY), ErrorKind::Http5xx);
        assert_eq!(status_kind(StatusCode::FOUND), ErrorKind::HttpOther);
        let mut x = Exchange::new(4);
        body(&mut x, b"abcdef");
        assert_eq!(x.response_body, b"abcd");
        body(&mut x, b"ab");
        assert_eq!(x.response_body, b"ab");
    }

    #[test]
    fn secrets_echoed_in_a_body_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer xyz123"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let secrets = secret_values(&h);
        assert_eq!(secrets, vec![b"Bearer xyz123".to_vec(), b"xyz123".to_vec()]);
        let scrubbed = scrub(
            b"you sent Bearer xyz123 and xyz123, text/plain".to_vec(),
            &secrets,
        );
        assert_eq!(
            String::from_utf8(scrubbed).unwrap(),
            "you sent [redacted] and [redacted], text/plain"
        );
        assert!(is_secret("X-API-KEY") && is_secret("Session_Id") && !is_secret("x-tenant"));
        for name in COMMON_HEADERS {
            assert!(!is_secret(name), "{name} is taken for plain without a look");
        }
    }
}
