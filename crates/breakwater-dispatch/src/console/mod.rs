//! The operator console at `/console`: plain server-rendered HTML, served
//! by the service itself.
//!
//! Every view is a page of links and forms that works with JavaScript off:
//! filters are GET forms, writes are POST forms, and a destructive write
//! first shows a confirmation page (`GET` of the write's own URL) whose
//! button posts it. The one small script only adds a periodic refresh of
//! the parts of a page marked `data-live` (pausable) and a confirmation
//! dialog that posts a write at once. Templates (minijinja, HTML
//! autoescaped), the stylesheet and the script are compiled into the
//! binary; assets are served under names that carry a hash of their
//! content, cached for a year.
//!
//! # Who may do what
//!
//! A login form takes the viewer token (reads) or the admin token (reads
//! and writes). The browser gets a random session id in a cookie
//! (`HttpOnly; SameSite=Strict; Path=/console`, `Secure` behind https),
//! never the token; the session remembers the access and the token's
//! fingerprint, ends after 12 hours idle or at logout, and ends at once
//! when the token it was opened with is no longer in force (a reload
//! changed it). A page without a session redirects to the login page; a
//! write without one is refused (401), a write with the viewer's is
//! refused (403).
//!
//! # What a browser is allowed
//!
//! Every `POST` must come from the console's own origin: its `Origin`
//! header (or, without one, its `Referer`) must name the scheme and `Host`
//! the request was sent to (`X-Forwarded-Proto: https` behind a proxy that
//! ends TLS); a `POST` with neither is refused (403). Every answer carries a
//! Content-Security-Policy that allows nothing but the console's own
//! assets and requests (no inline script or style, no framing), plus
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`;
//! pages are `Cache-Control: no-store`.
//!
//! No page shows a secret: tokens, signing secrets and the database
//! password never reach a template, actions are shown by type and endpoint
//! only, and of an attempt's request headers only the values of a few
//! standard ones are shown (the names of the others).

mod assets;
mod guard;
pub(crate) mod login_limit;
mod page;
mod query;
mod session;
mod transitions;
mod views;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;
use crate::engine::Engine;

pub use transitions::TransitionRecord;

/// The console's own state: its templates, its sessions and the recent
/// breaker transitions it shows.
pub struct Console {
    sessions: session::Sessions,
    logins: login_limit::LoginLimit,
    transitions: Arc<transitions::Transitions>,
    url_login: AtomicBool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// The console over `engine`: it starts keeping each endpoint's recent
    /// breaker transitions now.
    pub fn new(engine: &Engine) -> Self {
        let transitions = Arc::new(transitions::Transitions::default());
        let ring = transitions.clone();
        engine
            .breakers()
            .add_listener(move |t: &breakwater::Transition| ring.record(t));
        Self {
            sessions: session::Sessions::default(),
            logins: login_limit::LoginLimit::default(),
            transitions,
            url_login: AtomicBool::new(false),
        }
    }

    /// Lets `GET /console/login?token=...` log a browser in. For the
    /// loopback demo only: a token in a URL ends up in histories and logs,
    /// so `serve` never accepts one.
    pub fn allow_url_login(&self) {
        // Relaxed: a flag set once at start, read by later requests.
        self.url_login.store(true, Ordering::Relaxed);
    }

    fn url_login_allowed(&self) -> bool {
        self.url_login.load(Ordering::Relaxed)
    }

    /// `endpoint`'s recent breaker transitions, newest first.
    pub fn transitions(&self, endpoint: &str) -> Vec<TransitionRecord> {
        self.transitions.of(endpoint)
    }

    /// How many sessions are open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<Arc<AppState>> {
    use views::{audit, dead_letters, endpoints, events, login, replays};
    Router::new()
        .route("/", get(endpoints::list))
        .route("/login", get(login::form_page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/endpoints/{endpoint}", get(endpoints::one))
        .route(
            "/endpoints/{endpoint}/{op}",
            get(write::breaker_confirm).post(write::breaker),
        )
        .route("/events", get(events::search))
        .route("/events/{id}", get(events::one))
        .route("/dead-letters", get(dead_letters::list))
        .route(
            "/actions/replay",
            get(write::replay_confirm).post(write::replay),
        )
        .route(
            "/actions/purge",
            get(write::purge_confirm).post(write::purge),
        )
        .route(
            "/dead-letters/replay-all",
            get(write::replay_all_confirm).post(write::replay_all),
        )
        .route("/replays", get(replays::list))
        .route("/replays/{id}", get(replays::one))
        .route(
            "/replays/{id}/cancel",
            get(write::cancel_confirm).post(write::cancel),
        )
        .route("/audit", get(audit::list))
        .fallback(views::not_found)
        .method_not_allowed_fallback(views::method_not_allowed)
        .layer(axum::middleware::from_fn(guard::same_origin))
        .layer(axum::middleware::map_response(guard::headers))
}
