#![no_main]
//! Fuzz target: see `sluice_fuzz::cleaner`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::cleaner(data);
});
