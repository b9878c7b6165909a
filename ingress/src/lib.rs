//! ingress (not built yet).
