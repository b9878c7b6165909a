//! See `orderpipeline_fuzz::event_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orderpipeline_fuzz::event_decode(data));
