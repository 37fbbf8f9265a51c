//! Jumbo frames on a dedicated fibre (issue 18 item 4): the same video from
//! the real agent over a veth pair between two network namespaces, at MTU
//! 1500 with the default `transport.max_udp_payload` (1452) and at MTU 9000
//! with 8972. Path MTU discovery must find the jumbo size, and the figures
//! (Gbit/s, datagrams, CPU per Gbit of both ends) go to BENCHMARKS.md. Run
//! with release binaries for the figures:
//!
//! `PONTE_BIN_DIR=$CARGO_TARGET_DIR/release cargo test --release -p ponte-tests --test mtu -- --nocapture`

use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::session::read_gop_stream;
use ponte_proto::tls::TransportOptions;
use ponte_proto::wire::MediaEvent;
use ponte_tests::netns::NetnsPair;
use ponte_tests::quic::{Answer, FakeRelay};
use ponte_tests::{bin_path, AgentConfig, Device, DeviceExt, Pki, Proc, RelayTarget, Source};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUIC_PORT: u16 = 7443;
/// Replay cameras and their rate: enough media that the per-datagram cost
/// shows, little enough that a debug build keeps up.
const CAMERAS: usize = 8;
const CAMERA_KBPS: u32 = 25_000;
const WARM_UP: Duration = Duration::from_secs(4);
const MEASURE: Duration = Duration::from_secs(10);

/// CPU seconds this process has used (user + system).
fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

struct Run {
    mtu: u16,
    payload: u16,
    gbps: f64,
    frames: u64,
    datagrams_per_s: f64,
    bytes_per_datagram: f64,
    current_mtu: u16,
    agent_cpu_s_per_gbit: f64,
    receiver_cpu_s_per_gbit: f64,
}

