#![no_main]
//! Fuzz target: see `sluice_fuzz::record_batches`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::record_batches(data);
});
