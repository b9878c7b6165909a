//! benches (not built yet).
