//! The agent's cameras: one hub track per lens and quality, each fed by its
//! source, and the catalog that describes them to sites.

use crate::sources::device::{Device, RtspSource, Source};
use crate::sources::replay::{self, ReplaySpec};
use crate::sources::rtsp::{self, CodecHook, RtspSpec};
use crate::sources::supervision::{CameraSnapshot, CameraState, StreamStatus};
use crate::sources::synthetic::{self, SyntheticSpec};
use crate::sources::transcode::{self, TranscodeTask, Transcodes};
use ponte_proto::hub::{Hub, HubItem, TrackKey, TrackProbe, TrackReader, TrackWriter};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::CatalogEntry;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// All cameras of this agent. Devices can be added, replaced and removed
/// while it runs (config reload); the others keep their sources.
pub struct Cameras {
    hub: Arc<Hub>,
    /// The transcodes for browsers (`browser_h264 = "transcode"`) and their cap.
    transcodes: Arc<Transcodes>,
    catalog: Arc<LiveCatalog>,
    /// Running devices in config order.
    devices: Mutex<Vec<RunningDevice>>,
}

/// What a reload did to the devices, by device id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceChanges {
    /// New `[[device]]` entries, started.
    pub added: Vec<String>,
    /// Entries that differ from the running ones, restarted.
    pub changed: Vec<String>,
    /// Entries gone from the config, stopped.
    pub removed: Vec<String>,
}

