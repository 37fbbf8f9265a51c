//! Wire codec: control messages on the bidirectional control stream, and
//! GOP framing on unidirectional media streams. Sans-IO: decoders take bytes
//! and return typed errors on any malformed input, never panic.

use crate::media::{Codec, CodecConfig, Frame, Quality};
use crate::ptz::{PtzCommand, PtzHolder, PtzReply};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// ALPN protocol identifier of ponte sessions.
pub const ALPN: &[u8] = b"ponte/1";
/// Protocol version carried in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest control message accepted (a catalog of thousands of cameras fits).
pub const MAX_CONTROL_LEN: usize = 1 << 20;
/// Largest media frame accepted (a 4K I-frame fits comfortably).
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Largest parameter set accepted.
pub const MAX_PARAMETER_SET_LEN: usize = 4096;
/// Magic bytes opening every media stream.
pub const MEDIA_MAGIC: [u8; 2] = *b"PG";
/// Media framing version.
pub const MEDIA_VERSION: u8 = 1;
/// Longest viewer name a control message may carry (`Subscribe`, `Ptz`,
/// `Viewers`): an account, token or cascade name, before the agent adds
/// `@site`.
pub const MAX_VIEWER_LEN: usize = 128;
/// Most viewers one `Viewers` message may name; a relay with more viewers
/// of one camera names the first ones (sorted) and the count.
pub const MAX_VIEWERS: usize = 256;

/// A playback request: where in the recording to start, and where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playback {
    /// Start, Unix milliseconds: playback begins at the GOP holding it.
    pub from_ms: u64,
    /// End, Unix milliseconds; absent: on until the live edge and beyond,
    /// following the recording as it grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<u64>,
}

/// Magic bytes opening an export stream (vs [`MEDIA_MAGIC`] of a GOP stream).
pub const EXPORT_MAGIC: [u8; 2] = *b"PX";
/// Largest signed manifest an export stream may carry.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Largest clip an export stream may carry (ten minutes at 8 Mbit/s is
/// 600 MB).
pub const MAX_EXPORT_LEN: u64 = 1 << 30;
/// Length of an export stream's header before the manifest.
pub const EXPORT_HEADER_LEN: usize = 2 + 1 + 8 + 4 + 8;

/// Header of an export stream: the export id, then the signed manifest
/// (`manifest_len` bytes of JSON), then the MP4 (`clip_len` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportHeader {
    /// Export id of the `Export` request.
    pub export: u64,
    /// Bytes of the signed manifest that follow the header.
    pub manifest_len: u32,
    /// Bytes of the MP4 that follow the manifest.
    pub clip_len: u64,
}

impl ExportHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; EXPORT_HEADER_LEN] {
        let mut out = [0u8; EXPORT_HEADER_LEN];
        out[..2].copy_from_slice(&EXPORT_MAGIC);
        out[2] = MEDIA_VERSION;
        out[3..11].copy_from_slice(&self.export.to_be_bytes());
        out[11..15].copy_from_slice(&self.manifest_len.to_be_bytes());
        out[15..23].copy_from_slice(&self.clip_len.to_be_bytes());
        out
    }

    /// Parses a header, refusing lengths over the limits.
    pub fn decode(b: &[u8; EXPORT_HEADER_LEN]) -> Result<Self, WireError> {
        let (magic, version) = ([b[0], b[1]], b[2]);
        if magic != EXPORT_MAGIC || version != MEDIA_VERSION {
            return Err(WireError::BadMagic { magic, version });
        }
        let mut r = &b[3..];
        let h = ExportHeader { export: r.get_u64(), manifest_len: r.get_u32(), clip_len: r.get_u64() };
        if h.manifest_len as usize > MAX_MANIFEST_LEN {
            return Err(WireError::TooLong {
                what: "export manifest",
                len: h.manifest_len as usize,
                max: MAX_MANIFEST_LEN,
            });
        }
        if h.clip_len > MAX_EXPORT_LEN {
            return Err(WireError::TooLong {
                what: "export clip",
                len: usize::try_from(h.clip_len).unwrap_or(usize::MAX),
                max: MAX_EXPORT_LEN as usize,
            });
        }
        Ok(h)
    }
}

/// Why a decoder refused its input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix exceeds the protocol's limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The control message is not valid JSON of a known message type.
    #[error("malformed control message: {0}")]
    BadControl(String),
    /// The media stream does not start with ponte's magic and version.
    #[error("not a ponte media stream (magic {magic:02x?}, version {version})")]
    BadMagic {
        /// Bytes found instead of the magic.
        magic: [u8; 2],
        /// Version byte found.
        version: u8,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The stream ended in the middle of a header or frame.
    #[error("stream ended inside a {0}")]
    Truncated(&'static str),
}

/// Role of a node in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The master room's agent.
    Agent,
    /// A site relay (possibly feeding a cascade).
    Relay,
}

