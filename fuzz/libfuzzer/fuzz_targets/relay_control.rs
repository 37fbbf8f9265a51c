//! libFuzzer entry of `ponte_fuzz::targets::relay_control`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::relay_control::run(data);
});
