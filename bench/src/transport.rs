//! transport-limit: raw quinn bulk transfer between two endpoints of this
//! process on loopback, with ponte's own TLS (mutual, rustls/ring, ALPN
//! `ponte/1`) and transport settings — the ceiling for everything else.

use crate::machine::CpuWindow;
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

/// Runs the transfer and measures it.
pub async fn run(spec: TransportSpec) -> Result<TransportResult> {
    let (server_id, client_id) = identities().context("making in-memory certificates")?;
    let opts = TransportOptions::default();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    // The sockets ponte's nodes use (large buffers).
    let server = endpoint::bind(loopback, Some(tls::server_config(&server_id, &opts)?))?;
    let client = endpoint::bind(loopback, None)?;
    let addr = server.local_addr()?;
    let client_config = tls::client_config(&client_id, &opts)?;

    let received = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let (server, received) = (server.clone(), received.clone());
        tokio::spawn(async move {
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
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let chunk = Bytes::from(vec![0x5a; spec.chunk_bytes]);
    let mut conns = Vec::new();
    for _ in 0..spec.connections {
        let conn = client.connect_with(client_config.clone(), addr, "bench-server")?.await?;
        for _ in 0..spec.streams {
            let mut send = conn.open_uni().await?;
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

    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_secs)).await;
    let before = received.load(Ordering::Relaxed);
    let window = CpuWindow::start(&[])?;
    tokio::time::sleep(Duration::from_secs_f64(spec.secs)).await;
    let bytes = received.load(Ordering::Relaxed) - before;
    let (wall, own, _) = window.finish()?;
    stop.store(true, Ordering::Relaxed);
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    acceptor.abort();
    client.wait_idle().await;

    let gbit = bytes as f64 * 8.0 / 1e9;
    let gbps = gbit / wall;
    let cores = own.cpu_secs / wall;
    Ok(TransportResult {
        spec,
        gbps,
        cpu_secs: own.cpu_secs,
        cores,
        gbps_per_core: if cores > 0.0 { gbps / cores } else { 0.0 },
        cpu_secs_per_gbit: if gbit > 0.0 { own.cpu_secs / gbit } else { 0.0 },
    })
}
