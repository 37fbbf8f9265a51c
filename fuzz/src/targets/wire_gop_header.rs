//! GOP header round trip: any header the encoder writes, the decoder reads
//! back (less the parameter sets the encoder documents it drops).

use crate::class_of;
use bytes::{Bytes, BytesMut};
use ponte_proto::media::{Codec, CodecConfig, Quality};
use ponte_proto::wire::{GopHeader, MediaDecoder, MediaEvent, MAX_PARAMETER_SET_LEN};

/// No tokens: the input is a header's fields, not a syntax.
pub const DICT: &[&[u8]] = &[];

/// Builds a header from `data` (24 bytes of fields, then parameter sets cut
/// every `data[0] % 40 + 1` bytes), encodes and decodes it.
pub fn run(data: &[u8]) -> u64 {
    if data.len() < 24 {
        return 0;
    }
    let n = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
    let sets: Vec<Bytes> =
        data[24..].chunks(1 + usize::from(data[0] % 40)).map(Bytes::copy_from_slice).collect();
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
        .filter(|p| p.len() <= MAX_PARAMETER_SET_LEN)
        .take(255)
        .cloned()
        .collect();
    match d.poll() {
        Ok(Some(MediaEvent::Header(back))) => assert_eq!(back, expected),
        other => panic!("encoded header did not decode: {other:?}"),
    }
    class_of(h.config.parameter_sets.len().min(8))
}
