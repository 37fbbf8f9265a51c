//! The egress gate, sans-IO: which frames of a hub track reader go out to one
//! viewer, and with what RTP timestamp. WHEP (browsers) and RTSP (VMSs) both
//! feed it every item they read and send what it returns, so a change of gap
//! handling is made here once.
//!
//! - Starts at a keyframe; after a gap (a GOP that opens without its
//!   keyframe: frames were lost or skipped by the hub) waits for the next one.
//! - Repairs keyframes that lack parameter sets from the GOP's codec config
//!   ([`h264::with_parameter_sets`], [`h265::with_parameter_sets`]).
//! - Maps pts to RTP time ([`RtpClock`]); a backlog (the cached GOP, or GOPs
//!   queued while the viewer fell behind) is stamped [`CATCH_UP_TICKS`]
//!   apart so a player shows the newest picture at once instead of replaying
//!   the backlog in real time.
//! - Ends the stream when the track changes codec: the viewer's SDP no
//!   longer applies.

use crate::hub::HubItem;
use crate::media::Codec;
use crate::rtp::RtpClock;
use crate::{h264, h265};
use bytes::Bytes;

/// Frames of a backlog are stamped this close together (1 ms at 90 kHz).
pub const CATCH_UP_TICKS: u32 = 90;

/// How an item reached the egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It was already waiting when asked for: part of a backlog, which may be
    /// played out faster than real time.
    Queued,
    /// It arrived while the egress waited: live, stamped by its pts.
    Live,
}

/// The item's access unit as a decoder that starts there needs it: a
/// keyframe that lacks its parameter sets gets them from the GOP's codec
/// config ([`h264::with_parameter_sets`], [`h265::with_parameter_sets`]);
/// any other frame is shared as it is.
pub fn decodable(item: &HubItem) -> Bytes {
    if !item.frame.keyframe {
        return item.frame.payload.clone();
    }
    let sets = &item.config.parameter_sets;
    match item.config.codec {
        Codec::H264 => h264::with_parameter_sets(&item.frame.payload, sets),
        Codec::H265 => h265::with_parameter_sets(&item.frame.payload, sets),
    }
}

/// What to do with one hub item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decodable here (no keyframe since the start or since a gap, or
    /// held back by the caller): drop it.
    Skip,
    /// The track switched to another codec than the egress announced; the
    /// stream must end.
    CodecChanged(Codec),
    /// Send this access unit with this RTP timestamp.
    Send {
        /// Annex-B access unit, parameter sets added to a keyframe that lacked them.
        payload: Bytes,
        /// 90 kHz RTP timestamp.
        timestamp: u32,
    },
}

/// Decides, item by item, what one viewer's egress sends.
#[derive(Debug, Clone)]
pub struct EgressGate {
    codec: Codec,
    waiting_for_key: bool,
    catching_up: bool,
    gop_seq: Option<u64>,
    clock: RtpClock,
}

impl EgressGate {
    /// A gate for a stream announced as `codec`, whose first RTP timestamp
    /// is `first_timestamp` (random, RFC 3550 §5.1).
    pub fn new(codec: Codec, first_timestamp: u32) -> Self {
        Self {
            codec,
            waiting_for_key: true,
            catching_up: true,
            gop_seq: None,
            clock: RtpClock::new(first_timestamp),
        }
    }

    /// The next item of the track, and how it arrived.
    pub fn accept(&mut self, item: &HubItem, arrival: Arrival) -> Verdict {
        if let Some(changed) = self.follow(item) {
            return changed;
        }
        if self.waiting_for_key {
            if !item.frame.keyframe {
                return Verdict::Skip;
            }
            self.waiting_for_key = false;
        }
        if arrival == Arrival::Live {
            self.catching_up = false;
        }
        let pts = item.frame.pts;
        let timestamp =
            if self.catching_up { self.clock.advance(pts, CATCH_UP_TICKS) } else { self.clock.stamp(pts) };
        Verdict::Send { payload: decodable(item), timestamp }
    }

    /// The next item of the track, which the caller will not send (a paused
    /// RTSP session): the stream resumes at a keyframe. Only a codec change
    /// is reported; anything else is [`Verdict::Skip`].
    pub fn hold(&mut self, item: &HubItem) -> Verdict {
        if let Some(changed) = self.follow(item) {
            return changed;
        }
        self.waiting_for_key = true;
        Verdict::Skip
    }

    /// RTP timestamp of the last frame sent (the first timestamp before any).
    pub fn timestamp(&self) -> u32 {
        self.clock.current()
    }

