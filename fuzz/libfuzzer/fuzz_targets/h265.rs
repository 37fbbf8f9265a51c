//! libFuzzer entry of `ponte_fuzz::targets::h265`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::h265::run(data);
});
