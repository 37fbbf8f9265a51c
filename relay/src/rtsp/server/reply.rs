//! A response being built, encoded with its CSeq and reason phrase.

use bytes::Bytes;
use rtsp_types::StatusCode;
use std::fmt::Write as _;

/// A response being built.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn new(status: StatusCode) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    pub(super) fn ok() -> Self {
        Self::new(StatusCode::Ok)
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(super) fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    pub(super) fn encode(&self, cseq: Option<&str>) -> Bytes {
        let code = u16::from(self.status);
        let mut s = format!("RTSP/1.0 {code} {}\r\n", reason_phrase(self.status));
        if let Some(cseq) = cseq {
            let _ = write!(s, "CSeq: {cseq}\r\n");
        }
        let _ = write!(s, "Server: ponte-relay/{}\r\n", env!("CARGO_PKG_VERSION"));
        for (name, value) in &self.headers {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

pub(super) fn reason_phrase(status: StatusCode) -> &'static str {
    match u16::from(status) {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        _ => "Error",
    }
}
