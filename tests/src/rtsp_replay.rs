//! An RTSP client that asks for a past interval with `Range: clock=` (ONVIF
//! Profile G replay) while ffmpeg does the reading and decoding: ffmpeg has
//! no option for that header (its PLAY says `Range: npt=0.000-`), so a
//! loopback proxy between ffmpeg and the relay rewrites the `Range` of each
//! PLAY to the interval asked for. Everything else passes unchanged.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of `relay` (its RTSP address) whose PLAYs ask for
/// `Range: clock=FROM-TO`; returns the proxy's address.
pub async fn range_proxy(relay: SocketAddr, from_ms: u64, to_ms: u64) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the RTSP range proxy")?;
    let addr = listener.local_addr()?;
    let clock = ponte_relay::rtsp::range::format(ponte_relay::rtsp::range::ClockRange {
        from_ms,
        to_ms: Some(to_ms),
    });
    let range = format!("Range: {clock}\r\n");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let range = range.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(relay).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
                // Requests (headers only: ffmpeg sends no bodies) and the
                // client's interleaved RTCP (`$`, channel, length, data).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let n = match cr.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        let take = if buf.first() == Some(&b'$') {
                            match buf.get(2..4) {
                                Some(&[a, b]) if buf.len() >= 4 + usize::from(u16::from_be_bytes([a, b])) => {
                                    let len = 4 + usize::from(u16::from_be_bytes([a, b]));
                                    Some(buf.drain(..len).collect::<Vec<u8>>())
                                }
                                _ => None,
                            }
                        } else {
                            find(&buf, b"\r\n\r\n")
                                .map(|end| rewrite(&buf.drain(..end + 4).collect::<Vec<u8>>(), &range))
                        };
                        let Some(out) = take else { break };
                        if sw.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
                down.abort();
            });
        }
    });
    Ok(addr)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rewrite(head: &[u8], range: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    if !text.starts_with("PLAY ") {
        return head.to_vec();
    }
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if line.to_ascii_lowercase().starts_with("range:") {
            continue;
        }
        if line == "\r\n" {
            out.push_str(range);
        }
        out.push_str(line);
    }
    out.into_bytes()
}
