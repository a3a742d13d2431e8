//! Templates of actions (`body_template`, `message_template`, `subject`),
//! rendered with `minijinja` over the event.
//!
//! The event's fields are the template's variables: `{{ id }}`,
//! `{{ event_type }}`, `{{ entity_type }}`, `{{ entity_id }}`,
//! `{{ data.field }}`, `{{ changes.field.old }}`, `{{ user_id }}`,
//! `{{ timestamp }}`. A field the event does not have renders empty (also
//! deeper down: `{{ data.a.b.c }}`), so one event without an optional field
//! does not fail its action. A syntax error is found by
//! `ActionConfig::validate()`, naming the field. Rendering runs on a fuel
//! budget, so no template can spin for long.
//!
//! Values render as the event's JSON has them, without quotes around
//! strings: `{{ data.name }}` gives `Ada`, `{{ data.paid }}` gives `true`,
//! `{{ data.note }}` gives `null` when the field is null, and objects and
//! arrays give compact JSON (`{"a":1}`, `[1,2,3]`). Inside a JSON body, use
//! the `tojson` filter for a value that may be missing or hold quotes:
//! `{{ data.name | tojson }}` gives `"Ada"`, quoted and escaped (`null` when
//! the field is missing), and `{{ data | tojson }}` the whole object.

use minijinja::value::{Serde, Value, ValueKind};
use minijinja::{Environment, Error as TemplateError, ErrorKind, Output, State, UndefinedBehavior};

use super::error::{ActionConfigError, Error};
use super::event::EntityEvent;

/// Instructions one rendering may run: a loop over an array of 100 000
/// items fits, a runaway loop stops within a fraction of a second.
const FUEL: u64 = 1_000_000;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A missing field renders empty, however deep (the documented choice).
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_formatter(as_json);
    env
}

/// Writes a value as the event's JSON has it: booleans, null, objects and
/// arrays as JSON (minijinja's own formatting would write Python's `True`,
/// `None` and `{'a': 1}`); strings, numbers and what is missing as usual.
fn as_json(out: &mut Output, state: &mut State, value: &Value) -> Result<(), TemplateError> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => {
            let json = serde_json::to_string(value).map_err(|e| {
                TemplateError::new(ErrorKind::BadSerialization, "cannot write a value as JSON")
                    .with_source(e)
            })?;
            out.write_str(&json)?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Checks that `source` compiles.
pub(crate) fn check(field: &'static str, source: &str) -> Result<(), ActionConfigError> {
    Compiled::new(field, source).map(drop)
}

/// Renders `source` over `event`.
///
/// # Errors
///
/// [`Error::InvalidAction`] naming `field` when the template does not compile
/// or fails while rendering (a filter given a wrong value, fuel spent).
// Used by the executors of the `webhook` feature (and the tests below).
#[cfg_attr(not(feature = "webhook"), allow(dead_code))]
pub(crate) fn render(
    field: &'static str,
    source: &str,
    event: &EntityEvent,
) -> Result<String, Error> {
    Compiled::new(field, source)?.render(event)
}

/// A template compiled once, for actions whose template is rendered for
/// many events.
pub(crate) struct Compiled {
    field: &'static str,
    env: Environment<'static>,
}

impl Compiled {
    /// The name errors give the template (as minijinja names a template
    /// made from a string).
    const NAME: &'static str = "<string>";

    /// Compiles `source`; the error names `field`.
    pub(crate) fn new(field: &'static str, source: &str) -> Result<Self, ActionConfigError> {
        let mut env = environment();
        env.add_template_owned(Self::NAME, source.to_owned())
            .map_err(|e| ActionConfigError::new(field, format!("is not a valid template: {e}")))?;
        Ok(Self { field, env })
    }

    /// Renders the template over `event`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAction`] naming the field when rendering fails.
    #[cfg_attr(not(feature = "webhook"), allow(dead_code))]
    pub(crate) fn render(&self, event: &EntityEvent) -> Result<String, Error> {
        let rendered = self
            .env
            .get_template(Self::NAME)
            .and_then(|template| template.render(Value::from(Serde(event))));
        rendered.map_err(|e| {
            ActionConfigError::new(self.field, format!("failed to render: {e}")).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::EventKind;

    fn event() -> EntityEvent {
        let mut e = EntityEvent::new(
            EventKind::Insert,
            "order",
            uuid::Uuid::nil(),
            serde_json::json!({"total": 42, "customer": {"name": "Ada"}}),
        );
        e.id = uuid::Uuid::nil();
        e
    }

    #[test]
    fn fields_of_the_event_render() {
        let out = render(
            "t",
            "{{ event_type }} {{ entity_type }} {{ data.total }} {{ data.customer.name }} {{ entity_id }}",
            &event(),
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT order 42 Ada 00000000-0000-0000-0000-000000000000"
        );
        let json = render("t", "{{ data | tojson }}", &event()).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event().data);
    }

    #[test]
    fn values_render_as_json() {
        let mut e = event();
        e.data = serde_json::json!({
            "paid": true, "note": null, "obj": {"a": 1}, "list": [1, 2, 3],
            "price": 9.5, "name": "Ada \"the\" first"
        });
        let out = render(
            "t",
            "{{ data.paid }} {{ data.note }} {{ data.obj }} {{ data.list }} {{ data.price }} {{ data.name }}",
            &e,
        )
        .unwrap();
        assert_eq!(out, r#"true null {"a":1} [1,2,3] 9.5 Ada "the" first"#);
        let body = render(
            "t",
            r#"{"name": {{ data.name | tojson }}, "paid": {{ data.paid }}, "missing": {{ data.nope | tojson }}}"#,
            &e,
        );
        // Quoted and escaped; a missing field is `null`: valid JSON either way.
        let back: serde_json::Value = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(back["name"], "Ada \"the\" first");
        assert_eq!(back["paid"], true);
        assert_eq!(back["missing"], serde_json::Value::Null);
    }

    #[test]
    fn loops_over_large_arrays_fit_the_fuel() {
        let mut e = event();
        e.data = serde_json::json!({ "items": (0..20_000).collect::<Vec<_>>() });
        let out = render("t", "{% for i in data.items %}{{ i }},{% endfor %}", &e).unwrap();
        assert!(out.starts_with("0,1,2,") && out.ends_with("19999,"));
    }

    #[test]
    fn missing_fields_render_empty() {
        let out = render(
            "t",
            "[{{ data.nope }}][{{ data.a.b.c }}][{{ user_id }}][{{ nothing.at.all }}]",
            &event(),
        )
        .unwrap();
        assert_eq!(out, "[][][][]");
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let e = check("webhook.body_template", "{{ data.total ").unwrap_err();
        assert_eq!(e.field, "webhook.body_template");
        assert!(e.message.contains("not a valid template"), "{e}");
        let e = render("log.message_template", "{% for %}", &event()).unwrap_err();
        assert!(matches!(&e, Error::InvalidAction(c) if c.field == "log.message_template"));
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let e = render(
            "t",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &event(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("failed to render"), "{e}");
        assert!(e.is_permanent());
    }
}
