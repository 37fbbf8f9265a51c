//! MP4 muxing of recorded GOPs: the clip an evidence export hands over.
//!
//! A plain (non-fragmented) MP4 with the `moov` first ("faststart", so a
//! player can start before the whole file arrives), one video track at the
//! 90 kHz clock of ponte's pts, muxed by `shiguredo_mp4`'s sans-IO file
//! muxer (it computes the sample tables; we hand it sample sizes and
//! durations and place the bytes). Samples are the recorded access units
//! with Annex-B start codes replaced by 4-byte lengths; VPS/SPS/PPS move to
//! the sample entry (`avc1`+`avcC`, `hvc1`+`hvcC`: `hvc1` requires every
//! parameter set out of band), access unit delimiters and filler are
//! dropped, SEI (ponte's capture time among them) is kept.
//!
//! A decoder configuration change mid-clip (a camera switched resolution)
//! becomes a second sample description, as the MP4 format intends; a codec
//! change is refused. Durations are pts deltas; across GOPs whose pts do
//! not follow the wall clock (a camera reconnect restarts its timestamps)
//! the wall-clock difference is used instead, so a recording gap shows as
//! the last picture held for the gap. The output is a pure function of the
//! GOPs: the file's creation time is the first GOP's wall time.

use super::RecordedGop;
use crate::h264;
use crate::h265;
use crate::media::{Codec, CodecConfig, Frame, CLOCK_RATE};
use shiguredo_mp4::bitstream::h264::LengthSize;
use shiguredo_mp4::bitstream::h264::{build_avc1_box, H264SampleEntryConfig};
use shiguredo_mp4::bitstream::h265::{build_hvc1_box, H265ConstantFrameRate, H265SampleEntryConfig};
use shiguredo_mp4::boxes::SampleEntry;
use shiguredo_mp4::mux::{estimate_maximum_moov_box_size, Mp4FileMuxer, Mp4FileMuxerOptions, Sample};
use shiguredo_mp4::TrackKind;
use std::num::NonZeroU32;
use std::time::Duration;

/// Pts ticks per millisecond.
const TICKS_PER_MS: u64 = CLOCK_RATE as u64 / 1000;

/// Across two GOPs, pts that disagree with the wall clock by more than this
/// are not one continuous stream (a reconnect restarted them): the wall
/// clock decides the gap. A second is far above the agent's clock jitter
/// and far below any real reconnect.
const PTS_WALL_TOLERANCE_MS: u64 = 1000;

/// A frame's duration when nothing else tells it (a one-frame clip): 1/25 s.
const DEFAULT_FRAME_TICKS: u32 = CLOCK_RATE / 25;

/// An MP4 clip and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Muxed {
    /// The complete MP4 file.
    pub bytes: Vec<u8>,
    /// Video codec of the track.
    pub codec: Codec,
    /// Number of frames (samples).
    pub frames: u64,
    /// Track duration, milliseconds (sum of the sample durations).
    pub duration_ms: u64,
    /// Pts of the first frame, 90 kHz (the clip's time zero).
    pub first_pts: u64,
    /// Wall-clock time of the first frame, Unix milliseconds.
    pub first_frame_wall_ms: u64,
    /// Wall-clock time of the last frame, Unix milliseconds.
    pub last_frame_wall_ms: u64,
    /// Number of sample descriptions (decoder configurations) in the track.
    pub sample_descriptions: usize,
}

