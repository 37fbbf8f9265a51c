//! H.265 helpers on camera bytes: NAL types, parameter sets, keyframes.

use crate::class_of;
use bytes::Bytes;
use ponte_proto::{h264, h265};

/// The same tokens as the H.264 target (start codes serve both codecs).
pub const DICT: &[&[u8]] = super::h264::DICT;

/// Runs every H.265 helper on `data` as an access unit.
pub fn run(data: &[u8]) -> u64 {
    let nals: Vec<&[u8]> = h264::nal_units(data).collect();
    let mut types = 0u64;
    for nal in &nals {
        if let Some(t) = h265::nal_type(nal) {
            let _ = (h265::is_irap(t), h265::is_vcl(t));
            types |= 1 << (t % 64);
        }
    }
    let complete = h265::parameter_sets(data).complete();
    let key = h265::is_keyframe(data);
    let au = Bytes::copy_from_slice(data);
    let with = h265::with_parameter_sets(&au, &[Bytes::from_static(b"\x40\x01\x0c")]);
    assert!(with.len() >= au.len());
    class_of((types.count_ones(), complete, key))
}
