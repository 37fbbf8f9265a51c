//! transport-limit: raw quinn bulk transfer between two endpoints of this
//! process on loopback, with ponte's own TLS (mutual, rustls/ring, ALPN
//! `ponte/1`) and transport settings — the ceiling for everything else.

use crate::machine::{thread_cpu, CpuWindow};
use anyhow::{Context, Result};
use bytes::Bytes;
use ponte_proto::endpoint;
use ponte_proto::tls::{self, Identity, TransportOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Shape of the transfer.
#[derive(Debug, Clone, Serialize)]
pub struct TransportSpec {
    /// `bulk` (the limit) or `media-shaped` (the relay's write pattern).
    pub shape: String,
    /// QUIC connections in parallel.
    pub connections: usize,
    /// Unidirectional streams per connection, each written flat out.
    pub streams: usize,
    /// Bytes per `write_chunk` (the same `Bytes` each time: no copy, as media).
    pub chunk_bytes: usize,
    /// Ramp-up before measuring.
    pub warmup_secs: f64,
    /// Measured window.
    pub secs: f64,
}

/// What the transfer achieved.
#[derive(Debug, Clone, Serialize)]
pub struct TransportResult {
    /// The spec.
    pub spec: TransportSpec,
    /// Stream payload received per second, Gbit/s.
    pub gbps: f64,
    /// CPU seconds (sender and receiver: the whole process) in the window.
    pub cpu_secs: f64,
    /// Cores busy on average.
    pub cores: f64,
    /// Throughput per busy core.
    pub gbps_per_core: f64,
    /// CPU seconds per Gbit moved.
    pub cpu_secs_per_gbit: f64,
    /// Of which the sending side's thread.
    pub sender_cpu_s_per_gbit: f64,
    /// Of which the receiving side's thread.
    pub receiver_cpu_s_per_gbit: f64,
}

/// A CA and two identities (`bench-server`, `bench-client`) made in memory.
fn identities() -> Result<(Identity, Identity)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "ponte bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf = |site: &str| -> Result<Identity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![site.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, site);
        params.subject_alt_names.push(SanType::URI(format!("site:{site}").try_into()?));
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(Identity::from_pem(&ca_cert.pem(), &cert.pem(), &key.serialize_pem())?)
    };
    Ok((leaf("bench-server")?, leaf("bench-client")?))
}

/// Waits until `stop` is set.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `side` on an OS thread of its own with a single-threaded runtime,
/// as if it were a node of its own; `side` reports its thread id once ready.
/// `PONTE_BENCH_PIN_SENDER` / `PONTE_BENCH_PIN_RECEIVER` (a core number)
/// pin the side's thread, to compare with a pinned relay
/// (`PONTE_BENCH_WRAP_RELAY="taskset -c 0"`).
pub fn spawn_side<F, Fut>(name: &str, side: F) -> Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let var = if name.ends_with("sender") { "PONTE_BENCH_PIN_SENDER" } else { "PONTE_BENCH_PIN_RECEIVER" };
    let core = match std::env::var(var) {
        Ok(v) => Some(v.parse::<usize>().with_context(|| format!("{var}={v:?}: a core number"))?),
        Err(_) => None,
    };
    Ok(std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Some(core) = core {
            pin_this_thread(core);
        }
        rt.block_on(side())
    })?)
}

/// Pins the calling thread to `core` (best effort: a wrong number leaves it
/// where it was, and the report's CPU figures say so).
fn pin_this_thread(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity(0, ...) act on this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("ponte-bench: cannot pin a transport thread to core {core}");
        }
    }
}

