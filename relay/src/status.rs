//! The relay's status document, sampled every couple of seconds from the
//! upstream links, the tracks they feed and the local viewers.

use crate::cascade::Cascade;
use crate::rtsp::RtspServer;
use crate::upstream::Upstreams;
use crate::whep::WhepState;
use ponte_proto::mgmt::{StatusFeed, SAMPLE_EVERY};
use ponte_proto::status::{Health, RateMeter, StatusDoc, ViewerStatus};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The relay's egress besides WHEP: RTSP (when configured) and the cascade.
pub struct Egress {
    /// The RTSP server, when `[rtsp]` is configured.
    pub rtsp: Option<Arc<RtspServer>>,
    /// Downstream relays.
    pub cascade: Arc<Cascade>,
    /// The relay's audit log (its write failures are alerted on).
    pub audit: Arc<crate::audit::RelayAudit>,
    /// The relay's certificates (QUIC identity, HTTPS).
    pub tls: Option<ponte_proto::tls::LiveTls>,
    /// The viewer port's HTTPS pair.
    pub https: Option<Arc<ponte_proto::tls::https::HttpsPair>>,
}

/// Starts the sampler; the feed always holds the latest document.
pub fn spawn_sampler(upstreams: Arc<Upstreams>, whep: Arc<WhepState>, egress: Egress) -> StatusFeed {
    let started = Instant::now();
    let mut meter = RateMeter::default();
    let (tx, rx) = watch::channel(Arc::new(sample(&upstreams, &whep, &egress, started, &mut meter)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if tx.send(Arc::new(sample(&upstreams, &whep, &egress, started, &mut meter))).is_err() {
                return;
            }
        }
    });
    rx
}

fn sample(
    upstreams: &Upstreams,
    whep: &WhepState,
    egress: &Egress,
    started: Instant,
    meter: &mut RateMeter,
) -> StatusDoc {
    let now = Instant::now();
    let (mut links, mut cameras) = upstreams.status();
    let mut downstreams = egress.cascade.link_status();
    for l in &mut downstreams {
        let key = format!("downstream/{}", l.peer);
        l.send_bps = meter.rate(&key, l.bytes_sent, now);
    }
    // Cameras the site may see but nobody watches are listed as idle.
    for entry in upstreams.catalog() {
        for q in &entry.qualities {
            if !cameras.iter().any(|c| c.id == entry.id && c.quality == q.name()) {
                cameras.push(ponte_proto::status::CameraStatus {
                    id: entry.id.clone(),
                    quality: q.name().into(),
                    state: "idle".into(),
                    codec: Some(entry.codec.name().into()),
                    ..Default::default()
                });
            }
        }
    }
    cameras.sort_by(|a, b| (&a.id, &a.quality).cmp(&(&b.id, &b.quality)));
    let mut keys = HashSet::new();
    for l in &mut links {
        let key = format!("link/{}", l.peer);
        l.recv_bps = meter.rate(&key, l.bytes_received, now);
        keys.insert(key);
    }
    for c in &mut cameras {
        let key = format!("camera/{}/{}", c.id, c.quality);
        c.bitrate_bps = meter.rate(&key, c.bytes, now);
        keys.insert(key);
    }
    keys.extend(downstreams.iter().map(|l| format!("downstream/{}", l.peer)));
    meter.retain(&keys);
    let mut viewers: Vec<ViewerStatus> = whep
        .sessions()
        .into_iter()
        .map(|s| ViewerStatus {
            id: s.id,
            kind: "whep".into(),
            camera: s.camera,
            quality: s.quality.name().into(),
            user: None,
            age_secs: s.age_secs,
        })
        .collect();
    if let Some(rtsp) = &egress.rtsp {
        viewers.extend(rtsp.sessions().into_iter().map(|s| ViewerStatus {
            id: s.id,
            kind: "rtsp".into(),
            camera: s.camera,
            quality: s.quality.into(),
            user: s.viewer,
            age_secs: s.age_secs,
        }));
    }
    let mut problems = Vec::new();
    // A lost upstream is listed (down) through the reconnect grace.
    let mut health = if !links.iter().any(|l| l.state == "up") {
        problems.push(
            "no upstream session: is the agent running and can it reach this relay's QUIC port?".into(),
        );
        Health::Down
    } else {
        Health::Ok
    };
    // One agent of two down: the cameras come from the other, degraded.
    for p in upstreams.redundancy_problems() {
        problems.push(p);
        if health == Health::Ok {
            health = Health::Degraded;
        }
    }
    for d in downstreams.iter().filter(|d| d.state != "up") {
        let why = d.last_error.as_deref().unwrap_or("connecting");
        problems.push(format!("downstream relay `{}` at {} is not connected: {why}", d.peer, d.addr));
        if health == Health::Ok {
            health = Health::Degraded;
        }
    }
    links.extend(downstreams);
    let (certificates, expiring) =
        ponte_proto::status::certificates(upstreams.site(), egress.tls.as_ref(), egress.https.as_deref());
    if !expiring.is_empty() && health == Health::Ok {
        health = Health::Degraded;
    }
    problems.extend(expiring);
    StatusDoc {
        node: upstreams.site().to_owned(),
        role: "relay".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: started.elapsed().as_secs(),
        health,
        problems,
        links,
        cameras,
        viewers,
        shaping: Vec::new(),
        recent_errors: Vec::new(),
        audit_write_errors: egress.audit.write_errors(),
        limit_refusals: whep.refusals(),
        ptz_commands: Default::default(),
        alarms: Default::default(),
        audit: egress.audit.retention(),
        certificates,
        transcodes: None,
        recordings: Vec::new(),
    }
}