/// Why recorded GOPs could not be muxed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    /// Nothing to mux.
    #[error("no frames to put in the clip: the requested range holds no recorded GOP")]
    NoFrames,
    /// A GOP does not start with a keyframe.
    #[error("recorded GOP {seq} does not start with a keyframe: the clip could not be decoded from there")]
    NoKeyframe {
        /// The GOP's sequence number.
        seq: u64,
    },
    /// The codec changed between GOPs.
    #[error("recorded GOP {seq} is {to} after {from} GOPs: one clip holds one codec, export the two parts separately")]
    CodecChanged {
        /// The GOP's sequence number.
        seq: u64,
        /// Codec of the clip so far.
        from: &'static str,
        /// Codec of this GOP.
        to: &'static str,
    },
    /// The parameter sets cannot be put in an MP4 sample entry.
    #[error("recorded GOP {seq}: its {codec} parameter sets cannot describe the clip's track ({reason})")]
    ParameterSets {
        /// The GOP's sequence number.
        seq: u64,
        /// Codec name.
        codec: &'static str,
        /// What is wrong with them.
        reason: String,
    },
    /// Pts do not increase within a GOP (B-frames or a broken recording).
    #[error("recorded GOP {seq}, frame {index}: pts {pts} does not follow the previous frame's {previous} (B-frames are not supported in evidence clips)")]
    PtsNotIncreasing {
        /// The GOP's sequence number.
        seq: u64,
        /// Index of the frame in the GOP.
        index: usize,
        /// Its pts.
        pts: u64,
        /// The previous frame's pts.
        previous: u64,
    },
    /// A frame holds no picture data once parameter sets and delimiters are moved out.
    #[error("recorded GOP {seq}, frame {index}: the frame holds no picture data")]
    EmptyFrame {
        /// The GOP's sequence number.
        seq: u64,
        /// Index of the frame in the GOP.
        index: usize,
    },
    /// A frame would last longer than an MP4 sample can (13 hours at 90 kHz).
    #[error("recorded GOP {seq}: the gap of {ms} ms before it is longer than one MP4 sample can last; export the two sides of the gap separately")]
    GapTooLong {
        /// The GOP after the gap.
        seq: u64,
        /// The gap, milliseconds.
        ms: u64,
    },
    /// The MP4 muxer refused (a bug on our side or a clip beyond MP4's limits).
    #[error("the MP4 muxer refused the clip: {0}")]
    Mp4(String),
}

/// Muxes `gops` (in recording order) into one MP4 file.
pub fn mux(gops: &[RecordedGop]) -> Result<Muxed, MuxError> {
    let first_gop = gops.iter().find(|g| !g.frames.is_empty()).ok_or(MuxError::NoFrames)?;
    let codec = first_gop.config.codec;
    let frame_count: usize = gops.iter().map(|g| g.frames.len()).sum();
    let payload_bytes: usize = gops.iter().flat_map(|g| &g.frames).map(|f| f.payload.len()).sum();
    let durations = durations(gops)?;

    let options = Mp4FileMuxerOptions {
        // Room for the sample tables before the media: the moov goes first
        // whenever the estimate holds (it is an upper bound per sample).
        reserved_moov_box_size: estimate_maximum_moov_box_size(&[frame_count]),
        creation_timestamp: Duration::from_millis(first_gop.wall_ms),
        ..Default::default()
    };
    let mut muxer = Mp4FileMuxer::with_options(options).map_err(mp4_error)?;
    let mut out = Vec::with_capacity(muxer.initial_boxes_bytes().len() + payload_bytes);
    out.extend_from_slice(muxer.initial_boxes_bytes());

    let timescale = NonZeroU32::new(CLOCK_RATE).ok_or_else(|| MuxError::Mp4("zero clock rate".into()))?;
    let mut durations = durations.into_iter();
    let mut current: Option<&CodecConfig> = None;
    let mut descriptions: Vec<SampleEntry> = Vec::new();
    let mut total_ticks = 0u64;
    for gop in gops.iter().filter(|g| !g.frames.is_empty()) {
        if gop.config.codec != codec {
            return Err(MuxError::CodecChanged {
                seq: gop.seq,
                from: codec.name(),
                to: gop.config.codec.name(),
            });
        }
        if !gop.frames.first().is_some_and(|f| f.keyframe) {
            return Err(MuxError::NoKeyframe { seq: gop.seq });
        }
        // A new entry only when the configuration changed: the muxer starts
        // a chunk (and a sample description, unless an equal one exists) for it.
        let mut entry = match current {
            Some(config) if *config == *gop.config => None,
            _ => {
                let entry = sample_entry(gop)?;
                if !descriptions.contains(&entry) {
                    descriptions.push(entry.clone());
                }
                current = Some(&gop.config);
                Some(entry)
            }
        };
        for (index, frame) in gop.frames.iter().enumerate() {
            let offset = out.len();
            write_sample(codec, frame, &mut out);
            if out.len() == offset {
                return Err(MuxError::EmptyFrame { seq: gop.seq, index });
            }
            let duration = durations.next().unwrap_or(DEFAULT_FRAME_TICKS);
            total_ticks += u64::from(duration);
            muxer
                .append_sample(&Sample {
                    track_kind: TrackKind::Video,
                    sample_entry: entry.take(),
                    keyframe: frame.keyframe,
                    timescale,
                    duration,
                    composition_time_offset: None,
                    data_offset: offset as u64,
                    data_size: out.len() - offset,
                })
                .map_err(mp4_error)?;
        }
    }

    let finalized = muxer.finalize().map_err(mp4_error)?;
    for (offset, bytes) in finalized.offset_and_bytes_pairs() {
        place(&mut out, offset, bytes)?;
    }

    let last_gop = gops.iter().rev().find(|g| !g.frames.is_empty()).unwrap_or(first_gop);
    let (first, last) = match (first_gop.frames.first(), last_gop.frames.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(MuxError::NoFrames),
    };
    Ok(Muxed {
        bytes: out,
        codec,
        frames: frame_count as u64,
        duration_ms: total_ticks / TICKS_PER_MS,
        first_pts: first.pts,
        first_frame_wall_ms: first_gop.frame_wall_ms(first),
        last_frame_wall_ms: last_gop.frame_wall_ms(last),
        sample_descriptions: descriptions.len(),
    })
}

