//! The console's stylesheet, script and icon, compiled in and served under
//! names that carry a hash of their content (`console.1a2b3c4d5e6f.css`):
//! a new build gets new names, so browsers may cache them for a year.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    /// Its plain name (`console.css`).
    name: &'static str,
    /// The name it is served under.
    hashed: String,
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

const SOURCES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        include_str!("assets/console.css"),
        "text/css; charset=utf-8",
    ),
    (
        "console.js",
        include_str!("assets/console.js"),
        "text/javascript; charset=utf-8",
    ),
    ("icon.svg", include_str!("assets/icon.svg"), "image/svg+xml"),
];

fn assets() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(name, body, content_type)| {
                let digest = Sha256::digest(body.as_bytes());
                let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
                Asset {
                    name,
                    hashed: format!("{stem}.{hash}.{ext}"),
                    body,
                    content_type,
                    etag: format!("\"{hash}\""),
                }
            })
            .collect()
    })
}

/// The URL `name` (`console.css`) is served at.
pub(crate) fn url(name: &str) -> String {
    assets()
        .iter()
        .find(|a| a.name == name)
        .map_or_else(String::new, |a| format!("/console/assets/{}", a.hashed))
}

/// `GET /console/assets/{name}`: an asset by its hashed name, cached for a
/// year; `304` to a matching `If-None-Match`.
pub(crate) async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = assets().iter().find(|a| a.hashed == name) else {
        return super::page::plain_error(StatusCode::NOT_FOUND, "no such asset");
    };
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = url("console.css");
        assert!(css.starts_with("/console/assets/console."), "{css}");
        assert!(css.ends_with(".css"));
        assert_eq!(css.len(), "/console/assets/console..css".len() + 12);
        assert_eq!(url("nope"), "");
    }
}
