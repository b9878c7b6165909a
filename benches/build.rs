//! Generates gRPC clients for the order and view APIs from `proto/` (clients only; the
//! servers live in ingress and pipeline). protoc comes from `protoc-bin-vendored`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let protos = [
        proto_root.join("orderpipeline/v1/views.proto"),
        proto_root.join("orderpipeline/v1/orders.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &protos, &[proto_root])?;
    Ok(())
}