/// Every frame's duration in 90 kHz ticks, in order: the pts delta to the
/// next frame; the last frame gets the previous delta.
fn durations(gops: &[RecordedGop]) -> Result<Vec<u32>, MuxError> {
    let mut out: Vec<u32> = Vec::new();
    let mut previous: Option<(&RecordedGop, &Frame)> = None;
    for gop in gops {
        for (index, frame) in gop.frames.iter().enumerate() {
            if let Some((prev_gop, prev)) = previous {
                let ticks = if std::ptr::eq(prev_gop, gop) {
                    match frame.pts.checked_sub(prev.pts) {
                        Some(d) if d > 0 => d,
                        _ => {
                            return Err(MuxError::PtsNotIncreasing {
                                seq: gop.seq,
                                index,
                                pts: frame.pts,
                                previous: prev.pts,
                            })
                        }
                    }
                } else {
                    across_gops(prev_gop, prev, gop, frame, out.last().copied())
                };
                let ticks = u32::try_from(ticks)
                    .map_err(|_| MuxError::GapTooLong { seq: gop.seq, ms: ticks / TICKS_PER_MS })?;
                out.push(ticks);
            }
            previous = Some((gop, frame));
        }
    }
    out.push(out.last().copied().unwrap_or(DEFAULT_FRAME_TICKS));
    Ok(out)
}

/// Duration of `prev`, the last frame of `prev_gop`, before `next` opens `gop`.
fn across_gops(
    prev_gop: &RecordedGop,
    prev: &Frame,
    gop: &RecordedGop,
    next: &Frame,
    before: Option<u32>,
) -> u64 {
    let wall_ms = gop.frame_wall_ms(next).saturating_sub(prev_gop.frame_wall_ms(prev));
    match next.pts.checked_sub(prev.pts) {
        Some(d) if d > 0 && (d / TICKS_PER_MS).abs_diff(wall_ms) <= PTS_WALL_TOLERANCE_MS => d,
        // A clock that stepped back leaves no measure: keep the pace.
        _ if wall_ms == 0 => before.map_or(u64::from(DEFAULT_FRAME_TICKS), u64::from),
        _ => wall_ms * TICKS_PER_MS,
    }
}

