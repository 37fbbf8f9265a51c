//! Two network namespaces joined by a veth pair, made with iproute2 and torn
//! down on drop (even when the test fails): a real link the test can cap
//! with `tc`, count bytes on, and run a process at either end of.
//!
//! Addresses are a /30 from 10.200.0.0/16, assigned inside the namespaces
//! only: nothing outside them ever sees or routes them.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;

/// Prefix of every namespace this module creates (stale ones are removed).
const PREFIX: &str = "ponte-ns-";

/// One end of the pair.
#[derive(Debug, Clone)]
pub struct End {
    /// Namespace name.
    pub ns: String,
    /// Its veth device.
    pub dev: String,
    /// Its address on the link.
    pub addr: Ipv4Addr,
}

/// Namespaces `a` and `b` joined by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct NetnsPair {
    /// Side A (e.g. the agent).
    pub a: End,
    /// Side B (e.g. the relay).
    pub b: End,
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running `{program} {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces of earlier runs whose process is gone (a test killed
/// before its guard could run).
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl NetnsPair {
    /// Creates `ponte-ns-<tag>a-<pid>` and `...b-<pid>`, a veth pair between
    /// them with 10.200.N.1/30 (A) and 10.200.N.2/30 (B), both up, loopback up.
    pub fn create(tag: &str) -> Result<Self> {
        remove_stale();
        let pid = std::process::id();
        let net = (pid % 250) as u8 + 1;
        let a = End {
            ns: format!("{PREFIX}{tag}a-{pid}"),
            dev: format!("pv{}a", pid % 1_000_000),
            addr: Ipv4Addr::new(10, 200, net, 1),
        };
        let b = End {
            ns: format!("{PREFIX}{tag}b-{pid}"),
            dev: format!("pv{}b", pid % 1_000_000),
            addr: Ipv4Addr::new(10, 200, net, 2),
        };
        // From here on, the guard cleans up whatever got created.
        let pair = NetnsPair { a, b };
        for end in [&pair.a, &pair.b] {
            let _ = ip(&["netns", "del", &end.ns]);
            ip(&["netns", "add", &end.ns])?;
        }
        ip(&[
            "link",
            "add",
            &pair.a.dev,
            "netns",
            &pair.a.ns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b.dev,
            "netns",
            &pair.b.ns,
        ])?;
        for end in [&pair.a, &pair.b] {
            let cidr = format!("{}/30", end.addr);
            ip(&["-n", &end.ns, "addr", "add", &cidr, "dev", &end.dev])?;
            ip(&["-n", &end.ns, "link", "set", &end.dev, "up"])?;
            ip(&["-n", &end.ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Caps what `end` sends on its veth with a token bucket filter, e.g.
    /// `("20mbit", "64kb", "100ms")`; a second call changes the cap in place
    /// (packets queued in it are kept).
    pub fn cap(&self, end: &End, rate: &str, burst: &str, latency: &str) -> Result<()> {
        let shown = run("tc", &["-n", &end.ns, "qdisc", "show", "dev", &end.dev])?;
        let verb = if shown.contains("tbf") { "change" } else { "add" };
        run(
            "tc",
            &[
                "-n", &end.ns, "qdisc", verb, "dev", &end.dev, "root", "tbf", "rate", rate, "burst", burst,
                "latency", latency,
            ],
        )?;
        Ok(())
    }

    /// Drops `percent` % of the packets `end` sends on its veth, at random
    /// (nftables `numgen random`: a dirty connector, a flapping optic; netem
    /// is not available here); 0 removes the loss. A second call replaces
    /// the rate.
    pub fn drop_randomly(&self, end: &End, percent: u8) -> Result<()> {
        let nft = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &end.ns, "nft"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        let _ = nft(&["delete", "table", "inet", "ponte_loss"]);
        if percent == 0 {
            return Ok(());
        }
        nft(&["add", "table", "inet", "ponte_loss"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "ponte_loss",
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        ])?;
        let below = percent.min(100).to_string();
        nft(&[
            "add",
            "rule",
            "inet",
            "ponte_loss",
            "out",
            "oifname",
            &end.dev,
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            &below,
            "counter",
            "drop",
        ])?;
        Ok(())
    }

    /// Packets `end`'s veth has dropped on the way out, by the nftables rule
    /// of [`NetnsPair::drop_randomly`] (its counter).
    pub fn dropped_packets(&self, end: &End) -> Result<u64> {
        let out = run("ip", &["netns", "exec", &end.ns, "nft", "-j", "list", "table", "inet", "ponte_loss"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `nft -j list table`")?;
        let packets = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum();
        Ok(packets)
    }

    /// Sets the MTU of `end`'s veth (both ends must match: 1500, or 9000 for
    /// jumbo frames).
    pub fn set_mtu(&self, end: &End, mtu: u16) -> Result<()> {
        ip(&["-n", &end.ns, "link", "set", "dev", &end.dev, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Bytes `end`'s veth has transmitted (Ethernet frames, after the qdisc).
    pub fn tx_bytes(&self, end: &End) -> Result<u64> {
        self.tx_stat(end, "bytes")
    }

    /// Packets `end`'s veth has transmitted (after the qdisc).
    pub fn tx_packets(&self, end: &End) -> Result<u64> {
        self.tx_stat(end, "packets")
    }

    fn tx_stat(&self, end: &End, what: &str) -> Result<u64> {
        let json = ip(&["-n", &end.ns, "-s", "-j", "link", "show", "dev", &end.dev])?;
        let v: serde_json::Value = serde_json::from_str(&json).context("parsing `ip -j -s link`")?;
        v[0]["stats64"]["tx"][what].as_u64().with_context(|| format!("no tx {what} in {json}"))
    }

    /// `ip netns exec <ns> <program>`: a command that runs inside `end`'s
    /// namespace (iproute2 execs the program in place, so signals sent to
    /// the child reach it).
    pub fn command(&self, end: &End, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &end.ns]).arg(program);
        cmd
    }

    /// A UDP socket bound to `port` on `end`'s address, inside its namespace
    /// (made on a short-lived thread that joins the namespace; the socket
    /// stays there, the test process does not).
    pub fn bind_udp(&self, end: &End, port: u16) -> Result<std::net::UdpSocket> {
        let path = format!("/var/run/netns/{}", end.ns);
        let addr = SocketAddr::from((end.addr, port));
        std::thread::scope(|s| {
            s.spawn(|| -> Result<std::net::UdpSocket> {
                let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on a valid namespace descriptor; it changes the
                // network namespace of this thread only.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns into {path}"));
                }
                let sock = std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
                sock.set_nonblocking(true)?;
                Ok(sock)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the setns thread panicked"))?
        })
    }
}

impl NetnsPair {
    /// A second veth pair between the same two namespaces (a second fibre
    /// path), 10.201.N.1/30 (A) and 10.201.N.2/30 (B): its two ends, which
    /// [`Self::set_link`] cuts like the first's. Deleted with the namespaces.
    pub fn second_path(&self) -> Result<(End, End)> {
        let net = self.a.addr.octets()[2];
        let a = End {
            ns: self.a.ns.clone(),
            dev: format!("{}2", self.a.dev),
            addr: Ipv4Addr::new(10, 201, net, 1),
        };
        let b = End {
            ns: self.b.ns.clone(),
            dev: format!("{}2", self.b.dev),
            addr: Ipv4Addr::new(10, 201, net, 2),
        };
        ip(&["link", "add", &a.dev, "netns", &a.ns, "type", "veth", "peer", "name", &b.dev, "netns", &b.ns])?;
        for end in [&a, &b] {
            ip(&["-n", &end.ns, "addr", "add", &format!("{}/30", end.addr), "dev", &end.dev])?;
            ip(&["-n", &end.ns, "link", "set", &end.dev, "up"])?;
        }
        Ok((a, b))
    }

    /// `ip link set <dev> down|up` on `end`'s veth: a fibre cut and its
    /// repair (taking one end down takes the carrier of the other with it).
    pub fn set_link(&self, end: &End, up: bool) -> Result<()> {
        ip(&["-n", &end.ns, "link", "set", "dev", &end.dev, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Forwards UDP arriving at `end`'s address and `port` (inside its
    /// namespace) to `to` on this process's loopback, and the answers back:
    /// a node in the test's own namespace (reachable by a browser there)
    /// sits behind the veth. One loopback socket per remote peer, so `to`
    /// sees each peer as a distinct address. Stops when dropped.
    pub fn forward_udp(&self, end: &End, port: u16, to: SocketAddr) -> Result<UdpForward> {
        let outer = tokio::net::UdpSocket::from_std(self.bind_udp(end, port)?)?;
        let task = tokio::spawn(forward(std::sync::Arc::new(outer), to));
        Ok(UdpForward { task })
    }
}

/// A running [`NetnsPair::forward_udp`]; aborted on drop.
pub struct UdpForward {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(outer: std::sync::Arc<tokio::net::UdpSocket>, to: SocketAddr) {
    use std::collections::HashMap;
    let mut peers: HashMap<SocketAddr, std::sync::Arc<tokio::net::UdpSocket>> = HashMap::new();
    let mut answers = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = outer.recv_from(&mut buf).await else { return };
        let inner = match peers.get(&from) {
            Some(s) => s.clone(),
            None => {
                let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else { continue };
                if s.connect(to).await.is_err() {
                    continue;
                }
                let s = std::sync::Arc::new(s);
                let (back, outer) = (s.clone(), outer.clone());
                answers.spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = back.recv(&mut buf).await {
                        let _ = outer.send_to(&buf[..n], from).await;
                    }
                });
                peers.insert(from, s.clone());
                s
            }
        };
        let _ = inner.send(&buf[..n]).await;
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so the pair.
        for end in [&self.a, &self.b] {
            if let Err(e) = ip(&["netns", "del", &end.ns]) {
                eprintln!("netns cleanup: {e:#}");
            }
        }
    }
}