/// A camera (one lens) a site may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Stable camera id (one per lens).
    pub id: String,
    /// Device this lens belongs to.
    pub device: String,
    /// Lens number within the device, from 1.
    pub lens: u8,
    /// Human name (place).
    pub name: String,
    /// Zone / neighbourhood.
    pub zone: String,
    /// Camera type: `dome-ptz`, `dome`, `fixed-bi-optic`, `fixed-quad-optic`, `fixed`.
    pub kind: String,
    /// Video codec of the main stream.
    pub codec: Codec,
    /// Qualities the site may subscribe to.
    pub qualities: Vec<Quality>,
    /// Whether the site may steer this camera.
    pub ptz: bool,
    /// Streamed to the site even with no viewer (e.g. for its VMS): the
    /// relay keeps it subscribed.
    #[serde(default)]
    pub always_on: bool,
    /// Codec of the substream, when it is known to differ from `codec` or
    /// made by the agent; absent (older agents, same codec as the main
    /// stream) it is `codec`. Read it through [`CatalogEntry::substream`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_codec: Option<Codec>,
    /// The substream is transcoded by the agent from the main stream
    /// (`browser_h264 = "transcode"`): an H.264 picture of at most 640×360
    /// for browsers that cannot play the main, made only while watched and
    /// capped by `agent.max_transcodes`. Absent in older messages: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sub_transcoded: bool,
    /// The device's tags (`[[device]] tags`), for operators to search by;
    /// absent in older messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Sent on every path to the relay at once (issue 22, `dual_path`):
    /// the relay subscribes it on each of the agent's links and keeps the
    /// first copy of each frame.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dual_path: bool,
}

impl CatalogEntry {
    /// The substream, if the site may subscribe to it: its codec and
    /// whether the agent transcodes it.
    pub fn substream(&self) -> Option<(Codec, bool)> {
        self.qualities
            .contains(&Quality::Sub)
            .then(|| (self.sub_codec.unwrap_or(self.codec), self.sub_transcoded))
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscribeErrorCode {
    /// No such camera (or not visible to this site).
    Unknown,
    /// Policy forbids it.
    Forbidden,
    /// The camera is not delivering video.
    Offline,
    /// The site's link budget has no room.
    OverBudget,
    /// Nothing is recorded of the camera at the time asked for (playback).
    NotRecorded,
}

impl SubscribeErrorCode {
    /// Kebab-case name, as in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SubscribeErrorCode::Unknown => "unknown",
            SubscribeErrorCode::Forbidden => "forbidden",
            SubscribeErrorCode::Offline => "offline",
            SubscribeErrorCode::OverBudget => "over-budget",
            SubscribeErrorCode::NotRecorded => "not-recorded",
        }
    }
}

/// Counters exchanged periodically on the control stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// Active subscriptions.
    pub subscriptions: u32,
    /// Media bytes sent since the session started.
    pub bytes_sent: u64,
    /// Media bytes received since the session started.
    pub bytes_received: u64,
    /// GOPs dropped (reset or skipped) since the session started.
    pub gops_dropped: u64,
    /// Viewers served (relay only).
    pub viewers: u32,
    /// The receiving site's link budget, bit/s (agent only; absent when
    /// unlimited): the partner's console shows how much of it is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bps: Option<u64>,
}

