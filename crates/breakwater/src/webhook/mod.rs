//! Real action executors.