/// The calling thread's id, for [`thread_cpu`].
pub fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Runs the transfer and measures it: the receiver (server endpoint) and
/// the sender (client endpoint) each on a thread of its own, so the CPU of
/// each side is known.
pub async fn run(spec: TransportSpec) -> Result<TransportResult> {
    let (server_id, client_id) = identities().context("making in-memory certificates")?;
    let opts = TransportOptions::default();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server_config = tls::server_config(&server_id, &opts)?;
    let client_config = tls::client_config(&client_id, &opts)?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let (ready_tx, ready) = tokio::sync::oneshot::channel::<Result<(SocketAddr, u32), String>>();
    let receiver = {
        let (received, stop) = (received.clone(), stop.clone());
        spawn_side("bench-receiver", move || async move {
            // The sockets ponte's nodes use (large buffers).
            let server =
                match endpoint::bind(loopback, Some(server_config), endpoint::DEFAULT_MAX_UDP_PAYLOAD) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
            let addr = server.local_addr().map_err(|e| e.to_string());
            let _ = ready_tx.send(addr.map(|a| (a, thread_id())));
            let accept = async {
                while let Some(incoming) = server.accept().await {
                    let received = received.clone();
                    tokio::spawn(async move {
                        let Ok(conn) = incoming.await else { return };
                        while let Ok(mut recv) = conn.accept_uni().await {
                            let received = received.clone();
                            tokio::spawn(async move {
                                while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                                    received.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                                }
                            });
                        }
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stopped(&stop) => {}
            }
        })?
    };
    let (addr, receiver_tid) = ready.await.context("receiver thread died")?.map_err(anyhow::Error::msg)?;

    let (ready_tx, ready) = tokio::sync::oneshot::channel::<Result<u32, String>>();
    let sender = {
        let stop = stop.clone();
        let spec = spec.clone();
        spawn_side("bench-sender", move || async move {
            let connect = async {
                let client = endpoint::bind(loopback, None, endpoint::DEFAULT_MAX_UDP_PAYLOAD)
                    .map_err(|e| e.to_string())?;
                let chunk = Bytes::from(vec![0x5a; spec.chunk_bytes]);
                let mut conns = Vec::new();
                for _ in 0..spec.connections {
                    let connecting = client
                        .connect_with(client_config.clone(), addr, "bench-server")
                        .map_err(|e| e.to_string())?;
                    let conn = connecting.await.map_err(|e| e.to_string())?;
                    for _ in 0..spec.streams {
                        let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
                        let (stop, chunk) = (stop.clone(), chunk.clone());
                        tokio::spawn(async move {
                            while !stop.load(Ordering::Relaxed) {
                                if send.write_chunk(chunk.clone()).await.is_err() {
                                    return;
                                }
                            }
                            let _ = send.finish();
                        });
                    }
                    conns.push(conn);
                }
                Ok::<_, String>((client, conns))
            };
            match connect.await {
                Ok((client, conns)) => {
                    let _ = ready_tx.send(Ok(thread_id()));
                    stopped(&stop).await;
                    for c in &conns {
                        c.close(0u32.into(), b"done");
                    }
                    client.wait_idle().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?
    };
    let sender_tid = ready.await.context("sender thread died")?.map_err(anyhow::Error::msg)?;

    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_secs)).await;
    let before = received.load(Ordering::Relaxed);
    let threads = [sender_tid, receiver_tid];
    let cpu0: Vec<Duration> = threads.iter().map(|&t| thread_cpu(t)).collect::<Result<_>>()?;
    let window = CpuWindow::start(&[])?;
    tokio::time::sleep(Duration::from_secs_f64(spec.secs)).await;
    let bytes = received.load(Ordering::Relaxed) - before;
    let cpu1: Vec<Duration> = threads.iter().map(|&t| thread_cpu(t)).collect::<Result<_>>()?;
    let (wall, own, _) = window.finish()?;
    stop.store(true, Ordering::Relaxed);
    for t in [sender, receiver] {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }

    let gbit = bytes as f64 * 8.0 / 1e9;
    let gbps = gbit / wall;
    let cores = own.cpu_secs / wall;
    let per_gbit = |secs: f64| if gbit > 0.0 { secs / gbit } else { 0.0 };
    Ok(TransportResult {
        spec,
        gbps,
        cpu_secs: own.cpu_secs,
        cores,
        gbps_per_core: if cores > 0.0 { gbps / cores } else { 0.0 },
        cpu_secs_per_gbit: per_gbit(own.cpu_secs),
        sender_cpu_s_per_gbit: per_gbit((cpu1[0] - cpu0[0]).as_secs_f64()),
        receiver_cpu_s_per_gbit: per_gbit((cpu1[1] - cpu0[1]).as_secs_f64()),
    })
}
