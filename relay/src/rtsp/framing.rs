//! Splits the bytes a client sends on its RTSP connection into requests and
//! interleaved frames, with limits: sans-IO, every malformed input becomes a
//! typed refusal with the status to answer, never a panic.

use bytes::{Buf, BytesMut};
use rtsp_types::{Message, Request, StatusCode, Version};

/// Largest request accepted (request line, headers and body together).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Most header lines accepted in one request.
pub const MAX_HEADERS: usize = 32;

/// What the client sent next.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed request.
    Request(Box<Request<Vec<u8>>>),
    /// An interleaved binary frame (`$`, channel, length); its payload is
    /// skipped (receiver reports: proof of life, nothing more).
    Interleaved {
        /// Channel id.
        channel: u8,
        /// Payload length.
        len: u16,
    },
    /// Something that is not an acceptable request.
    Refused(Refusal),
}

/// A request refused before it reached a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status to answer.
    pub status: StatusCode,
    /// The request's CSeq, when it could be read.
    pub cseq: Option<String>,
    /// One line for the log and the reason phrase.
    pub reason: String,
    /// The stream cannot be resynchronised: answer, then close the connection.
    pub fatal: bool,
}

/// Incremental framer of one connection's inbound bytes.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    /// Payload bytes of an interleaved frame still to discard.
    skip: usize,
    /// Set once a fatal refusal was returned: nothing more is parsed.
    broken: bool,
    /// Leading bytes of `buf` already searched for the end of a request
    /// head without finding it, so a head that arrives a byte at a time is
    /// scanned once, not once per byte (zeroed whenever `buf` moves).
    scanned: usize,
}

