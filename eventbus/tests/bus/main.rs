//! Integration tests of the eventbus against the real local cluster and registry
//! (`make up`; `KAFKA_BOOTSTRAP` and `REGISTRY_URL` override the addresses). Each test
//! makes its own topics, groups and subjects under a unique prefix and deletes them.
//!
//! One test binary (linking librdkafka is slow on 2 cores), one module per concern.

mod common;
mod consumer;
mod lag;
mod producer;
mod redrive;
mod registry;