    /// Follows GOP boundaries and the codec; `Some` when the stream must end.
    fn follow(&mut self, item: &HubItem) -> Option<Verdict> {
        if item.config.codec != self.codec {
            return Some(Verdict::CodecChanged(item.config.codec));
        }
        if let Some(prev) = self.gop_seq {
            if item.gop_seq != prev {
                // A new GOP must open with its keyframe; otherwise frames were lost.
                if !item.frame.keyframe {
                    self.waiting_for_key = true;
                }
                // GOPs were skipped: the reader fell behind, what follows is a backlog.
                if item.gop_seq > prev.saturating_add(1) {
                    self.catching_up = true;
                }
            }
        }
        self.gop_seq = Some(item.gop_seq);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        annex_b, idr, slice, H265_IDR as IDR5, H265_PPS as PPS5, H265_SPS as SPS5, H265_VPS as VPS5, PPS,
    };
    use crate::media::{CodecConfig, Frame};
    use std::sync::Arc;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];

    fn config(codec: Codec) -> Arc<CodecConfig> {
        let parameter_sets = match codec {
            Codec::H264 => vec![Bytes::from_static(SPS), Bytes::from_static(PPS)],
            Codec::H265 => vec![Bytes::from_static(VPS5), Bytes::from_static(SPS5), Bytes::from_static(PPS5)],
        };
        Arc::new(CodecConfig { codec, width: 640, height: 360, parameter_sets })
    }

    fn item(gop_seq: u64, pts: u64, keyframe: bool, payload: Bytes) -> HubItem {
        HubItem { gop_seq, config: config(Codec::H264), frame: Frame { pts, keyframe, payload } }
    }

    fn key(gop_seq: u64, pts: u64) -> HubItem {
        item(gop_seq, pts, true, annex_b(&[SPS, PPS, &idr(50)]))
    }

    fn delta(gop_seq: u64, pts: u64) -> HubItem {
        item(gop_seq, pts, false, annex_b(&[&slice(20)]))
    }

    fn stamp(gate: &mut EgressGate, item: &HubItem, arrival: Arrival) -> Option<u32> {
        match gate.accept(item, arrival) {
            Verdict::Send { timestamp, .. } => Some(timestamp),
            Verdict::Skip => None,
            Verdict::CodecChanged(c) => panic!("unexpected codec {c:?}"),
        }
    }

    use Arrival::{Live, Queued};

    #[test]
    fn starts_at_a_keyframe() {
        let mut gate = EgressGate::new(Codec::H264, 1000);
        assert_eq!(stamp(&mut gate, &delta(1, 0), Live), None);
        assert_eq!(stamp(&mut gate, &delta(1, 6000), Live), None);
        assert_eq!(stamp(&mut gate, &key(2, 12_000), Live), Some(1000));
        assert_eq!(stamp(&mut gate, &delta(2, 18_000), Live), Some(7000));
        assert_eq!(gate.timestamp(), 7000);
    }

    #[test]
    fn compresses_a_backlog_then_follows_pts() {
        let mut gate = EgressGate::new(Codec::H264, u32::MAX - 100);
        // The cached GOP, all queued: stamped 1 ms apart.
        assert_eq!(stamp(&mut gate, &key(7, 90_000), Queued), Some(u32::MAX - 100));
        assert_eq!(stamp(&mut gate, &delta(7, 96_000), Queued), Some(u32::MAX - 10));
        assert_eq!(stamp(&mut gate, &delta(7, 102_000), Queued), Some(79));
        // Live frames: pts spacing, wrapping like RTP time does.
        assert_eq!(stamp(&mut gate, &delta(7, 108_000), Live), Some(6079));
        assert_eq!(stamp(&mut gate, &delta(7, 111_000), Live), Some(9079));
        // Once live, a frame that happens to be queued keeps its pts spacing.
        assert_eq!(stamp(&mut gate, &delta(7, 114_000), Queued), Some(12_079));
        // A pts jump backwards (camera restart) advances one default frame.
        assert_eq!(stamp(&mut gate, &key(8, 5), Live), Some(18_079));
        // So does a repeated pts: two pictures never share a timestamp.
        assert_eq!(stamp(&mut gate, &delta(8, 5), Live), Some(24_079));
    }

    #[test]
    fn live_only_egress_follows_pts_from_the_first_frame() {
        // RTSP reads everything as it comes: no catch-up at all.
        let mut gate = EgressGate::new(Codec::H264, 0);
        assert_eq!(stamp(&mut gate, &key(1, 90_000), Live), Some(0));
        assert_eq!(stamp(&mut gate, &delta(1, 93_000), Live), Some(3000));
    }

    #[test]
    fn waits_for_the_next_keyframe_after_a_gap() {
        let mut gate = EgressGate::new(Codec::H264, 0);
        assert_eq!(stamp(&mut gate, &key(1, 0), Live), Some(0));
        assert_eq!(stamp(&mut gate, &delta(1, 6000), Live), Some(6000));
        // GOP 2 lost its keyframe: its deltas cannot be decoded.
        assert_eq!(stamp(&mut gate, &delta(2, 18_000), Live), None);
        assert_eq!(stamp(&mut gate, &delta(2, 24_000), Live), None);
        // GOP 3 arrives live: real time elapsed since the last frame sent.
        assert_eq!(stamp(&mut gate, &key(3, 30_000), Live), Some(30_000));
        assert_eq!(stamp(&mut gate, &delta(3, 36_000), Live), Some(36_000));
        // The hub skipped this slow reader from GOP 3 to GOP 5; what follows
        // was already queued, a backlog to get through quickly.
        assert_eq!(stamp(&mut gate, &key(5, 90_000), Queued), Some(36_090));
        assert_eq!(stamp(&mut gate, &delta(5, 96_000), Queued), Some(36_180));
        assert_eq!(stamp(&mut gate, &delta(5, 102_000), Live), Some(42_180));
    }

    #[test]
    fn a_held_stream_resumes_at_a_keyframe() {
        let mut gate = EgressGate::new(Codec::H264, 0);
        assert_eq!(stamp(&mut gate, &key(1, 0), Live), Some(0));
        assert_eq!(gate.hold(&delta(1, 6000)), Verdict::Skip);
        assert_eq!(stamp(&mut gate, &delta(1, 12_000), Live), None, "resumed mid-GOP");
        assert_eq!(stamp(&mut gate, &key(2, 18_000), Live), Some(18_000));
    }

    #[test]
    fn a_codec_change_ends_the_stream() {
        let mut gate = EgressGate::new(Codec::H264, 0);
        let mut hevc = key(1, 0);
        hevc.config = config(Codec::H265);
        assert_eq!(gate.accept(&hevc, Live), Verdict::CodecChanged(Codec::H265));
        assert_eq!(gate.hold(&hevc), Verdict::CodecChanged(Codec::H265));
    }

    fn sent(verdict: Verdict) -> Bytes {
        match verdict {
            Verdict::Send { payload, .. } => payload,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn h264_keyframes_get_missing_parameter_sets_from_the_config() {
        let mut gate = EgressGate::new(Codec::H264, 0);
        let bare = sent(gate.accept(&item(1, 0, true, annex_b(&[&idr(10)])), Live));
        assert_eq!(bare, annex_b(&[SPS, PPS, &idr(10)]));
        let only_sps = sent(gate.accept(&item(2, 6000, true, annex_b(&[SPS, &idr(10)])), Live));
        assert_eq!(only_sps, annex_b(&[PPS, SPS, &idr(10)]));
        // Complete keyframes and delta frames go out uncopied.
        let complete = annex_b(&[SPS, PPS, &idr(10)]);
        assert_eq!(
            sent(gate.accept(&item(3, 12_000, true, complete.clone()), Live)).as_ptr(),
            complete.as_ptr()
        );
        let p = annex_b(&[&slice(10)]);
        assert_eq!(sent(gate.accept(&item(3, 18_000, false, p.clone()), Live)).as_ptr(), p.as_ptr());
    }

    #[test]
    fn h265_keyframes_get_missing_parameter_sets_from_the_config() {
        let mut gate = EgressGate::new(Codec::H265, 0);
        let h265 = |gop_seq, payload| HubItem {
            gop_seq,
            config: config(Codec::H265),
            frame: Frame { pts: gop_seq * 6000, keyframe: true, payload },
        };
        assert_eq!(sent(gate.accept(&h265(1, annex_b(&[IDR5])), Live)), annex_b(&[VPS5, SPS5, PPS5, IDR5]));
        assert_eq!(
            sent(gate.accept(&h265(2, annex_b(&[SPS5, PPS5, IDR5])), Live)),
            annex_b(&[VPS5, SPS5, PPS5, IDR5])
        );
        let complete = annex_b(&[VPS5, SPS5, PPS5, IDR5]);
        assert_eq!(sent(gate.accept(&h265(3, complete.clone()), Live)).as_ptr(), complete.as_ptr());
    }
}
