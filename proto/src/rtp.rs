//! RTP for RTSP egress, sans-IO: packetising H.264 (RFC 6184, packetization
//! mode 1) and H.265 (RFC 7798) access units, stamping them on a 90 kHz
//! timeline that never runs backwards, and RTCP sender reports (RFC 3550).
//!
//! Packets hold the NAL bytes as slices of the frame's `Bytes`; the I/O shell
//! writes header and body where they must go (UDP datagram or interleaved
//! TCP frame).

use crate::h264::nal_units;
use crate::media::Codec;
use bytes::{BufMut, Bytes, BytesMut};

/// RTP packet size (header included) that fits every sane path MTU, also
/// inside an IPsec or VPN tunnel.
pub const DEFAULT_MTU: usize = 1200;
/// Fixed RTP header length (no CSRC, no extension).
pub const HEADER_LEN: usize = 12;
/// Smallest MTU a packetiser accepts: room for a header and some payload.
pub const MIN_MTU: usize = HEADER_LEN + 16;
/// H.264 fragmentation unit type A (RFC 6184 §5.8).
const H264_FU_A: u8 = 28;
/// H.265 fragmentation unit type (RFC 7798 §4.4.3).
const H265_FU: u8 = 49;

/// One RTP packet: header fields and payload. The payload is an optional
/// fragmentation header (`prefix`) followed by a slice of a NAL unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Payload type.
    pub payload_type: u8,
    /// Set on the last packet of an access unit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// 90 kHz timestamp of the access unit.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    prefix: [u8; 3],
    prefix_len: u8,
    /// NAL bytes carried after the fragmentation header; shared with the frame.
    pub body: Bytes,
}

impl RtpPacket {
    /// Bytes of the whole packet, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Never true: a packet always has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes of the payload (fragmentation header and NAL bytes).
    pub fn payload_len(&self) -> usize {
        usize::from(self.prefix_len) + self.body.len()
    }

    /// Fragmentation header bytes in front of the body (empty for a single NAL packet).
    pub fn prefix(&self) -> &[u8] {
        // prefix_len is 0, 2 or 3, set by the packetiser.
        self.prefix.get(..usize::from(self.prefix_len)).unwrap_or_default()
    }

    /// Appends the packet in wire format to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        out.put_u8(0x80); // version 2, no padding, no extension, no CSRC
        out.put_u8((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        out.put_slice(self.prefix());
        out.put_slice(&self.body);
    }

    /// The packet in wire format.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        self.write(&mut out);
        out.freeze()
    }
}

/// Splits access units into RTP packets for one stream (one SSRC).
#[derive(Debug, Clone)]
pub struct Packetizer {
    codec: Codec,
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    max_payload: usize,
}

impl Packetizer {
    /// A packetiser for `codec`; `mtu` is the largest packet, header included
    /// (raised to [`MIN_MTU`] if smaller).
    pub fn new(codec: Codec, payload_type: u8, ssrc: u32, first_sequence: u16, mtu: usize) -> Self {
        Self {
            codec,
            payload_type,
            ssrc,
            sequence: first_sequence,
            max_payload: mtu.max(MIN_MTU) - HEADER_LEN,
        }
    }

    /// Sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets of one Annex-B access unit, all stamped `timestamp`, the last
    /// one marked. NAL units that fit travel whole; larger ones are split
    /// into fragmentation units. An access unit without NAL units yields
    /// nothing.
    pub fn packetize(&mut self, access_unit: &Bytes, timestamp: u32) -> Vec<RtpPacket> {
        let mut out = Vec::new();
        for nal in nal_units(access_unit) {
            let nal = access_unit.slice_ref(nal);
            if nal.len() <= self.max_payload {
                self.push(&mut out, timestamp, [0; 3], 0, nal);
                continue;
            }
            match self.codec {
                Codec::H264 => self.fragment_h264(&mut out, timestamp, nal),
                Codec::H265 => self.fragment_h265(&mut out, timestamp, nal),
            }
        }
        if let Some(last) = out.last_mut() {
            last.marker = true;
        }
        out
    }

