//! Which actions a configuration's observers ask for on an event.

use std::sync::Arc;

use breakwater::traits::{EntityEvent, EventKind};

use crate::config::Config;
use crate::store::NewAction;

/// The actions a configuration's observers ask for, by entity type and
/// event kind, each made into a [`NewAction`] once: intake keeps one
/// `Routes` per configuration and finds an event's actions without
/// parsing a URL or writing JSON.
///
/// ```
/// use breakwater::traits::{EntityEvent, EventKind};
/// use breakwater_dispatch::config::Config;
/// use breakwater_dispatch::engine::Routes;
///
/// let config = Config::parse(r#"
/// [[observers]]
/// name = "orders"
/// entity_type = "Order"
/// event_type = "INSERT"
/// [[observers.actions]]
/// type = "webhook"
/// url = "http://127.0.0.1:9000/hooks/orders"
/// "#).unwrap();
/// let routes = Routes::new(&config);
/// let insert = EntityEvent::new(EventKind::Insert, "Order", uuid::Uuid::new_v4(), serde_json::json!({}));
/// let actions = routes.actions_for(&insert);
/// assert_eq!(actions.len(), 1);
/// assert_eq!(actions[0].endpoint(), "http://127.0.0.1:9000");
/// let delete = EntityEvent { event_type: EventKind::Delete, ..insert };
/// assert!(routes.actions_for(&delete).is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Routes {
    observers: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    entity_type: String,
    event_type: EventKind,
    actions: Vec<NewAction>,
}

impl Routes {
    /// The routes of `config`'s observers.
    pub fn new(config: &Config) -> Self {
        let observers = config
            .observers
            .iter()
            .map(|o| {
                let name: Arc<str> = o.name.as_str().into();
                Route {
                    entity_type: o.entity_type.clone(),
                    event_type: o.event_type,
                    actions: o
                        .actions
                        .iter()
                        .map(|a| NewAction::new(name.clone(), a.clone()))
                        .collect(),
                }
            })
            .collect();
        Self { observers }
    }

    /// The actions the observers ask for on `event`, in the order of the
    /// configuration.
    pub fn actions_for(&self, event: &EntityEvent) -> Vec<NewAction> {
        self.observers
            .iter()
            .filter(|o| o.entity_type == event.entity_type && o.event_type == event.event_type)
            .flat_map(|o| o.actions.iter().cloned())
            .collect()
    }
}

/// The actions `config`'s observers ask for on `event` (the routes are
/// made anew on every call: keep a [`Routes`] to ask more than once).
pub fn actions_for(config: &Config, event: &EntityEvent) -> Vec<NewAction> {
    Routes::new(config).actions_for(event)
}
