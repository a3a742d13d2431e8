//! What every console request goes through: the response headers, the
//! same-origin check on writes, and the session a handler asks for.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::page;
use super::session;
use crate::app::AppState;
use crate::auth::{Access, Caller};

/// The console's Content-Security-Policy: its own assets and requests
/// only, no inline script or style, no framing, no `<base>`.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     connect-src 'self'";

/// Adds the security headers to every console response, and
/// `Cache-Control: no-store` to those that set no caching of their own.
pub(crate) async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the request came over https, as far as the service can tell: a
/// proxy that ends TLS says so with `X-Forwarded-Proto: https`.
pub(crate) fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The origin the request was sent to: `http[s]://` and its `Host`.
fn own_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    if host.is_empty() {
        return None;
    }
    let scheme = if is_https(headers) { "https" } else { "http" };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Why a write's origin is refused, if it is: its `Origin` (or, without
/// one, its `Referer`) must be the console's own.
pub(crate) fn origin_problem(headers: &HeaderMap) -> Option<&'static str> {
    let Some(own) = own_origin(headers) else {
        return Some("the request names no Host");
    };
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text(header::ORIGIN) {
        return (!origin.trim().eq_ignore_ascii_case(&own))
            .then_some("the request's Origin is not this console's");
    }
    if let Some(referer) = text(header::REFERER) {
        let referer = referer.trim().to_ascii_lowercase();
        let same = referer
            .strip_prefix(&own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        return (!same).then_some("the request's Referer is not this console's");
    }
    Some("a write must say where it comes from (Origin or Referer)")
}

/// Refuses (403) a request other than `GET` or `HEAD` that does not come
/// from the console's own origin.
pub(crate) async fn same_origin(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe {
        if let Some(problem) = origin_problem(request.headers()) {
            tracing::warn!(path = %request.uri().path(), problem, "console write refused");
            return page::plain_error(StatusCode::FORBIDDEN, problem);
        }
    }
    next.run(request).await
}

/// The operator behind a console request: an open session's caller.
///
/// As an extractor it refuses a request without a valid session: a `GET`
/// is redirected to the login page (then back), anything else is answered
/// 401.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// What the session allows, and its token's fingerprint.
    pub(crate) caller: Caller,
    /// The session's id.
    pub(crate) session: String,
}

impl Operator {
    /// Whether it may write.
    pub(crate) fn is_admin(&self) -> bool {
        self.caller.access == Access::Admin
    }

    /// Ok when it may write; a 403 page otherwise.
    pub(crate) fn must_write(&self) -> Result<(), Box<Response>> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Box::new(page::plain_error(
                StatusCode::FORBIDDEN,
                "the viewer token reads only: writes need the admin token",
            )))
        }
    }
}

/// Where the login page sends the browser back to: a console path only.
pub(crate) fn safe_return(path: Option<&str>) -> String {
    path.filter(|p| {
        (p == &"/console" || p.starts_with("/console/") || p.starts_with("/console?"))
            && !p.contains("//")
            && !p.contains('\\')
    })
    .unwrap_or("/console")
    .to_string()
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let cookie = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok());
        if let Some(id) = session::from_cookie(cookie) {
            if let Some(caller) = state.console().sessions.find(id, &state.tokens()) {
                return Ok(Self {
                    caller,
                    session: id.to_string(),
                });
            }
        }
        if matches!(parts.method, Method::GET | Method::HEAD) {
            let back = parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str());
            let target = format!(
                "/console/login?next={}",
                page::encode_component(&safe_return(Some(back)))
            );
            return Err((
                StatusCode::SEE_OTHER,
                [(header::LOCATION, target)],
                "log in first",
            )
                .into_response());
        }
        Err(page::plain_error(
            StatusCode::UNAUTHORIZED,
            "log in first: writes need a console session",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_write_must_come_from_the_console_itself() {
        let ok = [
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            vec![
                ("host", "127.0.0.1:8080"),
                ("referer", "http://127.0.0.1:8080/console/x?y=1"),
            ],
            vec![
                ("host", "ops.example.com"),
                ("x-forwarded-proto", "https"),
                ("origin", "https://ops.example.com"),
            ],
        ];
        for h in ok {
            assert_eq!(origin_problem(&headers(&h)), None, "{h:?}");
        }
        let refused = [
            vec![("host", "127.0.0.1:8080")],
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ],
            vec![("host", "127.0.0.1:8080"), ("origin", "null")],
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "https://127.0.0.1:8080"),
            ],
            vec![
                ("host", "127.0.0.1:8080"),
                ("referer", "http://127.0.0.1:8080.evil.example/console"),
            ],
            vec![("origin", "http://127.0.0.1:8080")],
        ];
        for h in refused {
            assert!(origin_problem(&headers(&h)).is_some(), "{h:?}");
        }
    }

    #[test]
    fn the_login_page_sends_back_to_the_console_only() {
        assert_eq!(
            safe_return(Some("/console/events?x=1")),
            "/console/events?x=1"
        );
        assert_eq!(safe_return(Some("https://evil.example")), "/console");
        assert_eq!(safe_return(Some("/console//evil.example")), "/console");
        assert_eq!(safe_return(Some("/consolex")), "/console");
        assert_eq!(safe_return(None), "/console");
    }
}
