//! See `orderpipeline_fuzz::grpc_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orderpipeline_fuzz::grpc_message(data));
