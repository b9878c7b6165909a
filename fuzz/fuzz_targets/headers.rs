//! See `orderpipeline_fuzz::headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orderpipeline_fuzz::headers(data));
