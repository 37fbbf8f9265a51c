//! The session description a DESCRIBE answers with: one video medium, its
//! RTP format, and the parameter sets a decoder needs before the first
//! keyframe (`sprop-parameter-sets` for H.264, `sprop-vps/sps/pps` for H.265).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ponte_proto::media::{Codec, CodecConfig};
use ponte_proto::{h264, h265};
use sdp_types::{Attribute, Connection, Media, Origin, Session};
use std::net::IpAddr;

/// Dynamic RTP payload type of the video.
pub const PAYLOAD_TYPE: u8 = 96;
/// Control URL of the single track, relative to the Content-Base.
pub const TRACK_CONTROL: &str = "trackID=0";

/// SDP text for a track with `config`; `title` names the camera.
pub fn describe(config: &CodecConfig, title: &str, session_id: u64, server_ip: IpAddr) -> String {
    let attr = |attribute: &str, value: Option<String>| Attribute { attribute: attribute.into(), value };
    let (addrtype, any) = match server_ip {
        IpAddr::V4(_) => ("IP4", "0.0.0.0"),
        IpAddr::V6(_) => ("IP6", "::"),
    };
    let (encoding, fmtp) = match config.codec {
        Codec::H264 => ("H264", h264_fmtp(config)),
        Codec::H265 => ("H265", h265_fmtp(config)),
    };
    let mut attributes = vec![
        attr("rtpmap", Some(format!("{PAYLOAD_TYPE} {encoding}/90000"))),
        attr("fmtp", Some(format!("{PAYLOAD_TYPE} {fmtp}"))),
        attr("control", Some(TRACK_CONTROL.into())),
    ];
    if config.width > 0 && config.height > 0 {
        // Informative (the SPS is authoritative); some VMS show it before playing.
        attributes
            .push(attr("framesize", Some(format!("{PAYLOAD_TYPE} {}-{}", config.width, config.height))));
    }
    let session = Session {
        origin: Origin {
            username: Some("-".into()),
            sess_id: session_id.to_string(),
            sess_version: 1,
            nettype: "IN".into(),
            addrtype: addrtype.into(),
            unicast_address: server_ip.to_string(),
        },
        session_name: sanitize(title),
        session_description: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: Some(Connection {
            nettype: "IN".into(),
            addrtype: addrtype.into(),
            connection_address: any.into(),
        }),
        bandwidths: Vec::new(),
        times: Vec::new(),
        time_zones: Vec::new(),
        key: None,
        attributes: vec![
            attr("tool", Some(format!("ponte-relay {}", env!("CARGO_PKG_VERSION")))),
            attr("control", Some("*".into())),
            attr("range", Some("npt=now-".into())),
        ],
        medias: vec![Media {
            media: "video".into(),
            port: 0,
            num_ports: None,
            proto: "RTP/AVP".into(),
            fmt: PAYLOAD_TYPE.to_string(),
            media_title: None,
            connections: Vec::new(),
            bandwidths: Vec::new(),
            key: None,
            attributes,
        }],
    };
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = session.write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn h264_fmtp(config: &CodecConfig) -> String {
    let mut fmtp = String::from("packetization-mode=1");
    let sps = config.parameter_set(h264::nal::SPS);
    if let Some(&[_, profile, constraints, level, ..]) = sps.map(|s| s.as_ref()) {
        fmtp.push_str(&format!(";profile-level-id={profile:02x}{constraints:02x}{level:02x}"));
    }
    let sets: Vec<String> = [h264::nal::SPS, h264::nal::PPS]
        .into_iter()
        .filter_map(|t| config.parameter_set(t))
        .map(|ps| BASE64.encode(ps))
        .collect();
    if !sets.is_empty() {
        fmtp.push_str(&format!(";sprop-parameter-sets={}", sets.join(",")));
    }
    fmtp
}

fn h265_fmtp(config: &CodecConfig) -> String {
    let parts: Vec<String> = [("vps", h265::nal::VPS), ("sps", h265::nal::SPS), ("pps", h265::nal::PPS)]
        .into_iter()
        .filter_map(|(name, t)| {
            config.parameter_set(t).map(|ps| format!("sprop-{name}={}", BASE64.encode(ps)))
        })
        .collect();
    if parts.is_empty() {
        // An fmtp line needs a parameter; this one is the RFC 7798 default.
        "sprop-max-don-diff=0".into()
    } else {
        parts.join(";")
    }
}

/// SDP text fields end at a line break; keep a name on one line.
fn sanitize(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.trim().is_empty() {
        "-".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn h264_sdp_carries_profile_and_parameter_sets() {
        let config = CodecConfig {
            codec: Codec::H264,
            width: 640,
            height: 360,
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e, 9]),
                Bytes::from_static(&[0x68, 0xce]),
            ],
        };
        let sdp = describe(&config, "via Po\r\nx", 42, "127.0.0.1".parse().unwrap());
        assert!(
            sdp.starts_with(
                "v=0\r\no=- 42 1 IN IP4 127.0.0.1\r\ns=via Po  x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
            ),
            "{sdp}"
        );
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHgk=,aM4=\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("a=control:trackID=0\r\n") && sdp.contains("a=control:*\r\n"), "{sdp}");
        let parsed = sdp_types::Session::parse(sdp.as_bytes()).expect("our SDP parses");
        assert_eq!(parsed.medias.len(), 1);
    }

    #[test]
    fn h265_sdp_carries_vps_sps_pps() {
        let config = CodecConfig {
            codec: Codec::H265,
            width: 0,
            height: 0,
            parameter_sets: vec![
                Bytes::from_static(&[0x40, 0x01, 0x0c]),
                Bytes::from_static(&[0x42, 0x01, 0x01]),
                Bytes::from_static(&[0x44, 0x01, 0xc1]),
            ],
        };
        let sdp = describe(&config, "cam", 1, "::1".parse().unwrap());
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"), "{sdp}");
        assert!(sdp.contains("a=fmtp:96 sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP6 ::\r\n") && !sdp.contains("framesize"), "{sdp}");
        let bare = CodecConfig { parameter_sets: vec![], ..config };
        assert!(
            describe(&bare, "cam", 1, "::1".parse().unwrap()).contains("a=fmtp:96 sprop-max-don-diff=0\r\n")
        );
    }
}
