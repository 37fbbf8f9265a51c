//! libFuzzer entry of `ponte_fuzz::targets::recall_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::recall_record::run(data);
});
