//! The `[[observers]]` entries and their actions.

use breakwater::traits::{ActionConfig, EventKind};
use serde::Deserialize;

use super::problem::{Checker, Step};

/// One `[[observers]]` entry: events of `entity_type` and `event_type` run `actions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observer {
    /// A unique name.
    pub name: String,
    /// The entity type it watches (exact match).
    pub entity_type: String,
    /// The event kind it watches.
    pub event_type: EventKind,
    /// What it does.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

pub(super) fn observers(c: &mut Checker<'_>, v: &toml::Value) -> Vec<Observer> {
    let base = [Step::Key("observers")];
    let Some(list) = v.as_array() else {
        c.problem(&base, "expected an array of tables ([[observers]])");
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in list.iter().enumerate() {
        let path = [Step::Key("observers"), Step::Index(i)];
        let Some(table) = entry.as_table() else {
            c.problem(&path, "expected a table");
            continue;
        };
        let mut head = table.clone();
        let actions = head.remove("actions");
        head.insert("actions".into(), toml::Value::Array(Vec::new()));
        let observer = c.parse::<Observer>(&path, toml::Value::Table(head));
        let mut parsed = Vec::new();
        match actions {
            None => {}
            Some(toml::Value::Array(actions)) => {
                for (j, action) in actions.into_iter().enumerate() {
                    let apath = [
                        Step::Key("observers"),
                        Step::Index(i),
                        Step::Key("actions"),
                        Step::Index(j),
                    ];
                    if let Some(a) = c.parse::<ActionConfig>(&apath, action) {
                        if matches!(a, ActionConfig::Email(_)) {
                            // Refused here rather than dead-lettered at the
                            // first event.
                            let mut full = apath.to_vec();
                            full.push(Step::Key("type"));
                            c.problem(
                                &full,
                                "the service sends webhook, slack and log actions; it has no \
                                 SMTP settings for email (send email from a webhook receiver, \
                                 or with the library's EmailExecutor)",
                            );
                        } else {
                            for e in a.problems() {
                                let field = e.field.split_once('.').map_or(e.field, |(_, f)| f);
                                let mut full = apath.to_vec();
                                full.push(Step::Key(field));
                                c.problem(&full, e.message.clone());
                            }
                        }
                        parsed.push(a);
                    }
                }
            }
            Some(_) => c.problem(
                &[Step::Key("observers"), Step::Index(i), Step::Key("actions")],
                "expected an array of tables ([[observers.actions]])",
            ),
        }
        if let Some(mut o) = observer {
            if !names.insert(o.name.clone()) {
                c.problem(
                    &[Step::Key("observers"), Step::Index(i), Step::Key("name")],
                    format!("duplicate observer name {:?}", o.name),
                );
            }
            o.actions = parsed;
            out.push(o);
        }
    }
    out
}
