//! libFuzzer entry of `ponte_fuzz::targets::agent_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ponte_fuzz::targets::agent_config::run(data);
});
