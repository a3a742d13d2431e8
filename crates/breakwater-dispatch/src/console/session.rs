//! Console sessions: a random id in the browser's cookie, mapped here to
//! what its token allows.
//!
//! The cookie never holds the token. A session keeps the access it was
//! opened with, the token's audit fingerprint and its SHA-256; each use
//! checks that the token in force for that access still has the same
//! digest, so a session ends as soon as a reload changes or removes its
//! token. A session unused for [`IDLE`] ends too. Sessions live in this
//! process's memory: a restart logs everyone out, and in a fleet each
//! instance has its own (a load balancer must keep a browser on one
//! instance, or the operator logs in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::app::Tokens;
use crate::auth::{Access, Caller};

/// How long an unused session lasts.
pub(crate) const IDLE: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions are kept; past it the least recently used
/// one ends (a flood of logins cannot grow memory without bound).
const MAX_SESSIONS: usize = 10_000;

/// The cookie's name.
pub(crate) const COOKIE: &str = "bw_console";

#[derive(Debug)]
struct Session {
    caller: Caller,
    digest: [u8; 32],
    last_seen: Instant,
    flash: Option<String>,
}

/// The open sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic elsewhere while the lock was held leaves whole entries.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many sessions are open (expired ones included until swept).
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Opens a session for whoever showed `token` (already checked:
    /// `caller` is what it allows); returns the session's id.
    pub(crate) fn open(&self, caller: Caller, token: &str) -> String {
        let id = hex(&rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            id.clone(),
            Session {
                caller,
                digest: digest(token),
                last_seen: now,
                flash: None,
            },
        );
        id
    }

    /// The caller of session `id`, if it is open, not idle too long, and
    /// its token is still in force; marks it used. A session that fails a
    /// check is closed.
    pub(crate) fn find(&self, id: &str, tokens: &Tokens) -> Option<Caller> {
        let now = Instant::now();
        let mut map = self.map();
        let session = map.get_mut(id)?;
        let token = match session.caller.access {
            Access::Admin => tokens.admin.as_deref(),
            Access::Viewer => tokens.viewer.as_deref(),
            Access::None => None,
        };
        let current = token.is_some_and(|t| digest(t) == session.digest);
        if !current || now.duration_since(session.last_seen) >= IDLE {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.caller.clone())
    }

    /// Closes session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.map().remove(id);
    }

    /// Leaves `message` for the next page session `id` shows.
    pub(crate) fn flash(&self, id: &str, message: String) {
        if let Some(s) = self.map().get_mut(id) {
            s.flash = Some(message);
        }
    }

    /// The message left for session `id`, once.
    pub(crate) fn take_flash(&self, id: &str) -> Option<String> {
        self.map().get_mut(id).and_then(|s| s.flash.take())
    }
}

/// The session id in a `Cookie` header, if any.
pub(crate) fn from_cookie(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands session `id` to the browser.
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        IDLE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(admin: &str, viewer: &str) -> Tokens {
        Tokens {
            admin: Some(admin.into()),
            viewer: Some(viewer.into()),
            ..Tokens::default()
        }
    }

    #[test]
    fn a_session_ends_when_its_token_changes() {
        let sessions = Sessions::default();
        let t = tokens("adm", "view");
        let admin = sessions.open(Caller::of_token(&t, Some("adm")), "adm");
        let viewer = sessions.open(Caller::of_token(&t, Some("view")), "view");
        assert_eq!(admin.len(), 64);
        assert_eq!(sessions.find(&admin, &t).unwrap().access, Access::Admin);
        assert_eq!(sessions.find(&viewer, &t).unwrap().access, Access::Viewer);
        let changed = tokens("adm2", "view");
        assert!(sessions.find(&admin, &changed).is_none());
        // Closed for good, even if the old token came back.
        assert!(sessions.find(&admin, &t).is_none());
        assert!(sessions.find(&viewer, &changed).is_some());
        sessions.close(&viewer);
        assert!(sessions.find(&viewer, &changed).is_none());
        assert!(sessions.find("nope", &t).is_none());
    }

    #[test]
    fn the_cookie_holds_the_id_only() {
        let c = set_cookie("abc", false);
        assert_eq!(
            c,
            "bw_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert_eq!(from_cookie(Some("a=1; bw_console=xyz; b=2")), Some("xyz"));
        assert_eq!(from_cookie(Some("bw_console=")), None);
        assert_eq!(from_cookie(None), None);
    }

    #[test]
    fn a_flash_is_shown_once() {
        let sessions = Sessions::default();
        let t = tokens("adm", "view");
        let id = sessions.open(Caller::of_token(&t, Some("adm")), "adm");
        sessions.flash(&id, "done".into());
        assert_eq!(sessions.take_flash(&id).as_deref(), Some("done"));
        assert_eq!(sessions.take_flash(&id), None);
    }
}
