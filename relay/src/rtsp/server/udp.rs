//! The server's UDP sockets (RTP on an even port, RTCP on the next), and
//! the receiver reports on them that keep UDP sessions alive.

use super::RtspServer;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tracing::debug;

/// The server's UDP sockets: RTP on an even port, RTCP on the next.
pub(super) struct UdpPair {
    pub(super) rtp: Arc<UdpSocket>,
    pub(super) rtcp: Arc<UdpSocket>,
    pub(super) ports: (u16, u16),
}

impl UdpPair {
    pub(super) async fn bind(ip: IpAddr, port: Option<u16>) -> std::io::Result<Self> {
        if let Some(p) = port {
            let rtp = UdpSocket::bind((ip, p)).await?;
            let rtcp = UdpSocket::bind((ip, p.wrapping_add(1))).await?;
            return Ok(Self { rtp: Arc::new(rtp), rtcp: Arc::new(rtcp), ports: (p, p.wrapping_add(1)) });
        }
        let mut last = None;
        for _ in 0..64 {
            let rtp = UdpSocket::bind((ip, 0)).await?;
            let p = rtp.local_addr()?.port();
            if !p.is_multiple_of(2) || p == u16::MAX {
                continue;
            }
            match UdpSocket::bind((ip, p + 1)).await {
                Ok(rtcp) => return Ok(Self { rtp: Arc::new(rtp), rtcp: Arc::new(rtcp), ports: (p, p + 1) }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free even/odd UDP port pair")))
    }
}

impl RtspServer {
    /// Receiver reports (and NAT openers) on the server's UDP ports keep
    /// UDP sessions alive.
    pub(super) async fn udp_liveness(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((_, from)) => {
                    let now = Instant::now();
                    for s in self.lock().values_mut().filter(|s| s.sink.is_client_udp(from)) {
                        s.last_seen = now;
                    }
                }
                // ICMP errors of earlier sends surface here on some systems.
                Err(e) => debug!(error = %e, "RTSP UDP receive"),
            }
        }
    }
}
