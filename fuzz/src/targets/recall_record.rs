//! A record of the agent's recording store (issue 21), as read back from a
//! disk that may hold anything: the decoder never panics, and a record it
//! accepts re-encodes to one that decodes to the same GOP. The input's CRC
//! is set right first, so the fuzzer explores the body's parser and not
//! only the checksum check.

use crate::{class_of, class_of_result};
use bytes::Bytes;
use ponte_proto::recall::store::record;

/// Magic, version and length edges.
pub const DICT: &[&[u8]] =
    &[b"PSEG\x01\x00\x00\x00", b"\x00\x00\x00\x01\x65", b"\xff\xff\xff\xff", b"\x00\x00"];

/// Decodes `data` (its CRC fixed up) as one record.
pub fn run(data: &[u8]) -> u64 {
    let mut bytes = data.to_vec();
    let crc = record::crc_of(&bytes);
    if let Some(slot) = bytes.get_mut(8..12) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    let decoded = record::decode(Bytes::from(bytes));
    if let Ok(gop) = &decoded {
        let again = record::encode(gop).expect("a decoded record re-encodes");
        let back = record::decode(Bytes::from(again)).expect("a re-encoded record decodes");
        assert_eq!(&back, gop, "record round trip");
        return class_of(gop.frames.len().min(8));
    }
    class_of_result(&decoded, 0)
}
