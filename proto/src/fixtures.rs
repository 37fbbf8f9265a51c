//! Annex-B test streams shared by this crate's tests and the nodes' (one
//! copy instead of one per test module): start-code framing and the NAL
//! units the tests build access units from. Compiled for this crate's
//! tests, and for other crates' tests through the `test-fixtures` feature
//! their dev-dependency turns on; never in a release build.

use bytes::Bytes;

/// An H.264 PPS.
pub const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
/// An H.265 VPS (NAL header: type << 1, then layer/temporal id byte 0x01).
pub const H265_VPS: &[u8] = &[0x40, 0x01, 0x0c];
/// An H.265 SPS.
pub const H265_SPS: &[u8] = &[0x42, 0x01, 0x01];
/// An H.265 PPS.
pub const H265_PPS: &[u8] = &[0x44, 0x01, 0xc1];
/// An H.265 IDR slice (IDR_W_RADL).
pub const H265_IDR: &[u8] = &[0x26, 0x01, 0xaf];

/// The NAL units, each after a 4-byte start code.
pub fn annex_b(nals: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}

/// An H.264 IDR slice NAL with `len` payload bytes (none of them zero, so
/// no start code or emulation prevention inside).
pub fn idr(len: usize) -> Vec<u8> {
    let mut nal = vec![0x65];
    nal.extend((0..len).map(|i| (i % 200) as u8 + 5));
    nal
}

/// An H.264 non-IDR slice NAL with `len` payload bytes, as [`idr`].
pub fn slice(len: usize) -> Vec<u8> {
    let mut nal = vec![0x41];
    nal.extend((0..len).map(|i| (i % 200) as u8 + 5));
    nal
}
