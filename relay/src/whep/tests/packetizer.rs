//! The H.264 packetizer: markers, sequence numbers, fragments within the MTU.

use super::SPS;
use crate::whep::peer::H264Packetizer;
use bytes::Bytes;
use ponte_proto::fixtures::{annex_b, idr, slice, PPS};
use ponte_proto::rtp::{DEFAULT_MTU, HEADER_LEN};

#[test]
fn packetizer_marks_frames_and_fragments_beyond_the_mtu() {
    let mut p = H264Packetizer::new(0xdead_beef, 109, u16::MAX);
    let packets = p.packetize(&annex_b(&[SPS, PPS, &idr(4000)]), 1234);
    // STAP-A (SPS+PPS), then FU-A fragments of the IDR.
    assert!(packets.len() >= 5, "{} packets", packets.len());
    assert_eq!(packets[0].payload[0] & 0x1f, 24);
    assert!(packets[1..].iter().all(|pk| pk.payload[0] & 0x1f == 28));
    assert!(packets.iter().all(|pk| pk.payload.len() + HEADER_LEN <= DEFAULT_MTU));
    assert!(packets.iter().all(|pk| pk.header.timestamp == 1234
        && pk.header.ssrc == 0xdead_beef
        && pk.header.payload_type == 109));
    let markers: Vec<bool> = packets.iter().map(|pk| pk.header.marker).collect();
    assert_eq!(markers.iter().filter(|m| **m).count(), 1);
    assert_eq!(markers.last(), Some(&true));
    assert_eq!(packets[0].header.sequence_number, u16::MAX);
    assert_eq!(packets[1].header.sequence_number, 0);
    let next = p.packetize(&annex_b(&[&slice(100)]), 7234);
    assert_eq!(next.len(), 1);
    assert!(next[0].header.marker);
    assert_eq!(next[0].header.sequence_number, packets.len() as u16 - 1);
    assert!(p.packetize(&Bytes::new(), 1).is_empty());
}

/// The H.265 packetizer (RFC 7798): parameter sets whole, a large IRAP slice
/// in fragmentation units whose payload header keeps layer and tid and
/// whose FU header carries the original type; reassembled, the NAL is the
/// same bytes. Garbage yields no packet and no panic.
#[test]
fn h265_packetizer_fragments_irap_slices_and_survives_garbage() {
    use crate::whep::peer::H265Packetizer;
    const VPS: &[u8] = &[0x40, 0x01, 0x0c, 0x01];
    const SPS_265: &[u8] = &[0x42, 0x01, 0x01, 0x01];
    const PPS_265: &[u8] = &[0x44, 0x01, 0xc0];
    // IDR_W_RADL (19): header 0x26 0x01.
    let idr: Vec<u8> = [0x26, 0x01].into_iter().chain((0..5000u32).map(|i| (i % 251) as u8 | 1)).collect();
    let au = annex_b(&[VPS, SPS_265, PPS_265, &idr]);
    let mut p = H265Packetizer::new(0x1234, 49, 10);
    let packets = p.packetize(&au, 900);
    assert_eq!(&packets[0].payload[..], VPS);
    assert_eq!(&packets[1].payload[..], SPS_265);
    assert_eq!(&packets[2].payload[..], PPS_265);
    let fus = &packets[3..];
    assert!(fus.len() >= 4, "{} fragments", fus.len());
    let mut nal = vec![0x26, 0x01];
    for (i, fu) in fus.iter().enumerate() {
        assert_eq!((fu.payload[0] >> 1) & 0x3f, 49, "FU type");
        assert_eq!(fu.payload[1], 0x01, "layer 0, tid 1 kept");
        let (start, end) = (fu.payload[2] & 0x80 != 0, fu.payload[2] & 0x40 != 0);
        assert_eq!((start, end), (i == 0, i + 1 == fus.len()));
        assert_eq!(fu.payload[2] & 0x3f, 19, "original type");
        assert!(fu.payload.len() + HEADER_LEN <= DEFAULT_MTU);
        nal.extend_from_slice(&fu.payload[3..]);
    }
    assert_eq!(nal, idr);
    assert!(packets.iter().all(|pk| pk.header.timestamp == 900 && pk.header.payload_type == 49));
    let seqs: Vec<u16> = packets.iter().map(|pk| pk.header.sequence_number).collect();
    assert_eq!(seqs, (10..10 + packets.len() as u16).collect::<Vec<_>>());
    assert_eq!(packets.iter().filter(|pk| pk.header.marker).count(), 1);
    assert!(packets.last().is_some_and(|pk| pk.header.marker));

    for garbage in [&b""[..], &[0], &[0, 0, 1], &[0, 0, 0, 1, 0x26], &[0xff; 3000]] {
        let _ = p.packetize(&Bytes::copy_from_slice(garbage), 1);
    }
}
