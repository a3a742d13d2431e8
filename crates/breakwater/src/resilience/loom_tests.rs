//! loom models of the state word (run with RUSTFLAGS="--cfg breakwater_loom").
