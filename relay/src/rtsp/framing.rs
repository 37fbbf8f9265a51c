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
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    #[cfg(test)]
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
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        // Bare line ends between messages are tolerated (some clients send
        // them as keep-alives).
        while matches!(self.buf.first(), Some(b'\r' | b'\n')) {
            self.buf.advance(1);
        }
        match self.buf.first()? {
            b'$' => {
                if self.buf.len() < 4 {
                    return None;
                }
                let channel = self.buf[1];
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]);
                self.buf.advance(4);
                self.skip = usize::from(len);
                Some(Inbound::Interleaved { channel, len })
            }
            _ => self.request(),
        }
    }

    fn request(&mut self) -> Option<Inbound> {
        let window = &self.buf[..self.buf.len().min(MAX_REQUEST_BYTES)];
        let Some(head_end) = find(window, b"\r\n\r\n").map(|i| i + 4) else {
            if self.buf.len() >= MAX_REQUEST_BYTES {
                return Some(self.fatal(
                    StatusCode::BadRequest,
                    None,
                    format!("request header exceeds {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            return None;
        };
        let head = &self.buf[..head_end];
        let cseq = header(head, "cseq").map(str::to_owned);
        let body_len = match header(head, "content-length").map(|v| v.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Some(self.fatal(StatusCode::BadRequest, cseq, "invalid Content-Length".into()))
            }
        };
        if head_end + body_len > MAX_REQUEST_BYTES {
            return Some(self.fatal(
                StatusCode::RequestMessageBodyTooLarge,
                cseq,
                format!("request of {} bytes exceeds {MAX_REQUEST_BYTES}", head_end + body_len),
            ));
        }
        if self.buf.len() < head_end + body_len {
            return None;
        }
        let lines = head.split(|&b| b == b'\n').count().saturating_sub(3);
        let message = self.buf.split_to(head_end + body_len);
        let refuse = |status, reason: String| {
            Some(Inbound::Refused(Refusal { status, cseq: cseq.clone(), reason, fatal: false }))
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
                Some(Inbound::Request(Box::new(req)))
            }
            Ok((Message::Request(_), _)) => {
                refuse(StatusCode::RTSPVersionNotSupported, "only RTSP/1.0 is supported".into())
            }
            Ok((Message::Response(_), _)) => {
                // A response to nothing we asked: ignore it.
                self.poll()
            }
            Ok((Message::Data(_), _)) | Err(_) => refuse(StatusCode::BadRequest, "malformed request".into()),
        }
    }

    fn fatal(&mut self, status: StatusCode, cseq: Option<String>, reason: String) -> Inbound {
        self.broken = true;
        self.buf.clear();
        Inbound::Refused(Refusal { status, cseq, reason, fatal: true })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Value of header `name` (lower case) in a raw request head, trimmed.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
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
