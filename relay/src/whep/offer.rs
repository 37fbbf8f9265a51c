//! The pure check of a browser's SDP offer, before webrtc-rs sees it: no I/O,
//! typed refusals the HTTP layer turns into one line naming the fix, and
//! the video codecs the browser offers ([`Offered`]).

use super::codec_choice::Offered;

/// Why an SDP offer cannot be answered, before webrtc sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// Not SDP at all.
    NotSdp,
    /// No video section the relay could send on.
    NoReceivingVideo,
    /// Video, but neither H.264 with packetization-mode 1 nor H.265.
    NoH264,
    /// ICE credentials or DTLS fingerprint missing.
    NotWebRtc,
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OfferError::NotSdp => "the body is not an SDP offer (it must start with `v=0`)",
            OfferError::NoReceivingVideo => {
                "no video section that receives (add a recvonly video transceiver)"
            }
            OfferError::NoH264 => {
                "the browser offers neither H.264 with packetization-mode=1 nor H.265; use a browser with H.264 WebRTC support"
            }
            OfferError::NotWebRtc => {
                "ICE credentials or DTLS fingerprint missing; send the browser's createOffer() output unchanged"
            }
        })
    }
}

/// Checks that an offer is a WebRTC offer the relay can answer with H.264
/// or H.265.
pub fn check_offer(sdp: &str) -> Result<(), OfferError> {
    offered_codecs(sdp).map(drop)
}

/// [`check_offer`], and the codecs the offer's receiving video sections list.
pub fn offered_codecs(sdp: &str) -> Result<Offered, OfferError> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(OfferError::NotSdp);
    }
    let mut has_ice = false;
    let mut has_fingerprint = false;
    // Per video section: (receives, H.264 payload types, payload types with
    // mode 1, lists H.265).
    let mut video: Vec<(bool, Vec<String>, Vec<String>, bool)> = Vec::new();
    let mut in_video = false;
    for line in lines {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            if in_video {
                video.push((true, Vec::new(), Vec::new(), false));
            }
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            has_ice = true;
        } else if line.starts_with("a=fingerprint:") {
            has_fingerprint = true;
        }
        let Some(section) = video.last_mut().filter(|_| in_video) else {
            continue;
        };
        if line == "a=sendonly" || line == "a=inactive" {
            section.0 = false;
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = rest.split_once(' ') {
                let codec = codec.to_ascii_uppercase();
                if codec.starts_with("H264/90000") {
                    section.1.push(pt.to_owned());
                } else if codec.starts_with("H265/90000") {
                    section.3 = true;
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = rest.split_once(' ') {
                if params.split(';').any(|p| p.trim().eq_ignore_ascii_case("packetization-mode=1")) {
                    section.2.push(pt.to_owned());
                }
            }
        }
    }
    if !has_ice || !has_fingerprint {
        return Err(OfferError::NotWebRtc);
    }
    let receiving: Vec<_> = video.iter().filter(|v| v.0).collect();
    if receiving.is_empty() {
        return Err(OfferError::NoReceivingVideo);
    }
    let offered = Offered {
        h264: receiving.iter().any(|(_, h264, mode1, _)| h264.iter().any(|pt| mode1.contains(pt))),
        h265: receiving.iter().any(|v| v.3),
    };
    if !offered.h264 && !offered.h265 {
        return Err(OfferError::NoH264);
    }
    Ok(offered)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Trimmed from a Chromium offer for one recvonly video transceiver.
    pub(in crate::whep) const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx4f\r\n\
a=ice-pwd:0hFf3sY8yPq2yY0iZbBfX1aL\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n\
a=rtpmap:127 H264/90000\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n";

    /// [`CHROME_OFFER`] with the H.265 lines a Chromium with a hardware
    /// HEVC decoder adds.
    pub(in crate::whep) fn chrome_offer_with_h265() -> String {
        CHROME_OFFER.replace(" 102 103 127\r\n", " 102 103 127 49 50\r\n").replace(
            "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n",
            "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
                 a=rtpmap:49 H265/90000\r\n\
                 a=rtcp-fb:49 nack\r\n\
                 a=rtcp-fb:49 nack pli\r\n\
                 a=fmtp:49 level-id=156;profile-id=1;tier-flag=0;tx-mode=SRST\r\n\
                 a=rtpmap:50 rtx/90000\r\n\
                 a=fmtp:50 apt=49\r\n",
        )
    }

    #[test]
    fn offered_codecs_say_whether_the_browser_decodes_h265() {
        assert_eq!(offered_codecs(CHROME_OFFER), Ok(Offered { h264: true, h265: false }));
        let with_h265 = chrome_offer_with_h265();
        assert!(with_h265.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127 49 50\r\n"));
        assert_eq!(offered_codecs(&with_h265), Ok(Offered { h264: true, h265: true }));
        let h265_only = with_h265.replace("H264/90000", "VP9/90000");
        assert_eq!(offered_codecs(&h265_only), Ok(Offered { h264: false, h265: true }));
        // A sending-only section's codecs do not count.
        let sendonly = with_h265.replace("a=recvonly", "a=sendonly");
        assert_eq!(offered_codecs(&sendonly), Err(OfferError::NoReceivingVideo));
    }

    #[test]
    fn chrome_offer_is_accepted() {
        assert_eq!(check_offer(CHROME_OFFER), Ok(()));
        assert!(crate::whep::peer::Offer::parse(CHROME_OFFER).is_ok());
    }

    #[test]
    fn garbage_and_incomplete_offers_are_refused() {
        assert_eq!(check_offer(""), Err(OfferError::NotSdp));
        assert_eq!(check_offer("hello"), Err(OfferError::NotSdp));
        assert_eq!(check_offer("\u{0}\u{1}v=0"), Err(OfferError::NotSdp));
        let no_fingerprint: String = CHROME_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(check_offer(&no_fingerprint), Err(OfferError::NotWebRtc));
        let sendonly = CHROME_OFFER.replace("a=recvonly", "a=sendonly");
        assert_eq!(check_offer(&sendonly), Err(OfferError::NoReceivingVideo));
        let audio_only = CHROME_OFFER.replace("m=video", "m=audio");
        assert_eq!(check_offer(&audio_only), Err(OfferError::NoReceivingVideo));
    }

    #[test]
    fn offer_without_h264_mode_1_is_refused() {
        let vp8_only = CHROME_OFFER.replace("H264/90000", "VP9/90000");
        assert_eq!(check_offer(&vp8_only), Err(OfferError::NoH264));
        let mode0_only = CHROME_OFFER.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check_offer(&mode0_only), Err(OfferError::NoH264));
    }
}
