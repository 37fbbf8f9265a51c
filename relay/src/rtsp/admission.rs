//! Who may hold one of the RTSP server's connections: at most
//! `max_connections` in all and `max_connections_per_client` from one
//! address, so one host (a slowloris of hundreds of idle sockets) cannot take
//! every slot from the others. A connection that has not logged in by
//! `auth_deadline_secs` is closed by the server whatever it sends, so even
//! the slots one address may hold turn over.
//!
//! Addresses are counted as they are (an IPv4-mapped IPv6 address as its
//! IPv4 one): the cap is per host, like the total, not per network.

use ponte_proto::http_server::Slots;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use ponte_proto::http_server::Full;

/// Connections held, in all and per client address: the HTTP ports' slot
/// table, with this server's caps.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_client: usize,
    held: Mutex<Slots>,
}

/// The config key of the limit a refusal reached.
pub fn key(full: Full) -> &'static str {
    match full {
        Full::Total => "rtsp.max_connections",
        Full::Client => "rtsp.max_connections_per_client",
    }
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Admission {
    /// At most `max_total` connections, `max_per_client` from one address
    /// (each at least 1).
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            held: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `client`, or which limit is reached.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Full> {
        self.lock().take(client, self.max_total, self.max_per_client)?;
        Ok(Slot { admission: self.clone(), client })
    }

    /// Connections held now, in all and by `client`.
    #[cfg(test)]
    pub fn held(&self, client: IpAddr) -> (usize, usize) {
        let held = self.lock();
        (held.open(), held.of(client))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.lock().release(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let adm = Admission::new(5, 2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 1].into();
        let a1 = adm.admit(a).unwrap();
        let _a2 = adm.admit(a).unwrap();
        assert_eq!(adm.admit(a).unwrap_err(), Full::Client);
        // The same host over IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(adm.admit(mapped).unwrap_err(), Full::Client);
        let _b1 = adm.admit(b).unwrap();
        assert_eq!(adm.held(a), (3, 2));
        drop(a1);
        assert_eq!(adm.held(a), (2, 1));
        let _a3 = adm.admit(a).unwrap();
        let _b2 = adm.admit(b).unwrap();
        let c: IpAddr = [10, 0, 0, 3].into();
        let _c1 = adm.admit(c).unwrap();
        assert_eq!(adm.admit(c).unwrap_err(), Full::Total, "5 held in all");
        assert_eq!(key(Full::Total), "rtsp.max_connections");
        assert_eq!(key(Full::Client), "rtsp.max_connections_per_client");
    }

    #[test]
    fn slots_are_given_back_and_the_table_forgets_idle_clients() {
        let adm = Admission::new(300, 16);
        let a: IpAddr = [127, 0, 0, 2].into();
        let slots: Vec<Slot> = (0..300).filter_map(|_| adm.admit(a).ok()).collect();
        assert_eq!(slots.len(), 16);
        drop(slots);
        assert_eq!(adm.held(a), (0, 0));
        assert_eq!(adm.lock().clients(), 0);
    }
}
