#![no_main]
//! Fuzz target: see `sluice_fuzz::request_frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::request_frame(data);
});
