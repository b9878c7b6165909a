//! Integration tests of ingress against the real local cluster and registry (`make up`).
//!
//! Every test creates its own topics and registry subjects (eventbus testkit, unique
//! prefix), starts ingress on port 0 with those topics, and reads what was published
//! back from Kafka, decoded through the registry. Nothing Kafka or the registry does is
//! faked; the pipeline's ViewService is faked where a test needs it to answer (and is
//! simply absent where a test needs it down). One binary for all, to link once.

mod batch;
mod common;
mod create;
mod failures;
mod idempotency;
mod invalid;
mod views;