impl Framer {
    /// A framer for a fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        let mut data = data;
        if self.skip > 0 && self.buf.is_empty() {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = data.get(n..).unwrap_or_default();
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed (bounded by the limits; the fuzz
    /// target `ponte_fuzz::targets::rtsp_request` checks it).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete item, `None` when more bytes are needed.
    pub fn poll(&mut self) -> Option<Inbound> {
        if self.broken {
            return None;
        }
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.scanned = 0;
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        loop {
            // Bare line ends between messages are tolerated (some clients
            // send them as keep-alives).
            while matches!(self.buf.first(), Some(b'\r' | b'\n')) {
                self.buf.advance(1);
                self.scanned = 0;
            }
            match self.buf.first()? {
                b'$' => {
                    let &[_, channel, hi, lo, ..] = self.buf.as_ref() else {
                        return None;
                    };
                    let len = u16::from_be_bytes([hi, lo]);
                    self.buf.advance(4);
                    self.scanned = 0;
                    self.skip = usize::from(len);
                    return Some(Inbound::Interleaved { channel, len });
                }
                // A response to nothing we asked is dropped; a loop, not
                // recursion, so a buffer full of them cannot run the stack out.
                _ => match self.request()? {
                    Framed::Item(item) => return Some(item),
                    Framed::Ignored => {}
                },
            }
        }
    }

    fn request(&mut self) -> Option<Framed> {
        let window = self.buf.get(..MAX_REQUEST_BYTES).unwrap_or(&self.buf);
        // The terminator may straddle what was scanned and what is new.
        let from = self.scanned.saturating_sub(3).min(window.len());
        let found = window.get(from..).and_then(|new| find(new, b"\r\n\r\n")).map(|i| from + i);
        let Some(head) = found.and_then(|i| window.get(..i + 4)) else {
            self.scanned = window.len();
            if self.buf.len() >= MAX_REQUEST_BYTES {
                return Some(Framed::Item(self.fatal(
                    StatusCode::BadRequest,
                    None,
                    format!("request header exceeds {MAX_REQUEST_BYTES} bytes"),
                )));
            }
            return None;
        };
        let head_end = head.len();
        let cseq = header(head, "cseq").map(str::to_owned);
        let lengths: Vec<&str> = headers(head, "content-length").collect();
        // The peer's number is checked before any arithmetic: a length near
        // u64::MAX once wrapped `head_end + body_len` to a small number.
        let body_len = match lengths.as_slice() {
            [] => 0,
            [one] => match one.parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    let reason = format!("invalid Content-Length {:?}", truncate(one));
                    return Some(Framed::Item(self.fatal(StatusCode::BadRequest, cseq, reason)));
                }
            },
            _ => {
                let reason = "more than one Content-Length".to_owned();
                return Some(Framed::Item(self.fatal(StatusCode::BadRequest, cseq, reason)));
            }
        };
        let Some(total) = request_len(head_end, body_len) else {
            let reason = format!(
                "Content-Length {body_len} after a {head_end}-byte header exceeds the {MAX_REQUEST_BYTES}-byte limit"
            );
            return Some(Framed::Item(self.fatal(StatusCode::RequestMessageBodyTooLarge, cseq, reason)));
        };
        if self.buf.len() < total {
            return None;
        }
        let lines = head.split(|&b| b == b'\n').count().saturating_sub(3);
        let message = self.buf.split_to(total);
        self.scanned = 0;
        let refuse = |status, reason: String| {
            Some(Framed::Item(Inbound::Refused(Refusal { status, cseq: cseq.clone(), reason, fatal: false })))
        };
        if lines > MAX_HEADERS {
            return refuse(StatusCode::BadRequest, format!("more than {MAX_HEADERS} header lines"));
        }
        let request_line = message[..].split(|&b| b == b'\r').next().unwrap_or_default();
        let version = request_line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        if version.starts_with(b"RTSP/") && version != b"RTSP/1.0" {
            return refuse(
                StatusCode::RTSPVersionNotSupported,
                format!("{} is not supported; use RTSP/1.0", String::from_utf8_lossy(version)),
            );
        }
        if cseq.is_none() {
            return refuse(StatusCode::BadRequest, "request without CSeq".into());
        }
        match Message::<Vec<u8>>::parse(&message[..]) {
            Ok((Message::Request(req), _)) if req.version() == Version::V1_0 => {
                Some(Framed::Item(Inbound::Request(Box::new(req))))
            }
            Ok((Message::Request(_), _)) => {
                refuse(StatusCode::RTSPVersionNotSupported, "only RTSP/1.0 is supported".into())
            }
            Ok((Message::Response(_), _)) => Some(Framed::Ignored),
            Ok((Message::Data(_), _)) | Err(_) => refuse(StatusCode::BadRequest, "malformed request".into()),
        }
    }

    fn fatal(&mut self, status: StatusCode, cseq: Option<String>, reason: String) -> Inbound {
        self.broken = true;
        self.buf.clear();
        self.scanned = 0;
        Inbound::Refused(Refusal { status, cseq, reason, fatal: true })
    }
}

/// What [`Framer::request`] took off the buffer.
enum Framed {
    /// Something for the connection to act on.
    Item(Inbound),
    /// A response from the client: dropped.
    Ignored,
}

/// Bytes of a request whose head takes `head_end` bytes and whose body the
/// peer announced as `body_len`; `None` when that exceeds
/// [`MAX_REQUEST_BYTES`] (whatever the number, no overflow).
fn request_len(head_end: usize, body_len: u64) -> Option<usize> {
    let body = usize::try_from(body_len).ok()?;
    head_end.checked_add(body).filter(|&n| n <= MAX_REQUEST_BYTES)
}

/// At most 32 characters of a peer's value, for a log line.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Value of header `name` (lower case) in a raw request head, trimmed.
fn header<'a>(head: &'a [u8], name: &'a str) -> Option<&'a str> {
    headers(head, name).next()
}