/// Messages of the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// First message of each side.
    Hello {
        /// Protocol version (`PROTOCOL_VERSION`).
        version: u32,
        /// Node id of the sender.
        node: String,
        /// Role of the sender.
        role: Role,
        /// Digest of the access policy the sender applies to the receiver
        /// (agent only, [`crate::redundancy::digest`]): two agents of one
        /// master room must agree, and a relay fed by both shows a mismatch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
    },
    /// The agent's policy for the receiving site changed (a reload): its
    /// new digest, as in `Hello` (agent → relay).
    Policy {
        /// The new digest.
        digest: String,
    },
    /// How many agents feed this relay now (relay → agent): each agent
    /// spends `1/parts` of the site's link budget, so two agents together
    /// stay within it. Capped at the agent by its own `[redundancy]` peers.
    BudgetShare {
        /// Agents with a link up to the relay, this one included (≥ 1).
        parts: u32,
    },
    /// Cameras this site may see (sender → receiver); replaces any earlier one.
    Catalog {
        /// The cameras.
        cameras: Vec<CatalogEntry>,
    },
    /// Start sending a camera at a quality.
    Subscribe {
        /// Subscription id chosen by the subscriber, unique per session.
        id: u64,
        /// Camera id.
        camera: String,
        /// Requested quality.
        quality: Quality,
        /// The viewer at the subscriber's site whose request opened it
        /// (`op`, `token:name`, `cascade:<site>`); the agent records it as
        /// `viewer@site`, the site taken from the peer's certificate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        viewer: Option<String>,
        /// Play the recording back from a time instead of live (issue 21);
        /// absent: live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        playback: Option<Playback>,
    },
    /// What is recorded of a camera (relay → agent), answered by one
    /// `RecordingsInfo` with the same id.
    Recordings {
        /// Request id chosen by the relay.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality.
        quality: Quality,
    },
    /// The recorded ranges of a camera, or why the site may not know them.
    RecordingsInfo {
        /// Id of the `Recordings` request.
        id: u64,
        /// Recorded ranges, `[from_ms, to_ms]` Unix milliseconds, oldest first.
        #[serde(default)]
        ranges: Vec<[u64; 2]>,
        /// How far back the site may reach, Unix ms (its `max_lookback_hours`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        earliest_ms: Option<u64>,
        /// Whether the site may take exports of it.
        #[serde(default)]
        export: bool,
        /// Why not, when refused (no `playback` right, not recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// An evidence export of a recorded interval (relay → agent): the agent
    /// answers `ExportResult`, and on success sends the clip and its signed
    /// manifest on one unidirectional stream ([`ExportHeader`]).
    Export {
        /// Export id chosen by the relay.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality.
        quality: Quality,
        /// Start, Unix ms.
        from_ms: u64,
        /// End, Unix ms.
        to_ms: u64,
        /// The operator at the site who asked (as in `Subscribe`).
        viewer: String,
    },
    /// The outcome of an `Export` (agent → relay).
    ExportResult {
        /// Export id.
        id: u64,
        /// Why not, when refused or failed (names the missing right).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
        /// Size of the clip on its way, bytes (on success).
        #[serde(default)]
        bytes: u64,
    },
    /// Who watches a subscription at the subscriber's site now (relay →
    /// agent), sent whenever the list changes: the whole list, so the
    /// agent's audit names each operator who starts or stops watching even
    /// though the relay shares one subscription among its viewers.
    Viewers {
        /// Subscription id.
        id: u64,
        /// Viewer names, as in `Subscribe` (at most [`MAX_VIEWERS`]).
        viewers: Vec<String>,
        /// Viewers not named because the list was full.
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u32,
    },
    /// The head of the sender's audit chain (both ways, every
    /// `audit.anchor_every_secs` and at shutdown): the receiver writes it
    /// into its own chain as an `anchor` line, so a cut or rewritten tail of
    /// one agency's log is caught by the other agency's log.
    AuditHead {
        /// Sequence number of the sender's newest audit line.
        seq: u64,
        /// Its hash (64 hex digits).
        hash: String,
    },
    /// Stop sending.
    Unsubscribe {
        /// Subscription id.
        id: u64,
    },
    /// Subscription accepted; GOPs follow on media streams.
    SubscribeOk {
        /// Subscription id.
        id: u64,
        /// Codec of the stream.
        codec: Codec,
    },
    /// Subscription refused, or ended by the sender.
    SubscribeError {
        /// Subscription id.
        id: u64,
        /// Why.
        code: SubscribeErrorCode,
        /// Human explanation naming the camera and what to do.
        reason: String,
    },
    /// Periodic counters.
    Stats(StatsReport),
    /// The sender stopped sending a subscription's media to keep the link
    /// inside its budget; the subscription stays open (sender → receiver).
    Paused {
        /// Subscription id.
        id: u64,
        /// Why, for the viewer (e.g. "link budget").
        reason: String,
    },
    /// Media of a paused subscription flows again.
    Resumed {
        /// Subscription id.
        id: u64,
    },
    /// A PTZ command from a viewer of the receiving site (relay → agent);
    /// answered by exactly one `PtzResult` with the same id.
    Ptz {
        /// Request id chosen by the relay, unique per session.
        id: u64,
        /// Camera id.
        camera: String,
        /// The viewer (account) at the site who sent it, for the lock and the audit.
        viewer: String,
        /// What to do.
        command: PtzCommand,
    },
    /// Answer to `Ptz` (agent → relay).
    PtzResult {
        /// Request id of the `Ptz`.
        id: u64,
        /// Outcome.
        reply: PtzReply,
    },
    /// A camera's PTZ lock changed hands (taken over, released, lapsed), sent
    /// to every site that may steer it so its viewers see who holds it.
    PtzLock {
        /// Camera id.
        camera: String,
        /// The new holder; None when free.
        holder: Option<PtzHolder>,
    },
    /// Incident cooperation from the master room (agent → relay): a share,
    /// an answer to an ask, an alarm or its acknowledgement (issue 23).
    Incident {
        /// What happened.
        notice: crate::incident::Notice,
    },
    /// What an operator of the site did about an incident (relay → agent).
    IncidentAction {
        /// What they did.
        action: crate::incident::SiteAction,
    },
    /// Every temporary grant the sender gave or took over, in force or
    /// lately ended (agent ↔ agent, on the `[redundancy]` link).
    Grants {
        /// The grants.
        grants: Vec<crate::incident::PeerGrant>,
    },
}

