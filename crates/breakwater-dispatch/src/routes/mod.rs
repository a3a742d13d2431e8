//! The handlers, one module per area.

pub mod admin;
pub mod events;
pub mod ops;
