//! Reading the console's query strings and forms: action filters, times,
//! cursors and selected ids. A bad value is refused with a message naming
//! its field.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use crate::store::{ActionFilter, ActionId, ActionStatus};

/// At most this many actions are replayed or purged by one selection.
pub(crate) const MAX_SELECTED: usize = 500;

/// A query string's or a form's fields, in order (`id` may repeat).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    /// The first non-empty value of `name`, trimmed.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    /// `name` as a number, if given.
    ///
    /// # Errors
    ///
    /// A message naming `name` when it is not a whole number.
    pub(crate) fn number(&self, name: &str) -> Result<Option<i64>, String> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{name}: {v:?} is not a whole number"))
            })
            .transpose()
    }

    /// Every `id` given, as action ids.
    ///
    /// # Errors
    ///
    /// A message naming `id` when one is not a number, or too many are.
    pub(crate) fn ids(&self) -> Result<Vec<ActionId>, String> {
        let mut ids = Vec::new();
        for (k, v) in &self.0 {
            if k == "id" {
                let v = v.trim();
                ids.push(
                    v.parse::<ActionId>()
                        .map_err(|_| format!("id: {v:?} is not an action id"))?,
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_SELECTED {
            return Err(format!(
                "id: {} actions selected, at most {MAX_SELECTED} at a time",
                ids.len()
            ));
        }
        Ok(ids)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Response;

    /// The query string's fields.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Self(pairs))
            .map_err(|e| super::page::plain_error(StatusCode::BAD_REQUEST, &e.body_text()))
    }
}

/// A posted form's fields (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Posted(pub(crate) Params);

impl<S: Send + Sync> FromRequest<S> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Form::<Vec<(String, String)>>::from_request(request, state)
            .await
            .map(|Form(pairs)| Self(Params(pairs)))
            .map_err(|e| super::page::plain_error(StatusCode::BAD_REQUEST, &e.body_text()))
    }
}

/// The filter fields as typed, to fill the form again and to build links.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct FilterForm {
    pub(crate) status: String,
    pub(crate) endpoint: String,
    pub(crate) observer: String,
    pub(crate) event_type: String,
    pub(crate) entity_type: String,
    pub(crate) entity_id: String,
    pub(crate) event_id: String,
    pub(crate) since: String,
    pub(crate) until: String,
}

impl FilterForm {
    fn fields(&self) -> [(&'static str, &str); 9] {
        [
            ("status", &self.status),
            ("endpoint", &self.endpoint),
            ("observer", &self.observer),
            ("event_type", &self.event_type),
            ("entity_type", &self.entity_type),
            ("entity_id", &self.entity_id),
            ("event_id", &self.event_id),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The fields that are set, as `name=value&...`, percent-encoded
    /// (empty when none is).
    pub(crate) fn query(&self) -> String {
        self.fields()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", super::page::encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The fields that are set, as (name, value) pairs (hidden inputs).
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        self.fields()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    }

    /// The filter in words, for a confirmation.
    pub(crate) fn describe(&self) -> String {
        let set = self.pairs();
        if set.is_empty() {
            "no filter".to_string()
        } else {
            set.iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// `status` by its name.
fn status(v: &str) -> Result<ActionStatus, String> {
    match v {
        "pending" => Ok(ActionStatus::Pending),
        "parked" => Ok(ActionStatus::Parked),
        "delivered" => Ok(ActionStatus::Delivered),
        "dead_lettered" => Ok(ActionStatus::DeadLettered),
        "held" => Ok(ActionStatus::Held),
        other => Err(format!(
            "status: {other:?} is not one of pending, parked, delivered, dead_lettered, held"
        )),
    }
}

/// A time as Unix ms: RFC 3339, a date and time without a zone (taken as
/// UTC, as `<input type="datetime-local">` sends it), a date (midnight
/// UTC), or Unix ms.
///
/// # Errors
///
/// A message naming `field`.
pub(crate) fn time(field: &str, v: &str) -> Result<i64, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| format!("{field}: {v:?} is too large"));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, format) {
            return Ok(Utc.from_utc_datetime(&t).timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&t).timestamp_millis());
        }
    }
    Err(format!(
        "{field}: {v:?} is not a time (2026-01-22T10:00:00Z, 2026-01-22T10:00 in UTC, 2026-01-22, or Unix ms)"
    ))
}

/// The action filter in `params`, and the fields as typed.
///
/// # Errors
///
/// A message naming the first field with a bad value.
pub(crate) fn filter(params: &Params) -> Result<(ActionFilter, FilterForm), String> {
    let text = |name: &str| params.get(name).unwrap_or_default().to_string();
    let form = FilterForm {
        status: text("status"),
        endpoint: text("endpoint"),
        observer: text("observer"),
        event_type: text("event_type"),
        entity_type: text("entity_type"),
        entity_id: text("entity_id"),
        event_id: text("event_id"),
        since: text("since"),
        until: text("until"),
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let filter = ActionFilter {
        status: some(&form.status).map(|s| status(&s)).transpose()?,
        endpoint: some(&form.endpoint),
        observer: some(&form.observer),
        event_type: some(&form.event_type).map(|s| s.to_ascii_lowercase()),
        entity_type: some(&form.entity_type),
        entity_id: some(&form.entity_id),
        event_id: some(&form.event_id)
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("event_id: {s:?} is not an event id (a UUID)"))
            })
            .transpose()?,
        since_ms: some(&form.since).map(|s| time("since", &s)).transpose()?,
        until_ms: some(&form.until).map(|s| time("until", &s)).transpose()?,
    };
    Ok((filter, form))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn filters_are_read_and_bad_values_named() {
        let (f, form) = filter(&params(&[
            ("status", "dead_lettered"),
            ("endpoint", "http://a:1"),
            ("since", "2026-01-22T10:00"),
            ("until", "2026-01-22T10:00:00Z"),
            ("observer", ""),
        ]))
        .unwrap();
        assert_eq!(f.status, Some(ActionStatus::DeadLettered));
        assert_eq!(f.since_ms, f.until_ms);
        assert_eq!(f.observer, None);
        assert_eq!(form.query(), "status=dead_lettered&endpoint=http%3A%2F%2Fa%3A1&since=2026-01-22T10%3A00&until=2026-01-22T10%3A00%3A00Z");
        for (field, value) in [
            ("status", "lost"),
            ("since", "yesterday"),
            ("event_id", "x"),
        ] {
            let e = filter(&params(&[(field, value)])).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
        assert_eq!(time("t", "1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(time("t", "2026-01-22"), time("t", "2026-01-22T00:00:00Z"));
    }

    #[test]
    fn ids_are_numbers() {
        assert_eq!(
            params(&[("id", "3"), ("id", "1"), ("id", "3")]).ids(),
            Ok(vec![1, 3])
        );
        assert!(params(&[("id", "x")]).ids().unwrap_err().starts_with("id"));
    }
}
