//! The `[circuit_breaker]` section: defaults, and overrides by endpoint.

use std::collections::BTreeMap;

use breakwater::traits::ActionConfig;
use breakwater::CircuitBreakerConfig;

use super::problem::{Checker, Step};

/// The `[circuit_breaker]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BreakerConfig {
    /// The configuration every endpoint's breaker gets.
    pub defaults: CircuitBreakerConfig,
    /// Complete configurations (defaults merged with the override) by endpoint key.
    pub endpoints: BTreeMap<String, CircuitBreakerConfig>,
}

impl BreakerConfig {
    /// The configuration of `endpoint`'s breaker.
    pub fn for_endpoint(&self, endpoint: &str) -> &CircuitBreakerConfig {
        self.endpoints.get(endpoint).unwrap_or(&self.defaults)
    }
}

pub(super) fn breaker_section(c: &mut Checker<'_>, v: &toml::Value) -> BreakerConfig {
    let base = [Step::Key("circuit_breaker")];
    let Some(table) = v.as_table() else {
        c.problem(&base, "expected a table");
        return BreakerConfig::default();
    };
    let mut defaults_table = table.clone();
    let endpoints = defaults_table.remove("endpoints");
    let mut out = BreakerConfig::default();
    let mut defaults_ok = false;
    if let Some(d) =
        c.parse::<CircuitBreakerConfig>(&base, toml::Value::Table(defaults_table.clone()))
    {
        defaults_ok = d.validate().is_ok();
        if let Err(e) = d.validate() {
            for p in e.problems() {
                c.problem(
                    &[Step::Key("circuit_breaker"), Step::Key(p.field)],
                    p.message.clone(),
                );
            }
        }
        out.defaults = d;
    }
    let Some(endpoints) = endpoints else {
        return out;
    };
    let Some(endpoints) = endpoints.as_table() else {
        c.problem(
            &[Step::Key("circuit_breaker"), Step::Key("endpoints")],
            "expected a table of endpoint tables",
        );
        return out;
    };
    for (endpoint, over) in endpoints {
        let path = [
            Step::Key("circuit_breaker"),
            Step::Key("endpoints"),
            Step::Key(endpoint),
        ];
        if let Some(problem) = endpoint_key_problem(endpoint) {
            c.problem(&path, problem);
        }
        let Some(over) = over.as_table() else {
            c.problem(&path, "expected a table");
            continue;
        };
        // Over the defaults as they were read: a key of the defaults that
        // was refused (and reported) there is not reported again here.
        let mut merged = match toml::Value::try_from(&out.defaults) {
            Ok(toml::Value::Table(t)) => t,
            _ => defaults_table.clone(),
        };
        merged.extend(over.clone());
        if let Some(cfg) = c.parse::<CircuitBreakerConfig>(&path, toml::Value::Table(merged)) {
            if let Err(e) = cfg.validate() {
                // A problem of the defaults is reported once, at the defaults.
                for p in e
                    .problems()
                    .iter()
                    .filter(|p| defaults_ok || over.contains_key(p.field))
                {
                    let mut full = path.to_vec();
                    full.push(Step::Key(p.field));
                    c.problem(&full, p.message.clone());
                }
            }
            out.endpoints.insert(endpoint.clone(), cfg);
        }
    }
    out
}

/// Why `key` is not an endpoint as actions name them (`scheme://host:port`),
/// if it is not: an override under another key would never apply.
fn endpoint_key_problem(key: &str) -> Option<String> {
    let action = ActionConfig::Webhook(breakwater::traits::WebhookAction {
        url: key.to_string(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    });
    if let Err(e) = action.validate() {
        return Some(format!(
            "not an endpoint (scheme://host:port): {}",
            e.message
        ));
    }
    let canonical = action.endpoint();
    (canonical != key).then(|| {
        format!(
            "an endpoint is written scheme://host:port, as actions' URLs are keyed: \
             {canonical:?}; this key would never match one"
        )
    })
}
