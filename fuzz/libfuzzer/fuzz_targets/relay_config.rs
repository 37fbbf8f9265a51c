//! libFuzzer entry of `ponte_fuzz::targets::relay_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::relay_config::run(data);
});
