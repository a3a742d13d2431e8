//! Classifiers: which results count as failures.

use crate::resilience::Verdict;

/// Decides how a finished request counts for the breaker.
///
/// Implemented for [`AllErrors`] (the default), [`HttpStatus`], and every
/// closure `Fn(&Result<Res, Err>) -> Verdict`. It sees the inner service's
/// own result, before any boxing; it never sees the layer's rejections or
/// timeouts (a timeout always counts as a failure).
///
/// # Examples
///
/// An HTTP classifier that does not count other clients' mistakes (4xx)
/// either way:
///
/// ```
/// use breakwater::Verdict;
/// use breakwater::layer::Classify;
///
/// let classify = |r: &Result<http::Response<()>, std::io::Error>| match r {
///     Ok(res) if res.status().is_server_error() => Verdict::Failure,
///     Ok(res) if res.status().is_client_error() => Verdict::Ignore,
///     Ok(_) => Verdict::Success,
///     Err(_) => Verdict::Failure,
/// };
/// let not_found = http::Response::builder().status(404).body(()).unwrap();
/// assert_eq!(classify.classify(&Ok(not_found)), Verdict::Ignore);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify the results of this service, `Result<{Res}, {Err}>`",
    label = "the classifier of this breaker layer",
    note = "`AllErrors` classifies any result; `HttpStatus` needs a response with a status (`http::Response<B>`, or `reqwest::Response` with the `reqwest` feature); any `Fn(&Result<Res, Err>) -> Verdict` closure classifies its own types"
)]
pub trait Classify<Res, Err> {
    /// How `result` counts.
    fn classify(&self, result: &Result<Res, Err>) -> Verdict;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(&Result<Res, Err>) -> Verdict,
{
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Verdict {
        self(result)
    }
}

/// The default classifier: every `Err` is a failure, every `Ok` a success.
///
/// # Examples
///
/// ```
/// use breakwater::Verdict;
/// use breakwater::layer::{AllErrors, Classify};
///
/// assert_eq!(AllErrors.classify(&Ok::<_, ()>(7)), Verdict::Success);
/// assert_eq!(AllErrors.classify(&Err::<(), _>("down")), Verdict::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AllErrors;

impl<Res, Err> Classify<Res, Err> for AllErrors {
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Verdict {
        Verdict::of(result)
    }
}

/// A response that carries an HTTP status, for the [`HttpStatus`]
/// classifier.
///
/// Implemented for `http::Response<B>` (what hyper, axum and tower-http
/// services return) and, with the `reqwest` feature, for
/// `reqwest::Response` (a `reqwest::Client` used as a tower service).
///
/// # Examples
///
/// A response type of one's own:
///
/// ```
/// use breakwater::Verdict;
/// use breakwater::layer::{Classify, HasStatus, HttpStatus};
///
/// struct Reply { code: u16 }
///
/// impl HasStatus for Reply {
///     fn status(&self) -> http::StatusCode {
///         http::StatusCode::from_u16(self.code).unwrap_or(http::StatusCode::BAD_GATEWAY)
///     }
/// }
///
/// assert_eq!(HttpStatus.classify(&Ok::<_, ()>(Reply { code: 502 })), Verdict::Failure);
/// assert_eq!(HttpStatus.classify(&Ok::<_, ()>(Reply { code: 201 })), Verdict::Success);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no HTTP status for the `HttpStatus` classifier",
    label = "not a response with a status",
    note = "`HttpStatus` reads `http::Response<B>`, and `reqwest::Response` with breakwater's `reqwest` feature; implement `HasStatus` for another response type, or classify with a closure"
)]
pub trait HasStatus {
    /// The response's status.
    fn status(&self) -> http::StatusCode;
}

impl<B> HasStatus for http::Response<B> {
    #[inline]
    fn status(&self) -> http::StatusCode {
        self.status()
    }
}

#[cfg(feature = "reqwest")]
impl HasStatus for reqwest::Response {
    #[inline]
    fn status(&self) -> http::StatusCode {
        self.status()
    }
}

/// A classifier for HTTP responses: a 5xx, a 408 (Request Timeout), a 429
/// (Too Many Requests) and every `Err` are failures; every other status is a
/// success.
///
/// It reads any response that [`HasStatus`]: `http::Response<B>` and, with
/// the `reqwest` feature, `reqwest::Response`. For another policy (say, 4xx
/// ignored), write a closure; see [`Classify`].
///
/// A classifier that does not fit the inner service's response makes the
/// breaker service no `Service` at all. Called through a `ServiceExt`
/// method, the compiler then only says that the method "exists but its
/// trait bounds were not satisfied"; calling `Service::call` (or
/// `svc.ready().await?.call(req)`) instead names the classifier and the
/// response type it cannot read. For a `reqwest::Client`, turn on the
/// `reqwest` feature.
///
/// # Examples
///
/// ```
/// use breakwater::Verdict;
/// use breakwater::layer::{Classify, HttpStatus};
///
/// let status = |code: u16| -> Result<http::Response<()>, std::io::Error> {
///     Ok(http::Response::builder().status(code).body(()).unwrap())
/// };
/// assert_eq!(HttpStatus.classify(&status(503)), Verdict::Failure);
/// assert_eq!(HttpStatus.classify(&status(429)), Verdict::Failure);
/// assert_eq!(HttpStatus.classify(&status(404)), Verdict::Success);
/// assert_eq!(HttpStatus.classify(&status(200)), Verdict::Success);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HttpStatus;

impl HttpStatus {
    /// Whether a response with `status` counts as a failure.
    pub fn is_failure(status: http::StatusCode) -> bool {
        status.is_server_error()
            || status == http::StatusCode::REQUEST_TIMEOUT
            || status == http::StatusCode::TOO_MANY_REQUESTS
    }
}

impl<Res: HasStatus, Err> Classify<Res, Err> for HttpStatus {
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Verdict {
        match result {
            Ok(res) if !Self::is_failure(HasStatus::status(res)) => Verdict::Success,
            _ => Verdict::Failure,
        }
    }
}
