//! The segment file format: one record per GOP, a fixed header then a body,
//! so a segment is readable (and repairable) from its first byte without an
//! index file.
//!
//! Header, [`HEADER_LEN`] bytes, big-endian like the wire codec:
//!
//! ```text
//! magic "PSEG" | version u8 | 3 zero bytes | crc32 u32 | body_len u32 |
//! frame_count u32 | wall_ms u64 | end_ms u64 | seq u64
//! ```
//!
//! Body: `codec u8 | width u16 | height u16 | ps_count u8 | (len u16, bytes)*`
//! then `frame_count` times `pts u64 | keyframe u8 | len u32 | payload`.
//!
//! The CRC covers the header after itself (length, count, times, seq) and the
//! body: a flipped time in a header would otherwise move a GOP silently.
//! `end_ms` ([`RecordedGop::end_wall_ms`]) is in the header so the time index
//! is built from headers alone.

use crate::media::{Codec, CodecConfig, Frame};
use crate::recall::RecordedGop;
use crate::wire::{MAX_FRAME_LEN, MAX_PARAMETER_SET_LEN};
use bytes::{Buf, Bytes};
use std::sync::Arc;

/// Bytes of a record's fixed header.
pub const HEADER_LEN: usize = 44;
/// First bytes of every record.
pub const MAGIC: [u8; 4] = *b"PSEG";
/// Format version written.
pub const VERSION: u8 = 1;
/// Largest record body accepted: 64 MiB (four maximal frames).
pub const MAX_BODY_LEN: usize = 64 << 20;
/// Most parameter sets in a record (VPS, SPS, PPS and a few spares).
pub const MAX_PARAMETER_SETS: usize = 16;
/// Bytes of a frame's header in the body (pts, keyframe, len).
const FRAME_HEAD_LEN: usize = 13;

/// The fixed header of a record, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// CRC32 of the header after the CRC field and of the body.
    pub crc: u32,
    /// Bytes of the body.
    pub body_len: u32,
    /// Frames in the body.
    pub frame_count: u32,
    /// Wall-clock time of the keyframe, Unix ms.
    pub wall_ms: u64,
    /// Wall-clock time just after the last frame, Unix ms.
    pub end_ms: u64,
    /// The track's GOP sequence number.
    pub seq: u64,
}

impl Header {
    /// Bytes of the whole record (header and body).
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.body_len)
    }
}

/// Why a record cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The file ends inside the record (a write cut short by a crash).
    #[error("record cut short: {have} of {need} bytes")]
    Short {
        /// Bytes present.
        have: u64,
        /// Bytes the record needs.
        need: u64,
    },
    /// The record does not start with the magic bytes.
    #[error("no record magic (found {found:02x?})")]
    BadMagic {
        /// What was there instead.
        found: [u8; 4],
    },
    /// A format version (or reserved bytes) this build does not read.
    #[error("record version {0} or reserved bytes unknown, this build reads version {VERSION}")]
    BadVersion(u8),
    /// The header's body length is over [`MAX_BODY_LEN`].
    #[error("record body of {0} bytes, over the {MAX_BODY_LEN}-byte limit")]
    TooLong(u64),
    /// Header or body changed since written.
    #[error("CRC mismatch: header says {stored:08x}, content gives {computed:08x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The body does not parse (its CRC matched, so it was written so).
    #[error("malformed record body: {0}")]
    Body(&'static str),
}

/// Why a GOP cannot be recorded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A frame over [`MAX_FRAME_LEN`].
    #[error("a frame of {0} bytes, over the {MAX_FRAME_LEN}-byte limit")]
    Frame(usize),
    /// A parameter set over [`MAX_PARAMETER_SET_LEN`].
    #[error("a parameter set of {0} bytes, over the {MAX_PARAMETER_SET_LEN}-byte limit")]
    ParameterSet(usize),
    /// More than [`MAX_PARAMETER_SETS`] parameter sets.
    #[error("{0} parameter sets, over the limit of {MAX_PARAMETER_SETS}")]
    ParameterSets(usize),
    /// The whole GOP is over [`MAX_BODY_LEN`].
    #[error("a GOP of {0} bytes, over the {MAX_BODY_LEN}-byte record limit")]
    Gop(usize),
    /// A GOP without frames.
    #[error("a GOP without frames")]
    Empty,
}

