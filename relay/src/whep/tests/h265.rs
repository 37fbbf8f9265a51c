//! H.265 to the browsers that decode it, the H.264 substream to those that
//! do not (said in `X-Ponte-Stream`), a refusal naming the RTSP URL when
//! neither is possible.

use super::{entry, eventually, fake, http, serve, test_settings, viewer, viewer_offering};
use crate::whep::codec_choice::STREAM_HEADER;
use crate::whep::offer::tests::{chrome_offer_with_h265, CHROME_OFFER};
use crate::whep::WhepSettings;
use bytes::Bytes;
use ponte_proto::fixtures::{annex_b, slice, PPS};
use ponte_proto::hub::{Hub, TrackKey, TrackWriter};
use ponte_proto::media::{Codec, CodecConfig, Frame, Quality};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_HEVC};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::RTCSessionDescription;

const VPS: &[u8] = &[0x40, 0x01, 0x0c, 0x01, 0xff, 0xff];
const SPS_265: &[u8] = &[0x42, 0x01, 0x01, 0x01, 0x60];
const PPS_265: &[u8] = &[0x44, 0x01, 0xc1, 0x72];

/// An H.265 main track: 30 fps, an IDR every 10 frames of 3000 bytes.
fn publish_h265(hub: &Hub, camera: &str) -> TrackWriter {
    let writer = hub.publish(TrackKey::new(camera, Quality::Main));
    writer.set_config(Arc::new(CodecConfig {
        codec: Codec::H265,
        width: 1280,
        height: 720,
        parameter_sets: vec![
            Bytes::from_static(VPS),
            Bytes::from_static(SPS_265),
            Bytes::from_static(PPS_265),
        ],
    }));
    writer
}

fn push_h265(writer: &TrackWriter, n: u64) {
    let keyframe = n.is_multiple_of(10);
    let payload = if keyframe {
        let idr: Vec<u8> = [0x26, 0x01].into_iter().chain(std::iter::repeat_n(0x5a, 3000)).collect();
        annex_b(&[VPS, SPS_265, PPS_265, &idr])
    } else {
        annex_b(&[&[0x02, 0x01, 0xd0, 0x5a, 0x5a]])
    };
    writer.push(Frame { pts: n * 3000, keyframe, payload });
}

/// An H.264 substream track (the agent's transcode, as the relay sees it).
fn publish_h264_sub(hub: &Hub, camera: &str) -> TrackWriter {
    let writer = hub.publish(TrackKey::new(camera, Quality::Sub));
    writer.set_config(super::config(Codec::H264));
    writer
}

fn push_h264(writer: &TrackWriter, n: u64) {
    let keyframe = n.is_multiple_of(10);
    let payload = if keyframe {
        annex_b(&[super::SPS, PPS, &ponte_proto::fixtures::idr(2000)])
    } else {
        annex_b(&[&slice(300)])
    };
    writer.push(Frame { pts: n * 3000, keyframe, payload });
}

/// A browser that decodes H.265 (webrtc-rs offering H265/90000 beside
/// H.264) asks for the H.265 main stream: the answer negotiates H.265, the
/// header says `main; codec=h265`, and RTP packets of the viewer's own
/// payload type arrive, one marker per frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_decodes_h265_gets_the_h265_main_stream() {
    let source = fake(vec![entry("porta-po", Codec::H265)]);
    let writer = publish_h265(&source.hub, "porta-po");
    for n in 0..3 {
        push_h265(&writer, n);
    }
    let (addr, state) = serve(source, test_settings()).await;
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for n in 3.. {
            tick.tick().await;
            push_h265(&writer, n);
        }
    });
    let (pc, offer, _states, received) = viewer_offering(&[
        (MIME_TYPE_H264, super::H264_FMTP, 109),
        (MIME_TYPE_HEVC, "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST", 117),
    ])
    .await;
    let reply = http(addr, "POST", "/whep/porta-po", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.headers[STREAM_HEADER], "main; codec=h265");
    assert!(reply.body.contains("a=rtpmap:117 H265/90000"), "{}", reply.body);
    assert!(!reply.body.contains("H264/90000"), "one codec answered: {}", reply.body);
    assert_eq!(state.sessions()[0].quality, Quality::Main);
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("20 H.265 frames", || received.frames.load(Ordering::Relaxed) >= 20).await;
    assert_eq!(received.payload_type.load(Ordering::Relaxed), 117);
    // Every IDR (3000 bytes) crosses in fragmentation units: more packets than frames.
    assert!(received.packets.load(Ordering::Relaxed) > received.frames.load(Ordering::Relaxed));
    producer.abort();
    let _ = pc.close().await;
}

