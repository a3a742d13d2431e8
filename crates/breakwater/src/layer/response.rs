//! The layer's errors as HTTP responses, for servers (axum's
//! `HandleErrorLayer`, or any service that must answer every request).

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::error::{CallTimeout, CircuitOpen};
use super::BoxError;

/// The HTTP response for an error of the breaker services:
///
/// * a rejection ([`CircuitOpen`]) is `503 Service Unavailable` with
///   `Retry-After` in whole seconds, rounded up (at least `1`; `1` too when
///   the breaker does not know how long: forced open, or every probe slot
///   busy);
/// * a call timeout ([`CallTimeout`]) is `503` without `Retry-After` (the
///   breaker has not opened; nothing says how long to wait);
/// * any other error (the inner service's own) is `500 Internal Server
///   Error`; its message is not sent to the client.
///
/// The body is a short plain-text line.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::layer::{error_response, BoxError, CircuitOpen};
///
/// let err: BoxError = CircuitOpen::new(Some(Duration::from_millis(2_500))).into();
/// let res = error_response(&err);
/// assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.headers()["retry-after"], "3");
/// assert_eq!(res.body(), "circuit open, retry after 2.5s\n");
/// ```
pub fn error_response(err: &BoxError) -> Response<String> {
    let (status, retry_after, body) = if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        let secs = open.retry_after.map_or(1, whole_seconds_up).max(1);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(secs),
            format!("{open}\n"),
        )
    } else if let Some(timeout) = err.downcast_ref::<CallTimeout>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("{timeout}\n"),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal server error\n".to_owned(),
        )
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// [`error_response`] as the handler of axum's `HandleErrorLayer`:
/// `HandleErrorLayer::new(handle_error)` in front of a breaker layer turns
/// its errors into responses, so that the stack's error is `Infallible`
/// as an axum `Router` requires. See the [module docs](super#with-axum).
pub async fn handle_error(err: BoxError) -> Response<String> {
    error_response(&err)
}

fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_retry(err: BoxError) -> (u16, Option<String>) {
        let res = error_response(&err);
        let retry = res
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status().as_u16(), retry)
    }

    #[test]
    fn rejections_are_503_with_a_retry_after_in_whole_seconds() {
        let open = |d: Option<Duration>| status_and_retry(CircuitOpen::new(d).into());
        assert_eq!(
            open(Some(Duration::from_secs(30))),
            (503, Some("30".into()))
        );
        assert_eq!(
            open(Some(Duration::from_millis(1))),
            (503, Some("1".into()))
        );
        assert_eq!(open(Some(Duration::ZERO)), (503, Some("1".into())));
        assert_eq!(open(None), (503, Some("1".into())));
        assert_eq!(open(Some(Duration::MAX)), (503, Some(u64::MAX.to_string())));
    }

    #[test]
    fn timeouts_are_503_and_other_errors_500_without_their_message() {
        let timeout: BoxError = CallTimeout::new(Duration::from_millis(250)).into();
        assert_eq!(status_and_retry(timeout), (503, None));
        let inner: BoxError = "secret upstream detail".into();
        let res = error_response(&inner);
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!res.body().contains("secret"));
    }
}
