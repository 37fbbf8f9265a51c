//! The UDP ports WebRTC media may use (`whep.udp_ports`), so a firewall
//! between the operators and the relay opens one known range instead of the
//! host's whole ephemeral range. Each WHEP session leases one port for its
//! life; a port some other program holds is skipped.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// An inclusive UDP port range, written `"40000-40199"` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port (inclusive).
    pub high: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.high - self.low) + 1
    }

    /// Never: a range holds at least its `low` port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad =
            || format!("{text:?} is not a UDP port range: write it as \"LOW-HIGH\", e.g. \"40000-40199\"");
        let (low, high) = text.trim().split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(format!(
                "{text:?}: the range must run from a port above 0 up to a port at least as high"
            ));
        }
        Ok(PortRange { low, high })
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

struct Leases {
    used: BTreeSet<u16>,
    /// Offset of the next port to try: leases rotate through the range, so
    /// a port just given back is not reused at once (late packets of the
    /// old session find nothing).
    next: usize,
}

/// The ports of a [`PortRange`] and which are leased.
pub struct PortPool {
    range: PortRange,
    leases: Mutex<Leases>,
}

/// A port held by one session; given back when dropped.
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    /// The leased port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().used.remove(&self.port);
    }
}

impl PortPool {
    /// A pool of every port of `range`, none leased.
    pub fn new(range: PortRange) -> Arc<Self> {
        Arc::new(Self { range, leases: Mutex::new(Leases { used: BTreeSet::new(), next: 0 }) })
    }

    /// The range the pool hands out.
    pub fn range(&self) -> PortRange {
        self.range
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leases the next port that no session holds and `is_free` accepts,
    /// or `None` when every port is taken.
    pub fn lease_if(self: &Arc<Self>, mut is_free: impl FnMut(u16) -> bool) -> Option<PortLease> {
        let mut leases = self.lock();
        let n = self.range.len();
        for i in 0..n {
            let offset = (leases.next + i) % n;
            let Ok(port) = u16::try_from(usize::from(self.range.low) + offset) else { continue };
            if leases.used.contains(&port) || !is_free(port) {
                continue;
            }
            leases.used.insert(port);
            leases.next = (offset + 1) % n;
            return Some(PortLease { pool: self.clone(), port });
        }
        None
    }

    /// Leases a port that can be bound on `ip` right now (a port another
    /// program holds is skipped).
    pub fn lease(self: &Arc<Self>, ip: IpAddr) -> Option<PortLease> {
        self.lease_if(|port| std::net::UdpSocket::bind(SocketAddr::new(ip, port)).is_ok())
    }

    /// Ports leased now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.lock().used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Result<PortRange, String> {
        PortRange::try_from(text.to_owned())
    }

    #[test]
    fn ranges_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(range("40000-40199"), Ok(PortRange { low: 40000, high: 40199 }));
        assert_eq!(range(" 5000 - 5000 ").map(|r| r.len()), Ok(1));
        assert_eq!(range("40000-40199").map(|r| r.to_string()), Ok("40000-40199".to_owned()));
        for bad in ["40000", "a-b", "40000-70000", "-5", "0-10"] {
            let e = range(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(range("50000-40000").unwrap_err().contains("at least as high"));
    }

    #[test]
    fn leases_rotate_skip_held_ports_and_come_back() {
        let pool = PortPool::new(PortRange { low: 100, high: 103 });
        let a = pool.lease_if(|_| true).unwrap();
        let b = pool.lease_if(|p| p != 101).unwrap();
        assert_eq!((a.port(), b.port()), (100, 102), "101 is held by someone else");
        let c = pool.lease_if(|_| true).unwrap();
        assert_eq!(c.port(), 103);
        drop(a);
        assert_eq!(pool.in_use(), 2);
        // Rotation goes on from 103: 100 (given back) before 101.
        let d = pool.lease_if(|_| true).unwrap();
        assert_eq!(d.port(), 100);
        let e = pool.lease_if(|_| true).unwrap();
        assert_eq!(e.port(), 101);
        assert!(pool.lease_if(|_| true).is_none(), "all four leased");
        drop((b, c, d, e));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_port_bound_elsewhere_is_skipped() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let pool = PortPool::new(PortRange { low: port, high: port });
        assert!(pool.lease("127.0.0.1".parse().unwrap()).is_none());
        drop(held);
        assert_eq!(pool.lease("127.0.0.1".parse().unwrap()).map(|l| l.port()), Some(port));
    }
}