/// A Chromium offer without H.265 for an H.265 camera whose substream is
/// the agent's H.264 transcode: the relay answers with the substream and
/// says why; a Chromium offer with H.265 (as a hardware decoder adds it)
/// gets the main stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_h265_gets_the_h264_substream_and_the_header_says_so() {
    let mut cam = entry("porta-po", Codec::H265);
    cam.sub_codec = Some(Codec::H264);
    cam.sub_transcoded = true;
    let source = fake(vec![cam]);
    let main = publish_h265(&source.hub, "porta-po");
    let sub = publish_h264_sub(&source.hub, "porta-po");
    for n in 0..3 {
        push_h265(&main, n);
        push_h264(&sub, n);
    }
    let (addr, _state) = serve(source, test_settings()).await;
    let sdp = Some("application/sdp");

    let (pc, offer, _states, received) = viewer().await;
    let reply = http(addr, "POST", "/whep/porta-po", sdp, offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.headers[STREAM_HEADER], "sub; codec=h264; transcoded; reason=browser-lacks-h265");
    assert!(reply.body.contains("H264/90000"), "{}", reply.body);
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for n in 3.. {
            tick.tick().await;
            push_h265(&main, n);
            push_h264(&sub, n);
        }
    });
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("10 H.264 frames of the substream", || received.frames.load(Ordering::Relaxed) >= 10).await;
    let _ = pc.close().await;

    // Chromium's own offers: with the H.265 lines, the main stream.
    let with_h265 = chrome_offer_with_h265();
    let reply = http(addr, "POST", "/whep/porta-po", sdp, with_h265.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.headers[STREAM_HEADER], "main; codec=h265");
    assert!(reply.body.contains("a=rtpmap:49 H265/90000"), "{}", reply.body);
    assert!(reply.body.contains("profile-id=1"), "Main profile: {}", reply.body);
    let reply = http(addr, "POST", "/whep/porta-po", sdp, CHROME_OFFER.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.headers[STREAM_HEADER].starts_with("sub; codec=h264"), "{:?}", reply.headers);
    producer.abort();
}

/// An H.265 camera without an H.264 substream: 415, the reason, and the
/// relay's RTSP URL of it, with the host the browser used.
#[tokio::test]
async fn an_h265_only_camera_is_refused_with_its_rtsp_url() {
    let mut cam = entry("porta-po", Codec::H265);
    cam.qualities = vec![Quality::Main];
    let (addr, _) = serve(fake(vec![cam]), WhepSettings { rtsp_port: Some(8554), ..test_settings() }).await;
    let reply = http(addr, "POST", "/whep/porta-po", Some("application/sdp"), CHROME_OFFER.as_bytes()).await;
    assert_eq!(reply.status, 415, "{}", reply.body);
    assert!(
        reply.body.contains("camera `porta-po` is H.265, and this browser cannot decode H.265"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("rtsp://127.0.0.1:8554/porta-po"), "{}", reply.body);
    assert!(reply.body.contains("browser_h264 = \"transcode\""), "{}", reply.body);
    assert_eq!(reply.body.lines().count(), 1, "one line: {}", reply.body);
}
