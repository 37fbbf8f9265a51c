//! One module per fuzz target: `run(data) -> u64` feeds the bytes to the
//! code under test and returns the outcome class (see [`crate::fuzz`]); a
//! broken invariant panics. `DICT` holds the tokens worth splicing in. The
//! stable runner (`fuzz/tests/`) and the libFuzzer targets
//! (`fuzz/libfuzzer/fuzz_targets/`) call the same functions.

pub mod agent_config;
pub mod h264;
pub mod h265;
pub mod recall_record;
pub mod relay_config;
pub mod relay_control;
pub mod rtsp_request;
pub mod whep_offer;
pub mod wire_control;
pub mod wire_gop_header;
pub mod wire_media;

/// A fuzz target: its name (the corpus directory's and the libFuzzer
/// target's), its dictionary and its function.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name, e.g. `wire_control`.
    pub name: &'static str,
    /// Tokens worth splicing in.
    pub dict: &'static [&'static [u8]],
    /// Runs one input, returns its outcome class.
    pub run: fn(&[u8]) -> u64,
}

macro_rules! all {
    ($($name:ident),* $(,)?) => {
        /// Every target.
        pub const ALL: &[Target] = &[$(Target { name: stringify!($name), dict: $name::DICT, run: $name::run }),*];
    };
}

all!(
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
