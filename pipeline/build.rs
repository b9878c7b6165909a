//! Compiles the view API, `proto/orderpipeline/v1/views.proto` (owned by the ingress
//! engineer; this crate only implements its server side), into Rust with
//! tonic-prost-build, plus a file descriptor set for gRPC reflection.
//!
//! protoc comes from `protoc-bin-vendored`, never from the system, so a build needs no
//! installed tool. It is handed to prost-build through `Config::protoc_executable`,
//! which is what setting `PROTOC` would do: `std::env::set_var` is `unsafe` in edition
//! 2024 and the workspace forbids unsafe code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../proto");
    let views = proto_root.join("orderpipeline/v1/views.proto");
    println!("cargo:rerun-if-changed={}", views.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("views_descriptor.bin"))
        .compile_with_config(config, &[views], &[proto_root])?;
    Ok(())
}
