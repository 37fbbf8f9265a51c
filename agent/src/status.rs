//! The agent's status document, sampled every couple of seconds from the
//! relay links and the camera streams.

use crate::sources::cameras::Cameras;
use crate::uplink::LinkState;
use ponte_proto::mgmt::{StatusFeed, SAMPLE_EVERY};
use ponte_proto::status::{CameraStatus, Health, LinkStatus, RateMeter, StatusDoc};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What the sampler reads.
pub struct Sources {
    /// Node id.
    pub node: String,
    /// Cameras.
    pub cameras: Arc<Cameras>,
    /// Each relay link's state; the agent edits the list on reload.
    pub links: LinkList,
    /// Each site link's shaping ladder.
    pub shaping: crate::uplink::ShapingBoard,
    /// Each relay link's traffic (rtt, bytes, subscriptions).
    pub figures: crate::uplink::LinkBoard,
    /// The audit log (its write failures are alerted on).
    pub audit: Arc<ponte_proto::audit::AuditLog>,
    /// Session limits and their refusals.
    pub limits: Arc<crate::uplink::SessionLimits>,
    /// PTZ commands by outcome.
    pub ptz: crate::ptz::PtzService,
    /// Shares, asks and alarms (the alarm counters).
    pub incidents: crate::incidents::Incidents,
    /// The agent's certificates (own, relays').
    pub tls: ponte_proto::tls::LiveTls,
    /// The recordings.
    pub recall: Arc<crate::recall::Recall>,
}

/// The relay links by site, shared with the agent (which adds and removes
/// links when `[[relay]]` entries change on reload).
pub type LinkList = Arc<std::sync::Mutex<Vec<(String, watch::Receiver<LinkState>)>>>;

/// One row per shaped subscription, from the uplinks' snapshots.
fn shaping_rows(board: &crate::uplink::ShapingBoard) -> Vec<ponte_proto::status::ShapingStatus> {
    board
        .snapshot()
        .into_iter()
        .flat_map(|link| {
            link.subscriptions.into_iter().map(move |s| ponte_proto::status::ShapingStatus {
                site: link.site.clone(),
                camera: s.camera,
                rung: s.rung.map_or("starting", |r| r.name()).into(),
                priority: s.priority.name().into(),
                bytes_sent: s.bytes_sent,
                gops_dropped: s.gops_reset,
                step_downs: s.step_downs,
            })
        })
        .collect()
}

/// Starts the sampler; the feed always holds the latest document.
pub fn spawn_sampler(src: Sources) -> StatusFeed {
    let started = Instant::now();
    let mut meter = RateMeter::default();
    let (tx, rx) = watch::channel(Arc::new(sample(&src, started, &mut meter)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if tx.send(Arc::new(sample(&src, started, &mut meter))).is_err() {
                return;
            }
        }
    });
    rx
}

fn sample(src: &Sources, started: Instant, meter: &mut RateMeter) -> StatusDoc {
    let now = Instant::now();
    let mut keys = HashSet::new();
    let links: Vec<(String, watch::Receiver<LinkState>)> =
        src.links.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let links: Vec<LinkStatus> = links
        .iter()
        .map(|(site, state)| {
            let state = state.borrow().clone();
            let (state, last_error) = match state {
                LinkState::Up => ("up", None),
                LinkState::Connecting { last_error: None } => ("connecting", None),
                LinkState::Connecting { last_error: Some(e) } => ("down", Some(e)),
            };
            let f = src.figures.figures(site);
            let key = format!("relay link {site}");
            let send_bps = meter.rate(&key, f.bytes_sent, now);
            keys.insert(key);
            LinkStatus {
                peer: site.clone(),
                direction: "to-relay".into(),
                state: state.into(),
                addr: f.addr.map(|a| a.to_string()).unwrap_or_default(),
                rtt_ms: f.rtt.map(|r| r.as_secs_f64() * 1000.0),
                lost_packets: f.lost_packets,
                bytes_sent: f.bytes_sent,
                send_bps,
                subscriptions: f.subscriptions,
                drops: f.drops,
                last_error,
                ..Default::default()
            }
        })
        .collect();
    let cameras: Vec<CameraStatus> = src
        .cameras
        .cameras()
        .into_iter()
        .map(|c| {
            let key = format!("{}/{}", c.id, c.quality.name());
            let bitrate_bps = meter.rate(&key, c.bytes, now);
            keys.insert(key);
            CameraStatus {
                id: c.id,
                quality: c.quality.name().into(),
                state: c.state.into(),
                codec: c.codec.map(|k| k.name().to_owned()),
                width: c.width,
                height: c.height,
                bitrate_bps,
                frames: c.frames,
                bytes: c.bytes,
                viewers: c.viewers as u32,
                drops: c.malformed,
                last_error: c.last_error,
            }
        })
        .collect();
    meter.retain(&keys);

    let mut problems = Vec::new();
    let up = links.iter().filter(|l| l.state == "up").count();
    for l in links.iter().filter(|l| l.state != "up") {
        problems.push(format!(
            "relay `{}` not connected{}",
            l.peer,
            l.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ));
    }
    let offline: Vec<&CameraStatus> = cameras.iter().filter(|c| c.state == "offline").collect();
    if !offline.is_empty() {
        let names: Vec<String> = offline.iter().take(5).map(|c| format!("{}/{}", c.id, c.quality)).collect();
        problems.push(format!(
            "{} camera stream(s) offline: {}{}",
            offline.len(),
            names.join(", "),
            if offline.len() > 5 { ", …" } else { "" }
        ));
    }
    let (certificates, expiring) = ponte_proto::status::certificates(&src.node, Some(&src.tls), None);
    problems.extend(expiring);
    let recordings = src.recall.status();
    for r in &recordings {
        if let Some(alarm) = &r.alarm {
            problems.push(format!("recording `{}`: {alarm}", r.rule));
        }
    }
    let working_cameras = cameras.iter().any(|c| c.state == "online" || c.state == "idle");
    let health = if (!links.is_empty() && up == 0) || (!cameras.is_empty() && !working_cameras) {
        Health::Down
    } else if problems.is_empty() {
        Health::Ok
    } else {
        Health::Degraded
    };
    StatusDoc {
        node: src.node.clone(),
        role: "agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: started.elapsed().as_secs(),
        health,
        problems,
        links,
        cameras,
        viewers: Vec::new(),
        shaping: shaping_rows(&src.shaping),
        recent_errors: Vec::new(),
        audit_write_errors: src.audit.write_errors(),
        limit_refusals: [
            (
                "agent.max_subscriptions_per_session".to_owned(),
                src.limits.refused.load(std::sync::atomic::Ordering::Relaxed),
            ),
            ("agent.max_transcodes".to_owned(), src.cameras.transcodes().refused()),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect(),
        ptz_commands: src.ptz.counts(),
        alarms: src.incidents.alarm_counts(),
        audit: {
            // Sampling is also what trims a quiet log on time.
            src.audit.enforce_retention();
            Some(src.audit.retention_status())
        },
        certificates,
        transcodes: Some(src.cameras.transcodes().status()),
        recordings,
    }
}
