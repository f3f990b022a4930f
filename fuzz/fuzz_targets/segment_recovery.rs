#![no_main]
//! Fuzz target: see `sluice_fuzz::segment_recovery`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::segment_recovery(data);
});
