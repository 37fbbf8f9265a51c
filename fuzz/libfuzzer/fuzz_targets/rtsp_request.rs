//! libFuzzer entry of `ponte_fuzz::targets::rtsp_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::rtsp_request::run(data);
});
