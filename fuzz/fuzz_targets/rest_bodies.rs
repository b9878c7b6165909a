//! See `orderpipeline_fuzz::rest_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orderpipeline_fuzz::rest_body(data));
