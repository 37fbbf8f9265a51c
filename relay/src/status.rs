//! The relay's status document, sampled every couple of seconds from the
//! upstream links, the tracks they feed and the local viewers.

use crate::upstream::Upstreams;
use crate::whep::WhepState;
use ponte_proto::mgmt::{StatusFeed, SAMPLE_EVERY};
use ponte_proto::status::{Health, RateMeter, StatusDoc, ViewerStatus};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Starts the sampler; the feed always holds the latest document.
pub fn spawn_sampler(upstreams: Arc<Upstreams>, whep: Arc<WhepState>) -> StatusFeed {
    let started = Instant::now();
    let mut meter = RateMeter::default();
    let (tx, rx) = watch::channel(Arc::new(sample(&upstreams, &whep, started, &mut meter)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if tx.send(Arc::new(sample(&upstreams, &whep, started, &mut meter))).is_err() {
                return;
            }
        }
    });
    rx
}

fn sample(upstreams: &Upstreams, whep: &WhepState, started: Instant, meter: &mut RateMeter) -> StatusDoc {
    let now = Instant::now();
    let (mut links, mut cameras) = upstreams.status();
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
    meter.retain(&keys);
    let viewers: Vec<ViewerStatus> = whep
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
    let mut problems = Vec::new();
    let health = if links.is_empty() {
        problems.push(
            "no upstream session: is the agent running and can it reach this relay's QUIC port?".into(),
        );
        Health::Down
    } else {
        Health::Ok
    };
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
    }
}
