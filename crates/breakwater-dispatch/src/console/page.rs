//! Pages: the templates (compiled in, one environment built once), the
//! filters they use, and the answers handlers give.
//!
//! Templates are named `*.html`, so minijinja escapes every value for HTML
//! unless a template says otherwise (none does).

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{context, Environment, Value};

use super::assets;
use super::guard::Operator;
use crate::app::AppState;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("endpoints.html", include_str!("templates/endpoints.html")),
    ("endpoint.html", include_str!("templates/endpoint.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("replays.html", include_str!("templates/replays.html")),
    ("replay.html", include_str!("templates/replay.html")),
    ("audit.html", include_str!("templates/audit.html")),
];

/// The environment, built at first use.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_formatter(html_formatter);
        env.add_filter("seg", |s: &str| encode_component(s));
        env.add_filter("trunc", truncate_filter);
        env.add_filter("ms", duration_filter);
        env.add_filter("pct", |rate: f64| format!("{:.0}%", rate * 100.0));
        for (name, source) in TEMPLATES {
            // The templates are part of the binary: one that does not parse
            // is a bug caught by every test that renders a page.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env
    })
}

/// Writes values for HTML text and quoted attributes: `&`, `<`, `>`, `"`
/// and `'` escaped (minijinja's own escaping also turns every `/` into
/// `&#x2f;`, which URLs and endpoints are full of, for no safety gained in
/// these contexts).
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_safe() || matches!(state.auto_escape(), minijinja::AutoEscape::None) {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = if value.is_undefined() || value.is_none() {
        String::new()
    } else {
        value.to_string()
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

/// `s` cut to `n` characters, with `…` when cut.
fn truncate_filter(s: &str, n: usize) -> String {
    truncate(s, n)
}

/// `s` cut to `n` characters, with `…` when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// A duration in milliseconds as people read it.
fn duration_filter(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// `s` percent-encoded for a path segment or a query value: everything but
/// the unreserved characters.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `v` as a template value.
pub(crate) fn ser<T: serde::Serialize>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// An HTML answer.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn render(template: &str, ctx: Value) -> Result<String, minijinja::Error> {
    environment().get_template(template)?.render(ctx)
}

/// The assets every page links.
fn asset_urls() -> Value {
    context! {
        css => assets::url("console.css"),
        js => assets::url("console.js"),
        icon => assets::url("icon.svg"),
    }
}

/// What a page shows besides its own content.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    /// Its title (and `<h1>`).
    pub(crate) title: String,
    /// The section of the navigation it belongs to.
    pub(crate) section: &'static str,
    /// Who is looking, when logged in.
    pub(crate) operator: Option<&'a Operator>,
}

impl Frame<'_> {
    /// Renders `template` with `ctx` in this frame; a 500 page when it
    /// fails (logged).
    pub(crate) fn render(
        self,
        state: &AppState,
        status: StatusCode,
        template: &str,
        ctx: Value,
    ) -> Response {
        let (who, actor, admin, flash) = match self.operator {
            Some(op) => (
                if op.is_admin() { "admin" } else { "viewer" },
                op.caller.actor.clone(),
                op.is_admin(),
                state.console().sessions.take_flash(&op.session),
            ),
            None => ("", String::new(), false, None),
        };
        let full = context! {
            title => self.title,
            section => self.section,
            who => who,
            actor => actor,
            is_admin => admin,
            flash => flash,
            assets => asset_urls(),
            ..ctx
        };
        match render(template, full) {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(template, error = %e, "console page failed to render");
                plain_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
            }
        }
    }
}

/// An error page with `message`, without navigation (no session needed).
pub(crate) fn plain_error(status: StatusCode, message: &str) -> Response {
    let ctx = context! {
        title => status.canonical_reason().unwrap_or("Error"),
        section => "",
        who => "",
        actor => "",
        is_admin => false,
        flash => Value::from(()),
        assets => asset_urls(),
        status => status.as_u16(),
        message => message,
    };
    match render("error.html", ctx) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "console error page failed to render");
            (status, message.to_string()).into_response()
        }
    }
}

/// A page-level error: rendered inside the frame with the navigation.
pub(crate) fn error(
    state: &AppState,
    op: &Operator,
    status: StatusCode,
    message: &str,
) -> Response {
    Frame {
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        section: "",
        operator: Some(op),
    }
    .render(
        state,
        status,
        "error.html",
        context! { status => status.as_u16(), message => message },
    )
}

/// A `303 See Other` to `to`.
pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(environment().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn values_are_escaped_and_encoded() {
        let r = plain_error(StatusCode::BAD_REQUEST, "<script>alert(1)</script>");
        assert_eq!(r.status(), 400);
        assert_eq!(
            encode_component("http://a:1/x y"),
            "http%3A%2F%2Fa%3A1%2Fx%20y"
        );
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 2), "hé");
        assert_eq!(duration_filter(1500), "1.5 s");
        let page = render(
            "error.html",
            context! {
                title => "t", section => "", who => "", actor => "", is_admin => false,
                flash => (), assets => asset_urls(), status => 400,
                message => "<b>\"x\"</b> & 'y' http://a/b",
            },
        )
        .unwrap();
        assert!(
            page.contains("&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; &#39;y&#39; http://a/b"),
            "{page}"
        );
    }
}
