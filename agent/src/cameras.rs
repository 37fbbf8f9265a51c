//! The agent's cameras: one hub track per lens and quality, each fed by its
//! source, and the catalog that describes them to sites.

use crate::config::{Device, SourceKind};
use crate::replay::{self, ReplaySpec};
use crate::rtsp::{self, CodecHook, RtspSpec};
use crate::supervision::{CameraSnapshot, CameraState, StreamStatus};
use crate::synthetic::{self, SyntheticSpec};
use ponte_proto::hub::{Hub, TrackKey, TrackProbe, TrackReader, TrackWriter};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::CatalogEntry;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// All cameras of this agent.
pub struct Cameras {
    hub: Hub,
    catalog: Arc<LiveCatalog>,
    streams: Vec<StreamEntry>,
    tasks: Vec<JoinHandle<()>>,
}

/// The catalog, corrected when a camera turns out to deliver another codec
/// than its config announced; every correction bumps the version.
struct LiveCatalog {
    entries: Mutex<Vec<CatalogEntry>>,
    version: watch::Sender<u64>,
}

impl LiveCatalog {
    fn set_codec(&self, camera: &str, codec: Codec) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.iter_mut().find(|e| e.id == camera) else { return };
        if entry.codec == codec {
            return;
        }
        tracing::info!(
            camera,
            announced = entry.codec.name(),
            delivered = codec.name(),
            "catalog corrected: the camera delivers another codec than configured"
        );
        entry.codec = codec;
        drop(entries);
        self.version.send_modify(|v| *v += 1);
    }
}

/// One lens at one quality, as the status snapshot sees it.
struct StreamEntry {
    status: Arc<StreamStatus>,
    probe: TrackProbe,
    /// Synthetic and replay streams run while watched: their state follows viewers.
    synthetic: bool,
}

impl Cameras {
    /// Starts a source task per lens and quality (idle until subscribed).
    pub fn start(devices: &[Device]) -> Self {
        let hub = Hub::new();
        let catalog =
            Arc::new(LiveCatalog { entries: Mutex::new(catalog_of(devices)), version: watch::channel(0).0 });
        let mut tasks = Vec::new();
        let mut streams = Vec::new();
        let now = SystemTime::now();
        for d in devices {
            let lenses = d.lens_count();
            for lens in 1..=lenses {
                let id = d.camera_id(lens);
                let label = if lenses > 1 {
                    format!("{} / {} #{lens}", d.zone, d.name)
                } else {
                    format!("{} / {}", d.zone, d.name)
                };
                match d.source {
                    SourceKind::Synthetic => {
                        let settings = d.synthetic.clone().unwrap_or_default();
                        let specs = [Quality::Main, Quality::Sub]
                            .map(|q| (q, SyntheticSpec::for_quality(&id, &label, q, &settings)));
                        for (quality, spec) in specs {
                            let writer = hub.publish(TrackKey::new(&id, quality));
                            let status = Arc::new(StreamStatus::new(
                                &id,
                                &d.id,
                                lens,
                                quality,
                                CameraState::Idle,
                                now,
                            ));
                            status.set_media(Codec::H264, spec.width, spec.height);
                            streams.push(StreamEntry { status, probe: writer.probe(), synthetic: true });
                            tasks.push(synthetic::spawn(spec, writer));
                        }
                    }
                    SourceKind::Replay => {
                        let settings = d.replay.clone().unwrap_or_default();
                        for quality in [Quality::Main, Quality::Sub] {
                            let spec = ReplaySpec::for_quality(&id, quality, &settings);
                            let writer = hub.publish(TrackKey::new(&id, quality));
                            let status = Arc::new(StreamStatus::new(
                                &id,
                                &d.id,
                                lens,
                                quality,
                                CameraState::Idle,
                                now,
                            ));
                            status.set_media(Codec::H264, spec.width, spec.height);
                            streams.push(StreamEntry { status, probe: writer.probe(), synthetic: true });
                            tasks.push(replay::spawn(spec, writer));
                        }
                    }
                    SourceKind::Rtsp => {
                        let Some(source) = d.lens_source(lens) else { continue };
                        let credentials = d.credentials().unwrap_or_else(|e| {
                            tracing::error!(camera = %id, "{e:#}");
                            None
                        });
                        let urls = [(Quality::Main, Some(&source.main)), (Quality::Sub, source.sub.as_ref())];
                        for (quality, url) in urls {
                            let Some(url) = url else { continue };
                            let writer = hub.publish(TrackKey::new(&id, quality));
                            let first = if d.on_demand { CameraState::Idle } else { CameraState::Connecting };
                            let status = Arc::new(StreamStatus::new(&id, &d.id, lens, quality, first, now));
                            streams.push(StreamEntry {
                                status: status.clone(),
                                probe: writer.probe(),
                                synthetic: false,
                            });
                            let spec = RtspSpec::new(
                                &id,
                                quality,
                                url,
                                credentials.clone(),
                                d.transport,
                                d.stall_timeout(),
                                d.on_demand,
                            );
                            match spec {
                                Ok(spec) => {
                                    let hook: CodecHook = {
                                        let (catalog, id) = (catalog.clone(), id.clone());
                                        Arc::new(move |codec| catalog.set_codec(&id, codec))
                                    };
                                    tasks.push(rtsp::spawn(spec, writer, status, hook));
                                }
                                Err(e) => disabled(&status, writer, &format!("{e:#}")),
                            }
                        }
                    }
                }
            }
        }
        Self { hub, catalog, streams, tasks }
    }

