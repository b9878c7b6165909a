//! payment (not built yet).
