//! The WHEP offer check, then the WebRTC stack's own SDP parser on what
//! passed it (the relay hands it the offer next).

use crate::class_of;
use ponte_relay::whep::check_offer;

/// SDP lines a browser's offer has, and the ones the check refuses.
pub const DICT: &[&[u8]] = &[
    b"v=0\r\n",
    b"m=video 9 UDP/TLS/RTP/SAVPF 102\r\n",
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    b"a=rtpmap:102 H264/90000\r\n",
    b"a=fmtp:102 packetization-mode=1\r\n",
    b"a=recvonly\r\n",
    b"a=sendonly\r\n",
    b"a=ice-ufrag:x\r\n",
    b"a=fingerprint:sha-256 00\r\n",
    b"a=mid:0\r\n",
    b"\r\n",
];

/// Checks `data` (lossy UTF-8) as an offer and parses what passes.
pub fn run(data: &[u8]) -> u64 {
    let sdp = String::from_utf8_lossy(data);
    let verdict = check_offer(&sdp);
    let lines = sdp.lines().count().min(24);
    let sections = sdp.matches("m=").count().min(4);
    let parsed =
        verdict.is_ok() && webrtc::peer_connection::RTCSessionDescription::offer(sdp.into_owned()).is_ok();
    class_of((verdict, parsed, lines, sections))
}
