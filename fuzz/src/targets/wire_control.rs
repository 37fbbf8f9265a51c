//! `Control::decode` on what a peer sends: decoding never panics, and
//! whatever decodes re-encodes to bytes that decode to the same message.

use crate::class_of;
use bytes::BytesMut;
use ponte_proto::wire::{Control, WireError};

/// Messages, keys, values and framing bytes worth splicing in.
pub const DICT: &[&[u8]] = &[
    b"{\"type\":\"subscribe\",\"id\":1,\"camera\":\"c\",\"quality\":\"main\"}",
    b"{\"type\":\"catalog\",\"cameras\":[]}",
    b"{\"type\":\"viewers\",\"id\":1,\"viewers\":[\"op\"]}",
    b"{\"type\":\"audit_head\",\"seq\":1,\"hash\":\"00\"}",
    b"{\"type\":\"incident\",\"notice\":{\"op\":\"share\",\"id\":1,\"cameras\":[\"c\"],\"until_ms\":1,\"by\":\"sala\",\"note\":\"n\"}}",
    b"{\"type\":\"incident\",\"notice\":{\"op\":\"alarm\",\"id\":1,\"camera\":\"c\",\"kind\":\"motion\",\"at_ms\":1,\"detail\":\"d\"}}",
    b"{\"type\":\"incident_action\",\"action\":{\"op\":\"ask\",\"id\":1,\"camera\":\"c\",\"operator\":\"op\",\"reason\":\"r\"}}",
    b"\"op\":\"accept\"",
    b"\"thumbnail\"",
    b"\"viewer\":\"op\"",
    b"\"more\"",
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

/// Decodes every message in `data`; the outcome class is which message kinds
/// decoded, how many, and the first words of the error.
pub fn run(data: &[u8]) -> u64 {
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
    let why = match &last {
        Err(WireError::BadControl(m)) => {
            // serde's message without the values and positions it quotes.
            let words: Vec<&str> = m.split_whitespace().take(3).collect();
            words.join(" ").chars().filter(|c| c.is_ascii_alphabetic() || *c == ' ').collect()
        }
        Err(e) => format!("{e:?}").chars().filter(|c| c.is_ascii_alphabetic()).collect(),
        Ok(()) => "ok".to_owned(),
    };
    class_of((why, n.min(4), kinds))
}
