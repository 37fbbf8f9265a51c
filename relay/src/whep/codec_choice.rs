//! Which stream a browser gets, sans-IO: from the codecs its offer lists,
//! the quality it asked for and the catalog's codecs of the camera.
//!
//! - The asked quality when the browser decodes its codec: H.264 always,
//!   H.265 when the offer lists `H265/90000` (Chromium does where
//!   `RTCRtpReceiver.getCapabilities('video')` has it, i.e. with a
//!   hardware HEVC decoder).
//! - Else, for the main stream, the substream when the browser decodes
//!   that: the camera's own H.264 substream, or the agent's transcode
//!   (`browser_h264 = "transcode"`). The answer says so in
//!   [`STREAM_HEADER`], for the page's badge.
//! - Else a refusal that says why and names the relay's RTSP URL of the
//!   stream, which a VMS or a desktop player plays as it is.
//!
//! The relay's RTSP egress does not come through here: it serves the
//! camera's main stream untouched, and refuses a transcoded substream
//! (see `rtsp/server/describe.rs`), so a VMS never starts a transcode.

use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::CatalogEntry;

/// Response header of a WHEP answer naming the stream served:
/// `X-Ponte-Stream: <quality>; codec=<h264|h265>[; transcoded][; reason=<why>]`,
/// e.g. `sub; codec=h264; transcoded; reason=browser-lacks-h265` when a
/// browser without H.265 asked for an H.265 main and gets the agent's
/// transcode. `reason` is present exactly when the quality differs from the
/// one asked for. The page shows a badge from it.
pub const STREAM_HEADER: &str = "x-ponte-stream";

/// `reason` of [`STREAM_HEADER`] when the browser cannot decode H.265.
pub const REASON_NO_H265: &str = "browser-lacks-h265";

/// The video codecs an offer lists on a receiving video section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// H.264 with packetization-mode 1.
    pub h264: bool,
    /// H.265 (RFC 7798).
    pub h265: bool,
}

impl Offered {
    /// Whether the browser decodes `codec`.
    pub fn decodes(self, codec: Codec) -> bool {
        match codec {
            Codec::H264 => self.h264,
            Codec::H265 => self.h265,
        }
    }
}

/// The stream to subscribe to for this browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Quality to subscribe to.
    pub quality: Quality,
    /// Its codec, as the catalog announces it (the first frame decides).
    pub codec: Codec,
    /// The agent transcodes it.
    pub transcoded: bool,
    /// Why it is not the quality asked for.
    pub reason: Option<&'static str>,
}

impl Plan {
    /// The value of [`STREAM_HEADER`] for the stream served in `codec`.
    pub fn header(&self, codec: Codec) -> String {
        let mut v = format!("{}; codec={}", self.quality.name(), codec.name());
        if self.transcoded {
            v.push_str("; transcoded");
        }
        if let Some(reason) = self.reason {
            v.push_str("; reason=");
            v.push_str(reason);
        }
        v
    }
}

/// A stream this browser cannot play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unplayable {
    /// The stream's quality and codec.
    pub quality: Quality,
    /// Its codec.
    pub codec: Codec,
    /// The camera has an H.264 substream (that this viewer may not watch).
    pub has_h264_sub: bool,
}

/// Chooses the stream for a browser offering `offered` that asked for
/// `asked` of `entry` (`None`: not in the catalog, left for upstream to refuse).
pub fn plan(entry: Option<&CatalogEntry>, asked: Quality, offered: Offered) -> Result<Plan, Unplayable> {
    let Some(entry) = entry else {
        return Ok(Plan { quality: asked, codec: Codec::H264, transcoded: false, reason: None });
    };
    let sub = entry.substream();
    let (codec, transcoded) = match asked {
        Quality::Main => (entry.codec, false),
        // Not listed: the viewer check or upstream refuses it.
        Quality::Sub => sub.unwrap_or((entry.codec, false)),
    };
    if offered.decodes(codec) {
        return Ok(Plan { quality: asked, codec, transcoded, reason: None });
    }
    let h264_sub = sub.filter(|(c, _)| *c == Codec::H264);
    if let (Quality::Main, Codec::H265, Some((sub_codec, transcoded))) = (asked, codec, h264_sub) {
        if offered.decodes(sub_codec) {
            return Ok(Plan {
                quality: Quality::Sub,
                codec: sub_codec,
                transcoded,
                reason: Some(REASON_NO_H265),
            });
        }
    }
    Err(Unplayable { quality: asked, codec, has_h264_sub: h264_sub.is_some() })
}

/// The refusal text for a stream the browser cannot play: why, and where
/// else to watch it (`rtsp` is the relay's RTSP base, `rtsp://host:port`,
/// when it serves RTSP).
pub fn unplayable_text(camera: &str, u: Unplayable, rtsp: Option<&str>) -> String {
    let stream = match u.quality {
        Quality::Main => "",
        Quality::Sub => " (substream)",
    };
    let why = match u.codec {
        Codec::H265 => format!(
            "camera `{camera}`{stream} is H.265, and this browser cannot decode H.265 over WebRTC \
             (its offer lists no H265/90000: no hardware HEVC decoder here)"
        ),
        Codec::H264 => format!(
            "camera `{camera}`{stream} is H.264, and this browser's offer lists no H.264 with \
             packetization-mode=1"
        ),
    };
    let sub_note = if u.has_h264_sub && u.quality == Quality::Main {
        "; its H.264 substream is not available to this viewer"
    } else {
        ""
    };
    let path = match u.quality {
        Quality::Main => camera.to_owned(),
        Quality::Sub => format!("{camera}/sub"),
    };
    let elsewhere = match rtsp {
        Some(base) => format!("watch it in a VMS or a player such as VLC at {base}/{path}"),
        None => "this relay serves no RTSP (`[rtsp]` is not configured), so only a browser that decodes \
                 it can show it here"
            .to_owned(),
    };
    let transcode = if u.codec == Codec::H265 && !u.has_h264_sub {
        "; or ask the master room to set `browser_h264 = \"transcode\"` on its device for an H.264 \
         picture in every browser"
    } else {
        ""
    };
    format!("{why}{sub_note}; {elsewhere}{transcode}")
}

