//! H.264 (and shared H.265) Annex-B helpers: NAL iteration, keyframe detection,
//! emulation prevention and the capture-time SEI that carries latency end to end.

use bytes::{BufMut, Bytes, BytesMut};

/// H.264 NAL unit types ponte cares about.
pub mod nal {
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// Filler data: padding a decoder skips.
    pub const FILLER: u8 = 12;
}

/// UUID of ponte's capture-time SEI (user data unregistered).
pub const CAPTURE_TIME_UUID: [u8; 16] = *b"ponte-capture-t1";

/// Iterates the NAL units of an Annex-B buffer, without their start codes.
/// Bytes before the first start code are ignored.
pub fn nal_units(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = split_at_start_code(buf).map(|(_, after)| after);
    std::iter::from_fn(move || {
        let unit = rest?;
        match split_at_start_code(unit) {
            Some((mut nal, after)) => {
                rest = Some(after);
                // A trailing zero belongs to a 4-byte start code, not the NAL.
                while let [head @ .., 0] = nal {
                    nal = head;
                }
                Some(nal)
            }
            None => {
                rest = None;
                Some(unit)
            }
        }
    })
    .filter(|n| !n.is_empty())
}

/// Splits `buf` around its first `00 00 01`: the bytes before the start code
/// and the bytes after it.
fn split_at_start_code(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    // Testing the third byte first keeps the scan as fast as indexing
    // (measured): above 1, no start code begins at i, i + 1 or i + 2.
    while let Some(&c) = buf.get(i + 2) {
        if c > 1 {
            i += 3;
        } else if c == 1 && buf.get(i..i + 2) == Some(&[0, 0]) {
            return Some((buf.get(..i)?, buf.get(i + 3..)?));
        } else {
            i += 1;
        }
    }
    None
}

/// NAL unit type of an H.264 NAL (first header byte).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// True when the Annex-B access unit contains an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| nal_type(n) == Some(nal::IDR))
}

/// Returns the SPS and PPS found in an access unit, in that order.
pub fn parameter_sets(access_unit: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut sps = None;
    let mut pps = None;
    for n in nal_units(access_unit) {
        match nal_type(n) {
            Some(nal::SPS) if sps.is_none() => sps = Some(n),
            Some(nal::PPS) if pps.is_none() => pps = Some(n),
            _ => {}
        }
    }
    (sps, pps)
}

/// Inserts emulation-prevention bytes so `rbsp` can travel inside a NAL unit.
pub fn escape_rbsp(rbsp: &[u8], out: &mut BytesMut) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.put_u8(3);
            zeros = 0;
        }
        out.put_u8(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Removes emulation-prevention bytes from a NAL unit's payload.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Builds the capture-time SEI NAL (no start code): user data unregistered
/// with ponte's UUID and the capture time in microseconds since the Unix epoch.
pub fn capture_time_sei(unix_micros: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(40);
    put_capture_time_sei(unix_micros, &mut out);
    out.freeze()
}

/// Appends the capture-time SEI NAL (no start code) to `out`: the same bytes
/// as [`capture_time_sei`], without an allocation of its own (replayed
/// frames are built in one reused buffer).
pub fn put_capture_time_sei(unix_micros: u64, out: &mut BytesMut) {
    let mut rbsp = [0u8; 2 + 16 + 8 + 1];
    rbsp[0] = 5; // payload type: user data unregistered
    rbsp[1] = 24; // payload size
    rbsp[2..18].copy_from_slice(&CAPTURE_TIME_UUID);
    rbsp[18..26].copy_from_slice(&unix_micros.to_be_bytes());
    rbsp[26] = 0x80; // rbsp trailing bits
    out.put_u8(nal::SEI); // forbidden_zero=0, nal_ref_idc=0, type 6
    escape_rbsp(&rbsp, out);
}

/// Parses ponte's capture time from one SEI NAL unit (no start code).
pub fn parse_capture_time_sei(nal: &[u8]) -> Option<u64> {
    if nal_type(nal) != Some(nal::SEI) {
        return None;
    }
    let rbsp = unescape_rbsp(nal.get(1..)?);
    // Only the first SEI message is inspected; ponte writes exactly one.
    let (&ptype, rest) = rbsp.split_first()?;
    let (&size, rest) = rest.split_first()?;
    let (uuid, rest) = rest.split_first_chunk::<16>()?;
    let (micros, _) = rest.split_first_chunk::<8>()?;
    if ptype != 5 || size != 24 || *uuid != CAPTURE_TIME_UUID {
        return None;
    }
    Some(u64::from_be_bytes(*micros))
}

/// Finds ponte's capture time in an Annex-B access unit.
pub fn find_capture_time(access_unit: &[u8]) -> Option<u64> {
    nal_units(access_unit).find_map(parse_capture_time_sei)
}

/// Prepends the SPS/PPS (raw NALs) an IDR access unit lacks, so a decoder
/// joining at this keyframe can start; a set already in the unit is not
/// repeated. Returns the input unchanged (no copy) when none is missing.
pub fn with_parameter_sets(access_unit: &Bytes, sets: &[Bytes]) -> Bytes {
    let (sps, pps) = parameter_sets(access_unit);
    if sps.is_some() && pps.is_some() {
        return access_unit.clone();
    }
    let present = |t| (t == nal::SPS && sps.is_some()) || (t == nal::PPS && pps.is_some());
    prepend(access_unit, sets.iter().filter(|ps| !nal_type(ps).is_some_and(present)))
}

/// `access_unit` with `sets` in front, each behind a start code; the input
/// itself (no copy) when `sets` is empty.
pub(crate) fn prepend<'a>(access_unit: &Bytes, sets: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let extra: usize = sets.clone().map(|ps| ps.len() + 4).sum();
    if extra == 0 {
        return access_unit.clone();
    }
    let mut out = BytesMut::with_capacity(access_unit.len() + extra);
    for ps in sets {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(ps);
    }
    out.put_slice(access_unit);
    out.freeze()
}

