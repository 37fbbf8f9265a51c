//! Camera alarms over ONVIF Events (PullPoint): motion, tampering and video
//! loss of the devices with `[device.onvif] events = true` (issue 23).
//!
//! `messages` builds the requests and reads the answers, `lease` decides
//! when to renew and how long to back off (time passed in); `driver` is
//! the loop of one device: CreatePullPointSubscription, then PullMessages
//! with a 1 s Timeout (the camera answers as soon as it has a message, so
//! an alarm reaches the agent within one round trip and at worst about a
//! second), Renew before the termination time, and a fresh subscription
//! with backoff (1 s doubling to 30 s) after any failure. It reuses the
//! PTZ client's SOAP text and HTTP exchange (`crate::ptz::onvif`), so
//! credentials, bounds (1 MiB an answer) and error messages are the same.
//!
//! The channel to the alarm service is bounded: when it is full the event
//! is dropped and counted, the loop never waits for the consumer (a camera
//! chattering at 100 events/s must not hold back the subscription's
//! renewal).

mod driver;
pub mod lease;
pub mod messages;

pub use crate::ptz::onvif::OnvifError;
use crate::sources::device::{Device, OnvifSettings};

/// What a camera reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Motion detected (`RuleEngine/CellMotionDetector/Motion`, `VideoSource/MotionAlarm`).
    Motion,
    /// The view was covered, moved or blinded (`VideoSource/GlobalSceneChange/*`).
    Tampering,
    /// The sensor's video is gone (`VideoSource/SignalLoss`).
    VideoLoss,
}

/// One alarm of one lens.
#[derive(Debug, Clone)]
pub struct CameraEvent {
    /// Device id.
    pub device: String,
    /// Camera id of the lens (from the video source token when it names a
    /// lens, else lens 1).
    pub camera: String,
    /// What happened.
    pub kind: EventKind,
    /// The condition starts (`true`) or ends.
    pub active: bool,
    /// The message's UtcTime, or when it was read if the camera gave none.
    pub at: std::time::SystemTime,
}

/// Spawns the PullPoint loop of one device if `[device.onvif] events =
/// true` (None otherwise, or when the settings are unusable: logged; the
/// config loader refuses those first). Events go to `tx` with `try_send`.
pub fn spawn(
    device: &Device,
    tx: tokio::sync::mpsc::Sender<CameraEvent>,
) -> Option<tokio::task::JoinHandle<()>> {
    let settings = device.onvif.as_ref().filter(|s| s.events)?;
    match driver::EventsClient::new(device, settings) {
        Ok(client) => Some(tokio::spawn(client.run(tx))),
        Err(e) => {
            tracing::error!(camera = %device.id, error = %e, "ONVIF events not started");
            None
        }
    }
}

/// Checks the events keys of `[device.onvif]` of device `device_id`
/// (the events URL, the timeout); the config loader calls it.
pub fn check_settings(device_id: &str, settings: &OnvifSettings) -> Result<(), OnvifError> {
    driver::Settings::new(device_id, settings).map(drop)
}
