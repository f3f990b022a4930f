#![no_main]
//! Fuzz target: see `sluice_fuzz::record_walk`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::record_walk(data);
});
