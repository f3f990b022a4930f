#![no_main]
//! Fuzz target: see `sluice_fuzz::peer_answers`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::peer_answers(data);
});