/// Assembles the whole record of `gop`, to be written with one `write_all`.
pub fn encode(gop: &RecordedGop) -> Result<Vec<u8>, EncodeError> {
    let config = &gop.config;
    if gop.frames.is_empty() {
        return Err(EncodeError::Empty);
    }
    if config.parameter_sets.len() > MAX_PARAMETER_SETS {
        return Err(EncodeError::ParameterSets(config.parameter_sets.len()));
    }
    let mut body_len = 6usize;
    for ps in &config.parameter_sets {
        if ps.len() > MAX_PARAMETER_SET_LEN {
            return Err(EncodeError::ParameterSet(ps.len()));
        }
        body_len += 2 + ps.len();
    }
    for f in &gop.frames {
        if f.payload.len() > MAX_FRAME_LEN {
            return Err(EncodeError::Frame(f.payload.len()));
        }
        body_len = body_len.saturating_add(FRAME_HEAD_LEN + f.payload.len());
    }
    if body_len > MAX_BODY_LEN {
        return Err(EncodeError::Gop(body_len));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&[0; 4]); // CRC, filled below
                                    // The limits checked above keep every count and length within u32.
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&(gop.frames.len() as u32).to_be_bytes());
    out.extend_from_slice(&gop.wall_ms.to_be_bytes());
    out.extend_from_slice(&gop.end_wall_ms().to_be_bytes());
    out.extend_from_slice(&gop.seq.to_be_bytes());
    out.push(config.codec.as_u8());
    out.extend_from_slice(&config.width.to_be_bytes());
    out.extend_from_slice(&config.height.to_be_bytes());
    out.push(config.parameter_sets.len() as u8);
    for ps in &config.parameter_sets {
        out.extend_from_slice(&(ps.len() as u16).to_be_bytes());
        out.extend_from_slice(ps);
    }
    for f in &gop.frames {
        out.extend_from_slice(&f.pts.to_be_bytes());
        out.push(u8::from(f.keyframe));
        out.extend_from_slice(&(f.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&f.payload);
    }
    let crc = crc_of(&out);
    if let Some(slot) = out.get_mut(8..12) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(out)
}

/// CRC of a record: its bytes after the CRC field (header rest and body).
pub fn crc_of(record: &[u8]) -> u32 {
    crc32fast::hash(record.get(12..).unwrap_or_default())
}

/// Parses a record's fixed header (without checking the CRC, which needs the body).
pub fn parse_header(buf: &[u8; HEADER_LEN]) -> Result<Header, RecordError> {
    let mut b = &buf[..];
    let mut magic = [0; 4];
    b.copy_to_slice(&mut magic);
    if magic != MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    let version = b.get_u8();
    if version != VERSION {
        return Err(RecordError::BadVersion(version));
    }
    let mut reserved = [0; 3];
    b.copy_to_slice(&mut reserved);
    if reserved != [0; 3] {
        return Err(RecordError::BadVersion(version));
    }
    let header = Header {
        crc: b.get_u32(),
        body_len: b.get_u32(),
        frame_count: b.get_u32(),
        wall_ms: b.get_u64(),
        end_ms: b.get_u64(),
        seq: b.get_u64(),
    };
    if header.body_len as usize > MAX_BODY_LEN {
        return Err(RecordError::TooLong(header.body_len.into()));
    }
    Ok(header)
}

/// Checks a whole record (header and body) and returns its header.
pub fn verify(record: &[u8]) -> Result<Header, RecordError> {
    let head: &[u8; HEADER_LEN] = record
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(RecordError::Short { have: record.len() as u64, need: HEADER_LEN as u64 })?;
    let header = parse_header(head)?;
    if (record.len() as u64) < header.record_len() {
        return Err(RecordError::Short { have: record.len() as u64, need: header.record_len() });
    }
    let record = record.get(..header.record_len() as usize).unwrap_or_default();
    let computed = crc_of(record);
    if computed != header.crc {
        return Err(RecordError::Crc { stored: header.crc, computed });
    }
    Ok(header)
}

/// Decodes a whole record; frame payloads are slices of `record`, not copies.
pub fn decode(record: Bytes) -> Result<RecordedGop, RecordError> {
    let header = verify(&record)?;
    let mut body = record.slice(HEADER_LEN..header.record_len() as usize);
    let bad = RecordError::Body;
    let codec =
        Codec::from_u8(body.try_get_u8().map_err(|_| bad("no codec"))?).ok_or(bad("unknown codec"))?;
    let width = body.try_get_u16().map_err(|_| bad("no width"))?;
    let height = body.try_get_u16().map_err(|_| bad("no height"))?;
    let ps_count = body.try_get_u8().map_err(|_| bad("no parameter set count"))? as usize;
    if ps_count > MAX_PARAMETER_SETS {
        return Err(bad("too many parameter sets"));
    }
    let mut parameter_sets = Vec::with_capacity(ps_count);
    for _ in 0..ps_count {
        let len = body.try_get_u16().map_err(|_| bad("parameter set length cut short"))? as usize;
        if len > MAX_PARAMETER_SET_LEN || len > body.len() {
            return Err(bad("parameter set too long"));
        }
        parameter_sets.push(body.split_to(len));
    }
    let frame_count = header.frame_count as usize;
    // Every frame takes at least its head: bounds the allocation by the body read.
    if frame_count == 0 || frame_count > body.len() / FRAME_HEAD_LEN {
        return Err(bad("frame count does not fit the body"));
    }
    let mut frames = Vec::with_capacity(frame_count);
    for _ in 0..frame_count {
        let pts = body.try_get_u64().map_err(|_| bad("frame header cut short"))?;
        let keyframe = body.try_get_u8().map_err(|_| bad("frame header cut short"))? != 0;
        let len = body.try_get_u32().map_err(|_| bad("frame header cut short"))? as usize;
        if len > MAX_FRAME_LEN || len > body.len() {
            return Err(bad("frame longer than the body"));
        }
        frames.push(Frame { pts, keyframe, payload: body.split_to(len) });
    }
    if !body.is_empty() {
        return Err(bad("bytes after the last frame"));
    }
    Ok(RecordedGop {
        wall_ms: header.wall_ms,
        seq: header.seq,
        config: Arc::new(CodecConfig { codec, width, height, parameter_sets }),
        frames,
    })
}
