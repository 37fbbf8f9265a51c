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
}

impl Default for TransportSection {
    fn default() -> Self {
        Self { gso: true }
    }
}

fn yes() -> bool {
    true
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

/// A QUIC endpoint on [`udp_socket`]: a server when `server` is given,
/// otherwise a client-only endpoint.
pub fn bind(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, Arc::new(quinn::TokioRuntime))
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
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    quinn::Endpoint::new(reset_config(secret), server, socket, Arc::new(quinn::TokioRuntime))
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
        let e = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(e.local_addr().unwrap().port() > 0);
        let e6 = bind("[::]:0".parse().unwrap(), None);
        assert!(e6.is_ok() || std::net::UdpSocket::bind("[::]:0").is_err());
    }
}
