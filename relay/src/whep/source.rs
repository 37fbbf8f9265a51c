//! What the viewer egresses (WHEP, RTSP) need from the relay's upstream side.

use crate::upstream::recall::{ExportFile, RecallFailure, Recorded};
use crate::upstream::{SubscribeFailure, TrackState, Upstreams};
use futures_util::future::BoxFuture;
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::wire::CatalogEntry;
use ponte_proto::wire::{Playback, SubscribeErrorCode};

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
    /// Plays a camera's recording back from `p.from_ms` for `viewer`: a
    /// private track (issue 21). Without recordings: refused.
    fn playback_as<'a>(
        &'a self,
        camera: &'a str,
        _quality: Quality,
        _p: Playback,
        _viewer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(async move {
            Err(SubscribeFailure {
                code: SubscribeErrorCode::NotRecorded,
                reason: format!("camera `{camera}`: this relay has no recordings to play back"),
            })
        })
    }
    /// What is recorded of a camera, as far as this site may know.
    fn recorded<'a>(
        &'a self,
        camera: &'a str,
        _quality: Quality,
    ) -> BoxFuture<'a, Result<Recorded, RecallFailure>> {
        Box::pin(async move {
            Err(RecallFailure { refused: true, reason: format!("camera `{camera}` is not recorded") })
        })
    }
    /// An evidence export of `camera` from `range.0` to `range.1` (Unix
    /// ms) asked by `viewer`.
    fn export<'a>(
        &'a self,
        camera: &'a str,
        _quality: Quality,
        _range: (u64, u64),
        _viewer: &'a str,
    ) -> BoxFuture<'a, Result<ExportFile, RecallFailure>> {
        Box::pin(async move {
            Err(RecallFailure { refused: true, reason: format!("camera `{camera}` is not recorded") })
        })
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

    fn playback_as<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
        p: Playback,
        viewer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(Upstreams::playback(self, camera, quality, p, viewer))
    }

    fn recorded<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<Recorded, RecallFailure>> {
        Box::pin(Upstreams::recorded(self, camera, quality))
    }

    fn export<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
        range: (u64, u64),
        viewer: &'a str,
    ) -> BoxFuture<'a, Result<ExportFile, RecallFailure>> {
        Box::pin(Upstreams::export(self, camera, quality, range, viewer))
    }
}
