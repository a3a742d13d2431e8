//! The parameters of the history routes: action filters, cursors, limits
//! and flags, from a query string or a JSON body. Every problem is a 400
//! naming the parameter: an unknown one, one given twice, a bad value.
//!
//! An empty value counts as not given (an HTML form sends its empty
//! fields).

use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{ActionFilter, ActionStatus};

/// The parameters that make an [`ActionFilter`].
pub const FILTER: &[&str] = &[
    "status",
    "endpoint",
    "observer",
    "event_type",
    "entity_type",
    "entity_id",
    "event_id",
    "since",
    "until",
];

/// The most items one page of a listing holds.
pub const MAX_LIMIT: usize = 500;
/// Items a page holds when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// Checked parameters: each known, each given once.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Put before each name in messages (`filter.` for a JSON body's
    /// filter).
    prefix: &'static str,
}

impl Params {
    /// `pairs` (a query string's), each of whose names must be one of
    /// `allowed`.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming an unknown or repeated parameter.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::with_prefix(pairs, allowed, "")
    }

    fn with_prefix(
        pairs: Vec<(String, String)>,
        allowed: &[&str],
        prefix: &'static str,
    ) -> Result<Self, ApiError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "{prefix}{name}: unknown parameter, expected one of {}",
                    allowed.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::BadRequest(format!(
                    "{prefix}{name}: given more than once"
                )));
            }
        }
        Ok(Self { pairs, prefix })
    }

    /// The fields of `filter`, a JSON object (the `filter` of a request
    /// body), as parameters named [`FILTER`]: strings, or numbers for
    /// `since` and `until`.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming the field (`filter.<name>`).
    pub fn of_json_filter(filter: &serde_json::Map<String, Value>) -> Result<Self, ApiError> {
        let mut pairs = Vec::with_capacity(filter.len());
        for (name, value) in filter {
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(n) if matches!(name.as_str(), "since" | "until") => n.to_string(),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "filter.{name}: expected a string"
                    )))
                }
            };
            pairs.push((name.clone(), text));
        }
        Self::with_prefix(pairs, FILTER, "filter.")
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn bad(&self, name: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("{}{name}: {message}", self.prefix))
    }

    /// The [`ActionFilter`] the [`FILTER`] parameters make.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming the parameter with a bad value.
    pub fn filter(&self) -> Result<ActionFilter, ApiError> {
        let text = |name| self.get(name).map(str::to_string);
        let status = self
            .get("status")
            .map(|s| {
                serde_json::from_value::<ActionStatus>(Value::String(s.to_string())).map_err(|_| {
                    self.bad(
                        "status",
                        format!(
                            "{s:?} is not a status (pending, parked, delivered, dead_lettered, held)"
                        ),
                    )
                })
            })
            .transpose()?;
        let event_type = self
            .get("event_type")
            .map(|s| {
                let upper = s.to_ascii_uppercase();
                match upper.as_str() {
                    "INSERT" | "UPDATE" | "DELETE" | "CUSTOM" => Ok(upper),
                    _ => Err(self.bad(
                        "event_type",
                        format!("{s:?} is not an event type (INSERT, UPDATE, DELETE, CUSTOM)"),
                    )),
                }
            })
            .transpose()?;
        let uuid = |name: &str| {
            self.get(name)
                .map(|s| {
                    s.parse::<Uuid>()
                        .map_err(|e| self.bad(name, format!("{s:?} is not a UUID ({e})")))
                })
                .transpose()
        };
        let filter = ActionFilter {
            status,
            endpoint: text("endpoint"),
            observer: text("observer"),
            event_type,
            entity_type: text("entity_type"),
            entity_id: uuid("entity_id")?.map(|u| u.to_string()),
            event_id: uuid("event_id")?,
            since_ms: self.time("since")?,
            until_ms: self.time("until")?,
        };
        if let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms) {
            if until < since {
                return Err(self.bad("until", "is before since"));
            }
        }
        Ok(filter)
    }

    /// A time: Unix milliseconds or RFC 3339.
    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(s) = self.get(name) else {
            return Ok(None);
        };
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Some(ms));
        }
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|e| {
                self.bad(
                    name,
                    format!(
                        "{s:?} is neither Unix milliseconds nor an RFC 3339 time \
                         (2026-01-22T10:00:00Z): {e}"
                    ),
                )
            })
    }

    /// The cursor `before`: an id from a page's `next`.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming `before`.
    pub fn before(&self) -> Result<Option<i64>, ApiError> {
        self.get("before")
            .map(|s| match s.parse::<i64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.bad(
                    "before",
                    format!("{s:?} is not a cursor (the `next` of a page)"),
                )),
            })
            .transpose()
    }

    /// `limit`: [`DEFAULT_LIMIT`] when not given, 1 to [`MAX_LIMIT`].
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming `limit`.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(self.bad(
                    "limit",
                    format!("{s:?} is not a number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// A flag: `true` or `1`, `false` or `0`; false when not given.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] naming it.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(s) => Err(self.bad(name, format!("{s:?} is not true or false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)], allowed: &[&str]) -> Result<Params, ApiError> {
        Params::new(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allowed,
        )
    }

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(m) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn every_filter_parameter_is_read() {
        let p = params(
            &[
                ("status", "dead_lettered"),
                ("endpoint", "http://127.0.0.1:9"),
                ("observer", "o"),
                ("event_type", "insert"),
                ("entity_type", "Order"),
                ("entity_id", "1F0E0A52-3F8E-4F7C-B7A4-52B3C4C0D9A1"),
                ("event_id", "6a1c2e9e-7d4b-4f7a-9c1e-0b8f3d2a5c11"),
                ("since", "2026-01-22T10:00:00Z"),
                ("until", "1769076000001"),
            ],
            FILTER,
        )
        .unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.status, Some(ActionStatus::DeadLettered));
        assert_eq!(f.event_type.as_deref(), Some("INSERT"));
        assert_eq!(
            f.entity_id.as_deref(),
            Some("1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1")
        );
        assert_eq!(f.since_ms, Some(1_769_076_000_000));
        assert_eq!(f.until_ms, Some(1_769_076_000_001));
        assert_eq!(f.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        // Empty values are not given.
        let p = params(&[("status", ""), ("endpoint", "")], FILTER).unwrap();
        assert_eq!(p.filter().unwrap(), ActionFilter::default());
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("bogus", "1")], "bogus: unknown parameter"),
            (
                &[("status", "a"), ("status", "b")],
                "status: given more than once",
            ),
            (&[("status", "lost")], "status: \"lost\" is not a status"),
            (&[("event_type", "upsert")], "event_type: \"upsert\""),
            (&[("entity_id", "12")], "entity_id: \"12\" is not a UUID"),
            (&[("event_id", "x")], "event_id: \"x\" is not a UUID"),
            (&[("since", "yesterday")], "since: \"yesterday\" is neither"),
            (&[("since", "10"), ("until", "5")], "until: is before since"),
        ];
        for (q, says) in cases {
            let m = message(
                params(q, FILTER)
                    .and_then(|p| p.filter())
                    .expect_err("refused"),
            );
            assert!(m.starts_with(says), "{q:?}: {m}");
        }
        let all = [FILTER, &["before", "limit", "dry_run"]].concat();
        for (q, says) in [
            (("limit", "0"), "limit: \"0\" is not a number from 1 to 500"),
            (("limit", "501"), "limit: \"501\""),
            (("before", "-3"), "before: \"-3\" is not a cursor"),
            (("dry_run", "yes"), "dry_run: \"yes\" is not true or false"),
        ] {
            let p = params(&[q], &all).unwrap();
            let e = p
                .limit()
                .and(p.before().map(|_| 0))
                .and(p.flag("dry_run").map(|_| 0))
                .unwrap_err();
            assert!(message(e).starts_with(says), "{q:?}");
        }
        let p = params(&[("limit", "500"), ("dry_run", "1")], &all).unwrap();
        assert_eq!(p.limit().unwrap(), 500);
        assert!(p.flag("dry_run").unwrap());
        assert_eq!(params(&[], &all).unwrap().limit().unwrap(), DEFAULT_LIMIT);
    }

    #[test]
    fn a_json_filter_names_its_fields() {
        let json = |v: Value| Params::of_json_filter(v.as_object().unwrap());
        let p =
            json(serde_json::json!({"status": "delivered", "since": 5, "observer": null})).unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.status, Some(ActionStatus::Delivered));
        assert_eq!(f.since_ms, Some(5));
        assert_eq!(f.observer, None);
        let m = message(json(serde_json::json!({"endpoint": 3})).unwrap_err());
        assert_eq!(m, "filter.endpoint: expected a string");
        let m = message(json(serde_json::json!({"nope": "x"})).unwrap_err());
        assert!(m.starts_with("filter.nope: unknown parameter"), "{m}");
        let m = message(
            json(serde_json::json!({"status": "x"}))
                .unwrap()
                .filter()
                .unwrap_err(),
        );
        assert!(m.starts_with("filter.status: "), "{m}");
    }
}
