//! Compiles `orderpipeline/v1/*.proto` into Rust with tonic-prost-build (messages, servers
//! and clients of every service), plus the encoded file descriptor set that gRPC reflection
//! serves. This is the only place the workspace generates protobuf code.
//!
//! protoc comes from the `protoc-bin-vendored` crate, never from the system, so a build
//! needs no installed tool and every machine generates the same code. It is handed to
//! prost-build through `Config::protoc_executable` (what `PROTOC` would do: setting an
//! environment variable is `unsafe` in edition 2024, and the workspace forbids unsafe code).
//!
//! Every service and client is generated with [`StrictCodec`](src/codec.rs) instead of
//! tonic's `ProstCodec`, so an undecodable request is INVALID_ARGUMENT, not INTERNAL.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = [
        root.join("orderpipeline/v1/orders.proto"),
        root.join("orderpipeline/v1/views.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("orderpipeline_v1_descriptor.bin"))
        .codec_path("crate::codec::StrictCodec")
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
