//! The relay's RTSP request framer: any bytes, any chunking; the same
//! verdicts whatever the split, and never more buffered than a request may
//! be.

use crate::class_of;
use ponte_relay::rtsp::framing::{Framer, Inbound, MAX_REQUEST_BYTES};

/// Request lines, headers, and the Content-Length values at the limits.
pub const DICT: &[&[u8]] = &[
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

/// Frames `data[1..]` whole and in chunks of `data[0] % 13 + 1` bytes.
pub fn run(data: &[u8]) -> u64 {
    let Some((&split, rest)) = data.split_first() else { return 0 };
    let frame = |chunk: usize| {
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
    let whole = frame(rest.len());
    let pieces = frame(usize::from(split % 13) + 1);
    assert_eq!(whole, pieces, "same requests whatever the chunking");
    class_of(whole.iter().take(4).collect::<Vec<_>>())
}

fn summary(ev: &Inbound) -> String {
    match ev {
        Inbound::Request(r) => format!("request {:?}", r.method()),
        Inbound::Interleaved { channel, len } => format!("interleaved {channel} {len}"),
        Inbound::Refused(r) => format!("refused {} fatal={}", r.status, r.fatal),
    }
}
