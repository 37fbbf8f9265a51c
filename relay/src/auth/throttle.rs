//! The failed-login brake (sans-IO): a GCRA per client address and per IPv6 /64.

use ponte_proto::login_brake::Gcra;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Per-client limit on login attempts: `burst` attempts at once, then one
/// per `interval` (a GCRA). Every attempt is charged when it starts, so
/// parallel guesses cannot slip past; a successful one is refunded.
///
/// A client is its address. An IPv6 /64 (one SLAAC LAN, or one host that
/// owns a whole /64 and rotates through it) has a limit of its own,
/// [`PREFIX_FACTOR`] times looser: a host cannot lock every operator of its
/// LAN out by failing logins, and one that hops addresses is still braked.
pub struct LoginThrottle {
    per_address: Gcra<IpAddr>,
    per_prefix: Gcra<IpAddr>,
}

/// How many times more attempts an IPv6 /64 gets than one address of it.
pub const PREFIX_FACTOR: u32 = 16;

impl LoginThrottle {
    /// A limiter remembering at most `max_clients` clients (and as many /64s).
    pub fn new(burst: u32, interval: Duration, max_clients: usize) -> Self {
        Self {
            per_address: Gcra::new(burst, interval, max_clients),
            per_prefix: Gcra::new(burst.saturating_mul(PREFIX_FACTOR), interval / PREFIX_FACTOR, max_clients),
        }
    }

    /// Charges an attempt by `client`, or says how long it must wait.
    pub fn begin(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (address, prefix) = throttle_keys(client);
        let by_address = self.per_address.check(address, now);
        let by_prefix = prefix.map(|p| self.per_prefix.check(p, now)).transpose();
        match (by_address, by_prefix) {
            (Ok(a), Ok(p)) => {
                self.per_address.charge(address, a, now);
                if let (Some(key), Some(p)) = (prefix, p) {
                    self.per_prefix.charge(key, p, now);
                }
                Ok(())
            }
            (Err(a), Err(p)) => Err(a.max(p)),
            (Err(wait), _) | (_, Err(wait)) => Err(wait),
        }
    }

    /// How long `client` must wait before its next attempt, without
    /// charging one; `None` when it may try now.
    pub fn wait(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let (address, prefix) = throttle_keys(client);
        let by_address = self.per_address.check(address, now).err();
        let by_prefix = prefix.and_then(|p| self.per_prefix.check(p, now).err());
        by_address.max(by_prefix)
    }

    /// Refunds the attempt of a client whose credentials were right.
    pub fn succeeded(&mut self, client: IpAddr, now: Instant) {
        let (address, prefix) = throttle_keys(client);
        self.per_address.refund(address, now);
        if let Some(prefix) = prefix {
            self.per_prefix.refund(prefix, now);
        }
    }

    /// Clients remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.per_address.len()
    }
}

/// The address a login attempt is charged to (an IPv4-mapped IPv6 address
/// as its IPv4), and for IPv6 also its /64.
fn throttle_keys(ip: IpAddr) -> (IpAddr, Option<IpAddr>) {
    match ip {
        IpAddr::V4(_) => (ip, None),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), None),
            None => {
                let s = v6.segments();
                (ip, Some(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_a_burst_then_one_per_interval_per_client() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut th = LoginThrottle::new(5, 12 * s, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(th.begin(a, t0), Ok(()));
        }
        assert_eq!(th.begin(a, t0), Err(12 * s));
        assert_eq!(th.begin(a, t0 + 11 * s), Err(s));
        assert_eq!(th.begin(b, t0), Ok(()), "another client is not affected");
        assert_eq!(th.begin(a, t0 + 12 * s), Ok(()));
        assert!(th.begin(a, t0 + 13 * s).is_err(), "one per interval after the burst");
        // A success refunds its attempt.
        th.succeeded(b, t0);
        assert_eq!(th.len(), 1);
        // Memory stays bounded: a third client pushes the oldest out.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        th.begin(b, t0 + 13 * s).unwrap();
        th.begin(c, t0 + 13 * s).unwrap();
        assert!(th.len() <= 2);
        // IPv6 clients count per address: one braked host does not lock its
        // /64 out, but the /64 as a whole has a looser limit of its own.
        let mut th = LoginThrottle::new(1, 12 * s, 100);
        let host = |n: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        th.begin(host(1), t0).unwrap();
        assert!(th.begin(host(1), t0).is_err(), "the guessing host is braked");
        for n in 2..=PREFIX_FACTOR as u16 {
            assert_eq!(th.begin(host(n), t0), Ok(()), "a colleague on the same LAN logs in");
        }
        assert!(th.begin(host(999), t0).is_err(), "a host hopping through its /64 is braked too");
        assert!(th.begin("2001:db8:0:1::1".parse().unwrap(), t0).is_ok(), "another /64 is not");
        th.succeeded(host(2), t0);
        assert!(th.begin(host(1000), t0).is_ok(), "a success refunds the /64 too");
    }
}
