//! Event schemas of the order pipeline (being built).
