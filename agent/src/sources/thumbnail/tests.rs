use super::*;
use crate::sources::device::{Device, Source};
use crate::sources::synthetic::SyntheticSettings;
use std::time::Instant;

/// Width and height from the first start-of-frame segment of a JPEG that
/// begins with SOI and ends with EOI; `None` if it is not one.
fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) || !jpeg.ends_with(&[0xFF, 0xD9]) {
        return None;
    }
    let mut at = 2;
    loop {
        let marker = *jpeg.get(at + 1)?;
        if *jpeg.get(at)? != 0xFF {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]));
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let sof = jpeg.get(at + 4..at + 2 + len)?;
            let height = u16::from_be_bytes([*sof.get(1)?, *sof.get(2)?]);
            let width = u16::from_be_bytes([*sof.get(3)?, *sof.get(4)?]);
            return Some((width, height));
        }
        at += 2 + len;
    }
}

fn synthetic(id: &str, width: u16, height: u16) -> Device {
    let settings =
        SyntheticSettings { main_width: Some(width), main_height: Some(height), ..Default::default() };
    Device { id: id.into(), name: id.into(), source: Source::Synthetic(settings), ..Device::default() }
}

/// Subscribes to `camera` at `quality` (starting it, as a viewer does) and
/// waits for its first keyframe to reach the cache.
async fn watch(cams: &Cameras, camera: &str, quality: Quality) -> ponte_proto::hub::TrackReader {
    let mut reader = cams.subscribe(camera, quality).expect("listed");
    let first = tokio::time::timeout(Duration::from_secs(10), reader.next()).await;
    assert!(first.is_ok_and(|i| i.is_some_and(|i| i.frame.keyframe)), "{camera}: no keyframe");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_of_watched_cameras_are_jpegs_within_the_width_keeping_the_aspect() {
    let cams = Cameras::start(&[synthetic("hd", 1920, 1080), synthetic("sd", 1280, 720)]);
    let _hd = watch(&cams, "hd", Quality::Main).await;
    let _sd = watch(&cams, "sd", Quality::Main).await;
    for (camera, max_width, expect) in
        [("hd", 640, (640, 360)), ("sd", 320, (320, 180)), ("hd", 4000, (1920, 1080))]
    {
        let started = Instant::now();
        let jpeg = thumbnail(&cams, camera, max_width).await.expect("thumbnail");
        let took = started.elapsed();
        eprintln!("{camera} main -> {max_width} wide: {} bytes in {took:?}", jpeg.len());
        assert_eq!(jpeg_size(&jpeg), Some(expect), "{camera} at {max_width}: a JPEG of the fitted size");
    }
    // Once the substream is cached it is the one used: 320 wide, not upscaled.
    let _sub = watch(&cams, "sd", Quality::Sub).await;
    let started = Instant::now();
    let jpeg = thumbnail(&cams, "sd", 640).await.expect("thumbnail");
    eprintln!("sd sub -> 640 wide: {} bytes in {:?}", jpeg.len(), started.elapsed());
    assert_eq!(jpeg_size(&jpeg), Some((320, 180)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_camera_is_refused_at_once_and_not_started() {
    let cams = Cameras::start(&[synthetic("idle", 640, 360)]);
    let started = Instant::now();
    let err = thumbnail(&cams, "idle", 320).await.expect_err("nothing cached");
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert!(matches!(err, ThumbnailError::NoKeyframe(ref c) if c == "idle"), "{err}");
    // Had it been started, the encoder would have produced frames by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snaps = cams.cameras();
    assert!(snaps.iter().all(|s| s.frames == 0 && s.viewers == 0), "{snaps:?}");
}

#[tokio::test]
async fn an_unknown_camera_is_named() {
    let cams = Cameras::start(&[synthetic("known", 640, 360)]);
    let err = thumbnail(&cams, "nope", 320).await.expect_err("no such camera");
    assert!(matches!(err, ThumbnailError::UnknownCamera(_)), "{err}");
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[test]
fn the_size_keeps_the_aspect_never_upscales_and_stays_even() {
    assert_eq!(fit(1920, 1080, 640), Some((640, 360)));
    assert_eq!(fit(1280, 720, 4000), Some((1280, 720)));
    assert_eq!(fit(2560, 1920, 321), Some((320, 240)));
    assert_eq!(fit(1080, 1920, 200), Some((200, 354)));
    assert_eq!(fit(1920, 1080, 0), Some((2, 2)));
    assert_eq!(fit(0, 0, 640), None);
    assert!(description(Codec::H265, None, 640).contains("h265parse ! avdec_h265"));
    assert!(description(Codec::H264, Some((640, 360)), 640).contains("width=640,height=360"));
}

/// One H.265 IDR of `width`×`height` from GStreamer's test source, its
/// VPS/SPS/PPS in band (as some cameras send them).
fn h265_keyframe(width: u32, height: u32) -> Bytes {
    pipeline::check(&[
        ("x265enc", "gstreamer1.0-plugins-bad"),
        ("videotestsrc", "gstreamer1.0-plugins-base"),
    ])
    .expect("elements");
    let desc = format!(
        "videotestsrc num-buffers=1 ! video/x-raw,width={width},height={height} ! x265enc speed-preset=ultrafast tune=zerolatency \
         ! h265parse ! video/x-h265,stream-format=byte-stream,alignment=au ! appsink name=sink"
    );
    let p =
        Running(gst::parse::launch(&desc).expect("launch").downcast::<gst::Pipeline>().expect("pipeline"));
    let sink = p.0.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).expect("sink");
    p.0.set_state(gst::State::Playing).expect("playing");
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("an encoded picture");
    let map = sample.buffer_owned().expect("buffer").into_mapped_buffer_readable().expect("readable");
    Bytes::from_owner(map)
}

#[test]
fn an_h265_keyframe_of_unknown_size_decodes_to_the_width_keeping_the_aspect() {
    let item = HubItem {
        gop_seq: 1,
        config: Arc::new(ponte_proto::media::CodecConfig {
            codec: Codec::H265,
            width: 0,
            height: 0,
            parameter_sets: vec![],
        }),
        frame: ponte_proto::media::Frame { pts: 0, keyframe: true, payload: h265_keyframe(1280, 720) },
    };
    let started = Instant::now();
    let jpeg = encode("h265-cam", &item, 320).expect("thumbnail");
    eprintln!("h265 720p -> 320 wide: {} bytes in {:?}", jpeg.len(), started.elapsed());
    assert_eq!(jpeg_size(&jpeg), Some((320, 180)));
}
