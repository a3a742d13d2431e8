//! `GET|POST /console/login` and `POST /console/logout`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;

use crate::app::AppState;
use crate::auth::{Access, Caller};
use crate::console::guard::{is_https, safe_return};
use crate::console::page::{see_other, Frame};
use crate::console::query::{Params, Posted};
use crate::console::session;

fn form(state: &AppState, status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let tokens = state.tokens();
    let configured = tokens.admin.is_some() || tokens.viewer.is_some();
    Frame {
        title: "Log in".into(),
        section: "login",
        operator: None,
    }
    .render(
        state,
        status,
        "login.html",
        context! { next => next, problem => problem, configured => configured },
    )
}

/// Opens a session for `token`, or says why not. While too many logins
/// were refused lately ([`login_limit`](crate::console::login_limit)),
/// every login is refused before its token is looked at.
fn log_in(state: &AppState, headers: &HeaderMap, token: &str, next: &str) -> Response {
    let limit = &state.console().logins;
    if let Some(wait) = limit.wait() {
        let secs = wait.as_secs() + 1;
        tracing::warn!(
            retry_after_s = secs,
            "console login refused: too many refused logins"
        );
        let mut r = form(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            Some(&format!(
                "Too many logins were refused lately: try again in {secs} s."
            )),
        );
        if let Ok(v) = secs.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let caller = Caller::of_token(&state.tokens(), Some(token));
    if caller.access == Access::None {
        tracing::warn!("console login refused: not a valid token");
        limit.refused();
        return form(
            state,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That token is not the viewer or the admin token."),
        );
    }
    tracing::info!(actor = %caller.actor, "console login");
    let id = state.console().sessions.open(caller, token);
    let mut r = see_other(next);
    if let Ok(v) = session::set_cookie(&id, is_https(headers)).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /console/login`: the form. With `?token=` (the demo only: see
/// [`Console::allow_url_login`](crate::console::Console::allow_url_login))
/// it logs in at once.
pub(crate) async fn form_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let next = safe_return(params.get("next"));
    match params.get("token") {
        Some(token) if state.console().url_login_allowed() => {
            log_in(&state, &headers, token, &next)
        }
        Some(_) => form(
            &state,
            StatusCode::BAD_REQUEST,
            &next,
            Some("The console never takes a token from a URL: type it here."),
        ),
        None => form(&state, StatusCode::OK, &next, None),
    }
}

/// `POST /console/login`: checks the token and opens a session.
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Posted(params): Posted,
) -> Response {
    let next = safe_return(params.get("next"));
    match params.get("token") {
        Some(token) => log_in(&state, &headers, token, &next),
        None => form(
            &state,
            StatusCode::BAD_REQUEST,
            &next,
            Some("token: type the viewer or the admin token."),
        ),
    }
}

/// `POST /console/logout`: closes the session and forgets the cookie.
pub(crate) async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if let Some(id) = session::from_cookie(cookie) {
        state.console().sessions.close(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_string()),
            (
                header::SET_COOKIE,
                session::clear_cookie(is_https(&headers)),
            ),
        ],
    )
        .into_response()
}