impl Control {
    /// Appends the length-prefixed encoding of this message to `out`. A
    /// message the peer would refuse as too long is never sent: a
    /// `PtzResult` becomes a `camera-error` refusal of that one command (a
    /// camera's oversized answer must not cost the site its session), any
    /// other message is an error and nothing is appended.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        let too_long = |len| WireError::TooLong { what: "control message", len, max: MAX_CONTROL_LEN };
        let mut json = serde_json::to_vec(self).map_err(|e| WireError::BadControl(e.to_string()))?;
        if json.len() > MAX_CONTROL_LEN {
            let Control::PtzResult { id, .. } = self else { return Err(too_long(json.len())) };
            let reason = format!(
                "the camera's answer makes a message of {} bytes, over the {MAX_CONTROL_LEN}-byte limit of \
                 the link to the master: ask the master room to check the camera",
                json.len()
            );
            let refusal = PtzReply::refused(crate::ptz::PtzErrorCode::CameraError, reason);
            json = serde_json::to_vec(&Control::PtzResult { id: *id, reply: refusal })
                .map_err(|e| WireError::BadControl(e.to_string()))?;
        }
        let len = u32::try_from(json.len()).map_err(|_| too_long(json.len()))?;
        out.put_u32(len);
        out.put_slice(&json);
        Ok(())
    }

    /// Decodes one message from the front of `buf`, advancing it.
    /// Returns `Ok(None)` when more bytes are needed.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Control>, WireError> {
        let Some((len, _)) = buf.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_CONTROL_LEN {
            return Err(WireError::TooLong { what: "control message", len, max: MAX_CONTROL_LEN });
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(len);
        let msg: Control = serde_json::from_slice(&body).map_err(|e| WireError::BadControl(e.to_string()))?;
        msg.check_fields()?;
        Ok(Some(msg))
    }

    /// Refuses fields a peer may not send: viewer names too long or with
    /// control characters, too many viewers, an audit hash that is not 64
    /// hex digits.
    fn check_fields(&self) -> Result<(), WireError> {
        match self {
            Control::Subscribe { viewer: Some(v), .. }
            | Control::Ptz { viewer: v, .. }
            | Control::Export { viewer: v, .. } => check_viewer(v),
            Control::Viewers { viewers, .. } => {
                if viewers.len() > MAX_VIEWERS {
                    return Err(WireError::TooLong {
                        what: "viewer list",
                        len: viewers.len(),
                        max: MAX_VIEWERS,
                    });
                }
                viewers.iter().try_for_each(|v| check_viewer(v))
            }
            Control::Incident { notice } => check_notice(notice),
            Control::IncidentAction { action } => check_action(action),
            Control::Grants { grants } => check_grants(grants),
            Control::AuditHead { hash, .. } => {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(WireError::Invalid("audit head hash"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Checks a viewer name as carried on the wire.
pub fn check_viewer(name: &str) -> Result<(), WireError> {
    if name.len() > MAX_VIEWER_LEN {
        return Err(WireError::TooLong { what: "viewer name", len: name.len(), max: MAX_VIEWER_LEN });
    }
    if name.chars().any(char::is_control) {
        return Err(WireError::Invalid("viewer name"));
    }
    Ok(())
}

/// A viewer name cut to what the wire carries ([`MAX_VIEWER_LEN`] bytes, on
/// a character boundary, control characters dropped).
pub fn wire_viewer(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_VIEWER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Header opening each media stream: one GOP of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GopHeader {
    /// Subscription id this GOP belongs to.
    pub subscription: u64,
    /// Quality actually carried (may differ from the request under shaping).
    pub quality: Quality,
    /// GOP sequence number within the track.
    pub seq: u64,
    /// Decoder configuration for the GOP.
    pub config: CodecConfig,
}

impl GopHeader {
    /// Appends the encoding of this header to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&MEDIA_MAGIC);
        out.put_u8(MEDIA_VERSION);
        out.put_u64(self.subscription);
        out.put_u8(self.quality.as_u8());
        out.put_u64(self.seq);
        out.put_u8(self.config.codec.as_u8());
        out.put_u16(self.config.width);
        out.put_u16(self.config.height);
        let sets: Vec<&Bytes> = self
            .config
            .parameter_sets
            .iter()
            .filter(|p| p.len() <= MAX_PARAMETER_SET_LEN)
            .take(u8::MAX as usize)
            .collect();
        out.put_u8(sets.len() as u8);
        for ps in sets {
            out.put_u16(ps.len() as u16);
            out.put_slice(ps);
        }
    }
}

/// Length of the per-frame header: pts (8), flags (1), length (4).
pub const FRAME_HEADER_LEN: usize = 13;
const FLAG_KEYFRAME: u8 = 1;

/// Encodes a frame header; the payload follows it unchanged (sent as its own
/// `Bytes` chunk so it is never copied).
pub fn encode_frame_header(frame: &Frame) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..8].copy_from_slice(&frame.pts.to_be_bytes());
    h[8] = if frame.keyframe { FLAG_KEYFRAME } else { 0 };
    h[9..].copy_from_slice(&(frame.payload.len() as u32).to_be_bytes());
    h
}

/// What a media stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The stream's GOP header (always first).
    Header(GopHeader),
    /// The next frame.
    Frame(Frame),
}

/// Most a media decoder reserves ahead of the bytes it has received.
const EAGER_RESERVE: usize = 64 * 1024;

/// Incremental decoder of one media stream.
#[derive(Debug, Default)]
pub struct MediaDecoder {
    buf: BytesMut,
    header_seen: bool,
}

impl MediaDecoder {
    /// New decoder for a fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes received from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Returns the next complete event, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<MediaEvent>, WireError> {
        if !self.header_seen {
            return match decode_gop_header(&self.buf)? {
                None => Ok(None),
                Some((header, used)) => {
                    self.buf.advance(used);
                    self.header_seen = true;
                    Ok(Some(MediaEvent::Header(header)))
                }
            };
        }
        let Some((header, _)) = self.buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let mut h: &[u8] = header;
        let pts = h.get_u64();
        let flags = h.get_u8();
        let len = h.get_u32() as usize;
        if len > MAX_FRAME_LEN {
            return Err(WireError::TooLong { what: "frame", len, max: MAX_FRAME_LEN });
        }
        if flags & !FLAG_KEYFRAME != 0 {
            return Err(WireError::Invalid("frame flags"));
        }
        // `len` is at most MAX_FRAME_LEN here, so the sum cannot overflow.
        if self.buf.len() < FRAME_HEADER_LEN + len {
            // Room for the frame grows with what arrived, not with what the
            // peer announced: 13 bytes claiming 16 MiB reserve 64 KiB.
            let missing = FRAME_HEADER_LEN + len - self.buf.len();
            self.buf.reserve(missing.min(self.buf.len().max(EAGER_RESERVE)));
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(MediaEvent::Frame(Frame { pts, keyframe: flags & FLAG_KEYFRAME != 0, payload })))
    }

    /// Bytes the decoder has room for (tests: announced lengths do not
    /// allocate).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Checks the stream ended cleanly (not inside a header or frame).
    pub fn finish(&self) -> Result<(), WireError> {
        if !self.header_seen {
            Err(WireError::Truncated("GOP header"))
        } else if !self.buf.is_empty() {
            Err(WireError::Truncated("frame"))
        } else {
            Ok(())
        }
    }
}

fn decode_gop_header(buf: &[u8]) -> Result<Option<(GopHeader, usize)>, WireError> {
    let mut r = buf;
    const FIXED: usize = 2 + 1 + 8 + 1 + 8 + 1 + 2 + 2 + 1;
    if r.len() < FIXED {
        // Reject a wrong magic as early as possible.
        if let &[m0, m1, version, ..] = r {
            if [m0, m1] != MEDIA_MAGIC || version != MEDIA_VERSION {
                return Err(WireError::BadMagic { magic: [m0, m1], version });
            }
        }
        return Ok(None);
    }
    let magic = [r.get_u8(), r.get_u8()];
    let version = r.get_u8();
    if magic != MEDIA_MAGIC || version != MEDIA_VERSION {
        return Err(WireError::BadMagic { magic, version });
    }
    let subscription = r.get_u64();
    let quality = Quality::from_u8(r.get_u8()).ok_or(WireError::Invalid("quality"))?;
    let seq = r.get_u64();
    let codec = Codec::from_u8(r.get_u8()).ok_or(WireError::Invalid("codec"))?;
    let width = r.get_u16();
    let height = r.get_u16();
    let count = r.get_u8() as usize;
    let mut parameter_sets = Vec::with_capacity(count);
    for _ in 0..count {
        if r.len() < 2 {
            return Ok(None);
        }
        let len = r.get_u16() as usize;
        if len > MAX_PARAMETER_SET_LEN {
            return Err(WireError::TooLong { what: "parameter set", len, max: MAX_PARAMETER_SET_LEN });
        }
        let Some((set, rest)) = r.split_at_checked(len) else {
            return Ok(None);
        };
        parameter_sets.push(Bytes::copy_from_slice(set));
        r = rest;
    }
    let used = buf.len() - r.len();
    let config = CodecConfig { codec, width, height, parameter_sets };
    Ok(Some((GopHeader { subscription, quality, seq, config }, used)))
}

use crate::incident::{
    Notice, SiteAction, MAX_CAMERA_LEN, MAX_SHARE_CAMERAS, MAX_TEXT_LEN, MAX_THUMBNAIL_LEN,
};

fn check_incident_text(what: &'static str, text: &str) -> Result<(), WireError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(WireError::TooLong { what, len: text.len(), max: MAX_TEXT_LEN });
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(WireError::Invalid(what));
    }
    Ok(())
}

