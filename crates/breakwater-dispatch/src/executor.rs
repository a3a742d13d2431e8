//! The executor the service delivers with.

use std::sync::Arc;

use breakwater::traits::ActionExecutor;

/// The executor `serve` and `demo` deliver with.
///
/// # Errors
///
/// A message when the HTTP client cannot be built.
pub fn default_executor() -> Result<Arc<dyn ActionExecutor>, String> {
    Ok(Arc::new(fallback::HttpExecutor::new()?))
}

mod fallback {
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use breakwater::traits::{ActionConfig, ActionExecutor, ActionResult, EntityEvent, Error};

    /// Plain webhook delivery (used until the library's executors land).
    #[derive(Debug, Clone)]
    pub(super) struct HttpExecutor {
        client: reqwest::Client,
    }

    impl HttpExecutor {
        pub(super) fn new() -> Result<Self, String> {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Self { client })
        }
    }

    #[async_trait]
    impl ActionExecutor for HttpExecutor {
        async fn execute(
            &self,
            event: &EntityEvent,
            action: &ActionConfig,
        ) -> Result<ActionResult, Error> {
            let started = Instant::now();
            let ActionConfig::Webhook(hook) = action else {
                tracing::info!(event = %event.id, action = action.action_type(), "action");
                return Ok(ActionResult {
                    action_type: action.action_type().into(),
                    success: true,
                    message: "logged".into(),
                    duration_ms: 0,
                    status_code: None,
                });
            };
            let response = self
                .client
                .post(&hook.url)
                .json(event)
                .send()
                .await
                .map_err(|e| Error::transient(e.to_string()))?;
            let status = response.status().as_u16();
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if response.status().is_success() {
                Ok(ActionResult {
                    action_type: "webhook".into(),
                    success: true,
                    message: format!("HTTP {status}"),
                    duration_ms,
                    status_code: Some(status),
                })
            } else {
                Err(Error::from_status(status, format!("HTTP {status}"), None))
            }
        }
    }
}
