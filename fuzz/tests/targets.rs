//! The smoke run of every fuzz target: each runs for about a second on the
//! stable runner ([`ponte_fuzz::fuzz`]) in the test suite, so a target
//! that rots or a regression kept in `fuzz/corpus/<target>/` fails here.
//! Long runs: `scripts/fuzz`.

use ponte_fuzz::targets;

macro_rules! smoke {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                ponte_fuzz::fuzz(stringify!($target), targets::$target::DICT, targets::$target::run);
            }
        )*
    };
}

smoke!(
    agent_config,
    h264,
    h265,
    relay_config,
    relay_control,
    rtsp_request,
    whep_offer,
    wire_control,
    wire_gop_header,
    wire_media,
);

/// Every target has a test above and a corpus directory (the libFuzzer
/// targets and `scripts/fuzz` find them by these names).
#[test]
fn every_target_is_smoked_and_has_a_corpus() {
    assert_eq!(targets::ALL.len(), 10, "a new target needs a smoke test above");
    for t in targets::ALL {
        assert!(ponte_fuzz::corpus_dir(t.name).is_dir(), "fuzz/corpus/{}/ is missing", t.name);
    }
}