/// The MP4 sample entry (`avc1`/`hvc1`) describing `gop`'s configuration.
fn sample_entry(gop: &RecordedGop) -> Result<SampleEntry, MuxError> {
    let config = &gop.config;
    let of_type = |t: u8| -> Vec<Vec<u8>> {
        config
            .parameter_sets
            .iter()
            .filter(|ps| match config.codec {
                Codec::H264 => h264::nal_type(ps) == Some(t),
                Codec::H265 => h265::nal_type(ps) == Some(t),
            })
            .map(|ps| ps.to_vec())
            .collect()
    };
    let refused = |e: shiguredo_mp4::Error| MuxError::ParameterSets {
        seq: gop.seq,
        codec: config.codec.name(),
        reason: e.to_string(),
    };
    match config.codec {
        Codec::H264 => {
            let entry_config = H264SampleEntryConfig { length_size: LengthSize::FourBytes };
            build_avc1_box(&of_type(h264::nal::SPS), &of_type(h264::nal::PPS), &entry_config)
                .map(SampleEntry::Avc1)
                .map_err(refused)
        }
        Codec::H265 => {
            let entry_config = H265SampleEntryConfig {
                length_size: LengthSize::FourBytes,
                avg_frame_rate: H265SampleEntryConfig::AVG_FRAME_RATE_UNSPECIFIED,
                constant_frame_rate: H265ConstantFrameRate::Unknown,
            };
            build_hvc1_box(
                &of_type(h265::nal::VPS),
                &of_type(h265::nal::SPS),
                &of_type(h265::nal::PPS),
                &entry_config,
            )
            .map(SampleEntry::Hvc1)
            .map_err(refused)
        }
    }
}

/// Appends `frame` as an MP4 sample: each NAL after its 4-byte length,
/// without the parameter sets (in the sample entry), delimiters and filler.
fn write_sample(codec: Codec, frame: &Frame, out: &mut Vec<u8>) {
    for nal in h264::nal_units(&frame.payload) {
        let moved_out = match codec {
            Codec::H264 => matches!(
                h264::nal_type(nal),
                Some(h264::nal::SPS | h264::nal::PPS | h264::nal::AUD | h264::nal::FILLER)
            ),
            // FD_NUT (38) is HEVC's filler.
            Codec::H265 => {
                matches!(
                    h265::nal_type(nal),
                    Some(h265::nal::VPS | h265::nal::SPS | h265::nal::PPS | h265::nal::AUD | 38)
                )
            }
        };
        // A NAL over 4 GiB cannot come from a recorded frame; dropping it
        // would show as a decode error rather than a wrong length.
        let Ok(len) = u32::try_from(nal.len()) else { continue };
        if !moved_out {
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(nal);
        }
    }
}

/// Writes `bytes` at `offset` of `out`, growing it when they go past its end.
fn place(out: &mut Vec<u8>, offset: u64, bytes: &[u8]) -> Result<(), MuxError> {
    let start =
        usize::try_from(offset).map_err(|_| MuxError::Mp4(format!("box offset {offset} beyond memory")))?;
    let end = start + bytes.len();
    if out.len() < end {
        out.resize(end, 0);
    }
    let target =
        out.get_mut(start..end).ok_or_else(|| MuxError::Mp4(format!("box at {offset} outside the file")))?;
    target.copy_from_slice(bytes);
    Ok(())
}

