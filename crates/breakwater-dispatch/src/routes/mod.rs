//! The handlers, one module per area.

pub mod admin;
pub mod events;
mod numbers;
pub mod ops;
