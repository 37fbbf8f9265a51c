//! H.265 Annex-B helpers: NAL types, keyframe (IRAP) detection and parameter
//! sets. NAL iteration is shared with H.264 ([`crate::h264::nal_units`]).

use crate::h264::{nal_units, prepend};
use bytes::Bytes;

/// H.265 NAL unit types ponte cares about.
pub mod nal {
    /// First intra random access point type (BLA_W_LP).
    pub const IRAP_FIRST: u8 = 16;
    /// Last IRAP type (reserved IRAP 23).
    pub const IRAP_LAST: u8 = 23;
    /// Video parameter set.
    pub const VPS: u8 = 32;
    /// Sequence parameter set.
    pub const SPS: u8 = 33;
    /// Picture parameter set.
    pub const PPS: u8 = 34;
    /// Access unit delimiter.
    pub const AUD: u8 = 35;
}

/// NAL unit type of an H.265 NAL (two-byte header, type in bits 1..7 of the first).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// True for a coded slice of an IRAP picture (IDR, CRA, BLA).
pub fn is_irap(nal_type: u8) -> bool {
    (nal::IRAP_FIRST..=nal::IRAP_LAST).contains(&nal_type)
}

/// True for a coded slice NAL (VCL, types 0..=31).
pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

/// True when the Annex-B access unit contains an IRAP slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| nal_type(n).is_some_and(is_irap))
}

/// The parameter sets found in an access unit (raw NALs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParameterSets<'a> {
    /// Video parameter set.
    pub vps: Option<&'a [u8]>,
    /// Sequence parameter set.
    pub sps: Option<&'a [u8]>,
    /// Picture parameter set.
    pub pps: Option<&'a [u8]>,
}

impl ParameterSets<'_> {
    /// True when all three are present.
    pub fn complete(&self) -> bool {
        self.vps.is_some() && self.sps.is_some() && self.pps.is_some()
    }
}

/// Returns the first VPS, SPS and PPS found in an access unit.
pub fn parameter_sets(access_unit: &[u8]) -> ParameterSets<'_> {
    let mut found = ParameterSets::default();
    for n in nal_units(access_unit) {
        match nal_type(n) {
            Some(nal::VPS) if found.vps.is_none() => found.vps = Some(n),
            Some(nal::SPS) if found.sps.is_none() => found.sps = Some(n),
            Some(nal::PPS) if found.pps.is_none() => found.pps = Some(n),
            _ => {}
        }
    }
    found
}

/// Prepends the VPS/SPS/PPS (raw NALs) an IRAP access unit lacks, so a
/// decoder joining at this keyframe can start; a set already in the unit is
/// not repeated. Returns the input unchanged (no copy) when none is missing.
pub fn with_parameter_sets(access_unit: &Bytes, sets: &[Bytes]) -> Bytes {
    let found = parameter_sets(access_unit);
    if found.complete() {
        return access_unit.clone();
    }
    let present = |t| match t {
        nal::VPS => found.vps.is_some(),
        nal::SPS => found.sps.is_some(),
        nal::PPS => found.pps.is_some(),
        _ => false,
    };
    prepend(access_unit, sets.iter().filter(|ps| !nal_type(ps).is_some_and(present)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::annex_b;
    use proptest::prelude::*;

    // NAL headers: type << 1, then layer/temporal id byte 0x01.
    const VPS: [u8; 3] = [0x40, 0x01, 0x0c];
    const SPS: [u8; 3] = [0x42, 0x01, 0x01];
    const PPS: [u8; 3] = [0x44, 0x01, 0xc1];
    const IDR: [u8; 3] = [0x26, 0x01, 0xaf]; // IDR_W_RADL (19)
    const TRAIL: [u8; 3] = [0x02, 0x01, 0xd0]; // TRAIL_R (1)

    #[test]
    fn types_and_keyframes() {
        assert_eq!(nal_type(&VPS), Some(nal::VPS));
        assert_eq!(nal_type(&SPS), Some(nal::SPS));
        assert_eq!(nal_type(&PPS), Some(nal::PPS));
        assert_eq!(nal_type(&IDR), Some(19));
        assert!(is_keyframe(&annex_b(&[&VPS, &SPS, &PPS, &IDR])));
        assert!(!is_keyframe(&annex_b(&[&TRAIL])));
        assert!(is_vcl(19) && is_vcl(1) && !is_vcl(nal::VPS));
        let au = annex_b(&[&VPS, &SPS, &PPS, &IDR]);
        let found = parameter_sets(&au);
        assert_eq!((found.vps, found.sps, found.pps), (Some(&VPS[..]), Some(&SPS[..]), Some(&PPS[..])));
        assert!(!parameter_sets(&annex_b(&[&SPS, &PPS, &IDR])).complete());
    }

    #[test]
    fn adds_missing_parameter_sets_once() {
        let sets = [Bytes::from_static(&VPS), Bytes::from_static(&SPS), Bytes::from_static(&PPS)];
        let bare = annex_b(&[&IDR]);
        let full = with_parameter_sets(&bare, &sets);
        assert_eq!(full, annex_b(&[&VPS, &SPS, &PPS, &IDR]));
        let again = with_parameter_sets(&full, &sets);
        assert_eq!(again.as_ptr(), full.as_ptr(), "no copy when already complete");
        // Only what is missing is added.
        let no_vps = annex_b(&[&SPS, &PPS, &IDR]);
        assert_eq!(with_parameter_sets(&no_vps, &sets), annex_b(&[&VPS, &SPS, &PPS, &IDR]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = is_keyframe(&data);
            let _ = parameter_sets(&data);
            let _ = with_parameter_sets(&Bytes::from(data), &[Bytes::from_static(&VPS)]);
        }
    }
}
