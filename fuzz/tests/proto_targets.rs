//! Fuzz targets of `ponte-proto`: the wire decoders and the H.264/H.265
//! helpers that read what cameras and peers send. A short run of each is
//! part of the test suite; see `ponte_fuzz` for long runs.

use bytes::BytesMut;
use ponte_fuzz::{class_of, class_of_result, fuzz};

use ponte_proto::wire::{encode_frame_header, Control, GopHeader, MediaDecoder, MediaEvent};
use ponte_proto::{h264, h265};

const CONTROL_DICT: &[&[u8]] = &[
    b"{\"type\":\"subscribe\",\"id\":1,\"camera\":\"c\",\"quality\":\"main\"}",
    b"{\"type\":\"catalog\",\"cameras\":[]}",
    b"\"type\"",
    b"\"hello\"",
    b"\"catalog\"",
    b"\"subscribe_error\"",
    b"\"code\":\"over-budget\"",
    b"\"quality\":\"sub\"",
    b"18446744073709551615",
    b"-1",
    b"1e999",
    b"\\ud800",
    b"null",
    b"[[[[[[[[[[",
    b"\0\0\0\x10",
    b"\xff\xff\xff\xff",
];

/// Control messages: decoding never panics, and whatever decodes re-encodes
/// to bytes that decode to the same message.
#[test]
fn fuzz_wire_control() {
    fuzz("wire_control", CONTROL_DICT, |data| {
        let mut buf = BytesMut::from(data);
        let mut n = 0u64;
        let mut kinds = 0u32;
        let last = loop {
            match Control::decode(&mut buf) {
                Ok(Some(msg)) => {
                    let mut again = BytesMut::new();
                    msg.encode(&mut again).expect("a decoded message fits when encoded again");
                    let back = Control::decode(&mut again).expect("re-encoded message decodes");
                    assert_eq!(back.as_ref(), Some(&msg), "round trip");
                    assert!(again.is_empty());
                    kinds |= 1u32 << (ponte_proto::session::kind(&msg).len() % 32);
                    n += 1;
                }
                other => break other.map(|_| ()),
            }
        };
        // Which message kinds decoded, and the first words of the error.
        let why = match &last {
            Err(ponte_proto::wire::WireError::BadControl(m)) => {
                // serde's message without the values and positions it quotes.
                let words: Vec<&str> = m.split_whitespace().take(3).collect();
                words.join(" ").chars().filter(|c| c.is_ascii_alphabetic() || *c == ' ').collect()
            }
            Err(e) => format!("{e:?}").chars().filter(|c| c.is_ascii_alphabetic()).collect(),
            Ok(()) => "ok".to_owned(),
        };
        class_of((why, n.min(4), kinds))
    });
}

