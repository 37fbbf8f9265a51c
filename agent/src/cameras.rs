//! The agent's cameras: one hub track per lens and quality, each fed by its
//! source, and the catalog that describes them to sites.

use crate::config::{Device, SourceKind};
use crate::synthetic::{self, SyntheticSpec};
use ponte_proto::hub::{Hub, TrackKey, TrackReader};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::CatalogEntry;
use tokio::task::JoinHandle;

/// All cameras of this agent.
pub struct Cameras {
    hub: Hub,
    catalog: Vec<CatalogEntry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cameras {
    /// Starts a source task per lens and quality (idle until subscribed).
    pub fn start(devices: &[Device]) -> Self {
        let hub = Hub::new();
        let mut catalog = Vec::new();
        let mut tasks = Vec::new();
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
                        let main = hub.publish(TrackKey::new(&id, Quality::Main));
                        tasks.push(synthetic::spawn(SyntheticSpec::main(&id, &label), main));
                        let sub = hub.publish(TrackKey::new(&id, Quality::Sub));
                        tasks.push(synthetic::spawn(SyntheticSpec::sub(&id, &label), sub));
                    }
                }
                catalog.push(CatalogEntry {
                    id,
                    device: d.id.clone(),
                    lens,
                    name: d.name.clone(),
                    zone: d.zone.clone(),
                    kind: d.kind.name().to_owned(),
                    codec: Codec::H264,
                    qualities: vec![Quality::Main, Quality::Sub],
                    ptz: false,
                });
            }
        }
        Self { hub, catalog, tasks }
    }

    /// The full catalog (before any site policy).
    pub fn catalog(&self) -> &[CatalogEntry] {
        &self.catalog
    }

    /// Subscribes to a camera at a quality.
    pub fn subscribe(&self, camera: &str, quality: Quality) -> Option<TrackReader> {
        self.hub.subscribe(&TrackKey::new(camera, quality))
    }
}

impl Drop for Cameras {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
