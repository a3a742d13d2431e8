//! The HTTP API: the router and the state its handlers share.
//!
//! | route | who | answer |
//! | --- | --- | --- |
//! | `POST /events` | intake token, if configured | 202 `{"ids": [...]}` once stored; 400, 401, 413, 503 |
//! | `GET /events/{id}` | anyone; attempts: viewer, admin | each action's status, and with a token its `attempt_history`; 404 |
//! | `GET /metrics` | anyone | Prometheus text |
//! | `GET /health` | anyone | degradation level; 503 when critical |
//! | `GET /breakers` | anyone | every endpoint's breaker, JSON |
//! | `POST /breakers/{endpoint}/reset\|open\|close` | admin | the breaker; 401, 403, 404; audited |
//! | `GET /actions` | viewer, admin | `{"actions", "next"}`: filters, cursor `before`, `limit`; 400 naming a bad parameter |
//! | `GET /actions/{id}` | viewer, admin | the action with its `attempt_history`; 404 |
//! | `POST /actions/{id}/replay` | admin | the action, pending again; 404, 409 when pending, parked or held; audited |
//! | `POST /actions/replay` | admin | dry run: `{"count"}`; else 202 with the replay job; audited |
//! | `POST /actions/purge` | admin | dead letters only; dry run: `{"count"}`; else `{"purged"}`; audited |
//! | `GET /replays` | viewer, admin | `{"replays": [...]}`, newest first |
//! | `GET /replays/{id}` | viewer, admin | the job and its `progress`; 404 |
//! | `DELETE /replays/{id}` | admin | cancels it; the job; 404, 409 when not running; audited |
//! | `GET /audit` | viewer, admin | `{"entries", "next"}`: operator writes, newest first |
//! | `/console/...` | a console session | the operator console: HTML ([`crate::console`]) |
//!
//! "viewer, admin": the viewer token (`viewer_token_env`) or the admin
//! token; 401 without either. "admin": the admin token; 401 without a
//! token, 403 with the viewer token.

use std::sync::{Arc, RwLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::engine::{Engine, Routes};
use crate::error::ApiError;
use crate::routes;

/// Bearer tokens read from the environment.
#[derive(Clone, Default)]
pub struct Tokens {
    /// Required by the admin routes; they always answer 401 when `None`.
    pub admin: Option<String>,
    /// Required by `POST /events` when `intake_required`.
    pub intake: Option<String>,
    /// Reads the console and the history routes (as the admin token does).
    pub viewer: Option<String>,
    /// Whether the configuration names an intake token: then `POST /events`
    /// answers 401 without it, and always when its variable is unset or
    /// empty (a missing secret never opens the door).
    pub intake_required: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("Tokens")
            .field("admin", &self.admin.as_ref().map(|_| "<set>"))
            .field("intake", &self.intake.as_ref().map(|_| "<set>"))
            .field("viewer", &self.viewer.as_ref().map(|_| "<set>"))
            .field("intake_required", &self.intake_required)
            .finish()
    }
}

impl Tokens {
    /// The tokens named by `config` (an unset or empty variable is no token).
    /// A token the configuration names but the environment lacks is logged
    /// at warn: its routes then refuse every request.
    pub fn from_env(config: &Config) -> Self {
        let read = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| std::env::var(n).ok())
                .filter(|v| !v.is_empty())
        };
        let tokens = Self {
            admin: read(&config.admin_token_env),
            intake: read(&config.intake_token_env),
            viewer: read(&config.viewer_token_env),
            intake_required: config.intake_token_env.is_some(),
        };
        for (key, name, token, routes) in [
            (
                "admin_token_env",
                &config.admin_token_env,
                &tokens.admin,
                "the admin routes",
            ),
            (
                "intake_token_env",
                &config.intake_token_env,
                &tokens.intake,
                "POST /events",
            ),
            (
                "viewer_token_env",
                &config.viewer_token_env,
                &tokens.viewer,
                "reads with the viewer token",
            ),
        ] {
            if let (Some(name), None) = (name, token) {
                tracing::warn!(
                    "{key} names {name}, which is unset or empty: {routes} answer 401 to every request"
                );
            }
        }
        tokens
    }
}

