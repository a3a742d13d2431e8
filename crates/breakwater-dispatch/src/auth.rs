//! Who may do what: the admin token writes and reads, the viewer token
//! reads, and every operator write is audited under the fingerprint of the
//! token that made it (never the token itself).

use sha2::{Digest, Sha256};

use crate::app::{bearer, token_matches, Tokens};
use crate::error::ApiError;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No valid token.
    None,
    /// Reads (the viewer token).
    Viewer,
    /// Reads and writes (the admin token).
    Admin,
}

/// A request's access and who it is, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What it may do.
    pub access: Access,
    /// `token:<fingerprint>` of the token it showed; empty without one.
    pub actor: String,
}

impl Caller {
    /// Whoever showed `token` (a bearer token or a console session's).
    pub fn of_token(tokens: &Tokens, token: Option<&str>) -> Self {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Self::nobody();
        };
        let is = |expected: &Option<String>| {
            expected
                .as_deref()
                .is_some_and(|expected| token_matches(token, expected))
        };
        let access = if is(&tokens.admin) {
            Access::Admin
        } else if is(&tokens.viewer) {
            Access::Viewer
        } else {
            return Self::nobody();
        };
        Self {
            access,
            actor: actor(token),
        }
    }

    /// Whoever sent `authorization` (an `Authorization` header's value).
    pub fn of_bearer(tokens: &Tokens, authorization: Option<&str>) -> Self {
        Self::of_token(tokens, bearer(authorization))
    }

    /// No valid token.
    pub fn nobody() -> Self {
        Self {
            access: Access::None,
            actor: String::new(),
        }
    }

    /// Ok when it may read: 401 otherwise.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthorized`].
    pub fn must_read(&self) -> Result<(), ApiError> {
        match self.access {
            Access::None => Err(ApiError::Unauthorized),
            Access::Viewer | Access::Admin => Ok(()),
        }
    }

    /// Ok when it may write: 401 without a valid token, 403 with the viewer
    /// token.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthorized`] or [`ApiError::Forbidden`].
    pub fn must_write(&self) -> Result<(), ApiError> {
        match self.access {
            Access::None => Err(ApiError::Unauthorized),
            Access::Viewer => Err(ApiError::Forbidden(
                "the viewer token reads only: writes need the admin token".into(),
            )),
            Access::Admin => Ok(()),
        }
    }
}

/// `token:` and the first 12 hex digits of the token's SHA-256: who made a
/// write, in the audit log, without the token.
///
/// ```
/// use breakwater_dispatch::auth::actor;
///
/// let who = actor("s3cret");
/// assert!(who.starts_with("token:") && who.len() == 18);
/// assert_eq!(who, actor("s3cret"));
/// assert_ne!(who, actor("s3cret2"));
/// ```
pub fn actor(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(18);
    out.push_str("token:");
    for byte in &digest[..6] {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            admin: Some("adm".into()),
            viewer: Some("view".into()),
            ..Tokens::default()
        }
    }

    #[test]
    fn each_token_gets_its_access() {
        let t = tokens();
        assert_eq!(
            Caller::of_bearer(&t, Some("Bearer adm")).access,
            Access::Admin
        );
        assert_eq!(
            Caller::of_bearer(&t, Some("Bearer view")).access,
            Access::Viewer
        );
        assert_eq!(
            Caller::of_bearer(&t, Some("Bearer nope")).access,
            Access::None
        );
        assert_eq!(Caller::of_bearer(&t, None).access, Access::None);
        assert_eq!(Caller::of_token(&t, Some("")).access, Access::None);
        let viewer = Caller::of_token(&t, Some("view"));
        assert!(viewer.must_read().is_ok());
        assert_eq!(viewer.must_write().unwrap_err().status(), 403);
        assert_eq!(Caller::nobody().must_read().unwrap_err().status(), 401);
        assert_eq!(Caller::nobody().must_write().unwrap_err().status(), 401);
        let admin = Caller::of_token(&t, Some("adm"));
        assert!(admin.must_write().is_ok());
        assert_eq!(admin.actor, actor("adm"));
        assert!(!admin.actor.contains("adm"));
    }

    #[test]
    fn without_tokens_nobody_gets_in() {
        let t = Tokens::default();
        assert_eq!(Caller::of_token(&t, Some("anything")).access, Access::None);
    }
}