/// Microseconds since the Unix epoch, for capture times and latency.
pub fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let buf = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9];
        let nals: Vec<&[u8]> = nal_units(&buf).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9, 9][..]]);
        assert!(is_keyframe(&buf));
        assert_eq!(parameter_sets(&buf), (Some(&[0x67, 1, 2][..]), Some(&[0x68, 3][..])));
    }

    #[test]
    fn capture_time_round_trips_through_an_access_unit() {
        // 0x0000_0300_0000_0001 forces emulation prevention.
        for t in [0u64, 1, 0x0000_0300_0000_0001, u64::MAX, 1_764_000_000_123_456] {
            let sei = capture_time_sei(t);
            assert_eq!(parse_capture_time_sei(&sei), Some(t));
            let mut au = vec![0, 0, 0, 1];
            au.extend_from_slice(&sei);
            au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
            assert_eq!(find_capture_time(&au), Some(t));
            assert!(nal_units(&sei).count() <= 1);
        }
    }

    #[test]
    fn adds_missing_parameter_sets() {
        let au = Bytes::from_static(&[0, 0, 0, 1, 0x65, 1]);
        let ps = [Bytes::from_static(&[0x67, 7]), Bytes::from_static(&[0x68, 8])];
        let out = with_parameter_sets(&au, &ps);
        assert_eq!(&out[..], &[0, 0, 0, 1, 0x67, 7, 0, 0, 0, 1, 0x68, 8, 0, 0, 0, 1, 0x65, 1]);
        let again = with_parameter_sets(&out, &ps);
        assert_eq!(again.as_ptr(), out.as_ptr(), "no copy when both are there");
        // Only what is missing is added.
        let only_sps = Bytes::from_static(&[0, 0, 0, 1, 0x67, 7, 0, 0, 0, 1, 0x65, 1]);
        let out = with_parameter_sets(&only_sps, &ps);
        assert_eq!(&out[..], &[0, 0, 0, 1, 0x68, 8, 0, 0, 0, 1, 0x67, 7, 0, 0, 0, 1, 0x65, 1]);
    }

    proptest! {
        #[test]
        fn escape_then_unescape_is_identity(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = BytesMut::new();
            escape_rbsp(&data, &mut out);
            // An escaped payload never contains a start code.
            prop_assert!(!out.windows(3).any(|w| w == [0, 0, 1]));
            prop_assert_eq!(unescape_rbsp(&out), data);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = nal_units(&data).count();
            let _ = find_capture_time(&data);
            let _ = is_keyframe(&data);
            let _ = parse_capture_time_sei(&data);
        }
    }
}
