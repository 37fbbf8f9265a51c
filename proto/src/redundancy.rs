//! Two agents at the master room (issue 22): which identities are agents,
//! and which agent carries a camera when both are up.
//!
//! The choice is rendezvous hashing (highest random weight) of the camera
//! id over the agents' site ids: both ends compute it from names alone, so
//! the relay spreads its cameras across the agents and an agent knows,
//! when it is asked for a camera whose primary is another agent, that it
//! is taking it over. When an agent goes, only its cameras move.

use crate::ptz::MASTER_SITE;

/// Whether a certificate's site id is an agent of the master room:
/// `master`, or `master-<name>` for one of several agents.
pub fn is_agent_site(site: &str) -> bool {
    site == MASTER_SITE
        || site
            .strip_prefix(MASTER_SITE)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|name| !name.is_empty())
}

/// The weight of `agent` for `camera`: the highest weight carries it.
/// FNV-1a over both names, then a 64-bit finaliser (splitmix64), so the
/// spread is the same on every build and platform.
pub fn weight(camera: &str, agent: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent.bytes().chain(std::iter::once(0)).chain(camera.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The agent among `agents` that carries `camera` when all are up.
pub fn primary<'a>(camera: &str, agents: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    agents.into_iter().max_by_key(|a| (weight(camera, a), std::cmp::Reverse(*a)))
}

/// A short digest of a policy's canonical text: the first 16 hex digits of
/// its SHA-256, as `Hello` carries it and status shows it.
pub fn digest(canonical: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(canonical);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_master_and_master_dash_names() {
        assert!(is_agent_site("master"));
        assert!(is_agent_site("master-a"));
        assert!(!is_agent_site("masterx"));
        assert!(!is_agent_site("carabinieri"));
        assert!(!is_agent_site("master-"));
    }

    #[test]
    fn cameras_spread_across_two_agents_and_only_the_lost_agents_move() {
        let cams: Vec<String> = (0..200).map(|i| format!("zone-{i}-1")).collect();
        let on_a = cams.iter().filter(|c| primary(c, ["master-a", "master-b"]) == Some("master-a")).count();
        assert!((70..=130).contains(&on_a), "{on_a} of 200 on master-a");
        // The order the agents are listed in does not matter.
        for c in &cams {
            assert_eq!(primary(c, ["master-a", "master-b"]), primary(c, ["master-b", "master-a"]));
        }
        // With a third agent, a camera moves only to the new agent.
        for c in &cams {
            let two = primary(c, ["master-a", "master-b"]).unwrap();
            let three = primary(c, ["master-a", "master-b", "master-c"]).unwrap();
            assert!(three == two || three == "master-c");
        }
        assert_eq!(primary("x", []), None);
    }

    #[test]
    fn weights_are_stable_across_builds() {
        // Both ends of a link may run different builds: the weight is fixed.
        assert_eq!(weight("a", "master-a"), weight("a", "master-a"));
        assert_ne!(weight("a", "master-a"), weight("a", "master-b"));
        assert_eq!(digest(b"x").len(), 16);
    }
}