/// `rtsp://host:port` for a browser that reached this relay as `host`
/// (the `Host` header, port dropped, IPv6 kept in brackets).
pub fn rtsp_base(host_header: Option<&str>, port: u16) -> Option<String> {
    let host = host_header?.trim();
    let host = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host.split(':').next()?.to_owned(),
    };
    let printable = |c: char| c.is_ascii_alphanumeric() || "-.[]:".contains(c);
    (!host.is_empty() && host.chars().all(printable)).then(|| format!("rtsp://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(codec: Codec, sub: Option<(Codec, bool)>) -> CatalogEntry {
        CatalogEntry {
            id: "cam".into(),
            device: "cam".into(),
            lens: 1,
            name: "n".into(),
            zone: "z".into(),
            kind: "fixed".into(),
            codec,
            qualities: if sub.is_some() { vec![Quality::Main, Quality::Sub] } else { vec![Quality::Main] },
            ptz: false,
            always_on: false,
            sub_codec: sub.map(|(c, _)| c),
            sub_transcoded: sub.is_some_and(|(_, t)| t),
            tags: Vec::new(),
            dual_path: false,
        }
    }

    const H264_ONLY: Offered = Offered { h264: true, h265: false };
    const BOTH: Offered = Offered { h264: true, h265: true };

    #[test]
    fn h265_main_goes_to_a_browser_that_decodes_it() {
        let cam = entry(Codec::H265, Some((Codec::H264, true)));
        let p = plan(Some(&cam), Quality::Main, BOTH).expect("plays");
        assert_eq!(p, Plan { quality: Quality::Main, codec: Codec::H265, transcoded: false, reason: None });
        assert_eq!(p.header(Codec::H265), "main; codec=h265");
    }

    #[test]
    fn a_browser_without_h265_gets_the_h264_substream_and_is_told() {
        let transcoded = entry(Codec::H265, Some((Codec::H264, true)));
        let p = plan(Some(&transcoded), Quality::Main, H264_ONLY).expect("falls back");
        assert_eq!((p.quality, p.codec, p.transcoded), (Quality::Sub, Codec::H264, true));
        assert_eq!(p.header(Codec::H264), "sub; codec=h264; transcoded; reason=browser-lacks-h265");

        let own_sub = entry(Codec::H265, Some((Codec::H264, false)));
        let p = plan(Some(&own_sub), Quality::Main, H264_ONLY).expect("falls back");
        assert_eq!(p.header(Codec::H264), "sub; codec=h264; reason=browser-lacks-h265");
        // Asked for the substream itself: no reason to give.
        let p = plan(Some(&own_sub), Quality::Sub, H264_ONLY).expect("plays");
        assert_eq!(p.header(Codec::H264), "sub; codec=h264");
    }

    #[test]
    fn an_h265_only_camera_is_refused_with_the_rtsp_url() {
        let cam = entry(Codec::H265, None);
        let u = plan(Some(&cam), Quality::Main, H264_ONLY).expect_err("unplayable");
        let text = unplayable_text("cam", u, Some("rtsp://relay.example:8554"));
        assert!(text.contains("is H.265, and this browser cannot decode H.265"), "{text}");
        assert!(text.contains("rtsp://relay.example:8554/cam;"), "{text}");
        assert!(text.contains("browser_h264 = \"transcode\""), "{text}");
        let no_rtsp = unplayable_text("cam", u, None);
        assert!(no_rtsp.contains("`[rtsp]` is not configured"), "{no_rtsp}");

        // Its substream is H.265 too (an older agent says nothing of it).
        let both_h265 = entry(Codec::H265, Some((Codec::H265, false)));
        let u = plan(Some(&both_h265), Quality::Sub, H264_ONLY).expect_err("unplayable");
        assert!(unplayable_text("cam", u, Some("rtsp://h:1")).contains("rtsp://h:1/cam/sub"));
    }

    #[test]
    fn h264_cameras_play_as_before_and_unknown_cameras_are_left_to_upstream() {
        let cam = entry(Codec::H264, Some((Codec::H264, false)));
        for q in [Quality::Main, Quality::Sub] {
            assert_eq!(plan(Some(&cam), q, H264_ONLY).map(|p| (p.quality, p.reason)), Ok((q, None)));
        }
        let h265_only_browser = Offered { h264: false, h265: true };
        assert!(plan(Some(&cam), Quality::Main, h265_only_browser).is_err());
        assert_eq!(plan(None, Quality::Sub, H264_ONLY).map(|p| p.quality), Ok(Quality::Sub));
    }

    #[test]
    fn rtsp_base_takes_the_host_the_browser_used() {
        assert_eq!(rtsp_base(Some("relay.example:8080"), 8554).as_deref(), Some("rtsp://relay.example:8554"));
        assert_eq!(rtsp_base(Some("10.0.0.1"), 554).as_deref(), Some("rtsp://10.0.0.1:554"));
        assert_eq!(rtsp_base(Some("[::1]:8080"), 8554).as_deref(), Some("rtsp://[::1]:8554"));
        assert_eq!(rtsp_base(Some("a b<script>"), 8554), None);
        assert_eq!(rtsp_base(None, 8554), None);
    }
}
