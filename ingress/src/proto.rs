//! The Rust code generated from `proto/orderpipeline/v1/*.proto` (package
//! `orderpipeline.v1`): messages, the `OrderService`, `InventoryAdminService` and
//! `ViewService` servers and clients, and the encoded file descriptor set that gRPC
//! reflection serves.
//!
//! The generated items carry the .proto comments as docs; lints that generated code
//! cannot satisfy are allowed here only.

#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("orderpipeline.v1");
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of the package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("orderpipeline_v1_descriptor");
