//! A VMS reading one RTSP stream: ffmpeg decoding to nowhere
//! ([`crate::spawn_ffmpeg_reader`]), its decoded-frame count as it goes,
//! the longest time that count stood still, and how it ended.

use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// ffmpeg reading `url` over interleaved TCP for at most `secs` of video.
pub struct RtspReader {
    frames: Arc<AtomicU64>,
    longest_stall_ms: Arc<AtomicU64>,
    done: tokio::task::JoinHandle<Result<(std::process::ExitStatus, String)>>,
}

impl RtspReader {
    /// Starts ffmpeg on `url` (credentials in the URL if the relay asks).
    pub fn start(url: &str, secs: u32) -> Result<RtspReader> {
        let mut child = crate::spawn_ffmpeg_reader(url, "tcp", secs)?;
        let mut lines = BufReader::new(child.stdout.take().context("ffmpeg stdout")?).lines();
        let mut stderr = child.stderr.take().context("ffmpeg stderr")?;
        let frames = Arc::new(AtomicU64::new(0));
        let longest_stall_ms = Arc::new(AtomicU64::new(0));
        let (count, stall) = (frames.clone(), longest_stall_ms.clone());
        let done = tokio::spawn(async move {
            let errors = tokio::spawn(async move {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s).await;
                s
            });
            let mut moved = Instant::now();
            while let Some(line) = lines.next_line().await? {
                let Some(n) = line.strip_prefix("frame=").and_then(|v| v.trim().parse::<u64>().ok()) else {
                    continue;
                };
                let before = count.load(Ordering::Relaxed);
                if n > before {
                    if before > 0 {
                        stall.fetch_max(moved.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    moved = Instant::now();
                    count.store(n, Ordering::Relaxed);
                }
            }
            Ok((child.wait().await?, errors.await.unwrap_or_default()))
        });
        Ok(RtspReader { frames, longest_stall_ms, done })
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// The longest time between two decoded frames so far, after the first.
    pub fn longest_stall(&self) -> Duration {
        Duration::from_millis(self.longest_stall_ms.load(Ordering::Relaxed))
    }

    /// Waits until ffmpeg has decoded `n` frames.
    pub async fn decodes(&self, n: u64, within: Duration) -> Result<()> {
        crate::wait_until("ffmpeg to decode frames", within, Duration::from_millis(100), || async {
            let got = self.frames();
            if got >= n {
                Ok(Some(()))
            } else {
                bail!("{got} of {n} frames")
            }
        })
        .await
    }

    /// Waits for ffmpeg to end (it plays for its `secs`): the frames it
    /// decoded, or an error if it failed or said anything on stderr.
    pub async fn finish(self) -> Result<u64> {
        let (status, errors) = tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .context("ffmpeg never ended")???;
        let frames = self.frames.load(Ordering::Relaxed);
        if !status.success() || !errors.trim().is_empty() {
            bail!("ffmpeg exited {status} after {frames} frames: {errors}");
        }
        Ok(frames)
    }
}