/// Whether `header` (an `Authorization` value) carries `expected` as a
/// bearer token, compared in constant time.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    bearer(header).is_some_and(|given| token_matches(given, expected))
}

/// The token of a bearer `Authorization` value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110), the token is not.
    header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Whether `given` is `expected`, compared in constant time.
pub fn token_matches(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// What every handler shares.
pub struct AppState {
    /// The delivery engine.
    pub engine: Engine,
    config: RwLock<Arc<Config>>,
    routes: RwLock<Arc<Routes>>,
    tokens: RwLock<Tokens>,
    registry: Registry,
    console: crate::console::Console,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `engine` with `config`, `tokens`, and `registry` for `/metrics`.
    pub fn new(engine: Engine, config: Config, tokens: Tokens, registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            console: crate::console::Console::new(&engine),
            engine,
            routes: RwLock::new(Arc::new(Routes::new(&config))),
            config: RwLock::new(Arc::new(config)),
            tokens: RwLock::new(tokens),
            registry,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The observers' routes of the configuration in force.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Tokens {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The operator console's state (sessions, recent transitions).
    pub fn console(&self) -> &crate::console::Console {
        &self.console
    }

    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Puts a new configuration in force: observers, tokens, retry,
    /// delivery and breaker settings (every breaker keeps its state).
    ///
    /// # Errors
    ///
    /// The breaker settings that were refused, as (endpoint, reason).
    pub fn reload(&self, config: Config) -> Result<(), Vec<(String, String)>> {
        let result = self.engine.reload(&config);
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Tokens::from_env(&config);
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Routes::new(&config));
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        result
    }
}

/// Reads the body of `POST /events` whole, within the limit in force (a
/// reload may change it) and within `http.body_read_timeout_ms`, before the
/// handler sees it. A request whose `Content-Length` is over the limit gets
/// its `413` at once, before a byte of its body is read: a client that sent
/// `Expect: 100-continue` is not invited to upload it. A body that does not
/// arrive in time gets a `408`.
async fn body_limit(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let config = state.config();
    let limit = config.delivery.max_body_bytes;
    let timeout = std::time::Duration::from_millis(config.http.body_read_timeout_ms);
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let refused = |e: ApiError| {
        state
            .engine
            .metrics()
            .intake_refused
            .get_or_create(&crate::metrics::ReasonLabel { reason: e.kind() })
            .inc();
        e.into_response()
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return refused(ApiError::PayloadTooLarge { limit });
    }
    let (parts, body) = request.into_parts();
    let read = http_body_util::Limited::new(body, limit).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Err(_) => return refused(ApiError::RequestTimeout(timeout)),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refused(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(e)) => return refused(ApiError::BadRequest(format!("reading the body: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    next.run(request).await
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/events",
            // `body_limit` reads the body whole within the limit in force:
            // the extractor's own default limit is not another one.
            post(routes::events::post)
                .layer(DefaultBodyLimit::disable())
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    body_limit,
                )),
        )
        .route("/events/{id}", get(routes::events::get))
        .route("/metrics", get(routes::ops::metrics))
        .route("/health", get(routes::ops::health))
        .route("/breakers", get(routes::ops::breakers))
        .route("/breakers/{endpoint}/{op}", post(routes::admin::breaker))
        .route("/actions", get(routes::actions::list))
        .route("/actions/replay", post(routes::actions::replay))
        .route("/actions/purge", post(routes::actions::purge))
        .route("/actions/{id}", get(routes::actions::get))
        .route("/actions/{id}/replay", post(routes::actions::replay_one))
        .route("/replays", get(routes::replays::list))
        .route(
            "/replays/{id}",
            get(routes::replays::get).delete(routes::replays::cancel),
        )
        .route("/audit", get(routes::audit::list))
        .nest("/console", crate::console::router())
        // Errors in JSON here too, as everywhere else.
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!("no route {}", uri.path()))
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
            },
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer S3CRET"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer"), "s3cret"));
    }
}
