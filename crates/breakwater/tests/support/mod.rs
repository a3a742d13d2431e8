//! Helpers shared by the integration tests: include with `mod support;`.
//! Not every test file uses every helper.
#![allow(dead_code)]

pub(crate) mod logs;

use std::time::Duration;

/// A test error that says which call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Boom(pub(crate) u32);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// `n` milliseconds.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Compiles only if `T` is `Send + Sync`.
pub(crate) fn send_sync<T: Send + Sync>() {}

/// Compiles only if `T` is `Send`.
pub(crate) fn send<T: Send>() {}

/// Compiles only if the value's type is `Send + Sync`.
pub(crate) fn send_sync_val<T: Send + Sync>(_: &T) {}

/// Compiles only if the value's type is `Send` (a future, say).
pub(crate) fn send_val<T: Send>(_: &T) {}