    fn push(
        &mut self,
        out: &mut Vec<RtpPacket>,
        timestamp: u32,
        prefix: [u8; 3],
        prefix_len: u8,
        body: Bytes,
    ) {
        out.push(RtpPacket {
            payload_type: self.payload_type,
            marker: false,
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
            prefix,
            prefix_len,
            body,
        });
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// RFC 6184 §5.8: FU indicator (F, NRI of the NAL; type 28), FU header
    /// (S, E, original type), then the NAL without its one-byte header.
    fn fragment_h264(&mut self, out: &mut Vec<RtpPacket>, timestamp: u32, nal: Bytes) {
        let Some(&header) = nal.first() else {
            // Cannot happen: nal_units yields no empty NAL.
            return;
        };
        let indicator = (header & 0xe0) | H264_FU_A;
        let chunk = self.max_payload - 2;
        let body = nal.slice(1..);
        let count = body.len().div_ceil(chunk);
        for i in 0..count {
            let part = body.slice(i * chunk..((i + 1) * chunk).min(body.len()));
            let mut fu = header & 0x1f;
            if i == 0 {
                fu |= 0x80;
            }
            if i + 1 == count {
                fu |= 0x40;
            }
            self.push(out, timestamp, [indicator, fu, 0], 2, part);
        }
    }

    /// RFC 7798 §4.4.3: payload header (the NAL's two bytes with type 49),
    /// FU header (S, E, original type), then the NAL without its header.
    fn fragment_h265(&mut self, out: &mut Vec<RtpPacket>, timestamp: u32, nal: Bytes) {
        let &[header, hdr1, _, ..] = &*nal else {
            // Cannot happen (a NAL this short fits any MTU); keep it whole.
            self.push(out, timestamp, [0; 3], 0, nal);
            return;
        };
        let nal_type = (header >> 1) & 0x3f;
        let hdr0 = (header & 0x81) | (H265_FU << 1);
        let chunk = self.max_payload - 3;
        let body = nal.slice(2..);
        let count = body.len().div_ceil(chunk);
        for i in 0..count {
            let part = body.slice(i * chunk..((i + 1) * chunk).min(body.len()));
            let mut fu = nal_type;
            if i == 0 {
                fu |= 0x80;
            }
            if i + 1 == count {
                fu |= 0x40;
            }
            self.push(out, timestamp, [hdr0, hdr1, fu], 3, part);
        }
    }
}

/// 90 kHz ticks of one frame at 15 fps, used when pts cannot tell.
pub const DEFAULT_FRAME_TICKS: u32 = 6_000;
/// A pts step larger than this (10 s) is a discontinuity, not elapsed time.
pub const MAX_STEP_TICKS: u64 = 10 * 90_000;

/// Maps frame pts (90 kHz) to RTP timestamps that start at a random offset
/// and never run backwards: a pts that jumps back or far ahead (the source
/// restarted) advances the timeline by one nominal frame instead.
#[derive(Debug, Clone)]
pub struct RtpClock {
    last_pts: Option<u64>,
    timestamp: u32,
}

impl RtpClock {
    /// A timeline whose first timestamp is `first_timestamp`.
    pub fn new(first_timestamp: u32) -> Self {
        Self { last_pts: None, timestamp: first_timestamp }
    }

    /// Timestamp of the frame with `pts`: its pts step, or one nominal frame
    /// when the step is zero, backwards or beyond [`MAX_STEP_TICKS`] (two
    /// frames never share a timestamp, which receivers read as one picture).
    pub fn stamp(&mut self, pts: u64) -> u32 {
        let step = match self.last_pts.map(|last| pts.checked_sub(last)) {
            Some(Some(d)) if d > 0 && d <= MAX_STEP_TICKS => d as u32,
            _ => DEFAULT_FRAME_TICKS,
        };
        self.advance(pts, step)
    }

