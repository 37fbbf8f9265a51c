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
