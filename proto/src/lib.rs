//! The gRPC API of the order pipeline, package `orderpipeline.v1`
//! (`proto/orderpipeline/v1/*.proto`): the messages, the `OrderService`,
//! `InventoryAdminService` and `ViewService` servers and clients, the [`codec`] they all use,
//! and the encoded file descriptor set that gRPC reflection serves.
//!
//! One crate generates the code once for every user: ingress serves `OrderService` and
//! `InventoryAdminService` and calls `ViewService`, the pipeline serves `ViewService`, the
//! benchmarks and demo call both. The generated items carry the .proto comments as docs;
//! lints that generated code cannot satisfy are allowed on the generated module only.

pub mod codec;

#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("orderpipeline.v1");
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of the package, for `tonic-reflection`. It describes
/// every service of the package: a server advertises only its own with
/// `tonic_reflection::server::Builder::with_service_name` and the generated
/// `SERVICE_NAME` of its server module.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("orderpipeline_v1_descriptor");