    /// The full catalog (before any site policy), with each camera's codec
    /// as delivered once known.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.entries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes whenever [`Cameras::catalog`] does: sessions re-send it.
    pub fn catalog_version(&self) -> watch::Receiver<u64> {
        self.catalog.version.subscribe()
    }

    /// State and counters of every camera stream (lens × quality), for the
    /// status page and `ponte-agent status`.
    pub fn cameras(&self) -> Vec<CameraSnapshot> {
        self.streams
            .iter()
            .map(|s| {
                let mut snap = s.status.snapshot(&s.probe);
                if s.synthetic {
                    snap.state = if snap.viewers > 0 { "online" } else { "idle" };
                }
                snap
            })
            .collect()
    }

    /// Subscribes to a camera at a quality.
    pub fn subscribe(&self, camera: &str, quality: Quality) -> Option<TrackReader> {
        self.hub.subscribe(&TrackKey::new(camera, quality))
    }
}

/// A stream that cannot run (its URL is unusable): offline for good, with
/// the reason. Unreachable after config validation; kept as a safety net.
fn disabled(status: &StreamStatus, writer: TrackWriter, reason: &str) {
    let now = SystemTime::now();
    status.set_state(CameraState::Offline { since: now, last_error: reason.to_owned() }, now);
    drop(writer);
}

/// The full catalog a set of devices yields, without starting anything.
pub fn catalog_of(devices: &[Device]) -> Vec<CatalogEntry> {
    let mut out = Vec::new();
    for d in devices {
        for lens in 1..=d.lens_count() {
            out.push(CatalogEntry {
                id: d.camera_id(lens),
                device: d.id.clone(),
                lens,
                name: d.name.clone(),
                zone: d.zone.clone(),
                kind: d.kind.name().to_owned(),
                codec: d.codec_hint(lens),
                qualities: d.qualities(lens),
                ptz: false,
                always_on: false,
            });
        }
    }
    out
}

impl Drop for Cameras {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceKind, LensSource};
    use std::time::Duration;

    #[tokio::test]
    async fn catalog_and_snapshots_follow_devices_and_delivered_codecs() {
        let refused =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let lens = |n: u8| LensSource {
            main: format!("rtsp://127.0.0.1:{refused}/{n}/main"),
            sub: (n == 1).then(|| format!("rtsp://127.0.0.1:{refused}/1/sub")),
            codec: None,
        };
        let devices = [
            Device { id: "syn".into(), name: "s".into(), kind: DeviceKind::Dome, ..Device::default() },
            Device {
                id: "quad".into(),
                name: "q".into(),
                kind: DeviceKind::FixedQuadOptic,
                source: SourceKind::Rtsp,
                lens_sources: (1..=4).map(lens).collect(),
                ..Device::default()
            },
        ];
        let cams = Cameras::start(&devices);
        let catalog = cams.catalog();
        let ids: Vec<&str> = catalog.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["syn", "quad-1", "quad-2", "quad-3", "quad-4"]);
        assert_eq!(catalog[1].qualities, [Quality::Main, Quality::Sub]);
        assert_eq!(catalog[2].qualities, [Quality::Main], "no sub URL, no substream");
        assert_eq!((catalog[2].device.as_str(), catalog[2].lens), ("quad", 2));

        // Two synthetic streams, idle until watched; five RTSP streams that
        // cannot connect and say so.
        let snaps = cams.cameras();
        assert_eq!(snaps.len(), 7);
        assert!(snaps[..2].iter().all(|s| s.state == "idle" && s.codec == Some(Codec::H264)));
        assert_eq!((snaps[0].width, snaps[1].width), (640, 320));
        for _ in 0..100 {
            if cams.cameras()[2..].iter().all(|s| s.state == "offline") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let quad = &cams.cameras()[2..];
        assert!(quad.iter().all(|s| s.state == "offline"), "{quad:?}");
        assert!(
            quad.iter().all(|s| s.last_error.as_deref().is_some_and(|e| e.contains("refused"))),
            "{quad:?}"
        );

        // A delivered codec that differs from the announced one corrects the
        // catalog once and bumps its version; the same codec again does not.
        let mut version = cams.catalog_version();
        cams.catalog.set_codec("quad-2", Codec::H265);
        assert!(version.has_changed().expect("open"));
        version.borrow_and_update();
        assert_eq!(cams.catalog()[2].codec, Codec::H265);
        cams.catalog.set_codec("quad-2", Codec::H265);
        assert!(!version.has_changed().expect("open"));
    }
}
