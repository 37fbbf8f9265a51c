//! Fuzz targets of the relay (see `ponte_fuzz`): what browsers, VMS and the
//! config file give it. A short run of each is part of the test suite.

use crate::config::RelayConfig;
use crate::rtsp::framing::{Framer, Inbound, MAX_REQUEST_BYTES};
use crate::whep::check_offer;
use ponte_fuzz::{class_of, class_of_message, fuzz};

/// The WHEP offer check, then the WebRTC stack's own SDP parser on what
/// passed it (the relay hands it the offer next).
#[test]
fn fuzz_whep_offer() {
    let dict: &[&[u8]] = &[
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
    fuzz("whep_offer", dict, |data| {
        let sdp = String::from_utf8_lossy(data);
        let verdict = check_offer(&sdp);
        let lines = sdp.lines().count().min(24);
        let sections = sdp.matches("m=").count().min(4);
        let parsed = verdict.is_ok()
            && webrtc::peer_connection::RTCSessionDescription::offer(sdp.into_owned()).is_ok();
        class_of((verdict, parsed, lines, sections))
    });
}

/// The RTSP request framer: any bytes, any chunking; the same verdicts
/// whatever the split, and never more buffered than a request may be.
#[test]
fn fuzz_rtsp_request() {
    let dict: &[&[u8]] = &[
        b"OPTIONS * RTSP/1.0\r\n",
        b"DESCRIBE rtsp://h/c RTSP/1.0\r\n",
        b"CSeq: 1\r\n",
        b"Content-Length: 10\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        // Lengths that parse but overflow `head + body` (u64::MAX - 68 wraps
        // a 69-byte head to 0), and the limit's edges.
        b"Content-Length: 18446744073709551547\r\n",
        b"Content-Length: 18446744073709551615\r\n",
        b"Content-Length: 18446744073709551600\r\n",
        b"Content-Length: 9223372036854775808\r\n",
        b"Content-Length: 4294967295\r\n",
        b"Content-Length: 8192\r\n",
        b"Content-Length: +1\r\n",
        b"Session: 1\r\n",
        b"\r\n\r\n",
        b"$\x00\xff\xff",
        b"RTSP/2.0",
    ];
    fuzz("rtsp_request", dict, |data| {
        let (&split, rest) = match data.split_first() {
            Some(x) => x,
            None => return 0,
        };
        let run = |chunk: usize| {
            let mut f = Framer::new();
            let mut out = Vec::new();
            for piece in rest.chunks(chunk.max(1)) {
                f.push(piece);
                while let Some(ev) = f.poll() {
                    let fatal = matches!(&ev, Inbound::Refused(r) if r.fatal);
                    out.push(summary(&ev));
                    if fatal {
                        return out;
                    }
                }
                assert!(f.buffered() <= MAX_REQUEST_BYTES + 64 * 1024 + 4, "framer buffers {}", f.buffered());
            }
            out
        };
        let whole = run(rest.len());
        let pieces = run(usize::from(split % 13) + 1);
        assert_eq!(whole, pieces, "same requests whatever the chunking");
        class_of(whole.iter().take(4).collect::<Vec<_>>())
    });
}

fn summary(ev: &Inbound) -> String {
    match ev {
        Inbound::Request(r) => format!("request {:?}", r.method()),
        Inbound::Interleaved { channel, len } => format!("interleaved {channel} {len}"),
        Inbound::Refused(r) => format!("refused {} fatal={}", r.status, r.fatal),
    }
}

/// The config loader: any TOML-ish text is an error or a config, never a panic.
#[test]
fn fuzz_relay_config() {
    let dict: &[&[u8]] = &[
        b"[relay]\n",
        b"[tls]\n",
        b"[rtsp]\n",
        b"[[viewer]]\n",
        b"[[token]]\n",
        b"[[downstream]]\n",
        b"site = \"x\"\n",
        b"allow_anonymous = true\n",
        b"upstreams = [\"master\"]\n",
        b"listen = \"127.0.0.1:0\"\n",
        b"udp_port = 65535\n",
        b"= ",
        b"\"\"\"",
        b"[[",
        b"18446744073709551616",
    ];
    fuzz("relay_config", dict, |data| {
        let text = String::from_utf8_lossy(data);
        class_of_message(&RelayConfig::from_toml(&text))
    });
}
