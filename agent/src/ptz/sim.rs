//! A simulated PTZ dome for synthetic cameras (`[device.synthetic] ptz =
//! true`): velocities are integrated into a position, with the move's
//! timeout honoured like a real camera's, so the loopback demo's PTZ pad and
//! the arbitration can be tried without a camera.

use crate::ptz::device::{DeviceError, DeviceFuture, DeviceOp, Output, PtzDevice};
use ponte_proto::ptz::{PtzErrorCode, PtzPosition, PtzPreset};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per mille of the range travelled per second at full velocity.
const SPEED: f64 = 500.0;

/// Presets of every simulated dome: token, name, (pan, tilt, zoom).
const PRESETS: [(&str, &str, [f64; 3]); 3] = [
    ("1", "Home", [0.0, 0.0, 0.0]),
    ("2", "Ingresso", [-600.0, -200.0, 300.0]),
    ("3", "Rotatoria", [500.0, -100.0, 700.0]),
];

/// Position and motion of a simulated dome (sans-IO: time is passed in).
#[derive(Debug, Clone, PartialEq)]
pub struct SimState {
    /// Pan, tilt (-1000..=1000) and zoom (0..=1000), per mille.
    pub position: [f64; 3],
    velocity: [f64; 3],
    since: Instant,
    until: Option<Instant>,
}

impl SimState {
    /// At home, still.
    pub fn new(now: Instant) -> Self {
        Self { position: [0.0; 3], velocity: [0.0; 3], since: now, until: None }
    }

    /// Moves the position on to `now` (or to the move's timeout, if earlier).
    pub fn advance(&mut self, now: Instant) {
        let end = self.until.map_or(now, |u| u.min(now));
        let dt = end.saturating_duration_since(self.since).as_secs_f64();
        for (i, (p, v)) in self.position.iter_mut().zip(self.velocity).enumerate() {
            let lo = if i == 2 { 0.0 } else { -1000.0 };
            *p = (*p + v / 1000.0 * SPEED * dt).clamp(lo, 1000.0);
        }
        self.since = now;
        if self.until.is_some_and(|u| u <= now) {
            self.velocity = [0.0; 3];
            self.until = None;
        }
    }

    /// Starts a continuous move (per mille velocities) that ends by itself after `timeout`.
    pub fn continuous_move(&mut self, velocity: [i16; 3], timeout: Option<Duration>, now: Instant) {
        self.advance(now);
        self.velocity = velocity.map(f64::from);
        self.until = timeout.map(|t| now + t);
    }

    /// Stops.
    pub fn stop(&mut self, now: Instant) {
        self.advance(now);
        self.velocity = [0.0; 3];
        self.until = None;
    }

    /// Whether it is moving at `now`.
    pub fn moving(&self, now: Instant) -> bool {
        self.velocity != [0.0; 3] && self.until.is_none_or(|u| u > now)
    }
}

/// A simulated dome.
pub struct SimulatedDome {
    camera: String,
    state: Mutex<SimState>,
}

impl SimulatedDome {
    /// A dome for `camera`, at home.
    pub fn new(camera: &str) -> Self {
        Self { camera: camera.to_owned(), state: Mutex::new(SimState::new(Instant::now())) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimState, Instant) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state, Instant::now())
    }
}

impl PtzDevice for SimulatedDome {
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output> {
        let result = match op {
            DeviceOp::Move { pan, tilt, zoom, timeout } => {
                self.with(|s, now| s.continuous_move([*pan, *tilt, *zoom], Some(*timeout), now));
                Ok(Output::Nothing)
            }
            DeviceOp::Stop => {
                self.with(|s, now| s.stop(now));
                Ok(Output::Nothing)
            }
            DeviceOp::Goto(token) => match PRESETS.iter().find(|(t, _, _)| t == token) {
                Some((_, _, at)) => {
                    self.with(|s, now| {
                        s.stop(now);
                        s.position = *at;
                    });
                    Ok(Output::Nothing)
                }
                None => Err(DeviceError {
                    code: PtzErrorCode::CameraError,
                    message: format!(
                        "simulated camera `{}` has no preset {token:?}; its presets are 1, 2 and 3",
                        self.camera
                    ),
                }),
            },
            DeviceOp::Presets => Ok(Output::Presets(
                PRESETS
                    .iter()
                    .map(|(t, n, _)| PtzPreset { token: (*t).to_owned(), name: (*n).to_owned() })
                    .collect(),
            )),
            DeviceOp::Status => Ok(Output::Position(self.with(|s, now| {
                s.advance(now);
                let [pan, tilt, zoom] = s.position.map(|v| Some(v.round() as i16));
                PtzPosition { pan, tilt, zoom, moving: s.moving(now) }
            }))),
        };
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_integrate_clamp_and_honour_the_timeout() {
        let t0 = Instant::now();
        let mut s = SimState::new(t0);
        s.continuous_move([1000, -500, 1000], Some(Duration::from_secs(1)), t0);
        s.advance(t0 + Duration::from_millis(500));
        assert_eq!(s.position, [250.0, -125.0, 250.0]);
        assert!(s.moving(t0 + Duration::from_millis(500)));
        // The camera-side timeout ends the move at 1 s, whatever comes later.
        s.advance(t0 + Duration::from_secs(5));
        assert_eq!(s.position, [500.0, -250.0, 500.0]);
        assert!(!s.moving(t0 + Duration::from_secs(5)));
        s.continuous_move([1000, 0, -1000], None, t0 + Duration::from_secs(5));
        s.advance(t0 + Duration::from_secs(20));
        assert_eq!(s.position, [1000.0, -250.0, 0.0], "clamped to the range");
        s.stop(t0 + Duration::from_secs(20));
        assert!(!s.moving(t0 + Duration::from_secs(21)));
    }
}
