//! Where alarms come from: the cameras' own events over ONVIF (PullPoint,
//! [`crate::camera_events`]) and the agent's watch on each stream
//! (offline, stalled, recovered), both handed to [`Incidents::raise`].

use super::Incidents;
use crate::camera_events::{self, CameraEvent, EventKind};
use crate::sources::device::Device;
use ponte_proto::incident::AlarmKind;
use ponte_proto::media::Quality;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events waiting for the alarm service; a chattering camera beyond this is dropped (and counted by the reader).
const EVENT_QUEUE: usize = 1024;
/// How often the streams are looked at.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// The running ONVIF event readers, restarted with the devices on a reload.
pub struct CameraAlarms {
    readers: Vec<JoinHandle<()>>,
    tx: mpsc::Sender<CameraEvent>,
    _feed: JoinHandle<()>,
    _health: JoinHandle<()>,
}

impl CameraAlarms {
    /// Starts the readers of `devices` and the stream watch.
    pub fn start(incidents: Incidents, devices: &[Device], stall: Duration) -> Self {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let feed = tokio::spawn(feed(incidents.clone(), rx));
        let health = tokio::spawn(health(incidents, stall));
        let mut me = Self { readers: Vec::new(), tx, _feed: feed, _health: health };
        me.set_devices(devices);
        me
    }

    /// The devices changed (a reload): the readers start again.
    pub fn set_devices(&mut self, devices: &[Device]) {
        for r in self.readers.drain(..) {
            r.abort();
        }
        self.readers = devices.iter().filter_map(|d| camera_events::spawn(d, self.tx.clone())).collect();
    }
}

impl Drop for CameraAlarms {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        self._feed.abort();
        self._health.abort();
    }
}

fn kind(k: EventKind) -> AlarmKind {
    match k {
        EventKind::Motion => AlarmKind::Motion,
        EventKind::Tampering => AlarmKind::Tampering,
        EventKind::VideoLoss => AlarmKind::VideoLoss,
    }
}

async fn feed(incidents: Incidents, mut rx: mpsc::Receiver<CameraEvent>) {
    while let Some(e) = rx.recv().await {
        // The start of a condition is the alarm; its end is not.
        if !e.active {
            continue;
        }
        let detail = match e.kind {
            EventKind::Motion => format!("motion reported by camera `{}` (ONVIF)", e.device),
            EventKind::Tampering => format!("camera `{}` reports tampering (ONVIF)", e.device),
            EventKind::VideoLoss => format!("camera `{}` reports video loss (ONVIF)", e.device),
        };
        incidents.raise(&e.camera, kind(e.kind), &detail);
    }
}

/// What the watch knows of one stream.
struct Seen {
    state: &'static str,
    frames: u64,
    moved: Instant,
    stalled: bool,
    error: Option<String>,
}

/// Raises `offline` when a running main stream goes down, `stalled` when it
/// is up but no frame came for `stall`, and `recovered` when it delivers again.
async fn health(incidents: Incidents, stall: Duration) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for c in incidents.cameras().cameras().into_iter().filter(|c| c.quality == Quality::Main) {
            let Some(s) = seen.get_mut(&c.id) else {
                seen.insert(
                    c.id.clone(),
                    Seen {
                        state: c.state,
                        frames: c.frames,
                        moved: now,
                        stalled: false,
                        error: c.last_error,
                    },
                );
                continue;
            };
            let (was, moved) = (s.state, c.frames != s.frames);
            if moved {
                s.frames = c.frames;
                s.moved = now;
            }
            match (was, c.state) {
                ("online", "offline") => {
                    let why = c.last_error.clone().unwrap_or_else(|| "no video".into());
                    incidents.raise(&c.id, AlarmKind::Offline, &format!("camera offline: {why}"));
                    s.stalled = false;
                }
                ("offline", "online") => {
                    incidents.raise(&c.id, AlarmKind::Recovered, "camera back online");
                }
                ("online", "online") if s.stalled && moved => {
                    s.stalled = false;
                    incidents.raise(&c.id, AlarmKind::Recovered, "frames flow again");
                }
                ("online", "online") if !s.stalled && now.duration_since(s.moved) >= stall => {
                    s.stalled = true;
                    incidents.raise(
                        &c.id,
                        AlarmKind::Stalled,
                        &format!("connected, but no frame for {} s", stall.as_secs()),
                    );
                }
                _ => {}
            }
            if c.state != "online" {
                s.moved = now;
            }
            s.state = c.state;
            s.error = c.last_error;
        }
    }
}
