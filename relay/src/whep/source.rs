//! What the viewer egresses (WHEP, RTSP) need from the relay's upstream side.

use crate::upstream::{SubscribeFailure, TrackState, Upstreams};
use futures_util::future::BoxFuture;
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::wire::CatalogEntry;

/// What the WHEP endpoint needs from the relay's upstream side; implemented
/// by [`Upstreams`], and by fakes in tests.
pub trait CameraSource: Send + Sync + 'static {
    /// Name of this relay's site.
    fn site(&self) -> String;
    /// Cameras this site may see.
    fn catalog(&self) -> Vec<CatalogEntry>;
    /// Subscribes to a camera at a quality.
    fn subscribe<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>>;
    /// [`Self::subscribe`] for `viewer` (its audit name), whom a new
    /// upstream subscription names to the master room's audit.
    fn subscribe_as<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
        _viewer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        self.subscribe(camera, quality)
    }
    /// Whether a watched camera's picture is live; `None` when unwatched.
    fn track_state(&self, _camera: &str, _quality: Quality) -> Option<TrackState> {
        None
    }
}

impl CameraSource for Upstreams {
    fn site(&self) -> String {
        Upstreams::site(self).to_owned()
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        Upstreams::catalog(self)
    }

    fn subscribe<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(Upstreams::subscribe(self, camera, quality))
    }

    fn subscribe_as<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
        viewer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(Upstreams::subscribe_as(self, camera, quality, viewer))
    }

    fn track_state(&self, camera: &str, quality: Quality) -> Option<TrackState> {
        Upstreams::track_state(self, camera, quality)
    }
}
