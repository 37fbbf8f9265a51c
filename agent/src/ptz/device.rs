//! What the PTZ service asks of a camera: one operation at a time through
//! [`PtzDevice`], implemented by the ONVIF client, the simulated dome and
//! the tests' fakes.

use ponte_proto::ptz::{PtzErrorCode, PtzPosition, PtzPreset};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What a [`PtzDevice`] call returns.
pub type DeviceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeviceError>> + Send + 'a>>;

/// A camera's PTZ endpoint, as the service drives it (ONVIF in production,
/// a simulated dome for the demo, a recording fake in tests).
pub trait PtzDevice: Send + Sync + 'static {
    /// Carries one operation out. A continuous move stops by itself, camera
    /// side, after its `timeout` unless renewed.
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output>;
}

/// Why a camera did not carry a command out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    /// `camera-error` or `timeout`.
    pub code: PtzErrorCode,
    /// What happened, naming the camera and the fix.
    pub message: String,
}

/// One operation for a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// ONVIF `ContinuousMove`, velocities per mille; the camera stops by
    /// itself after `timeout` (the dead-man, camera side).
    Move {
        /// Pan velocity.
        pan: i16,
        /// Tilt velocity.
        tilt: i16,
        /// Zoom velocity.
        zoom: i16,
        /// ONVIF `Timeout` of the move.
        timeout: Duration,
    },
    /// ONVIF `Stop` (pan, tilt and zoom).
    Stop,
    /// ONVIF `GotoPreset` with this token.
    Goto(String),
    /// ONVIF `GetPresets`.
    Presets,
    /// ONVIF `GetStatus`.
    Status,
}

/// What a camera answered to a [`DeviceOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Carried out (moves, stops, presets).
    Nothing,
    /// The presets (`Presets`).
    Presets(Vec<PtzPreset>),
    /// Position and motion (`Status`).
    Position(PtzPosition),
}