    /// Timestamp of the frame with `pts`, `ticks` after the previous one
    /// whatever its pts says (a backlog played out faster than real time).
    pub fn advance(&mut self, pts: u64, ticks: u32) -> u32 {
        if self.last_pts.is_some() {
            self.timestamp = self.timestamp.wrapping_add(ticks);
        }
        self.last_pts = Some(pts);
        self.timestamp
    }

    /// Timestamp of the last stamped frame (the first timestamp before any).
    pub fn current(&self) -> u32 {
        self.timestamp
    }
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// 64-bit NTP timestamp (RFC 3550 §4) of a moment given in microseconds
/// since the Unix epoch.
pub fn ntp_timestamp(unix_micros: u64) -> u64 {
    let secs = unix_micros / 1_000_000 + NTP_UNIX_OFFSET;
    let frac = ((unix_micros % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// Length of an RTCP sender report without report blocks.
pub const SENDER_REPORT_LEN: usize = 28;

/// An RTCP sender report (RFC 3550 §6.4.1) with no report blocks: it ties
/// the RTP timestamp `rtp_timestamp` to the wall clock `ntp`, so receivers
/// can put frames on a clock.
pub fn sender_report(
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packets: u32,
    octets: u32,
) -> [u8; SENDER_REPORT_LEN] {
    let mut b = [0u8; SENDER_REPORT_LEN];
    b[0] = 0x80; // version 2, no padding, 0 report blocks
    b[1] = 200; // SR
    b[2..4].copy_from_slice(&((SENDER_REPORT_LEN / 4 - 1) as u16).to_be_bytes());
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    b[8..16].copy_from_slice(&ntp.to_be_bytes());
    b[16..20].copy_from_slice(&rtp_timestamp.to_be_bytes());
    b[20..24].copy_from_slice(&packets.to_be_bytes());
    b[24..28].copy_from_slice(&octets.to_be_bytes());
    b
}

/// Length of an RTCP BYE for one source.
pub const BYE_LEN: usize = 8;

/// An RTCP BYE (RFC 3550 §6.6) for `ssrc`: the stream ended, the receiver
/// may stop waiting for it.
pub fn bye(ssrc: u32) -> [u8; BYE_LEN] {
    let mut b = [0u8; BYE_LEN];
    b[0] = 0x81; // version 2, one source
    b[1] = 203; // BYE
    b[2..4].copy_from_slice(&1u16.to_be_bytes());
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::annex_b;
    use proptest::prelude::*;

    /// Reassembles NAL units from packets the way a receiver does.
    fn depacketize(codec: Codec, packets: &[RtpPacket]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for p in packets {
            let wire = p.to_bytes();
            let payload = &wire[HEADER_LEN..];
            let (is_fu, hdr_len) = match codec {
                Codec::H264 => (payload[0] & 0x1f == H264_FU_A, 2),
                Codec::H265 => ((payload[0] >> 1) & 0x3f == H265_FU, 3),
            };
            if !is_fu {
                assert!(current.is_none(), "single NAL inside a fragmented one");
                nals.push(payload.to_vec());
                continue;
            }
            let fu = payload[hdr_len - 1];
            if fu & 0x80 != 0 {
                assert!(current.is_none());
                current = Some(match codec {
                    Codec::H264 => vec![(payload[0] & 0xe0) | (fu & 0x1f)],
                    Codec::H265 => vec![(payload[0] & 0x81) | ((fu & 0x3f) << 1), payload[1]],
                });
            }
            let buf = current.as_mut().expect("fragment without a start");
            buf.extend_from_slice(&payload[hdr_len..]);
            if fu & 0x40 != 0 {
                nals.push(current.take().unwrap_or_default());
            }
        }
        assert!(current.is_none(), "unterminated fragment");
        nals
    }

    #[test]
    fn h264_small_nals_travel_whole_and_the_last_packet_is_marked() {
        let au = annex_b(&[&[0x67, 1, 2, 3], &[0x68, 4], &[0x65, 9, 9, 9]]);
        let mut p = Packetizer::new(Codec::H264, 96, 0xdead_beef, 65534, DEFAULT_MTU);
        let packets = p.packetize(&au, 1234);
        assert_eq!(packets.len(), 3);
        assert_eq!(packets.iter().map(|p| p.sequence).collect::<Vec<_>>(), [65534, 65535, 0]);
        assert_eq!(packets.iter().map(|p| p.marker).collect::<Vec<_>>(), [false, false, true]);
        let wire = packets[2].to_bytes();
        assert_eq!(&wire[..12], &[0x80, 0x80 | 96, 0, 0, 0, 0, 0x04, 0xd2, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&wire[12..], &[0x65, 9, 9, 9]);
        assert_eq!(p.next_sequence(), 1);
    }

    #[test]
    fn h264_large_nal_becomes_fu_a_within_the_mtu() {
        let mut idr = vec![0x65];
        idr.extend((0..5000u32).map(|i| (i % 251) as u8 + 1));
        let au = annex_b(&[&[0x67, 1], &idr]);
        let mut p = Packetizer::new(Codec::H264, 96, 1, 0, DEFAULT_MTU);
        let packets = p.packetize(&au, 0);
        assert!(packets.len() > 5);
        assert!(packets.iter().all(|p| p.len() <= DEFAULT_MTU));
        let first_fu = &packets[1];
        assert_eq!(first_fu.prefix(), &[0x60 | 28, 0x80 | 5]);
        assert_eq!(packets.last().map(|p| p.prefix()[1]), Some(0x40 | 5));
        assert_eq!(depacketize(Codec::H264, &packets), vec![vec![0x67, 1], idr]);
        // The body is a slice of the frame, not a copy.
        let inside = au.as_ptr_range();
        assert!(inside.contains(&first_fu.body.as_ptr()));
    }

    #[test]
    fn mtu_and_nal_sizes_at_the_edges() {
        for codec in [Codec::H264, Codec::H265] {
            let fits = MIN_MTU - HEADER_LEN;
            // A NAL that just fits travels whole; one byte more is split.
            for (len, packets) in [(fits, 1), (fits + 1, 2)] {
                let mut nal = vec![0x26, 0x01];
                nal.resize(len, 9);
                let au = annex_b(&[&nal]);
                for mtu in [0, 1, MIN_MTU] {
                    let got = Packetizer::new(codec, 96, 1, u16::MAX, mtu).packetize(&au, u32::MAX);
                    assert_eq!(got.len(), packets, "{codec:?} NAL of {len} at MTU {mtu}");
                    assert!(got.iter().all(|p| p.len() <= MIN_MTU));
                    assert_eq!(depacketize(codec, &got), vec![nal.clone()]);
                    assert_eq!(got[0].sequence, u16::MAX, "the sequence wraps, it does not overflow");
                }
            }
            // No MTU is too large: a huge one means nothing is split.
            let big = annex_b(&[&vec![0x26; 70_000]]);
            assert_eq!(Packetizer::new(codec, 96, 1, 0, usize::MAX).packetize(&big, 0).len(), 1);
        }
        // Sender reports and NTP times at the ends of their ranges.
        assert_eq!(ntp_timestamp(0) >> 32, NTP_UNIX_OFFSET);
        let _ = ntp_timestamp(u64::MAX);
        let _ = sender_report(u32::MAX, u64::MAX, u32::MAX, u32::MAX, u32::MAX);
        let mut clock = RtpClock::new(u32::MAX);
        assert_eq!(clock.stamp(u64::MAX), u32::MAX);
        assert_eq!(clock.stamp(0), u32::MAX.wrapping_add(DEFAULT_FRAME_TICKS), "a pts jump back");
    }

    #[test]
    fn h265_large_nal_becomes_fu_with_a_two_byte_payload_header() {
        let mut idr = vec![0x26, 0x01]; // IDR_W_RADL, tid 1
        idr.extend((0..3000u32).map(|i| (i % 200) as u8 + 4));
        let vps = [0x40, 0x01, 0x0c];
        let au = annex_b(&[&vps, &idr]);
        let mut p = Packetizer::new(Codec::H265, 96, 1, 0, 600);
        let packets = p.packetize(&au, 0);
        assert!(packets.iter().all(|p| p.len() <= 600));
        assert_eq!(packets[1].prefix(), &[(49 << 1), 0x01, 0x80 | 19]);
        assert_eq!(depacketize(Codec::H265, &packets), vec![vps.to_vec(), idr]);
        assert!(packets.last().is_some_and(|p| p.marker));
    }

    #[test]
    fn clock_follows_pts_and_never_runs_backwards() {
        let mut c = RtpClock::new(u32::MAX - 3000);
        assert_eq!(c.stamp(1_000_000), u32::MAX - 3000);
        assert_eq!(c.stamp(1_006_000), 2999); // wraps
        assert_eq!(c.stamp(5), 2999 + DEFAULT_FRAME_TICKS); // source restarted
        assert_eq!(c.stamp(6005), 2999 + DEFAULT_FRAME_TICKS + 6000);
        assert_eq!(c.current(), 2999 + DEFAULT_FRAME_TICKS + 6000);
    }

    #[test]
    fn sender_report_layout() {
        let ntp = ntp_timestamp(1_500_000); // 1.5 s after the Unix epoch
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
        let sr = sender_report(7, ntp, 90_000, 3, 4000);
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(&sr[4..8], &7u32.to_be_bytes());
        assert_eq!(&sr[16..20], &90_000u32.to_be_bytes());
        assert_eq!(&sr[24..28], &4000u32.to_be_bytes());
        assert_eq!(bye(7), [0x81, 203, 0, 1, 0, 0, 0, 7]);
    }

    proptest! {
        #[test]
        fn any_access_unit_round_trips_within_the_mtu(
            nals in proptest::collection::vec(proptest::collection::vec(1u8..=255, 2..4000), 1..5),
            mtu in 0usize..2000,
            h265 in any::<bool>(),
        ) {
            // Non-zero bytes cannot form start codes, so the NALs split back exactly.
            let codec = if h265 { Codec::H265 } else { Codec::H264 };
            // Aggregation and fragmentation types never occur in a stream.
            let mut nals = nals;
            for n in &mut nals {
                match codec {
                    Codec::H264 if n[0] & 0x1f >= 24 => n[0] = (n[0] & 0xe0) | 1,
                    Codec::H265 if (n[0] >> 1) & 0x3f >= 48 => n[0] = (n[0] & 0x81) | 2,
                    _ => {}
                }
            }
            let refs: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
            let au = annex_b(&refs);
            let mut p = Packetizer::new(codec, 96, 9, 100, mtu);
            let packets = p.packetize(&au, 77);
            prop_assert!(packets.iter().all(|p| p.len() <= mtu.max(MIN_MTU)));
            prop_assert!(packets.iter().all(|p| p.timestamp == 77));
            prop_assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
            prop_assert!(packets.last().is_some_and(|p| p.marker));
            for (i, p) in packets.iter().enumerate() {
                prop_assert_eq!(p.sequence, 100u16.wrapping_add(i as u16));
            }
            prop_assert_eq!(depacketize(codec, &packets), nals);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000), mtu in 0usize..1500) {
            for codec in [Codec::H264, Codec::H265] {
                let mut p = Packetizer::new(codec, 96, 1, 0, mtu);
                let _ = p.packetize(&Bytes::from(data.clone()), 0);
            }
        }
    }
}
