//! The downstream relay's view of the streams, and measurements on them (rates, latencies, decoding).

use crate::{FFMPEG, STATS_JS, T};
use anyhow::{bail, ensure, Context, Result};
use ponte_proto::h264;
use ponte_proto::media::Quality;
use ponte_proto::session::ControlReceiver;
use ponte_proto::wire::Control;
use ponte_tests::quic::{Answer, FakeRelay, ReceivedFrame};
use ponte_tests::Chromium;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// The downstream relay's view: its control stream, watched for refusals,
/// and the frames it receives.
pub(crate) struct Viewer {
    frames: UnboundedReceiver<ReceivedFrame>,
    /// Control messages other than Stats/Catalog after the subscriptions.
    notices: Arc<Mutex<Vec<(Instant, Control)>>>,
    _tx: ponte_proto::session::ControlSender,
    _conn: quinn::Connection,
}

/// Accepts the relay's cascade session and subscribes `cams` (ids from 1).
pub(crate) async fn view(downstream: &FakeRelay, cams: &[&str]) -> Result<Viewer> {
    // A handshake the test did not accept in time (while it waited for the
    // catalog) has timed out in the queue: take the next one.
    let deadline = Instant::now() + T;
    let mut s = loop {
        match downstream.accept().await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => eprintln!("downstream: a stale handshake ({e:#}); next"),
            Err(e) => return Err(e.context("the relay never dialled its downstream")),
        }
    };
    let frames = s.collect_media();
    for (i, cam) in cams.iter().enumerate() {
        let answer = s.subscribe(i as u64 + 1, cam, Quality::Main).await?;
        ensure!(answer == Answer::Ok, "subscribing {cam} through the relay: {answer:?}");
    }
    let notices: Arc<Mutex<Vec<(Instant, Control)>>> = Arc::default();
    let rx: ControlReceiver = s.rx;
    tokio::spawn({
        let notices = notices.clone();
        let mut rx = rx;
        async move {
            while let Ok(msg) = rx.recv().await {
                if !matches!(msg, Control::Stats(_) | Control::Catalog { .. } | Control::AuditHead { .. }) {
                    notices.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), msg));
                }
            }
        }
    });
    Ok(Viewer { frames, notices, _tx: s.tx, _conn: s.conn })
}

impl Viewer {
    pub(crate) fn notices(&self) -> Vec<Control> {
        self.notices.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, m)| m.clone()).collect()
    }

    pub(crate) fn drain(&mut self) -> Vec<ReceivedFrame> {
        let mut out = Vec::new();
        while let Ok(f) = self.frames.try_recv() {
            out.push(f);
        }
        out
    }

    pub(crate) async fn collect(&mut self, window: Duration) -> Vec<ReceivedFrame> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(f)) = tokio::time::timeout_at(deadline, self.frames.recv()).await {
            out.push(f);
        }
        out
    }

    /// Waits until every subscription in `subs` received a keyframe after
    /// `since`; returns each one's frames from that keyframe on.
    pub(crate) async fn resumed(
        &mut self,
        subs: &[u64],
        since: Instant,
        timeout: Duration,
    ) -> Result<BTreeMap<u64, Vec<ReceivedFrame>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got: BTreeMap<u64, Vec<ReceivedFrame>> = BTreeMap::new();
        loop {
            if subs.iter().all(|s| got.contains_key(s)) {
                return Ok(got);
            }
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(f)) if f.at >= since => match got.get_mut(&f.subscription) {
                    Some(v) => v.push(f),
                    None if f.keyframe => {
                        got.insert(f.subscription, vec![f]);
                    }
                    None => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => bail!("the downstream session's media ended"),
                Err(_) => {
                    let missing: Vec<_> = subs.iter().filter(|s| !got.contains_key(s)).collect();
                    bail!("no keyframe within {timeout:?} on subscriptions {missing:?}");
                }
            }
        }
    }
}

/// Frames per second of each subscription over `frames` (received in `window`).
pub(crate) fn rates(frames: &[ReceivedFrame], window: Duration) -> BTreeMap<u64, f64> {
    let mut n: BTreeMap<u64, usize> = BTreeMap::new();
    for f in frames {
        *n.entry(f.subscription).or_default() += 1;
    }
    n.into_iter().map(|(s, c)| (s, c as f64 / window.as_secs_f64())).collect()
}

/// Capture → receive latencies (ms) from the SEI capture time.
pub(crate) fn latencies_ms(frames: &[ReceivedFrame]) -> Vec<f64> {
    let mut v: Vec<f64> = frames
        .iter()
        .filter_map(|f| {
            Some((f.at_unix_micros()?.saturating_sub(h264::find_capture_time(&f.payload)?)) as f64 / 1e3)
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

trait ArrivalClock {
    fn at_unix_micros(&self) -> Option<u64>;
}

impl ArrivalClock for ReceivedFrame {
    /// Arrival time on the Unix clock the SEI capture time uses.
    fn at_unix_micros(&self) -> Option<u64> {
        let ago = self.at.elapsed().as_micros() as u64;
        h264::unix_micros_now().checked_sub(ago)
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Decodes one GOP (parameter sets from its header, then its frames) with
/// ffmpeg; returns the number of frames ffmpeg decoded.
pub(crate) async fn ffmpeg_decodes(dir: &Path, name: &str, frames: &[ReceivedFrame]) -> Result<usize> {
    let first = frames.first().context("no frames to decode")?;
    let mut annexb = Vec::new();
    for ps in &first.config.parameter_sets {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(ps);
    }
    for f in frames {
        annexb.extend_from_slice(&f.payload);
    }
    let path = dir.join(format!("{name}.h264"));
    std::fs::write(&path, &annexb)?;
    let out = tokio::process::Command::new(FFMPEG)
        .args(["-v", "error", "-f", "h264", "-i"])
        .arg(&path)
        .args(["-f", "framecrc", "-"])
        .output()
        .await
        .context("running ffmpeg")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success() && stderr.trim().is_empty(), "ffmpeg on {name}: {stderr}");
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count())
}

pub(crate) fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// Plays `camera` on the viewer page until 30 frames are decoded.
pub(crate) async fn browser_plays(browser: &Chromium, base: &str, camera: &str) -> Result<Value> {
    browser.navigate(&format!("{base}/?camera={camera}")).await?;
    ponte_tests::wait_until("30 decoded frames in Chromium", T, Duration::from_millis(100), || async {
        let stats = browser.eval(STATS_JS).await?;
        Ok((num(&stats, "framesDecoded") >= 30).then_some(stats))
    })
    .await
}