/// Media streams: arbitrary bytes fed in arbitrary chunks; the decoder
/// yields the same events however the stream is split, and a decoded header
/// re-encodes to what was read.
#[test]
fn fuzz_wire_media() {
    fuzz("wire_media", &[b"PG\x01", b"\x00\x00\x00\x01\x65", b"\xff\xff\xff\xff", b"\x00\x00"], |data| {
        let (&split, rest) = match data.split_first() {
            Some(x) => x,
            None => return 0,
        };
        let decode = |chunk: usize| {
            let mut d = MediaDecoder::new();
            let mut events = Vec::new();
            let mut result = Ok(());
            for piece in rest.chunks(chunk.max(1)) {
                d.push(piece);
                loop {
                    match d.poll() {
                        Ok(Some(ev)) => events.push(ev),
                        Ok(None) => break,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if result.is_err() {
                    break;
                }
            }
            let finished = if result.is_ok() { d.finish() } else { Ok(()) };
            (events, result, finished)
        };
        let (whole, r1, f1) = decode(rest.len());
        let (pieces, r2, _) = decode(usize::from(split % 17) + 1);
        assert_eq!(r1, r2, "same verdict whatever the chunking");
        assert_eq!(whole, pieces, "same events whatever the chunking");
        if let Some(MediaEvent::Header(h)) = whole.first() {
            let mut out = BytesMut::new();
            h.encode(&mut out);
            assert_eq!(&rest[..out.len()], &out[..], "header re-encodes to what was read");
        }
        for ev in whole.iter() {
            if let MediaEvent::Frame(frame) = ev {
                let hdr = encode_frame_header(frame);
                assert_eq!(hdr.len(), ponte_proto::wire::FRAME_HEADER_LEN);
            }
        }
        let kinds: Vec<bool> = whole.iter().map(|e| matches!(e, MediaEvent::Header(_))).take(4).collect();
        class_of_result(&f1, 0) ^ class_of_result(&r1, 0).rotate_left(1) ^ class_of(kinds)
    });
}

/// Any header the encoder writes, the decoder reads back.
#[test]
fn fuzz_wire_gop_header_round_trip() {
    fuzz("wire_gop_header", &[], |data| {
        use ponte_proto::media::{Codec, CodecConfig, Quality};
        if data.len() < 24 {
            return 0;
        }
        let n = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
        let sets: Vec<bytes::Bytes> =
            data[24..].chunks(1 + usize::from(data[0] % 40)).map(bytes::Bytes::copy_from_slice).collect();
        let h = GopHeader {
            subscription: n(0),
            quality: if data[8] & 1 == 0 { Quality::Main } else { Quality::Sub },
            seq: n(16),
            config: CodecConfig {
                codec: if data[9] & 1 == 0 { Codec::H264 } else { Codec::H265 },
                width: u16::from_be_bytes([data[10], data[11]]),
                height: u16::from_be_bytes([data[12], data[13]]),
                parameter_sets: sets,
            },
        };
        let mut out = BytesMut::new();
        h.encode(&mut out);
        let mut d = MediaDecoder::new();
        d.push(&out);
        // The encoder carries at most 255 parameter sets of at most
        // MAX_PARAMETER_SET_LEN bytes (a camera has three); it drops the rest.
        let mut expected = h.clone();
        expected.config.parameter_sets = h
            .config
            .parameter_sets
            .iter()
            .filter(|p| p.len() <= ponte_proto::wire::MAX_PARAMETER_SET_LEN)
            .take(255)
            .cloned()
            .collect();
        match d.poll() {
            Ok(Some(MediaEvent::Header(back))) => assert_eq!(back, expected),
            other => panic!("encoded header did not decode: {other:?}"),
        }
        class_of(h.config.parameter_sets.len().min(8))
    });
}

const NAL_DICT: &[&[u8]] = &[
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

/// H.264 helpers on camera bytes: NAL splitting, parameter sets, SEI,
/// RBSP escaping (escape ∘ unescape is the identity on escaped data).
#[test]
fn fuzz_h264_nal_and_parameter_sets() {
    fuzz("h264", NAL_DICT, |data| {
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
        let au = bytes::Bytes::copy_from_slice(data);
        let sets: Vec<bytes::Bytes> = sps.into_iter().chain(pps).map(bytes::Bytes::copy_from_slice).collect();
        let with = h264::with_parameter_sets(&au, &sets);
        assert!(with.len() >= au.len());
        class_of((nals.len().min(6), sps.is_some(), pps.is_some(), key))
    });
}

/// H.265 helpers on camera bytes.
#[test]
fn fuzz_h265_nal_and_parameter_sets() {
    fuzz("h265", NAL_DICT, |data| {
        let nals: Vec<&[u8]> = h264::nal_units(data).collect();
        let mut types = 0u64;
        for nal in &nals {
            if let Some(t) = h265::nal_type(nal) {
                let _ = (h265::is_irap(t), h265::is_vcl(t));
                types |= 1 << (t % 64);
            }
        }
        let sets = h265::parameter_sets(data);
        let complete = sets.complete();
        let key = h265::is_keyframe(data);
        let au = bytes::Bytes::copy_from_slice(data);
        let with = h265::with_parameter_sets(&au, &[bytes::Bytes::from_static(b"\x40\x01\x0c")]);
        assert!(with.len() >= au.len());
        class_of((types.count_ones(), complete, key))
    });
}
