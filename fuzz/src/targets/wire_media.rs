//! `MediaDecoder` on a media stream: arbitrary bytes fed in arbitrary
//! chunks (the first byte picks the chunk size); the decoder yields the same
//! events however the stream is split, and a decoded header re-encodes to
//! what was read.

use crate::{class_of, class_of_result};
use bytes::BytesMut;
use ponte_proto::wire::{encode_frame_header, MediaDecoder, MediaEvent, FRAME_HEADER_LEN};

/// Magic, start codes and length edges.
pub const DICT: &[&[u8]] = &[b"PG\x01", b"\x00\x00\x00\x01\x65", b"\xff\xff\xff\xff", b"\x00\x00"];

/// Decodes `data[1..]` whole and in chunks of `data[0] % 17 + 1` bytes.
pub fn run(data: &[u8]) -> u64 {
    let Some((&split, rest)) = data.split_first() else { return 0 };
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
            assert_eq!(encode_frame_header(frame).len(), FRAME_HEADER_LEN);
        }
    }
    let kinds: Vec<bool> = whole.iter().map(|e| matches!(e, MediaEvent::Header(_))).take(4).collect();
    class_of_result(&f1, 0) ^ class_of_result(&r1, 0).rotate_left(1) ^ class_of(kinds)
}
