//! Endpoint keys: which breaker an HTTP action is judged by.
//!
//! URLs are parsed the WHATWG way (the `url` crate, which is also what
//! reqwest uses), so the key is always the host a request really goes to:
//! `http://a.example\@b.example/` is a request to `a.example` (a backslash
//! ends the authority in an `http` URL), and its key says so. The key keeps
//! only `scheme://host:port`, so that a breaker (and a metrics label) stands
//! for one server, whatever the path, query or credentials.

use url::Url;

/// The parts of an http(s) URL that choose its breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlParts {
    pub(crate) scheme: &'static str,
    /// Lowercase; IPv6 addresses in brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl UrlParts {
    /// `scheme://host:port`.
    pub(crate) fn key(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Parses an `http` or `https` URL; the error says what is wrong.
pub(crate) fn parse_url(url: &str) -> Result<UrlParts, String> {
    parse_http_url(url).map(|(_, parts)| parts)
}

/// Parses an `http` or `https` URL with a host and a non-zero port: the
/// URL a request is sent to, and its key parts.
///
/// Errors quote the URL without its path, query and user info, which may
/// hold secrets (a Slack webhook's path is its token).
pub(crate) fn parse_http_url(url: &str) -> Result<(Url, UrlParts), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{} is not a valid URL: {e}", shown(url)))?;
    let scheme = match parsed.scheme() {
        "http" => "http",
        "https" => "https",
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected http or https)"
            ))
        }
    };
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => return Err(format!("{} has no host", shown(url))),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{} has no port", shown(url)))?;
    if port == 0 {
        return Err(format!("{}: port 0 is not a port (1..=65535)", shown(url)));
    }
    Ok((parsed, UrlParts { scheme, host, port }))
}

/// The URL an action sends its requests to, checked as
/// [`parse_http_url`] does and without user info: `user:password@` in a
/// URL is not sent by the executors (a header is the place for
/// credentials), and it would show in the client's debug logs. The error
/// names `field`.
pub(crate) fn request_url(
    url: &str,
    field: &'static str,
) -> Result<(Url, UrlParts), super::ActionConfigError> {
    let (parsed, parts) =
        parse_http_url(url).map_err(|m| super::ActionConfigError::new(field, m))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(super::ActionConfigError::new(
            field,
            format!(
                "{} holds user info (user:password@), which is not sent; put credentials \
                 in a header such as Authorization",
                shown(url)
            ),
        ));
    }
    Ok((parsed, parts))
}

/// `url` quoted for an error message: its scheme and host (and port), with
/// `/...` for a path, query or fragment left out and without user info.
fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let more = if end < rest.len() { "/..." } else { "" };
    let prefix = if scheme.is_empty() && !url.contains("://") {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{:?}", format!("{prefix}{host}{more}"))
}

/// The breaker key of a URL: `scheme://host:port`, or the URL itself when it
/// does not parse (validation refuses such actions before they run).
pub(crate) fn url_endpoint(url: &str) -> String {
    match parse_url(url) {
        Ok(p) => p.key(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_scheme_host_and_port_only() {
        let cases = [
            (
                "https://Hooks.Example.com/a/b?c=d",
                "https://hooks.example.com:443",
            ),
            ("http://example.com", "http://example.com:80"),
            (
                "http://user:pw@example.com:8080/x",
                "http://example.com:8080",
            ),
            ("https://[::1]:9000/hook", "https://[::1]:9000"),
            ("http://127.0.0.1:3000#frag", "http://127.0.0.1:3000"),
            ("HTTP://EXAMPLE.com:80/", "http://example.com:80"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(url_endpoint(url), want, "{url}");
        }
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, want) in [
            ("", "not a valid URL"),
            ("ftp://x", "unsupported scheme"),
            ("http://", "not a valid URL"),
            ("http://:80", "not a valid URL"),
            ("http://h:99999", "not a valid URL"),
            ("http://h:0", "port 0"),
            ("http://[::1", "not a valid URL"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn errors_leave_out_paths_and_user_info() {
        for (url, shown_as) in [
            (
                "https://hooks.slack.com:99999/services/T/B/SECRETTOKEN",
                "\"https://hooks.slack.com:99999/...\"",
            ),
            ("http://user:pass@h:0/x?token=1", "\"http://h:0/...\""),
            ("nonsense", "\"nonsense\""),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(shown_as), "{url}: {err}");
            for secret in ["SECRETTOKEN", "pass", "token"] {
                assert!(!err.contains(secret), "{url}: {err}");
            }
        }
    }

    /// Regression: the hand-written parser took the last `@` as the end of
    /// the userinfo and keyed this URL as `b.example`, while a WHATWG parser
    /// (reqwest's) sends the request to `a.example`.
    #[test]
    fn backslash_before_at_keys_the_host_the_request_goes_to() {
        let url = r"http://a.example\@b.example/";
        assert_eq!(url_endpoint(url), "http://a.example:80");
        // The same URL with the backslash as a path: one host, one key.
        assert_eq!(
            url_endpoint("http://a.example/@b.example/"),
            "http://a.example:80"
        );
    }

    /// Regression: `http://a.example:80:90` used to validate (the port was
    /// read after the last colon).
    #[test]
    fn two_ports_are_not_a_url() {
        let err = parse_url("http://a.example:80:90").unwrap_err();
        assert!(err.contains("not a valid URL"), "{err}");
    }
}
