//! libFuzzer entry of `ponte_fuzz::targets::whep_offer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::whep_offer::run(data);
});
