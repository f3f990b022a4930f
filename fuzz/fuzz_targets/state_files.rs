#![no_main]
//! Fuzz target: see `sluice_fuzz::state_files`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::state_files(data);
});
