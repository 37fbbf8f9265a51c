//! Reads the framing of a GOP stream without copying frame payloads. The
//! bench's subscribers share the machine with the relay they measure, so
//! they must cost no more than the transport-limit receiver, which only
//! counts bytes: only headers and the first bytes of each frame (where the
//! capture-time SEI is) are looked at.

use ponte_proto::wire::{FRAME_HEADER_LEN, MEDIA_MAGIC};

/// Bytes kept from the start of each frame: parameter sets and the SEI.
pub const PREFIX: usize = 256;
/// Fixed part of the GOP header (magic … parameter set count).
const GOP_FIXED: usize = 26;

/// One frame as the scanner saw it.
#[derive(Debug, Clone, Copy)]
pub struct ScannedFrame<'a> {
    /// Subscription id of its GOP stream.
    pub subscription: u64,
    /// Presentation time, 90 kHz, as the sending agent stamped it.
    pub pts: u64,
    /// Whether the header flags it a keyframe.
    pub keyframe: bool,
    /// Payload length.
    pub len: usize,
    /// The payload's first [`PREFIX`] bytes.
    pub prefix: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    GopHeader,
    FrameHeader,
    Payload,
}

/// Incremental scanner of one media stream.
#[derive(Debug)]
pub struct FrameScanner {
    state: State,
    head: Vec<u8>,
    subscription: u64,
    pts: u64,
    keyframe: bool,
    len: usize,
    remaining: usize,
    prefix: Vec<u8>,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            state: State::GopHeader,
            head: Vec::with_capacity(64),
            subscription: 0,
            pts: 0,
            keyframe: false,
            len: 0,
            remaining: 0,
            prefix: Vec::with_capacity(PREFIX),
        }
    }
}

/// Length of a complete GOP header at the start of `b`, if it is all there.
fn gop_header_len(b: &[u8]) -> Option<usize> {
    if b.len() < GOP_FIXED {
        return None;
    }
    let mut pos = GOP_FIXED;
    for _ in 0..b[GOP_FIXED - 1] {
        let len = b.get(pos..pos + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))?;
        pos += 2 + len;
    }
    (b.len() >= pos).then_some(pos)
}

impl FrameScanner {
    /// Feeds received bytes; `on_frame` is called as each frame completes.
    /// An error for bytes that are not a ponte media stream.
    pub fn push(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(ScannedFrame<'_>),
    ) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                State::GopHeader => {
                    let take = data.len().min(256);
                    self.head.extend_from_slice(&data[..take]);
                    if self.head.len() >= 3 && self.head[..2] != MEDIA_MAGIC {
                        return Err(format!("not a media stream: starts {:02x?}", &self.head[..3]));
                    }
                    match gop_header_len(&self.head) {
                        Some(total) => {
                            let mut id = [0u8; 8];
                            id.copy_from_slice(&self.head[3..11]);
                            self.subscription = u64::from_be_bytes(id);
                            // Bytes taken past the header belong to the first frame.
                            data = &data[take - (self.head.len() - total)..];
                            self.head.clear();
                            self.state = State::FrameHeader;
                        }
                        None => data = &data[take..],
                    }
                }
                State::FrameHeader => {
                    let take = (FRAME_HEADER_LEN - self.head.len()).min(data.len());
                    self.head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.head.len() == FRAME_HEADER_LEN {
                        let mut pts = [0u8; 8];
                        pts.copy_from_slice(&self.head[..8]);
                        self.pts = u64::from_be_bytes(pts);
                        self.keyframe = self.head[8] & 1 != 0;
                        let l = &self.head[9..13];
                        self.len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                        self.remaining = self.len;
                        self.head.clear();
                        self.prefix.clear();
                        self.state = State::Payload;
                        if self.len == 0 {
                            on_frame(self.frame());
                            self.state = State::FrameHeader;
                        }
                    }
                }
                State::Payload => {
                    let take = self.remaining.min(data.len());
                    let keep = PREFIX.saturating_sub(self.prefix.len()).min(take);
                    self.prefix.extend_from_slice(&data[..keep]);
                    self.remaining -= take;
                    data = &data[take..];
                    if self.remaining == 0 {
                        on_frame(self.frame());
                        self.state = State::FrameHeader;
                    }
                }
            }
        }
        Ok(())
    }

    /// The frame whose header was read last, with the prefix kept so far.
    fn frame(&self) -> ScannedFrame<'_> {
        ScannedFrame {
            subscription: self.subscription,
            pts: self.pts,
            keyframe: self.keyframe,
            len: self.len,
            prefix: &self.prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use ponte_proto::media::{Codec, CodecConfig, Frame, Quality};
    use ponte_proto::wire::{encode_frame_header, GopHeader, MediaDecoder, MediaEvent};

    #[test]
    fn scans_what_the_decoder_decodes_whatever_the_chunking() {
        let header = GopHeader {
            subscription: 0x0102_0304_0506_0708,
            quality: Quality::Main,
            seq: 9,
            config: CodecConfig {
                codec: Codec::H264,
                width: 640,
                height: 360,
                parameter_sets: vec![Bytes::from_static(&[0x67, 1, 2, 3]), Bytes::from(vec![0x68; 300])],
            },
        };
        let frames: Vec<Frame> = [1000usize, 0, 17, 300, 5000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Frame {
                pts: 0x0011_2233_4455_0000 + i as u64,
                keyframe: i == 0,
                payload: (0..n).map(|b| (b * 7 + i) as u8).collect::<Vec<u8>>().into(),
            })
            .collect();
        let mut stream = BytesMut::new();
        header.encode(&mut stream);
        for f in &frames {
            stream.put_slice(&encode_frame_header(f));
            stream.put_slice(&f.payload);
        }
        let mut dec = MediaDecoder::new();
        dec.push(&stream);
        let mut want = Vec::new();
        while let Some(ev) = dec.poll().unwrap() {
            if let MediaEvent::Frame(f) = ev {
                let n = f.payload.len().min(PREFIX);
                want.push((header.subscription, f.pts, f.keyframe, f.payload.len(), f.payload[..n].to_vec()));
            }
        }
        assert_eq!(want.len(), frames.len());
        for chunk in [1, 2, 13, 100, 1500, stream.len()] {
            let mut scan = FrameScanner::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                scan.push(c, |f| got.push((f.subscription, f.pts, f.keyframe, f.len, f.prefix.to_vec())))
                    .unwrap();
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
        assert!(FrameScanner::default().push(b"HTTP/1.1", |_| {}).is_err());
    }
}
