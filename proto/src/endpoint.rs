//! QUIC endpoints on UDP sockets with ponte's settings: receive and send
//! buffers large enough that a burst of GSO-sized datagrams (a keyframe to
//! many subscribers) is not dropped by the kernel before quinn reads it.
//! Drops in the socket look like congestion to the sender and cut its rate.

use std::net::SocketAddr;
use std::sync::Arc;

/// `[transport]` of a node's config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP segmentation offload (turn off on NICs/VMs that mishandle it).
    #[serde(default = "yes")]
    pub gso: bool,
    /// The largest UDP payload QUIC sends and accepts, bytes: path MTU
    /// discovery probes up to it. The default fits an Ethernet MTU of 1500
    /// (1500 − 20 IPv4 − 8 UDP − 20 spare for tunnels); on a dedicated
    /// fibre with jumbo frames end to end (MTU 9000) raise it to 8972 on
    /// both ends (the deploy guide says when).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// Milliseconds of silence after which a QUIC link is declared dead
    /// (keep-alives go every third of it, at most every second). Default
    /// 3000; 1000 where a second agent takes over the cameras (issue 22),
    /// so a dead agent is noticed within a second. The lower of the two
    /// ends' values applies to a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

impl Default for TransportSection {
    fn default() -> Self {
        Self { gso: true, max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD, idle_timeout_ms: None }
    }
}

/// Accepted `transport.idle_timeout_ms`: a fibre's RTT is milliseconds,
/// but three keep-alives must fit.
pub const IDLE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 600..=60_000;
/// `transport.idle_timeout_ms` where a node has a redundant peer and the
/// file does not say: a dead agent's cameras move within about a second.
pub const REDUNDANT_IDLE_TIMEOUT_MS: u64 = 1_000;

impl TransportSection {
    /// The section's problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !MAX_UDP_PAYLOAD.contains(&self.max_udp_payload) {
            out.push(format!(
                "`transport.max_udp_payload` = {}: expected {} to {} bytes (1452 for an MTU of 1500, 8972 for 9000)",
                self.max_udp_payload,
                MAX_UDP_PAYLOAD.start(),
                MAX_UDP_PAYLOAD.end()
            ));
        }
        if let Some(ms) = self.idle_timeout_ms.filter(|ms| !IDLE_TIMEOUT_MS.contains(ms)) {
            out.push(format!(
                "`transport.idle_timeout_ms` = {ms}: expected {} to {} ms",
                IDLE_TIMEOUT_MS.start(),
                IDLE_TIMEOUT_MS.end()
            ));
        }
        out
    }

    /// The transport options this section sets (the rest default).
    pub fn options(&self) -> crate::tls::TransportOptions {
        self.options_redundant(false)
    }

    /// [`Self::options`] for a node with a redundant peer (`redundant`):
    /// an unset idle timeout is then [`REDUNDANT_IDLE_TIMEOUT_MS`].
    pub fn options_redundant(&self, redundant: bool) -> crate::tls::TransportOptions {
        let defaults = crate::tls::TransportOptions::default();
        let idle = match self.idle_timeout_ms {
            Some(ms) => std::time::Duration::from_millis(ms),
            None if redundant => std::time::Duration::from_millis(REDUNDANT_IDLE_TIMEOUT_MS),
            None => defaults.idle_timeout,
        };
        crate::tls::TransportOptions {
            gso: self.gso,
            max_udp_payload: self.max_udp_payload,
            idle_timeout: idle,
            keep_alive: defaults.keep_alive.min(idle / 3),
        }
    }
}

pub use crate::tls::DEFAULT_MAX_UDP_PAYLOAD;
/// What QUIC allows: 1200 (its minimum) to 65527.
pub const MAX_UDP_PAYLOAD: std::ops::RangeInclusive<u16> = 1200..=65_527;

fn yes() -> bool {
    true
}

fn default_max_udp_payload() -> u16 {
    DEFAULT_MAX_UDP_PAYLOAD
}

/// Endpoint settings: the largest datagram accepted follows
/// `max_udp_payload` (at least quinn's 1472, so peers at the default are
/// always read).
pub fn endpoint_config(mut cfg: quinn::EndpointConfig, max_udp_payload: u16) -> quinn::EndpointConfig {
    let _ = cfg.max_udp_payload_size(max_udp_payload.max(1472));
    cfg
}

