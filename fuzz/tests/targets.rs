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
    recall_record,
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
    assert_eq!(targets::ALL.len(), 11, "a new target needs a smoke test above");
    for t in targets::ALL {
        assert!(ponte_fuzz::corpus_dir(t.name).is_dir(), "fuzz/corpus/{}/ is missing", t.name);
    }
}

/// The libFuzzer side has an entry and a dictionary for every target, and
/// each dictionary says what `DICT` says (`PONTE_FUZZ_BLESS=1` rewrites them).
#[test]
fn libfuzzer_entries_and_dicts_match_the_targets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer");
    let bless = std::env::var_os("PONTE_FUZZ_BLESS").is_some();
    for t in targets::ALL {
        let entry = dir.join("fuzz_targets").join(format!("{}.rs", t.name));
        let code = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            code.contains(&format!("ponte_fuzz::targets::{}::run(data)", t.name)),
            "{} calls its target",
            entry.display()
        );
        let path = dir.join("dicts").join(format!("{}.dict", t.name));
        let want = ponte_fuzz::libfuzzer_dict(t.name, t.dict);
        if bless {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} is stale: PONTE_FUZZ_BLESS=1 cargo test -p ponte-fuzz --test targets libfuzzer",
            path.display()
        );
    }
}
