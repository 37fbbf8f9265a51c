//! libFuzzer entry of `ponte_fuzz::targets::wire_gop_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::wire_gop_header::run(data);
});