/// Socket buffer asked for (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`; raise those for multi-Gbit/s links).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Binds a UDP socket on `addr` with [`SOCKET_BUFFER`]-sized buffers.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers on a wildcard IPv6 socket, as std does.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer still works, only with more drops.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Asks for [`SOCKET_BUFFER`]-sized buffers on a socket bound elsewhere
/// (e.g. inside a network namespace); best effort, as in [`udp_socket`].
pub fn size_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

/// A QUIC endpoint on [`udp_socket`]: a server when `server` is given,
/// otherwise a client-only endpoint.
pub fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    max_udp_payload: u16,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let cfg = endpoint_config(quinn::EndpointConfig::default(), max_udp_payload);
    quinn::Endpoint::new(cfg, server, socket, Arc::new(quinn::TokioRuntime))
}

/// Like [`bind`], with a stateless-reset key derived from `secret` (the
/// node's private key): after a restart the node answers packets of its
/// peers' old connections with a valid stateless reset, so they notice at
/// their next keep-alive and redial at once instead of waiting out the
/// idle timeout.
pub fn bind_with_reset_secret(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    secret: &[u8],
    max_udp_payload: u16,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let cfg = endpoint_config(reset_config(secret), max_udp_payload);
    quinn::Endpoint::new(cfg, server, socket, Arc::new(quinn::TokioRuntime))
}

/// Endpoint config whose reset key is [`reset_key`]`(secret)`, with
/// connection ids keyed by `secret` too: a restarted node must recognise the
/// ids it issued before, or it drops their packets instead of resetting them.
pub fn reset_config(secret: &[u8]) -> quinn::EndpointConfig {
    use sha2::Digest as _;
    let mut cfg = quinn::EndpointConfig::new(Arc::new(reset_key(secret)));
    let mut h = sha2::Sha256::new();
    h.update(b"ponte/1 connection id key\0");
    h.update(secret);
    let digest = h.finalize();
    // SHA-256 gives 32 bytes: the first 8 are always there, 0 is never used.
    let key = digest.first_chunk::<8>().map_or(0, |k| u64::from_le_bytes(*k));
    cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(key)));
    cfg
}

/// HMAC-SHA256 key from a digest of `secret`: the same for every run of a node.
pub fn reset_key(secret: &[u8]) -> ring::hmac::Key {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"ponte/1 stateless reset key\0");
    h.update(secret);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_larger_buffers_than_the_default() {
        let s = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let size = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        // Linux reports twice what was granted; the default is 212992.
        assert!(size > 212_992, "receive buffer {size}");
    }

    #[test]
    fn the_reset_key_depends_only_on_the_secret() {
        use quinn::crypto::HmacKey as _;
        let sign = |secret: &[u8]| {
            let mut out = [0u8; 32];
            reset_key(secret).sign(b"connection id", &mut out);
            out
        };
        assert_eq!(sign(b"key of node a"), sign(b"key of node a"), "same key after a restart");
        assert_ne!(sign(b"key of node a"), sign(b"key of node b"));
    }

    #[tokio::test]
    async fn binds_client_and_server_endpoints() {
        let e = bind("127.0.0.1:0".parse().unwrap(), None, DEFAULT_MAX_UDP_PAYLOAD).unwrap();
        assert!(e.local_addr().unwrap().port() > 0);
        let e6 = bind("[::]:0".parse().unwrap(), None, DEFAULT_MAX_UDP_PAYLOAD);
        assert!(e6.is_ok() || std::net::UdpSocket::bind("[::]:0").is_err());
    }
}

#[cfg(test)]
mod transport_section {
    use super::*;

    #[test]
    fn max_udp_payload_defaults_to_ethernet_and_names_its_key_when_out_of_range() {
        let t: TransportSection = toml::from_str("").unwrap();
        assert_eq!((t.gso, t.max_udp_payload), (true, 1452));
        assert!(t.problems().is_empty());
        let jumbo: TransportSection = toml::from_str("max_udp_payload = 8972").unwrap();
        assert!(jumbo.problems().is_empty());
        assert_eq!(jumbo.options().max_udp_payload, 8972);
        let small: TransportSection = toml::from_str("max_udp_payload = 576").unwrap();
        let p = small.problems();
        assert!(p.len() == 1 && p[0].contains("`transport.max_udp_payload` = 576"), "{p:?}");
        assert!(toml::from_str::<TransportSection>("max_udp_payload = 70000").is_err(), "not a u16");
    }
}
