//! The service's HTTP errors: the one place where errors become status codes.
//!
//! Every error body is JSON: `{"error": "<kind>", "message": "<what is wrong>"}`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::AcceptError;
use crate::operations::OpError;
use crate::store::StoreError;

/// An error answered over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message names the problem.
    #[error("{0}")]
    BadRequest(String),
    /// A bearer token is missing or wrong.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token is valid but does not allow this (a viewer token on a
    /// write), or a write came from another origin.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing is stored under that name.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state of what it names (replaying an
    /// action that is still pending).
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit.
    #[error("the request body is over the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    /// The route exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The service cannot take the work now; retry after the given time.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// Something failed inside the service.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status code the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` field of its body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::ShuttingDown => Self::Unavailable {
                message: e.to_string(),
                retry_after: Duration::from_secs(5),
            },
            AcceptError::Store(e) => Self::Unavailable {
                message: e.to_string(),
                retry_after: Duration::from_secs(1),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(m) => Self::NotFound(m),
            OpError::Conflict(m) => Self::Conflict(m),
            OpError::Invalid { .. } => Self::BadRequest(e.to_string()),
            OpError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.kind(), "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::Unavailable { retry_after, .. } => {
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status() {
        assert_eq!(ApiError::BadRequest("x".into()).status(), 400);
        assert_eq!(ApiError::Unauthorized.status(), 401);
        assert_eq!(ApiError::PayloadTooLarge { limit: 1 }.status(), 413);
        let failed: ApiError = AcceptError::Store(StoreError::Closed).into();
        let r = failed.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