fn check_camera_id(camera: &str) -> Result<(), WireError> {
    if camera.len() > MAX_CAMERA_LEN {
        return Err(WireError::TooLong { what: "camera id", len: camera.len(), max: MAX_CAMERA_LEN });
    }
    if camera.is_empty() || camera.chars().any(char::is_control) {
        return Err(WireError::Invalid("camera id"));
    }
    Ok(())
}

/// Refuses grants an agent may not send: too many, or fields a notice
/// could not carry.
pub fn check_grants(grants: &[crate::incident::PeerGrant]) -> Result<(), WireError> {
    if grants.len() > crate::incident::MAX_GRANTS {
        return Err(WireError::TooLong {
            what: "grants",
            len: grants.len(),
            max: crate::incident::MAX_GRANTS,
        });
    }
    for g in grants {
        check_viewer(&g.site)?;
        check_notice(&Notice::Share {
            id: g.id,
            cameras: g.cameras.clone(),
            until_ms: g.until_ms,
            by: g.by.clone(),
            note: g.note.clone(),
            accepted_by: g.accepted_by.clone(),
        })?;
        if let Some(why) = &g.ended {
            check_incident_text("grant end reason", why)?;
        }
        if g.origin != "share" && g.origin != "approval" {
            return Err(WireError::Invalid("grant origin"));
        }
    }
    Ok(())
}

