//! The executor the service delivers with.

use std::sync::Arc;
use std::time::Duration;

use breakwater::traits::ActionExecutor;
use breakwater::webhook::{Executors, WebhookExecutor};

/// The executor `serve` and `demo` deliver with: webhooks (signed the
/// Standard Webhooks way when the action has a `signing_secret`) and Slack
/// messages through one pooled client with a 5 s connect and a 30 s total
/// timeout, honouring a receiver's `Retry-After` up to the engine's own
/// ceiling ([`MAX_RETRY_AFTER`](crate::engine::schedule::MAX_RETRY_AFTER),
/// an hour); log actions through `tracing`.
///
/// # Errors
///
/// A message when the HTTP client cannot be built.
pub fn default_executor() -> Result<Arc<dyn ActionExecutor>, String> {
    let webhook = WebhookExecutor::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .max_response_bytes(64 * 1024)
        .max_retry_after(crate::engine::schedule::MAX_RETRY_AFTER)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Executors::new(webhook)))
}
