//! What one attempt sent and got back, for an attempt history.

use serde::{Deserialize, Serialize};

/// What kind of failure an attempt came to, finer than [`Error`]'s
/// transient/permanent split: what an operator reads first in a history.
///
/// [`Error`]: crate::traits::Error
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The receiver's host name did not resolve.
    Dns,
    /// No connection (refused, reset, unreachable).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The connect or total timeout fired.
    Timeout,
    /// The receiver answered 4xx.
    Http4xx,
    /// The receiver answered 5xx.
    Http5xx,
    /// Another non-2xx answer (1xx, 3xx: redirects are not followed).
    HttpOther,
    /// The answer's body broke off while it was read.
    BodyRead,
    /// The request could not be built (a template, a header, the action).
    Request,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind as histories write it: `dns`, `connect`, `tls`, `timeout`,
    /// `http_4xx`, `http_5xx`, `http_other`, `body_read`, `request`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::HttpOther => "http_other",
            Self::BodyRead => "body_read",
            Self::Request => "request",
            Self::Other => "other",
        }
    }
}

/// One attempt's request and answer as an executor saw them, filled in by
/// [`ActionExecutor::execute_recorded`](crate::traits::ActionExecutor::execute_recorded).
///
/// Secrets never reach it: credentials in the URL, `Authorization`,
/// `Cookie`, `Set-Cookie`, and headers whose names say they carry a token,
/// key, secret or password are recorded as `[redacted]`; a signing secret is
/// never a header (the signature headers, which cannot be turned back into
/// the secret, are kept). Only the first
/// [`body_limit`](Exchange::body_limit) bytes of the answer's body are kept.
///
/// # Examples
///
/// ```
/// use breakwater::traits::Exchange;
///
/// let exchange = Exchange::new(4096);
/// assert_eq!(exchange.body_limit, 4096);
/// assert!(exchange.method.is_empty() && exchange.status.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// At most this many bytes of the answer's body are kept in
    /// [`response_body`](Exchange::response_body).
    pub body_limit: usize,
    /// The request's method (`POST`); empty when nothing was sent.
    pub method: String,
    /// The request's URL, credentials redacted.
    pub url: String,
    /// The request's headers as sent, secrets redacted.
    pub request_headers: Vec<(String, String)>,
    /// The answer's HTTP status, when one came.
    pub status: Option<u16>,
    /// The answer's headers, cookies and credentials redacted.
    pub response_headers: Vec<(String, String)>,
    /// The first [`body_limit`](Exchange::body_limit) bytes of the answer's
    /// body.
    pub response_body: Vec<u8>,
    /// What kind of failure it was, when the executor knows.
    pub error_kind: Option<ErrorKind>,
}

impl Exchange {
    /// An empty record that keeps up to `body_limit` bytes of a body.
    pub fn new(body_limit: usize) -> Self {
        Self {
            body_limit,
            ..Self::default()
        }
    }
}
