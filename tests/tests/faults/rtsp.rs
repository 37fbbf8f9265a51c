//! RTSP clients (interleaved TCP) against the relay, and one measurement of the healthy viewers.

use crate::rig::localhost;
use crate::viewer::{latencies_ms, percentile, Viewer};
use crate::T;
use anyhow::{ensure, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An RTSP client over interleaved TCP: DESCRIBE, SETUP, PLAY; its socket
/// with a small receive buffer so the relay feels it stall at once.
pub(crate) async fn rtsp_play(port: u16, camera: &str) -> Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(16 * 1024)?;
    let mut s = sock.connect(localhost(port)).await?;
    let url = format!("rtsp://127.0.0.1:{port}/{camera}");
    let mut cseq = 0;
    let mut session = String::new();
    for (method, uri, extra) in [
        ("DESCRIBE", url.clone(), "Accept: application/sdp\r\n".to_owned()),
        (
            "SETUP",
            format!("{url}/trackID=0"),
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n".to_owned(),
        ),
        ("PLAY", url.clone(), String::new()),
    ] {
        cseq += 1;
        let session_line = if session.is_empty() { String::new() } else { format!("Session: {session}\r\n") };
        let req = format!("{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}{session_line}\r\n");
        s.write_all(req.as_bytes()).await?;
        let head = read_response(&mut s).await?;
        ensure!(head.starts_with("RTSP/1.0 200"), "{method}: {head}");
        if let Some(line) = head.lines().find(|l| l.to_ascii_lowercase().starts_with("session:")) {
            session = line[8..].trim().split(';').next().unwrap_or("").to_owned();
        }
    }
    Ok(s)
}

/// Reads one RTSP response (head and body) byte by byte.
async fn read_response(s: &mut tokio::net::TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(T, s.read(&mut b)).await??;
        ensure!(n == 1, "connection closed inside a response");
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let len = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(T, s.read_exact(&mut body)).await??;
    Ok(text + &String::from_utf8_lossy(&body))
}

/// Reads interleaved RTP for ever, counting frames (RTP marker bits).
pub(crate) fn rtsp_count_frames(
    mut s: tokio::net::TcpStream,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<Result<()>>) {
    let frames = Arc::new(AtomicU64::new(0));
    let counter = frames.clone();
    let task = tokio::spawn(async move {
        let mut hdr = [0u8; 4];
        loop {
            s.read_exact(&mut hdr).await?;
            ensure!(hdr[0] == b'$', "interleaved frame expected, got {:02x?}", hdr);
            let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
            let mut pkt = vec![0u8; len];
            s.read_exact(&mut pkt).await?;
            if hdr[1] == 0 && len >= 2 && pkt[1] & 0x80 != 0 {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (frames, task)
}

/// One measurement of the healthy viewers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Health {
    pub(crate) quic_fps: f64,
    pub(crate) rtsp_fps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
}

pub(crate) async fn measure(viewer: &mut Viewer, rtsp_frames: &AtomicU64, window: Duration) -> Health {
    viewer.drain();
    let before = rtsp_frames.load(Ordering::Relaxed);
    let quic = viewer.collect(window).await;
    let rtsp = rtsp_frames.load(Ordering::Relaxed) - before;
    let lat = latencies_ms(&quic);
    Health {
        quic_fps: quic.len() as f64 / window.as_secs_f64(),
        rtsp_fps: rtsp as f64 / window.as_secs_f64(),
        p50_ms: percentile(&lat, 0.5),
        p95_ms: percentile(&lat, 0.95),
    }
}