/// Refuses what a relay may not send in an incident action: names and
/// texts too long or with control characters, an ask without a reason.
pub fn check_action(action: &SiteAction) -> Result<(), WireError> {
    match action {
        SiteAction::Accept { operator, .. } | SiteAction::Ack { operator, .. } => check_viewer(operator),
        SiteAction::Ask { camera, operator, reason, .. } => {
            check_viewer(operator)?;
            check_camera_id(camera)?;
            check_incident_text("ask reason", reason)?;
            if reason.trim().is_empty() {
                return Err(WireError::Invalid("ask reason (empty)"));
            }
            Ok(())
        }
    }
}

/// Refuses what an agent may not send in an incident notice (the relay
/// shows these to people).
pub fn check_notice(notice: &Notice) -> Result<(), WireError> {
    match notice {
        Notice::Share { cameras, by, note, accepted_by, .. } => {
            if cameras.len() > MAX_SHARE_CAMERAS {
                return Err(WireError::TooLong {
                    what: "shared cameras",
                    len: cameras.len(),
                    max: MAX_SHARE_CAMERAS,
                });
            }
            cameras.iter().try_for_each(|c| check_camera_id(c))?;
            check_viewer(by)?;
            check_incident_text("share note", note)?;
            accepted_by.as_deref().map_or(Ok(()), check_viewer)
        }
        Notice::ShareEnded { reason, .. } => check_incident_text("share end reason", reason),
        Notice::Answer { by, reason, .. } => {
            check_viewer(by)?;
            check_incident_text("answer reason", reason)
        }
        Notice::Alarm { camera, detail, thumbnail, .. } => {
            check_camera_id(camera)?;
            check_incident_text("alarm detail", detail)?;
            if let Some(t) = thumbnail {
                if t.len() > MAX_THUMBNAIL_LEN {
                    return Err(WireError::TooLong {
                        what: "alarm thumbnail",
                        len: t.len(),
                        max: MAX_THUMBNAIL_LEN,
                    });
                }
            }
            Ok(())
        }
        Notice::AlarmAck { site, operator, .. } => {
            check_viewer(site)?;
            check_viewer(operator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> GopHeader {
        GopHeader {
            subscription: 7,
            quality: Quality::Sub,
            seq: 42,
            config: CodecConfig {
                codec: Codec::H264,
                width: 640,
                height: 360,
                parameter_sets: vec![Bytes::from_static(&[0x67, 1, 2, 3]), Bytes::from_static(&[0x68, 4])],
            },
        }
    }

    fn encode_stream(h: &GopHeader, frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        h.encode(&mut out);
        for f in frames {
            out.put_slice(&encode_frame_header(f));
            out.put_slice(&f.payload);
        }
        out.to_vec()
    }

    #[test]
    fn media_stream_round_trips_byte_by_byte() {
        let frames = vec![
            Frame { pts: 1000, keyframe: true, payload: Bytes::from_static(&[0, 0, 0, 1, 0x65, 1]) },
            Frame { pts: 7000, keyframe: false, payload: Bytes::from_static(&[0, 0, 0, 1, 0x41]) },
            Frame { pts: 13000, keyframe: false, payload: Bytes::new() },
        ];
        let bytes = encode_stream(&header(), &frames);
        let mut d = MediaDecoder::new();
        let mut events = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            while let Some(ev) = d.poll().unwrap() {
                events.push(ev);
            }
        }
        d.finish().unwrap();
        assert_eq!(events[0], MediaEvent::Header(header()));
        let got: Vec<Frame> = events[1..]
            .iter()
            .map(|e| match e {
                MediaEvent::Frame(f) => f.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, frames);
    }

    /// A catalog entry from an agent before the substream fields still
    /// parses (same codec both ways); an entry without a transcode is
    /// written exactly as before, so older relays read it too.
    #[test]
    fn catalog_substream_fields_keep_old_messages_parseable() {
        let old = r#"{"id":"c","device":"c","lens":1,"name":"n","zone":"z","kind":"fixed","codec":"h265","qualities":["main","sub"],"ptz":false}"#;
        let entry: CatalogEntry = serde_json::from_str(old).expect("old entry parses");
        assert_eq!((entry.sub_codec, entry.sub_transcoded), (None, false));
        assert_eq!(entry.substream(), Some((Codec::H265, false)));
        let written = serde_json::to_string(&entry).expect("serialises");
        assert!(!written.contains("sub_"), "{written}");

        let transcoded = CatalogEntry { sub_codec: Some(Codec::H264), sub_transcoded: true, ..entry.clone() };
        let text = serde_json::to_string(&transcoded).expect("serialises");
        assert!(text.contains(r#""sub_codec":"h264","sub_transcoded":true"#), "{text}");
        assert_eq!(serde_json::from_str::<CatalogEntry>(&text).expect("parses"), transcoded);
        assert_eq!(transcoded.substream(), Some((Codec::H264, true)));
        let main_only = CatalogEntry { qualities: vec![Quality::Main], ..transcoded };
        assert_eq!(main_only.substream(), None);
    }

    #[test]
    fn control_round_trips_and_rejects_unknown_types() {
        let msgs = vec![
            Control::Hello { version: 1, node: "master".into(), role: Role::Agent, policy: None },
            Control::Subscribe {
                id: 3,
                camera: "zaist".into(),
                quality: Quality::Main,
                viewer: None,
                playback: None,
            },
            Control::Subscribe {
                id: 4,
                camera: "zaist".into(),
                quality: Quality::Sub,
                viewer: Some("token:vms".into()),
                playback: None,
            },
            Control::Viewers { id: 3, viewers: vec!["op".into(), "cascade:questura".into()], more: 0 },
            Control::Viewers { id: 3, viewers: vec![], more: 2 },
            Control::AuditHead { seq: 41, hash: "ab".repeat(32) },
            Control::SubscribeError { id: 3, code: SubscribeErrorCode::OverBudget, reason: "x".into() },
            Control::Paused { id: 3, reason: "link budget".into() },
            Control::Resumed { id: 3 },
            Control::Ptz {
                id: 4,
                camera: "zaist-mantova".into(),
                viewer: "rossi".into(),
                command: crate::ptz::PtzCommand::Move { pan: 300, tilt: 0, zoom: -1000 },
            },
            Control::PtzResult {
                id: 4,
                reply: PtzReply::refused(crate::ptz::PtzErrorCode::Forbidden, "no PTZ right"),
            },
            Control::PtzLock { camera: "zaist-mantova".into(), holder: None },
            Control::Stats(StatsReport { bytes_sent: 5, ..Default::default() }),
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf).unwrap();
        }
        for m in &msgs {
            assert_eq!(Control::decode(&mut buf).unwrap().as_ref(), Some(m));
        }
        assert_eq!(Control::decode(&mut buf).unwrap(), None);

        let body = br#"{"type":"launch_missiles"}"#;
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(body);
        assert!(matches!(Control::decode(&mut buf), Err(WireError::BadControl(_))));

        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(matches!(Control::decode(&mut huge), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn viewer_names_and_audit_heads_are_bounded() {
        let decode = |m: &Control| {
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            Control::decode(&mut buf)
        };
        let long = "v".repeat(MAX_VIEWER_LEN + 1);
        let subscribe = |viewer: &str| Control::Subscribe {
            id: 1,
            camera: "c".into(),
            quality: Quality::Main,
            viewer: Some(viewer.into()),
            playback: None,
        };
        assert!(matches!(decode(&subscribe(&long)), Err(WireError::TooLong { what: "viewer name", .. })));
        assert!(matches!(decode(&subscribe("op\n{\"x\"")), Err(WireError::Invalid("viewer name"))));
        assert!(decode(&subscribe(&"v".repeat(MAX_VIEWER_LEN))).is_ok());
        let many = Control::Viewers { id: 1, viewers: vec!["a".into(); MAX_VIEWERS + 1], more: 0 };
        assert!(matches!(decode(&many), Err(WireError::TooLong { what: "viewer list", .. })));
        let ptz = Control::Ptz {
            id: 1,
            camera: "c".into(),
            viewer: long.clone(),
            command: crate::ptz::PtzCommand::Stop,
        };
        assert!(decode(&ptz).is_err());
        for hash in ["", "zz", &"g".repeat(64), &"a".repeat(65)] {
            let head = Control::AuditHead { seq: 1, hash: hash.into() };
            assert_eq!(decode(&head), Err(WireError::Invalid("audit head hash")), "{hash}");
        }
        // What the relay sends is always accepted.
        assert_eq!(wire_viewer(&long).len(), MAX_VIEWER_LEN);
        assert_eq!(wire_viewer("é".repeat(100).as_str()).len(), 128);
        assert_eq!(wire_viewer("a\u{7}b"), "ab");
        assert!(check_viewer(&wire_viewer(&"é".repeat(200))).is_ok());
    }

    #[test]
    fn peer_lengths_at_and_beyond_the_limits() {
        // Control: the length prefix is checked before `4 + len` is formed.
        for (len, too_long) in
            [(u32::MAX, true), (MAX_CONTROL_LEN as u32 + 1, true), (MAX_CONTROL_LEN as u32, false)]
        {
            let mut buf = BytesMut::new();
            buf.put_u32(len);
            buf.put_slice(b"{}");
            let got = Control::decode(&mut buf);
            assert_eq!(matches!(got, Err(WireError::TooLong { .. })), too_long, "{len}: {got:?}");
            if !too_long {
                assert_eq!(got, Ok(None), "waits for the body");
            }
        }
        // Frames: u32::MAX and one past the limit are refused; the limit
        // itself waits for its bytes without reserving them up front.
        let mut stream = BytesMut::new();
        header().encode(&mut stream);
        for (len, too_long) in
            [(u32::MAX, true), (MAX_FRAME_LEN as u32 + 1, true), (MAX_FRAME_LEN as u32, false)]
        {
            let mut d = MediaDecoder::new();
            d.push(&stream);
            assert!(matches!(d.poll(), Ok(Some(MediaEvent::Header(_)))));
            let mut h = [0u8; FRAME_HEADER_LEN];
            h[9..].copy_from_slice(&len.to_be_bytes());
            d.push(&h);
            let got = d.poll();
            assert_eq!(matches!(got, Err(WireError::TooLong { .. })), too_long, "{len}: {got:?}");
            if !too_long {
                assert_eq!(got, Ok(None));
                assert!(d.capacity() <= 2 * EAGER_RESERVE, "13 bytes reserved {} bytes", d.capacity());
                d.push(&vec![7u8; 300_000]);
                assert_eq!(d.poll(), Ok(None));
                assert!(d.capacity() <= 4 * 300_000, "room follows the bytes received: {}", d.capacity());
            }
        }
        // Parameter sets: a u16 length above the limit is refused.
        let mut raw = BytesMut::new();
        GopHeader { config: CodecConfig { parameter_sets: vec![], ..header().config }, ..header() }
            .encode(&mut raw);
        let count_at = raw.len() - 1;
        raw[count_at] = 1;
        raw.put_u16(u16::MAX);
        assert!(matches!(decode_gop_header(&raw), Err(WireError::TooLong { what: "parameter set", .. })));
    }

    #[test]
    fn an_oversized_ptz_result_goes_out_as_a_refusal_and_nothing_else_oversized_goes_out() {
        use crate::ptz::{PtzErrorCode, PtzPreset};
        let presets: Vec<PtzPreset> =
            (0..20_000).map(|i| PtzPreset { token: i.to_string(), name: "\"".repeat(40) }).collect();
        let big =
            Control::PtzResult { id: 9, reply: PtzReply::Done { holder: None, presets, position: None } };
        let mut buf = BytesMut::new();
        big.encode(&mut buf).unwrap();
        assert!(buf.len() <= 4 + MAX_CONTROL_LEN);
        match Control::decode(&mut buf).unwrap() {
            Some(Control::PtzResult { id: 9, reply: PtzReply::Refused { code, reason, .. } }) => {
                assert_eq!(code, PtzErrorCode::CameraError);
                assert!(reason.contains("over the 1048576-byte limit"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let paused = Control::Paused { id: 1, reason: "x".repeat(MAX_CONTROL_LEN) };
        let mut buf = BytesMut::from(&b"kept"[..]);
        assert!(matches!(paused.encode(&mut buf), Err(WireError::TooLong { .. })));
        assert_eq!(&buf[..], b"kept", "nothing appended");
    }

    #[test]
    fn wrong_magic_is_rejected_early() {
        let mut d = MediaDecoder::new();
        d.push(b"GET / HTTP/1.1");
        assert!(matches!(d.poll(), Err(WireError::BadMagic { .. })));
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = Control::decode(&mut buf) {}
            let mut d = MediaDecoder::new();
            d.push(&data);
            while let Ok(Some(_)) = d.poll() {}
            let _ = d.finish();
        }

        #[test]
        fn decoders_never_panic_on_corrupted_valid_streams(
            cut in 0usize..200, flip in 0usize..200, val in any::<u8>()
        ) {
            let frames = vec![Frame { pts: 1, keyframe: true, payload: Bytes::from(vec![9u8; 50]) }];
            let mut bytes = encode_stream(&header(), &frames);
            let i = flip % bytes.len();
            bytes[i] = val;
            bytes.truncate(cut.min(bytes.len()));
            let mut d = MediaDecoder::new();
            d.push(&bytes);
            while let Ok(Some(_)) = d.poll() {}
            let _ = d.finish();
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Control::decode(&mut buf);
        }
    }
}