impl DeviceChanges {
    /// True when no device was touched.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// One device's sources, stopped when dropped.
struct RunningDevice {
    device: Device,
    streams: Vec<StreamEntry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RunningDevice {
    fn drop(&mut self) {
        // Aborting drops each source's track writer: the track ends and its
        // readers (relay sessions' pumps) see the end at once.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The catalog, corrected when a camera turns out to deliver another codec
/// than its config announced; every correction bumps the version.
struct LiveCatalog {
    entries: Mutex<Vec<CatalogEntry>>,
    version: watch::Sender<u64>,
}

impl LiveCatalog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CatalogEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_codec(&self, camera: &str, quality: Quality, codec: Codec) {
        let mut entries = self.lock();
        let Some(entry) = entries.iter_mut().find(|e| e.id == camera) else { return };
        let announced = match quality {
            Quality::Main => entry.codec,
            Quality::Sub => entry.sub_codec.unwrap_or(entry.codec),
        };
        if announced == codec {
            return;
        }
        tracing::info!(
            camera,
            quality = quality.name(),
            announced = announced.name(),
            delivered = codec.name(),
            "catalog corrected: the camera delivers another codec than configured"
        );
        match quality {
            Quality::Main => entry.codec = codec,
            // The agent's own transcode is H.264 whatever the camera says.
            Quality::Sub if !entry.sub_transcoded => entry.sub_codec = Some(codec),
            Quality::Sub => return,
        }
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
    /// Starts a source task per lens and quality (idle until subscribed),
    /// with at most [`transcode::DEFAULT_MAX_TRANSCODES`] transcodes
    /// until [`Transcodes::set_max`].
    pub fn start(devices: &[Device]) -> Self {
        let hub = Arc::new(Hub::new());
        let transcodes = Arc::new(Transcodes::new(transcode::DEFAULT_MAX_TRANSCODES));
        let catalog =
            Arc::new(LiveCatalog { entries: Mutex::new(catalog_of(devices)), version: watch::channel(0).0 });
        let running = devices.iter().map(|d| start_device(&hub, &catalog, &transcodes, d)).collect();
        Self { hub, transcodes, catalog, devices: Mutex::new(running) }
    }

    /// The transcodes for browsers: the cap, what runs, what was refused.
    pub fn transcodes(&self) -> &Arc<Transcodes> {
        &self.transcodes
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Vec<RunningDevice>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the running devices in line with `devices` (a validated
    /// config): unchanged ones keep their sources and connections, new and
    /// changed ones start, removed and changed ones stop. The catalog is
    /// updated (and its version bumped) before any source stops, so the
    /// sessions revoke a removed camera as such rather than as an outage.
    pub fn apply(&self, devices: &[Device]) -> DeviceChanges {
        let mut changes = DeviceChanges::default();
        let mut old: Vec<RunningDevice> = std::mem::take(&mut *self.running());
        let mut next = Vec::with_capacity(devices.len());
        let mut retired = Vec::new();
        for d in devices {
            match old.iter().position(|r| r.device.id == d.id) {
                Some(i) if old.get(i).is_some_and(|r| r.device == *d) => next.push(old.swap_remove(i)),
                Some(i) => {
                    changes.changed.push(d.id.clone());
                    retired.push(old.swap_remove(i));
                    next.push(start_device(&self.hub, &self.catalog, &self.transcodes, d));
                }
                None => {
                    changes.added.push(d.id.clone());
                    next.push(start_device(&self.hub, &self.catalog, &self.transcodes, d));
                }
            }
        }
        for r in old {
            changes.removed.push(r.device.id.clone());
            retired.push(r);
        }
        if changes.is_empty() {
            *self.running() = next;
            return changes;
        }
        {
            // Unchanged devices keep their entries (with any codec correction).
            let mut entries = self.catalog.lock();
            let previous = std::mem::take(&mut *entries);
            for d in devices {
                if changes.changed.contains(&d.id) || changes.added.contains(&d.id) {
                    entries.extend(catalog_of(std::slice::from_ref(d)));
                } else {
                    entries.extend(previous.iter().filter(|e| e.device == d.id).cloned());
                }
            }
        }
        *self.running() = next;
        self.catalog.version.send_modify(|v| *v += 1);
        drop(retired);
        changes
    }

    /// The full catalog (before any site policy), with each camera's codec
    /// as delivered once known.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.lock().clone()
    }

    /// Changes whenever [`Cameras::catalog`] does: sessions re-send it.
    pub fn catalog_version(&self) -> watch::Receiver<u64> {
        self.catalog.version.subscribe()
    }

    /// State and counters of every camera stream (lens × quality), for the
    /// status page and `ponte-agent status`.
    pub fn cameras(&self) -> Vec<CameraSnapshot> {
        self.running()
            .iter()
            .flat_map(|d| &d.streams)
            .map(|s| {
                let mut snap = s.status.snapshot(&s.probe);
                if s.synthetic {
                    snap.state = if snap.viewers > 0 { "online" } else { "idle" };
                }
                snap
            })
            .collect()
    }

    /// Subscribes to a camera at a quality (`None`: no such stream, or a
    /// transcode over `agent.max_transcodes`; [`Cameras::open`] says which).
    pub fn subscribe(&self, camera: &str, quality: Quality) -> Option<TrackReader> {
        self.open(camera, quality).ok().flatten()
    }

    /// Subscribes to a camera at a quality: `Ok(None)` when there is no such
    /// stream now, `Err` with the reason when its transcode would run over
    /// `agent.max_transcodes`.
    pub fn open(&self, camera: &str, quality: Quality) -> Result<Option<TrackReader>, String> {
        let transcoded =
            quality == Quality::Sub && self.catalog.lock().iter().any(|c| c.id == camera && c.sub_transcoded);
        if transcoded {
            self.transcodes.admit(camera)?;
        }
        Ok(self.hub.subscribe(&TrackKey::new(camera, quality)))
    }

    /// The newest keyframe cached for `camera` at `quality`, taken without
    /// pulling the camera: `None` unless the stream runs already (someone
    /// watches it, or it is an RTSP stream or transcode that is online).
    /// Subscribing to an idle on-demand stream would start it, and an idle
    /// one has no cache anyway (each source clears it when it pauses).
    pub fn cached_keyframe(&self, camera: &str, quality: Quality) -> Option<HubItem> {
        let running = self.running().iter().flat_map(|d| &d.streams).any(|s| {
            let snap = s.status.snapshot(&s.probe);
            snap.id == camera
                && snap.quality == quality
                && (snap.viewers > 0 || (!s.synthetic && snap.state == "online"))
        });
        if !running {
            return None;
        }
        // A running stream: one more reader for an instant starts nothing
        // (an on-demand one past its last viewer lingers again from now).
        let first = self.hub.subscribe(&TrackKey::new(camera, quality))?.try_next()?;
        first.frame.keyframe.then_some(first)
    }

    /// Whether the catalog lists `camera` at `quality`.
    pub fn lists(&self, camera: &str, quality: Quality) -> bool {
        self.catalog.lock().iter().any(|c| c.id == camera && c.qualities.contains(&quality))
    }
}

/// Starts the sources of one device: a task per lens and quality.
fn start_device(
    hub: &Arc<Hub>,
    catalog: &Arc<LiveCatalog>,
    transcodes: &Arc<Transcodes>,
    d: &Device,
) -> RunningDevice {
    let mut tasks = Vec::new();
    let mut streams = Vec::new();
    let now = SystemTime::now();
    let lenses = d.lens_count();
    for lens in 1..=lenses {
        let id = d.camera_id(lens);
        let label = if lenses > 1 {
            format!("{} / {} #{lens}", d.zone, d.name)
        } else {
            format!("{} / {}", d.zone, d.name)
        };
        match &d.source {
            Source::Synthetic(settings) => {
                let specs = [Quality::Main, Quality::Sub]
                    .map(|q| (q, SyntheticSpec::for_quality(&id, &label, q, settings)));
                for (quality, spec) in specs {
                    let writer = hub.publish(TrackKey::new(&id, quality));
                    let status =
                        Arc::new(StreamStatus::new(&id, &d.id, lens, quality, CameraState::Idle, now));
                    status.set_media(Codec::H264, spec.width, spec.height);
                    streams.push(StreamEntry { status, probe: writer.probe(), synthetic: true });
                    tasks.push(synthetic::spawn(spec, writer));
                }
            }
            Source::Replay(settings) => {
                for quality in [Quality::Main, Quality::Sub] {
                    let spec = ReplaySpec::for_quality(&id, quality, settings);
                    let writer = hub.publish(TrackKey::new(&id, quality));
                    let status =
                        Arc::new(StreamStatus::new(&id, &d.id, lens, quality, CameraState::Idle, now));
                    status.set_media(Codec::H264, spec.width, spec.height);
                    streams.push(StreamEntry { status, probe: writer.probe(), synthetic: true });
                    tasks.push(replay::spawn(spec, writer));
                }
            }
            Source::Rtsp(rtsp) => {
                let Some(source) = rtsp.lens(lens) else { continue };
                let credentials = rtsp.credentials(&d.id).unwrap_or_else(|e| {
                    tracing::error!(camera = %id, "{e:#}");
                    None
                });
                let urls = [(Quality::Main, Some(&source.main)), (Quality::Sub, source.sub.as_ref())];
                for (quality, url) in urls {
                    let Some(url) = url else { continue };
                    let writer = hub.publish(TrackKey::new(&id, quality));
                    let first = if rtsp.on_demand { CameraState::Idle } else { CameraState::Connecting };
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
                        rtsp.transport,
                        rtsp.stall_timeout(),
                        rtsp.on_demand,
                    );
                    match spec {
                        Ok(spec) => {
                            let hook: CodecHook = {
                                let (catalog, id) = (catalog.clone(), id.clone());
                                Arc::new(move |codec| catalog.set_codec(&id, quality, codec))
                            };
                            tasks.push(rtsp::spawn(spec, writer, status, hook));
                        }
                        Err(e) => disabled(&status, writer, &format!("{e:#}")),
                    }
                }
                if rtsp.transcodes() {
                    // Validation refuses a `sub` URL beside the transcode.
                    let writer = hub.publish(TrackKey::new(&id, Quality::Sub));
                    let status =
                        Arc::new(StreamStatus::new(&id, &d.id, lens, Quality::Sub, CameraState::Idle, now));
                    streams.push(StreamEntry {
                        status: status.clone(),
                        probe: writer.probe(),
                        synthetic: false,
                    });
                    tasks.push(transcode::spawn(TranscodeTask {
                        camera: id.clone(),
                        hub: hub.clone(),
                        writer,
                        budget: transcodes.clone(),
                        status,
                    }));
                }
            }
        }
    }
    RunningDevice { device: d.clone(), streams, tasks }
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
        let transcoded = d.source.rtsp().is_some_and(RtspSource::transcodes);
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
                sub_codec: transcoded.then_some(Codec::H264),
                sub_transcoded: transcoded,
                tags: d.tags.clone(),
                dual_path: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::device::{DeviceKind, LensSource};
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
                source: Source::Rtsp(RtspSource {
                    lenses: (1..=4).map(lens).collect(),
                    ..Default::default()
                }),
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
        cams.catalog.set_codec("quad-2", Quality::Main, Codec::H265);
        assert!(version.has_changed().expect("open"));
        version.borrow_and_update();
        assert_eq!(cams.catalog()[2].codec, Codec::H265);
        cams.catalog.set_codec("quad-2", Quality::Main, Codec::H265);
        assert!(!version.has_changed().expect("open"));
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use std::time::Duration;

    fn synthetic(id: &str, zone: &str) -> Device {
        Device { id: id.into(), name: id.into(), zone: zone.into(), ..Device::default() }
    }

    /// Drains `reader` until its track ends; false if it is still open after 2 s.
    async fn ends(reader: &mut TrackReader) -> bool {
        tokio::time::timeout(Duration::from_secs(2), async { while reader.next().await.is_some() {} })
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn apply_restarts_only_what_changed() {
        let cams = Cameras::start(&[synthetic("keep", "a"), synthetic("gone", "a"), synthetic("edit", "a")]);
        let mut keep = cams.subscribe("keep", Quality::Sub).expect("keep");
        let mut gone = cams.subscribe("gone", Quality::Sub).expect("gone");
        let mut edit = cams.subscribe("edit", Quality::Sub).expect("edit");
        let version = cams.catalog_version();

        let same = cams.apply(&[synthetic("keep", "a"), synthetic("gone", "a"), synthetic("edit", "a")]);
        assert!(same.is_empty(), "{same:?}");
        assert!(!version.has_changed().expect("open"), "an unchanged config leaves the catalog alone");

        let changes = cams.apply(&[synthetic("keep", "a"), synthetic("new", "a"), synthetic("edit", "b")]);
        assert_eq!(
            changes,
            DeviceChanges {
                added: vec!["new".into()],
                changed: vec!["edit".into()],
                removed: vec!["gone".into()]
            }
        );
        assert!(version.has_changed().expect("open"));
        let ids: Vec<String> = cams.catalog().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["keep", "new", "edit"]);
        assert_eq!(cams.catalog()[2].zone, "b");
        assert!(!cams.lists("gone", Quality::Sub) && cams.lists("new", Quality::Main));

        assert!(ends(&mut gone).await, "a removed device's track ends");
        assert!(cams.subscribe("gone", Quality::Sub).is_none());
        assert!(ends(&mut edit).await, "a changed device's old track ends");
        assert!(cams.subscribe("edit", Quality::Sub).is_some(), "and a new one replaces it");
        // The unchanged device's track is the same one, still open.
        let next = tokio::time::timeout(Duration::from_millis(300), keep.next()).await;
        assert!(!matches!(next, Ok(None)), "an unchanged device's track must not end");
        assert_eq!(cams.cameras().len(), 6, "three devices, two streams each");
    }
}