async fn run(pki: &Pki, dir: &std::path::Path, mtu: u16, payload: u16) -> Result<Run> {
    let net = NetnsPair::create("mtu")?;
    net.set_mtu(&net.a, mtu)?;
    net.set_mtu(&net.b, mtu)?;
    let socket = net.bind_udp(&net.b, QUIC_PORT)?;
    let opts = TransportOptions { max_udp_payload: payload, ..Default::default() };
    let relay = FakeRelay::on_socket(pki, "carabinieri", socket, &opts)?;

    let devices: Vec<Device> = (0..CAMERAS)
        .map(|i| {
            let mut d = Device::synthetic(&format!("cam-{i}"));
            d.source = Source::Replay(ponte_tests::ReplaySettings {
                main_kbps: Some(CAMERA_KBPS),
                sub_kbps: Some(500),
                fps: Some(25),
                gop_frames: Some(50),
            });
            d
        })
        .collect();
    let relays = vec![RelayTarget::new("carabinieri", (net.b.addr, QUIC_PORT).into())];
    let mut cfg = AgentConfig::new("master", pki.tls("master"), relays, devices);
    cfg.transport.max_udp_payload = payload;
    let config = cfg.write(dir.join(format!("agent-{mtu}.toml")))?;
    let mut cmd = net.command(&net.a, bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(&config).env("RUST_LOG", "warn");
    let mut agent = Proc::spawn_command("agent", cmd)?;

    let mut s = relay.accept().await.context("the agent in namespace A never reached the relay in B")?;
    // Count what arrives; keep nothing.
    let (bytes, frames) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = tokio::spawn({
        let (conn, bytes, frames) = (s.conn.clone(), bytes.clone(), frames.clone());
        async move {
            while let Ok(recv) = conn.accept_uni().await {
                let (bytes, frames) = (bytes.clone(), frames.clone());
                tokio::spawn(async move {
                    let _ = read_gop_stream(recv, |ev| {
                        if let MediaEvent::Frame(f) = ev {
                            bytes.fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                            frames.fetch_add(1, Ordering::Relaxed);
                        }
                        true
                    })
                    .await;
                });
            }
        }
    });
    for i in 0..CAMERAS {
        assert_eq!(s.subscribe(i as u64, &format!("cam-{i}"), Quality::Main).await?, Answer::Ok);
    }
    tokio::time::sleep(WARM_UP).await;
    let rx0 = s.conn.stats().udp_rx;
    let (b0, f0, a0, r0, t0) = (
        bytes.load(Ordering::Relaxed),
        frames.load(Ordering::Relaxed),
        agent.cpu_secs()?,
        own_cpu_secs(),
        Instant::now(),
    );
    tokio::time::sleep(MEASURE).await;
    let stats = s.conn.stats();
    let (b1, f1, a1, r1, wall) = (
        bytes.load(Ordering::Relaxed),
        frames.load(Ordering::Relaxed),
        agent.cpu_secs()?,
        own_cpu_secs(),
        t0.elapsed().as_secs_f64(),
    );
    reader.abort();
    agent.terminate(Duration::from_secs(5)).await?;
    let gbit = (b1 - b0) as f64 * 8.0 / 1e9;
    // Datagrams as QUIC received them (the veth counts a GSO batch as one
    // packet: segmentation happens at the receiver's end of the pair).
    let datagrams = stats.udp_rx.datagrams - rx0.datagrams;
    let udp_bytes = stats.udp_rx.bytes - rx0.bytes;
    if datagrams == 0 || gbit <= 0.0 {
        bail!("MTU {mtu}: nothing arrived in the measured {wall:.1} s");
    }
    Ok(Run {
        mtu,
        payload,
        gbps: gbit / wall,
        frames: f1 - f0,
        datagrams_per_s: datagrams as f64 / wall,
        bytes_per_datagram: udp_bytes as f64 / datagrams as f64,
        current_mtu: stats.path.current_mtu,
        agent_cpu_s_per_gbit: (a1 - a0) / gbit,
        receiver_cpu_s_per_gbit: (r1 - r0) / gbit,
    })
}

#[tokio::test]
async fn jumbo_frames_carry_the_same_video_in_far_fewer_datagrams() -> Result<()> {
    if !ponte_tests::require_root() || !ponte_tests::require_program("/usr/sbin/ip", "iproute2") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let mut runs = Vec::new();
    // Jumbo frames with segmentation offload (6500 bytes, ten to a 64 KiB
    // send) and without it (8972: a datagram per system call).
    for (mtu, payload) in [
        (1500, ponte_proto::endpoint::DEFAULT_MAX_UDP_PAYLOAD),
        (9000, ponte_proto::tls::GSO_MAX_UDP_PAYLOAD),
        (9000, 8972),
    ] {
        let r = run(&pki, dir.path(), mtu, payload).await?;
        println!(
            "figure: MTU {} (max_udp_payload {}): {:.3} Gbit/s of media, {} frames in {:.0} s; path MTU found {}; \
             {:.0} datagrams/s of {:.0} bytes; agent {:.3} CPU-s/Gbit ({:.2} Gbit/s per core), \
             receiver (this test, quinn) {:.3} CPU-s/Gbit ({:.2} Gbit/s per core)",
            r.mtu,
            r.payload,
            r.gbps,
            r.frames,
            MEASURE.as_secs_f64(),
            r.current_mtu,
            r.datagrams_per_s,
            r.bytes_per_datagram,
            r.agent_cpu_s_per_gbit,
            1.0 / r.agent_cpu_s_per_gbit.max(1e-9),
            r.receiver_cpu_s_per_gbit,
            1.0 / r.receiver_cpu_s_per_gbit.max(1e-9),
        );
        runs.push(r);
    }
    let ethernet = &runs[0];
    assert!(ethernet.current_mtu <= 1452, "MTU 1500 path: {}", ethernet.current_mtu);
    for jumbo in &runs[1..] {
        assert!(
            jumbo.current_mtu + 100 > jumbo.payload,
            "path MTU discovery stopped at {} on a 9000 MTU link (max_udp_payload {})",
            jumbo.current_mtu,
            jumbo.payload
        );
        // The same media in far fewer, larger datagrams.
        assert!(
            jumbo.bytes_per_datagram > 3.0 * ethernet.bytes_per_datagram,
            "max_udp_payload {}: datagrams of {:.0} bytes against {:.0} at MTU 1500",
            jumbo.payload,
            jumbo.bytes_per_datagram,
            ethernet.bytes_per_datagram
        );
    }
    for r in &runs {
        let expected = CAMERAS as f64 * f64::from(CAMERA_KBPS) / 1e6;
        assert!(r.gbps > 0.8 * expected, "MTU {}: {:.3} Gbit/s of {expected:.3}", r.mtu, r.gbps);
    }
    Ok(())
}
