//! What a config reload (SIGHUP) changes, worked out from the running and
//! the new config before anything is touched. No I/O: the agent applies the
//! plan (see `Agent::reload`).
//!
//! Devices, relays, sites, `[policy]`, `[ptz]` and `[[operator]]` apply
//! live, each device and relay on its own: an unchanged camera keeps its
//! RTSP connection and an unchanged relay its QUIC session. What the
//! process set up once at start (`[agent]`, `[tls]`, `[transport]`,
//! `[audit]`, `[management]`) needs a restart; those keys are named.

use crate::config::{AgentConfig, Device, RelayTarget};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Keys whose change needs a restart (`agent.id`, `tls.cert`, ...), as the
/// config file spells them; the new values are not applied.
pub fn restart_keys(old: &AgentConfig, new: &AgentConfig) -> Vec<String> {
    let mut out = Vec::new();
    diff("agent", &json(&old.agent), &json(&new.agent), &mut out);
    diff("tls", &json(&old.tls), &json(&new.tls), &mut out);
    diff("transport", &json(&old.transport), &json(&new.transport), &mut out);
    diff("audit", &json(&old.audit), &json(&new.audit), &mut out);
    diff("management", &json(&old.management), &json(&new.management), &mut out);
    diff("recordings", &json(&old.recordings), &json(&new.recordings), &mut out);
    diff("recording", &json(&old.recording), &json(&new.recording), &mut out);
    diff("redundancy", &json(&old.redundancy), &json(&new.redundancy), &mut out);
    diff("incidents", &json(&old.incidents), &json(&new.incidents), &mut out);
    out
}

fn json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Appends the dotted names of the leaves that differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        _ if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

/// Camera ids (every lens) of the devices that are added, removed or
/// changed between `old` and `new`, under their old and new shapes: what
/// must be restarted or withdrawn (PTZ workers, sources).
pub fn touched_cameras(old: &[Device], new: &[Device]) -> Vec<String> {
    let mut out = BTreeSet::new();
    let lenses = |d: &Device| (1..=d.lens_count()).map(|l| d.camera_id(l)).collect::<Vec<_>>();
    for d in new {
        if old.iter().find(|o| o.id == d.id) != Some(d) {
            out.extend(lenses(d));
        }
    }
    for d in old {
        if new.iter().find(|n| n.id == d.id) != Some(d) {
            out.extend(lenses(d));
        }
    }
    out.into_iter().collect()
}

/// The new and changed devices: those whose PTZ endpoint is (re)built.
pub fn started_devices(old: &[Device], new: &[Device]) -> Vec<Device> {
    new.iter().filter(|d| old.iter().find(|o| o.id == d.id) != Some(*d)).cloned().collect()
}

/// What to do with the relay sessions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelayPlan {
    /// Sessions to close (site, reason told to the relay).
    pub stop: Vec<(String, &'static str)>,
    /// Relays to dial (new, or changed and closed first).
    pub start: Vec<RelayTarget>,
}

/// Why a removed relay's session is closed (the relay logs it).
pub const RELAY_REMOVED: &str = "relay removed from the agent's config";
/// Why a changed relay's session is closed before it is dialled again.
pub const RELAY_CHANGED: &str = "relay entry changed in the agent's config; reconnecting";

/// Relays are keyed by site (unique in a valid config): a site that
/// disappears is stopped, a new one started, a changed entry (address,
/// server name) stopped and started again; the others are left alone.
pub fn relay_plan(running: &[RelayTarget], new: &[RelayTarget]) -> RelayPlan {
    // A site's relays (one, or a pair) change as a unit.
    let of = |list: &[RelayTarget], site: &str| -> Vec<RelayTarget> {
        list.iter().filter(|r| r.site == site).cloned().collect()
    };
    let mut plan = RelayPlan::default();
    let mut seen = std::collections::HashSet::new();
    for r in running.iter().filter(|r| seen.insert(r.site.clone())) {
        let (old, now) = (of(running, &r.site), of(new, &r.site));
        if now.is_empty() {
            plan.stop.push((r.site.clone(), RELAY_REMOVED));
        } else if now != old {
            plan.stop.push((r.site.clone(), RELAY_CHANGED));
        }
    }
    for n in new {
        if of(running, &n.site) != of(new, &n.site) {
            plan.start.push(n.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[[relay]]
site = "carabinieri"
addr = "127.0.0.1:7443"
[[relay]]
site = "questura"
addr = "127.0.0.1:7444"
[[device]]
id = "a"
name = "a"
type = "fixed"
source = "synthetic"
[[device]]
id = "quad"
name = "q"
type = "fixed-quad-optic"
source = "synthetic"
"#;

    fn cfg(text: &str) -> AgentConfig {
        AgentConfig::from_toml(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
    }

    #[test]
    fn restart_keys_name_each_changed_key_and_nothing_else() {
        let old = cfg(BASE);
        assert!(restart_keys(&old, &old).is_empty());
        let new = cfg(&format!(
            "{}\n[management]\nlisten = \"127.0.0.1:9191\"\n",
            BASE.replace("id = \"master\"", "id = \"master2\"\nmax_subscriptions_per_session = 7")
                .replace("master.key", "other.key")
        ));
        assert_eq!(
            restart_keys(&old, &new),
            ["agent.id", "agent.max_subscriptions_per_session", "tls.key", "management.listen"]
        );
        // Devices, relays and policy are applied live: not listed.
        let live = cfg(&BASE.replace("7444", "7445").replace("name = \"q\"", "name = \"r\""));
        assert!(restart_keys(&old, &live).is_empty());
    }

    #[test]
    fn only_added_changed_and_removed_devices_are_touched() {
        let old = cfg(BASE);
        let text = BASE.replace("name = \"a\"", "name = \"a\"\nzone = \"moved\"").replace(
            "[[device]]\nid = \"quad\"",
            "[[device]]\nid = \"new\"\nname = \"n\"\ntype = \"dome\"\nsource = \"synthetic\"\n[[device]]\nid = \"quad\"",
        );
        let new = cfg(&text);
        assert!(touched_cameras(&old.devices, &old.devices).is_empty());
        assert_eq!(touched_cameras(&old.devices, &new.devices), ["a", "new"]);
        let ids: Vec<String> =
            started_devices(&old.devices, &new.devices).into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["a", "new"]);
        // Removing the quad touches its four lenses.
        let gone = cfg(&BASE.replace(
            "[[device]]\nid = \"quad\"\nname = \"q\"\ntype = \"fixed-quad-optic\"\nsource = \"synthetic\"\n",
            "",
        ));
        assert_eq!(touched_cameras(&old.devices, &gone.devices), ["quad-1", "quad-2", "quad-3", "quad-4"]);
        assert!(started_devices(&old.devices, &gone.devices).is_empty());
    }

    #[test]
    fn relay_plan_leaves_unchanged_relays_alone() {
        let old = cfg(BASE);
        assert_eq!(relay_plan(&old.relays, &old.relays), RelayPlan::default());
        let text = BASE.replace("7444", "7445").replace("site = \"carabinieri\"", "site = \"finanza\"");
        let new = cfg(&text);
        let plan = relay_plan(&old.relays, &new.relays);
        assert_eq!(
            plan.stop,
            [("carabinieri".to_owned(), RELAY_REMOVED), ("questura".to_owned(), RELAY_CHANGED)]
        );
        let started: Vec<(&str, u16)> = plan.start.iter().map(|r| (r.site.as_str(), r.addr.port())).collect();
        assert_eq!(started, [("finanza", 7443), ("questura", 7445)]);
    }
}