/// Every value of header `name` in a raw request head, trimmed.
fn headers<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let line = std::str::from_utf8(line).ok()?;
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtsp_types::Method;

    fn all(f: &mut Framer) -> Vec<Inbound> {
        std::iter::from_fn(|| f.poll()).collect()
    }

    fn refusal(i: &Inbound) -> &Refusal {
        match i {
            Inbound::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn requests_and_interleaved_frames_split_byte_by_byte() {
        let wire = b"OPTIONS rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n\
$\x01\x00\x03abc\
GET_PARAMETER rtsp://h/cam RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 4\r\n\r\nping\r\n";
        let mut f = Framer::new();
        let mut got = Vec::new();
        for b in wire {
            f.push(std::slice::from_ref(b));
            got.extend(all(&mut f));
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0], Inbound::Request(r) if r.method() == Method::Options));
        assert!(matches!(got[1], Inbound::Interleaved { channel: 1, len: 3 }));
        match &got[2] {
            Inbound::Request(r) => {
                assert_eq!(r.method(), Method::GetParameter);
                assert_eq!(r.body(), b"ping");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn a_long_head_dribbled_a_byte_at_a_time_is_framed_once_and_scanned_once() {
        // Headers up to just under the limit, sent one byte per read (a
        // slow or hostile client): one request comes out, and the head is
        // searched about once per byte, not once per byte per byte read.
        let mut wire = b"OPTIONS rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\n".to_vec();
        while wire.len() < MAX_REQUEST_BYTES - 200 {
            wire.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        let mut f = Framer::new();
        let mut got = Vec::new();
        let mut searched = 0;
        for b in &wire {
            f.push(std::slice::from_ref(b));
            searched += f.buffered() - f.scanned.saturating_sub(3).min(f.buffered());
            got.extend(all(&mut f));
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], Inbound::Refused(r) if r.status == StatusCode::BadRequest && !r.fatal),
            "{got:?}"
        );
        assert!(searched < 5 * wire.len(), "{searched} bytes searched for a {}-byte head", wire.len());
    }

    #[test]
    fn malformed_requests_get_the_right_status_and_the_stream_goes_on() {
        let mut f = Framer::new();
        f.push(b"DESCRIBE not-a-url RTSP/1.0\r\nCSeq: 7\r\n\r\n");
        f.push(b"DESCRIBE rtsp://h/cam RTSP/2.0\r\nCSeq: 8\r\n\r\n");
        f.push(b"DESCRIBE rtsp://h/cam RTSP/1.0\r\n\r\n");
        let mut many = String::from("OPTIONS * RTSP/1.0\r\nCSeq: 9\r\n");
        for i in 0..40 {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        f.push(many.as_bytes());
        f.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 10\r\n\r\n");
        let got = all(&mut f);
        assert_eq!(got.len(), 5, "{got:?}");
        let r = refusal(&got[0]);
        assert_eq!((r.status, r.cseq.as_deref(), r.fatal), (StatusCode::BadRequest, Some("7"), false));
        assert_eq!(refusal(&got[1]).status, StatusCode::RTSPVersionNotSupported);
        assert_eq!(refusal(&got[2]).status, StatusCode::BadRequest);
        assert_eq!(refusal(&got[3]).status, StatusCode::BadRequest);
        assert!(matches!(&got[4], Inbound::Request(r) if r.request_uri().is_none()));
    }

    #[test]
    fn oversized_requests_are_fatal() {
        let mut f = Framer::new();
        f.push(b"DESCRIBE rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\nX: ");
        f.push(&vec![b'a'; MAX_REQUEST_BYTES]);
        let r = refusal(&f.poll().unwrap()).clone();
        assert!(r.fatal);
        assert_eq!(r.status, StatusCode::BadRequest);
        assert!(f.poll().is_none());
        f.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n");
        assert!(f.poll().is_none(), "a broken stream stays broken");

        let mut f = Framer::new();
        f.push(b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 100000\r\n\r\n");
        let r = refusal(&f.poll().unwrap()).clone();
        assert_eq!(
            (r.status, r.cseq.as_deref(), r.fatal),
            (StatusCode::RequestMessageBodyTooLarge, Some("3"), true)
        );

        let mut f = Framer::new();
        f.push(b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 4\r\nContent-Length: -1\r\n\r\n");
        assert!(refusal(&f.poll().unwrap()).fatal);
    }

    /// A request whose `Content-Length` makes `head + body` exactly
    /// `2^64 + wrap_to` bytes: what used to wrap to `wrap_to` in release
    /// builds (and panic in debug ones).
    fn wrapping_request(wrap_to: u64) -> Vec<u8> {
        let head = |len: u64| {
            format!("SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 5\r\nContent-Length: {len}\r\n\r\n")
        };
        // Any length near u64::MAX has 20 digits: the head's size is fixed.
        let head_len = head(u64::MAX).len() as u64;
        head(u64::MAX - head_len + 1 + wrap_to).into_bytes()
    }

    #[test]
    fn content_lengths_near_u64_max_are_fatal_not_wrapped() {
        for wrap_to in [0, 1, 40] {
            let mut f = Framer::new();
            f.push(&wrapping_request(wrap_to));
            f.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 6\r\n\r\n");
            let got = all(&mut f);
            assert_eq!(got.len(), 1, "one refusal, then nothing: {got:?}");
            let r = refusal(&got[0]);
            assert_eq!(
                (r.status, r.cseq.as_deref(), r.fatal),
                (StatusCode::RequestMessageBodyTooLarge, Some("5"), true)
            );
        }
        let head = "SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 7\r\nContent-Length: ";
        for len in [u64::MAX, u64::MAX - 1, 1 << 63, u64::from(u32::MAX), usize::MAX as u64, 8193] {
            let mut f = Framer::new();
            f.push(format!("{head}{len}\r\n\r\n").as_bytes());
            let r = refusal(&f.poll().expect("a refusal")).clone();
            assert_eq!((r.status, r.fatal), (StatusCode::RequestMessageBodyTooLarge, true), "{len}");
        }
        // The largest request that fits is taken, one byte more is not.
        let head_len = format!("{head}0000\r\n\r\n").len();
        for (extra, fits) in [(0, true), (1, false)] {
            let body = MAX_REQUEST_BYTES - head_len + extra;
            let mut f = Framer::new();
            f.push(format!("{head}{body:04}\r\n\r\n").as_bytes());
            f.push(&vec![b'x'; body]);
            match f.poll() {
                Some(Inbound::Request(r)) if fits => assert_eq!(r.body().len(), body),
                Some(Inbound::Refused(r)) if !fits => assert!(r.fatal),
                other => panic!("body of {body}: {other:?}"),
            }
        }
        assert_eq!(request_len(usize::MAX, 1), None);
        assert_eq!(request_len(10, u64::MAX), None);
        assert_eq!(request_len(10, 20), Some(30));
    }

    #[test]
    fn two_content_lengths_are_fatal() {
        let mut f = Framer::new();
        f.push(b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 0\r\ncontent-length: 4\r\n\r\nabcd");
        let r = refusal(&f.poll().expect("a refusal")).clone();
        assert_eq!((r.status, r.fatal), (StatusCode::BadRequest, true));
    }

    #[test]
    fn a_buffer_full_of_responses_is_dropped_without_recursion() {
        let mut f = Framer::new();
        for _ in 0..20_000 {
            f.push(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
        }
        f.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n");
        // On a small stack, as a tokio worker's would be under load.
        let got = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || all(&mut f).len())
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(got, 1);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..40)
        ) {
            let mut f = Framer::new();
            for c in &chunks {
                f.push(c);
                while f.poll().is_some() {}
                prop_assert!(f.buffered() <= MAX_REQUEST_BYTES + 600);
            }
        }

        #[test]
        fn truncated_and_corrupted_requests_never_panic(cut in 0usize..120, flip in 0usize..120, val in any::<u8>()) {
            let mut req = b"SETUP rtsp://127.0.0.1:8554/cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n\
    Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n".to_vec();
            let i = flip % req.len();
            req[i] = val;
            req.truncate(cut.min(req.len()));
            let mut f = Framer::new();
            f.push(&req);
            while f.poll().is_some() {}
        }
    }
}
