//! Standard Webhooks signatures, pure: no clock, no I/O.
//!
//! A signed request carries three headers:
//!
//! | header | value |
//! | --- | --- |
//! | `webhook-id` | the message id, the same on every attempt of one message |
//! | `webhook-timestamp` | this attempt's Unix time in seconds |
//! | `webhook-signature` | `v1,` + base64 of HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`) |
//!
//! The key is the base64-decoded secret after its `whsec_` prefix (at least
//! 16 bytes). A receiver recomputes the signature and compares it in constant
//! time; it should also refuse timestamps far from its own clock, which is
//! why each attempt is signed anew.
//!
//! # Examples
//!
//! ```
//! use breakwater::webhook::signing::SigningKey;
//!
//! let key = SigningKey::from_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
//! let body = br#"{"email":"test@example.com","username":"test_user"}"#;
//! let signature = key.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
//! assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
//! assert!(key.verify("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body, &signature));
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::traits::{signing_key, ActionConfigError};

type HmacSha256 = Hmac<Sha256>;

/// The `webhook-id` header.
pub const ID_HEADER: &str = "webhook-id";
/// The `webhook-timestamp` header.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The `webhook-signature` header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A decoded signing secret. `Debug` never shows it.
///
/// The HMAC is keyed once, when the secret is decoded; each signature then
/// starts from a copy of that state.
#[derive(Clone)]
pub struct SigningKey {
    key: Vec<u8>,
    keyed: HmacSha256,
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for SigningKey {}

/// The length of a `webhook-signature` value: `v1,` and a 32-byte tag in
/// base64.
pub(crate) const SIGNATURE_LEN: usize = 3 + 44;

impl SigningKey {
    /// Decodes a secret: `whsec_` (optional) followed by the base64 of at
    /// least 16 bytes.
    ///
    /// # Errors
    ///
    /// An [`ActionConfigError`] for `webhook.signing_secret` when the secret
    /// is empty, not base64 or too short; the message never repeats it.
    pub fn from_secret(secret: &str) -> Result<Self, ActionConfigError> {
        signing_key(secret)
            .map(|key| {
                // HMAC takes keys of any length; `signing_key` guarantees
                // at least 16 bytes.
                let keyed = HmacSha256::new_from_slice(&key).expect("HMAC accepts any key length");
                Self { key, keyed }
            })
            .map_err(|m| ActionConfigError::new("webhook.signing_secret", m))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for one attempt: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // "v1," and the 44 characters of a 32-byte tag in base64.
        let mut signature = Vec::with_capacity(SIGNATURE_LEN);
        self.sign_into(id, timestamp, body, &mut signature);
        String::from_utf8(signature).expect("base64 is ASCII")
    }

    /// Appends the `webhook-signature` value, [`SIGNATURE_LEN`] bytes, to
    /// `out`.
    pub(crate) fn sign_into(&self, id: &str, timestamp: i64, body: &[u8], out: &mut Vec<u8>) {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        out.extend_from_slice(b"v1,");
        let start = out.len();
        out.resize(start + SIGNATURE_LEN - 3, 0);
        let written = BASE64
            .encode_slice(tag, &mut out[start..])
            .expect("44 bytes hold a 32-byte tag in base64");
        debug_assert_eq!(written, SIGNATURE_LEN - 3);
    }

    /// Whether `header` (one or more space-separated `v1,<base64>`
    /// signatures) holds a valid signature of this message. Compares in
    /// constant time; other versions and malformed entries are skipped.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = BASE64.decode(encoded) else {
                return false;
            };
            self.mac(id, timestamp, body).verify_slice(&tag).is_ok()
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn the_standard_webhooks_test_vector() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(key.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        assert!(key.verify(ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn the_prefix_is_optional() {
        let bare = SigningKey::from_secret(&SECRET["whsec_".len()..]).unwrap();
        assert_eq!(bare.sign(ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert!(!key.verify("msg_other", TIMESTAMP, BODY, SIGNATURE));
        assert!(!key.verify(ID, TIMESTAMP + 1, BODY, SIGNATURE));
        assert!(!key.verify(ID, TIMESTAMP, b"{}", SIGNATURE));
        let other = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!other.verify(ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn verify_accepts_one_valid_entry_among_several() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        let header = format!("v2,abc v1,bm90IGl0 garbage v1,!!! {SIGNATURE}");
        assert!(key.verify(ID, TIMESTAMP, BODY, &header));
        assert!(!key.verify(ID, TIMESTAMP, BODY, "v1,bm90IGl0 v2,x"));
        assert!(!key.verify(ID, TIMESTAMP, BODY, ""));
    }

    #[test]
    fn bad_secrets_are_refused_without_being_repeated() {
        for secret in ["", "whsec_", "whsec_%%%", "whsec_c2hvcnQ="] {
            let err = SigningKey::from_secret(secret).unwrap_err();
            assert_eq!(err.field, "webhook.signing_secret");
        }
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
