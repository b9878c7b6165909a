//! Inventory Service: the dataflow job (being built).
