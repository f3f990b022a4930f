#![no_main]
//! Fuzz target: see `sluice_fuzz::quorum_messages`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::quorum_messages(data);
});
