#![no_main]
//! Fuzz target: see `sluice_fuzz::metadata_records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::metadata_records(data);
});