fn mp4_error(e: shiguredo_mp4::mux::MuxError) -> MuxError {
    MuxError::Mp4(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{annex_b, idr, slice, PPS};
    use bytes::Bytes;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;

    const FFMPEG: &str = "/usr/bin/ffmpeg";
    const FFPROBE: &str = "/usr/bin/ffprobe";
    /// 25 fps.
    const FRAME_TICKS: u64 = 3600;
    /// An arbitrary pts of the first frame: a clip's time starts at zero anyway.
    const PTS0: u64 = 123_456_789;
    /// 2024-05-06T07:08:09.010Z.
    const WALL0: u64 = 1_714_979_289_010;

    /// ffmpeg and ffprobe, or SKIP outside CI (CI=true must not skip).
    fn have_ffmpeg() -> bool {
        if Path::new(FFMPEG).exists() && Path::new(FFPROBE).exists() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{FFMPEG} and {FFPROBE} are required (apt-get install ffmpeg); CI=true forbids skipping"
        );
        eprintln!("SKIP: {FFMPEG} or {FFPROBE} is missing (apt-get install ffmpeg)");
        false
    }

    /// A real `frames`-frame stream from ffmpeg's test source, split into
    /// recorded GOPs of `gop` frames at 25 fps: what a camera would send.
    fn encoded(codec: Codec, size: &str, frames: usize, gop: usize, dir: &Path) -> Vec<RecordedGop> {
        let out = dir.join(format!("{}-{size}.es", codec.name()));
        let (encoder, params, format) = match codec {
            Codec::H264 => {
                ("libx264", "-x264-params", format!("aud=1:keyint={gop}:min-keyint={gop}:bframes=0"))
            }
            Codec::H265 => (
                "libx265",
                "-x265-params",
                format!("aud=1:keyint={gop}:min-keyint={gop}:bframes=0:log-level=error"),
            ),
        };
        let status = Command::new(FFMPEG)
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25")])
            .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p", "-c:v", encoder, params, &format])
            .args(["-f", if codec == Codec::H264 { "h264" } else { "hevc" }])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not encode the {codec:?} test stream");
        let stream = std::fs::read(&out).unwrap();
        let aud = |nal: &[u8]| match codec {
            Codec::H264 => h264::nal_type(nal) == Some(h264::nal::AUD),
            Codec::H265 => h265::nal_type(nal) == Some(h265::nal::AUD),
        };
        let mut units: Vec<Vec<&[u8]>> = Vec::new();
        for nal in h264::nal_units(&stream) {
            match units.last_mut() {
                Some(unit) if !aud(nal) => unit.push(nal),
                _ => units.push(vec![nal]),
            }
        }
        assert_eq!(units.len(), frames, "one access unit per frame");
        let first = annex_b(&units[0]);
        let parameter_sets: Vec<Bytes> = match codec {
            Codec::H264 => {
                let (sps, pps) = h264::parameter_sets(&first);
                vec![Bytes::copy_from_slice(sps.unwrap()), Bytes::copy_from_slice(pps.unwrap())]
            }
            Codec::H265 => {
                let ps = h265::parameter_sets(&first);
                [ps.vps, ps.sps, ps.pps].iter().map(|p| Bytes::copy_from_slice(p.unwrap())).collect()
            }
        };
        let (width, height) = size.split_once('x').unwrap();
        let config = Arc::new(CodecConfig {
            codec,
            width: width.parse().unwrap(),
            height: height.parse().unwrap(),
            parameter_sets,
        });
        let frames: Vec<Frame> = units
            .iter()
            .enumerate()
            .map(|(i, nals)| {
                let payload = annex_b(nals);
                let keyframe = match codec {
                    Codec::H264 => h264::is_keyframe(&payload),
                    Codec::H265 => h265::is_keyframe(&payload),
                };
                Frame { pts: PTS0 + i as u64 * FRAME_TICKS, keyframe, payload }
            })
            .collect();
        frames
            .chunks(gop)
            .enumerate()
            .map(|(i, chunk)| {
                assert!(chunk[0].keyframe, "GOP {i} starts with a keyframe");
                RecordedGop {
                    wall_ms: WALL0 + ((chunk[0].pts - PTS0) / TICKS_PER_MS),
                    seq: i as u64,
                    config: config.clone(),
                    frames: chunk.to_vec(),
                }
            })
            .collect()
    }

    /// ffprobe's codec name, frame count and duration (s), and ffmpeg's
    /// decode errors, of the clip.
    fn probe(clip: &[u8], dir: &Path) -> (String, u64, f64, String) {
        let path = dir.join("clip.mp4");
        std::fs::write(&path, clip).unwrap();
        let out = Command::new(FFPROBE)
            .args(["-v", "error", "-show_entries", "stream=codec_name,nb_frames,duration", "-of", "json"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "ffprobe refused the clip: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "ffprobe complained: {}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stream = &json["streams"][0];
        let decode = Command::new(FFMPEG)
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(decode.status.success());
        (
            stream["codec_name"].as_str().unwrap().to_owned(),
            stream["nb_frames"].as_str().unwrap().parse().unwrap(),
            stream["duration"].as_str().unwrap().parse().unwrap(),
            String::from_utf8_lossy(&decode.stderr).into_owned(),
        )
    }

    fn plays_in_ffmpeg(codec: Codec, probe_name: &str) {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let gops = encoded(codec, "320x240", 60, 25, dir.path());
        let muxed = mux(&gops).unwrap();
        assert_eq!(muxed.frames, 60);
        assert_eq!(muxed.duration_ms, 60 * 40);
        assert_eq!(muxed.first_pts, PTS0);
        assert_eq!(muxed.first_frame_wall_ms, WALL0);
        assert_eq!(muxed.last_frame_wall_ms, WALL0 + 59 * 40);
        assert_eq!(muxed.sample_descriptions, 1);
        assert_eq!(mux(&gops).unwrap(), muxed, "same GOPs, same bytes");
        // Faststart: the moov before the mdat.
        let moov = muxed.bytes.windows(4).position(|w| w == b"moov").unwrap();
        let mdat = muxed.bytes.windows(4).position(|w| w == b"mdat").unwrap();
        assert!(moov < mdat, "moov at {moov} after mdat at {mdat}");

        let (name, frames, duration, errors) = probe(&muxed.bytes, dir.path());
        assert_eq!(name, probe_name);
        assert_eq!(frames, 60);
        assert!((duration - 2.4).abs() <= 0.04, "duration {duration} s, expected 2.4 s within one frame");
        assert_eq!(errors, "", "ffmpeg decode errors");
    }

    #[test]
    fn h264_clip_plays_in_ffmpeg() {
        plays_in_ffmpeg(Codec::H264, "h264");
    }

    #[test]
    fn h265_clip_plays_in_ffmpeg() {
        plays_in_ffmpeg(Codec::H265, "hevc");
    }

    #[test]
    fn a_resolution_change_becomes_a_second_sample_description() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut gops = encoded(Codec::H264, "320x240", 50, 25, dir.path());
        let mut small = encoded(Codec::H264, "160x120", 25, 25, dir.path());
        // The camera's new session: its own pts, the wall clock going on.
        for (i, frame) in small[0].frames.iter_mut().enumerate() {
            frame.pts = 7_000 + i as u64 * FRAME_TICKS;
        }
        small[0].wall_ms = WALL0 + 50 * 40;
        small[0].seq = 2;
        gops.append(&mut small);
        let muxed = mux(&gops).unwrap();
        assert_eq!(muxed.sample_descriptions, 2);
        assert_eq!(muxed.duration_ms, 75 * 40, "the wall clock bridges the pts restart");
        let (_, frames, duration, errors) = probe(&muxed.bytes, dir.path());
        assert_eq!(frames, 75);
        assert!((duration - 3.0).abs() <= 0.04, "duration {duration} s");
        assert_eq!(errors, "", "ffmpeg decode errors");
    }

    fn fixture_gop(seq: u64, wall_ms: u64, pts: &[u64]) -> RecordedGop {
        let config = Arc::new(CodecConfig {
            codec: Codec::H264,
            width: 0,
            height: 0,
            parameter_sets: vec![Bytes::from_static(SPS_320X240), Bytes::from_static(PPS)],
        });
        let frames = pts
            .iter()
            .enumerate()
            .map(|(i, &pts)| Frame {
                pts,
                keyframe: i == 0,
                payload: if i == 0 {
                    annex_b(&[&[0x09, 0xf0], SPS_320X240, PPS, &idr(40)])
                } else {
                    annex_b(&[&slice(20)])
                },
            })
            .collect();
        RecordedGop { wall_ms, seq, config, frames }
    }

    /// x264's Baseline 320x240 SPS, parsed by the sample entry builder.
    const SPS_320X240: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80,
    ];

    #[test]
    fn samples_are_length_prefixed_without_parameter_sets_or_delimiters() {
        let gop = fixture_gop(0, WALL0, &[0, 3000, 6000]);
        let muxed = mux(std::slice::from_ref(&gop)).unwrap();
        let mut keyframe = 41u32.to_be_bytes().to_vec();
        keyframe.extend_from_slice(&idr(40));
        let mut delta = 21u32.to_be_bytes().to_vec();
        delta.extend_from_slice(&slice(20));
        let media = [keyframe, delta.clone(), delta].concat();
        let at = muxed.bytes.windows(media.len()).position(|w| w == media).expect("samples back to back");
        assert_eq!(at + media.len(), muxed.bytes.len(), "the mdat ends the file");
        assert_eq!(muxed.duration_ms, 100, "the last frame lasts as long as the one before");
        assert_eq!(muxed.frames, 3);
    }

    #[test]
    fn refusals_name_the_gop() {
        assert_eq!(mux(&[]), Err(MuxError::NoFrames));
        assert_eq!(
            mux(&[fixture_gop(4, WALL0, &[0, 3000, 3000])]),
            Err(MuxError::PtsNotIncreasing { seq: 4, index: 2, pts: 3000, previous: 3000 })
        );
        let mut hevc = fixture_gop(5, WALL0 + 1000, &[9000]);
        hevc.config = Arc::new(CodecConfig { codec: Codec::H265, ..(*hevc.config).clone() });
        assert_eq!(
            mux(&[fixture_gop(4, WALL0, &[0]), hevc]),
            Err(MuxError::CodecChanged { seq: 5, from: "h264", to: "h265" })
        );
        let mut no_sps = fixture_gop(6, WALL0, &[0]);
        no_sps.config = Arc::new(CodecConfig {
            parameter_sets: vec![Bytes::from_static(PPS)],
            ..(*no_sps.config).clone()
        });
        let err = mux(&[no_sps]).unwrap_err();
        assert!(matches!(err, MuxError::ParameterSets { seq: 6, .. }), "{err}");
        let mut headless = fixture_gop(7, WALL0, &[0, 3000]);
        headless.frames.remove(0);
        assert_eq!(mux(&[headless]), Err(MuxError::NoKeyframe { seq: 7 }));
        let mut empty = fixture_gop(8, WALL0, &[0]);
        empty.frames[0].payload = annex_b(&[SPS_320X240, PPS]);
        assert_eq!(mux(&[empty]), Err(MuxError::EmptyFrame { seq: 8, index: 0 }));
        let gap = [fixture_gop(1, WALL0, &[0]), fixture_gop(2, WALL0 + 14 * 3_600_000, &[1])];
        assert!(matches!(mux(&gap), Err(MuxError::GapTooLong { seq: 2, .. })));
    }

    proptest::proptest! {
        /// Whatever a damaged recording holds, mux answers without panicking.
        #[test]
        fn mux_never_panics(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..8),
            pts in proptest::collection::vec(0u64..100_000, 8),
            keyframes in proptest::collection::vec(proptest::prelude::any::<bool>(), 8),
        ) {
            let mut gop = fixture_gop(0, WALL0, &[0]);
            gop.frames = payloads
                .into_iter()
                .zip(pts.iter().zip(&keyframes))
                .map(|(p, (&pts, &keyframe))| Frame { pts, keyframe, payload: Bytes::from(p) })
                .collect();
            let _ = mux(&[gop]);
        }
    }
}
