//! DESCRIBE: the cameras a viewer may see, subscribing to one, and the
//! RTSP status a refused subscription maps to.

use super::connection::Conn;
use super::reply::Reply;
use super::target::Target;
use super::RtspServer;
use crate::auth::{ScopeRefusal, Viewer};
use crate::rtsp::sdp;
use crate::upstream::SubscribeFailure;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use rtsp_types::{Request, StatusCode};
use tracing::info;

impl RtspServer {
    /// The catalog entry `target` names, if this viewer may watch it at the
    /// target's quality.
    pub(super) fn visible(&self, target: &Target, viewer: &Viewer) -> Result<CatalogEntry, Reply> {
        let (camera, quality) = (target.camera.as_str(), target.quality);
        let Some(entry) = self.source.catalog().into_iter().find(|c| c.id == camera) else {
            info!(camera, viewer = viewer.name(), "RTSP: camera not in this site's catalog");
            return Err(Reply::new(StatusCode::NotFound));
        };
        if !entry.qualities.contains(&quality) {
            info!(camera, quality = quality.name(), "RTSP: quality not offered to this site");
            return Err(Reply::new(StatusCode::Forbidden));
        }
        if quality == Quality::Sub && entry.sub_transcoded {
            // The agent's transcode is for browsers only: a VMS recording
            // it around the clock would hold a transcode for good.
            info!(camera, "RTSP: refused the substream, the agent's H.264 transcode for browsers");
            let why = format!(
                "camera `{camera}`: its substream is the agent's H.264 transcode for browsers and is \
                 not served over RTSP; play the camera's own stream at the path /{camera}\r\n"
            );
            return Err(Reply::new(StatusCode::NotFound).body("text/plain", why));
        }
        match viewer.check(&entry, quality) {
            Ok(()) => Ok(entry),
            // A camera outside the viewer's set is answered like one that
            // does not exist; the audit log keeps the real reason.
            Err(ScopeRefusal::Hidden(reason)) => {
                info!(camera, viewer = viewer.name(), %reason, "RTSP: refused by the viewer's account");
                self.audit.refused(viewer.audit_name(), camera, quality, "unknown", &reason);
                Err(Reply::new(StatusCode::NotFound))
            }
            Err(ScopeRefusal::Quality(reason)) => {
                info!(camera, viewer = viewer.name(), %reason, "RTSP: refused by the viewer's account");
                self.audit.refused(viewer.audit_name(), camera, quality, "forbidden", &reason);
                Err(Reply::new(StatusCode::Forbidden))
            }
        }
    }

    /// Subscribes to the target's track for `viewer` and waits for its first frame.
    pub(super) async fn subscribe(
        &self,
        target: &Target,
        viewer: &Viewer,
    ) -> Result<(TrackReader, HubItem), Reply> {
        let name = viewer.upstream_name();
        let mut reader = self
            .source
            .subscribe_as(&target.camera, target.quality, Some(&name))
            .await
            .map_err(|f| subscribe_reply(&target.camera, &f))?;
        match tokio::time::timeout(self.settings.first_frame_timeout, reader.next()).await {
            Ok(Some(item)) => Ok((reader, item)),
            Ok(None) => {
                info!(camera = %target.camera, "RTSP: the camera stream ended before its first frame");
                Err(Reply::new(StatusCode::ServiceUnavailable))
            }
            Err(_) => {
                info!(camera = %target.camera, timeout_secs = self.settings.first_frame_timeout.as_secs_f64(), "RTSP: no video from the camera in time");
                Err(Reply::new(StatusCode::ServiceUnavailable))
            }
        }
    }

    pub(super) async fn describe(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let url = req.request_uri().ok_or_else(|| Reply::new(StatusCode::BadRequest))?;
        let target = Target::parse(url).ok_or_else(|| Reply::new(StatusCode::NotFound))?;
        let viewer = self.authenticate(conn, req).await?;
        let entry = self.visible(&target, &viewer)?;
        // The subscription lingers upstream after this reader is dropped, so
        // the SETUP that follows finds the track warm.
        let (_reader, first) = self.subscribe(&target, &viewer).await?;
        let sdp = sdp::describe(&first.config, &entry.name, rand::random::<u32>().into(), conn.local.ip());
        Ok(Reply::ok().header("Content-Base", target.base_url(url)).body("application/sdp", sdp))
    }
}

pub(super) fn subscribe_reply(camera: &str, failure: &SubscribeFailure) -> Reply {
    info!(camera, code = failure.code.name(), reason = %failure.reason, "RTSP: subscription refused");
    Reply::new(match failure.code {
        SubscribeErrorCode::Unknown => StatusCode::NotFound,
        SubscribeErrorCode::Forbidden => StatusCode::Forbidden,
        SubscribeErrorCode::Offline => StatusCode::ServiceUnavailable,
        SubscribeErrorCode::OverBudget => StatusCode::NotEnoughBandwidth,
        SubscribeErrorCode::NotRecorded => StatusCode::InvalidRange,
    })
}
