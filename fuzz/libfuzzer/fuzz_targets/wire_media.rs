//! libFuzzer entry of `ponte_fuzz::targets::wire_media`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::wire_media::run(data);
});
