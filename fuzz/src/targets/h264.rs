//! H.264 helpers on camera bytes: NAL splitting, parameter sets, SEI, RBSP
//! escaping (escape ∘ unescape is the identity on escaped data).

use crate::class_of;
use bytes::{Bytes, BytesMut};
use ponte_proto::h264;

/// Start codes, emulation prevention and NAL headers of both codecs.
pub const DICT: &[&[u8]] = &[
    b"\x00\x00\x00\x01",
    b"\x00\x00\x01",
    b"\x00\x00\x03",
    b"\x67\x42\xe0\x1f",
    b"\x68\xce\x3c\x80",
    b"\x65\x88",
    b"\x06\x05\x10",
    b"\x40\x01",
    b"\x42\x01",
    b"\x44\x01",
    b"\x26\x01",
];

/// Runs every H.264 helper on `data` as an access unit.
pub fn run(data: &[u8]) -> u64 {
    let nals: Vec<&[u8]> = h264::nal_units(data).collect();
    for nal in &nals {
        let _ = h264::nal_type(nal);
        let _ = h264::parse_capture_time_sei(nal);
        let rbsp = h264::unescape_rbsp(nal);
        let mut escaped = BytesMut::new();
        h264::escape_rbsp(&rbsp, &mut escaped);
        assert_eq!(h264::unescape_rbsp(&escaped), rbsp, "escape then unescape is the identity");
    }
    let (sps, pps) = h264::parameter_sets(data);
    let key = h264::is_keyframe(data);
    let _ = h264::find_capture_time(data);
    let au = Bytes::copy_from_slice(data);
    let sets: Vec<Bytes> = sps.into_iter().chain(pps).map(Bytes::copy_from_slice).collect();
    let with = h264::with_parameter_sets(&au, &sets);
    assert!(with.len() >= au.len());
    class_of((nals.len().min(6), sps.is_some(), pps.is_some(), key))
}
