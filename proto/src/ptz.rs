//! PTZ control across sites: the command model carried on the control stream
//! and at the HTTP APIs, and the sans-IO arbiter that decides who steers a
//! camera (one controller at a time, priority pre-emption, idle release and
//! the dead-man stop of a continuous move).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Largest velocity magnitude, per mille (ONVIF's generic space is -1..1).
pub const VELOCITY_MAX: i16 = 1000;
/// PTZ priority of the master room's own operators: above every site (0-99).
pub const MASTER_PRIORITY: u8 = 100;
/// The master room's site id: what its operators act under in audit lines
/// and lock holders, and the agent's identity, which relays reserve for it.
pub const MASTER_SITE: &str = "master";
/// Longest preset token accepted.
pub const MAX_PRESET_LEN: usize = 64;

/// One PTZ operation, as a viewer page, a relay and the agent exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PtzCommand {
    /// ONVIF `ContinuousMove`: velocities per mille, -1000..=1000 (pan right,
    /// tilt up and zoom in are positive). Must be repeated (see
    /// [`ArbiterConfig::deadman`]) or the camera is stopped.
    Move {
        /// Pan velocity.
        #[serde(default)]
        pan: i16,
        /// Tilt velocity.
        #[serde(default)]
        tilt: i16,
        /// Zoom velocity.
        #[serde(default)]
        zoom: i16,
    },
    /// ONVIF `Stop` (pan, tilt and zoom).
    Stop,
    /// ONVIF `GotoPreset`.
    GotoPreset {
        /// Preset token, as listed by `presets`.
        preset: String,
    },
    /// ONVIF `GetPresets`; needs no lock.
    Presets,
    /// ONVIF `GetStatus` plus the lock holder; needs no lock.
    Status,
    /// Gives the lock up (stopping a move first).
    Release,
}

impl PtzCommand {
    /// Short name, as in logs, audit lines and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            PtzCommand::Move { .. } => "move",
            PtzCommand::Stop => "stop",
            PtzCommand::GotoPreset { .. } => "goto_preset",
            PtzCommand::Presets => "presets",
            PtzCommand::Status => "status",
            PtzCommand::Release => "release",
        }
    }

    /// Whether the command steers the camera (and so needs the lock).
    pub fn steers(&self) -> bool {
        matches!(self, PtzCommand::Move { .. } | PtzCommand::Stop | PtzCommand::GotoPreset { .. })
    }

    /// Checks value ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PtzCommand::Move { pan, tilt, zoom } => {
                for (name, v) in [("pan", pan), ("tilt", tilt), ("zoom", zoom)] {
                    if !(-VELOCITY_MAX..=VELOCITY_MAX).contains(v) {
                        return Err(format!("{name} velocity {v} outside -{VELOCITY_MAX}..={VELOCITY_MAX}"));
                    }
                }
                Ok(())
            }
            PtzCommand::GotoPreset { preset } => {
                if preset.is_empty() || preset.len() > MAX_PRESET_LEN {
                    return Err(format!("preset token must be 1..={MAX_PRESET_LEN} bytes"));
                }
                if preset.chars().any(|c| c.is_control()) {
                    return Err("preset token holds control characters".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Whether a request's `Content-Type` says JSON, as the PTZ HTTP APIs
/// require: a web page elsewhere can make a browser send a form or text POST
/// anywhere, but a JSON one only after a CORS preflight, which these APIs
/// never grant.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Who holds (or asks for) a camera's PTZ lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Site id (`master` for the master room).
    pub site: String,
    /// Viewer (account or operator name) at that site.
    pub viewer: String,
    /// PTZ priority: the site's policy `ptz_priority`, or 100 for the master room.
    pub priority: u8,
}

impl Controller {
    /// Whether `other` is the same person (site and viewer), whatever its
    /// priority: a policy reload that changes a site's priority must not make
    /// a holder wait for, or pre-empt, itself.
    pub fn same_as(&self, other: &Controller) -> bool {
        self.site == other.site && self.viewer == other.viewer
    }

    /// `viewer@site`, as shown on the viewer page.
    pub fn label(&self) -> String {
        format!("{}@{}", self.viewer, self.site)
    }
}

/// A lock holder as reported to viewers (serde cannot deny unknown fields
/// next to `flatten`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtzHolder {
    /// Who.
    #[serde(flatten)]
    pub controller: Controller,
    /// Milliseconds until the lock lapses unless renewed.
    pub expires_in_ms: u64,
}

/// A preset position of a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtzPreset {
    /// ONVIF preset token (what `goto_preset` takes).
    pub token: String,
    /// Human name, if the camera has one.
    #[serde(default)]
    pub name: String,
}

/// Position and motion reported by `GetStatus`; positions per mille of the
/// camera's generic space (pan/tilt -1000..=1000, zoom 0..=1000), None when
/// the camera does not report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtzPosition {
    /// Pan.
    pub pan: Option<i16>,
    /// Tilt.
    pub tilt: Option<i16>,
    /// Zoom.
    pub zoom: Option<i16>,
    /// Whether the camera reports pan/tilt or zoom as moving.
    pub moving: bool,
}

/// Why a PTZ command was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PtzErrorCode {
    /// No such camera (or not visible to this site).
    Unknown,
    /// The site (agent policy) or the viewer (relay account) has no PTZ right.
    Forbidden,
    /// Another controller of equal or higher priority holds the lock.
    Locked,
    /// The camera is not a PTZ camera, or has no ONVIF endpoint configured.
    Unsupported,
    /// The camera answered with a fault or an HTTP error.
    CameraError,
    /// The camera did not answer in time.
    Timeout,
    /// The request was malformed (bad velocity, preset token).
    Invalid,
    /// The relay has no session to the agent.
    Unavailable,
}

impl PtzErrorCode {
    /// Kebab-case name, as in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PtzErrorCode::Unknown => "unknown",
            PtzErrorCode::Forbidden => "forbidden",
            PtzErrorCode::Locked => "locked",
            PtzErrorCode::Unsupported => "unsupported",
            PtzErrorCode::CameraError => "camera-error",
            PtzErrorCode::Timeout => "timeout",
            PtzErrorCode::Invalid => "invalid",
            PtzErrorCode::Unavailable => "unavailable",
        }
    }

    /// HTTP status the viewer APIs answer with.
    pub fn http_status(self) -> u16 {
        match self {
            PtzErrorCode::Unknown => 404,
            PtzErrorCode::Forbidden => 403,
            PtzErrorCode::Locked => 409,
            PtzErrorCode::Unsupported => 501,
            PtzErrorCode::CameraError => 502,
            PtzErrorCode::Timeout => 504,
            PtzErrorCode::Invalid => 400,
            PtzErrorCode::Unavailable => 503,
        }
    }
}

/// Answer to a PTZ command (agent → relay, and the JSON body of the HTTP APIs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum PtzReply {
    /// Carried out. `holder` is the lock holder afterwards (the requester
    /// after a steering command, none after `release`).
    Done {
        /// Lock holder after the command.
        holder: Option<PtzHolder>,
        /// Presets (for `presets`), empty otherwise.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        presets: Vec<PtzPreset>,
        /// Position (for `status`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<PtzPosition>,
    },
    /// Not carried out.
    Refused {
        /// Why, machine-readable.
        code: PtzErrorCode,
        /// Why, for the operator (names the camera and what to do).
        reason: String,
        /// The lock holder, when `code` is `locked` (or known anyway).
        holder: Option<PtzHolder>,
    },
}

impl PtzReply {
    /// A refusal without holder.
    pub fn refused(code: PtzErrorCode, reason: impl Into<String>) -> Self {
        PtzReply::Refused { code, reason: reason.into(), holder: None }
    }

    /// HTTP status the viewer APIs answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            PtzReply::Done { .. } => 200,
            PtzReply::Refused { code, .. } => code.http_status(),
        }
    }
}

/// Arbiter timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArbiterConfig {
    /// A lock with no command for this long lapses.
    pub lock_idle: Duration,
    /// A continuous move with no renewal for this long is stopped.
    pub deadman: Duration,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self { lock_idle: Duration::from_secs(15), deadman: Duration::from_millis(1500) }
    }
}

/// What the arbiter decided about a steering request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Go ahead. `preempted` is the previous holder that lost the lock to a
    /// higher priority (its move, if any, is superseded by this command).
    Granted {
        /// The controller that lost the lock, if any.
        preempted: Option<Controller>,
    },
    /// Someone of equal or higher priority holds the lock.
    Busy(PtzHolder),
}

/// Something the I/O shell must do because time passed or a controller vanished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// A continuous move lost its renewal (or its controller): send `Stop`.
    DeadmanStop {
        /// Camera id.
        camera: String,
        /// The controller whose move it was.
        controller: Controller,
    },
    /// The lock lapsed after being idle.
    Released {
        /// Camera id.
        camera: String,
        /// The controller that held it.
        controller: Controller,
    },
}

#[derive(Debug, Clone)]
struct Lock {
    holder: Controller,
    last: Instant,
    moving: bool,
}

/// One controller per camera: grants, renews, pre-empts and expires locks.
/// Sans-IO: every call takes `now`; [`PtzArbiter::poll`] reports dead-man
/// stops and lapsed locks, [`PtzArbiter::next_deadline`] says when to poll.
#[derive(Debug, Default)]
pub struct PtzArbiter {
    config: ArbiterConfig,
    locks: HashMap<String, Lock>,
}

impl PtzArbiter {
    /// An arbiter with these timings.
    pub fn new(config: ArbiterConfig) -> Self {
        Self { config, locks: HashMap::new() }
    }

    /// Current timings.
    pub fn config(&self) -> ArbiterConfig {
        self.config
    }

    /// Changes the timings (config reload); running locks keep their state.
    pub fn set_config(&mut self, config: ArbiterConfig) {
        self.config = config;
    }

    /// Asks to steer `camera`. `moving` says whether the command leaves the
    /// camera in a continuous move (then the dead-man applies). A granted
    /// request takes or renews the lock; the caller then sends the command.
    pub fn request(&mut self, camera: &str, who: &Controller, moving: bool, now: Instant) -> Grant {
        let lapsed = self.locks.get(camera).is_some_and(|l| self.lapsed(l, now));
        if lapsed {
            self.locks.remove(camera);
        }
        let preempted = match self.locks.get(camera) {
            None => None,
            Some(l) if l.holder.same_as(who) => None,
            Some(l) if who.priority > l.holder.priority => Some(l.holder.clone()),
            Some(l) => return Grant::Busy(self.holder_of(l, now)),
        };
        self.locks.insert(camera.to_owned(), Lock { holder: who.clone(), last: now, moving });
        Grant::Granted { preempted }
    }

    /// Gives up `who`'s lock on `camera`. Returns whether the camera was
    /// moving (the caller sends `Stop`); false if `who` did not hold it.
    pub fn release(&mut self, camera: &str, who: &Controller) -> Option<bool> {
        match self.locks.get(camera) {
            Some(l) if l.holder.same_as(who) => self.locks.remove(camera).map(|l| l.moving),
            _ => None,
        }
    }

    /// Takes a lock another agent of the master room granted (issue 22):
    /// `holder` holds `camera` for `expires_in` more, unless renewed. The
    /// lock is not moving here: the dead-man of a move stays with the
    /// agent that started it.
    pub fn adopt(&mut self, camera: &str, holder: &PtzHolder, now: Instant) {
        let left = Duration::from_millis(holder.expires_in_ms).min(self.config.lock_idle);
        let last = now.checked_sub(self.config.lock_idle - left).unwrap_or(now);
        self.locks.insert(camera.to_owned(), Lock { holder: holder.controller.clone(), last, moving: false });
    }

    /// Drops `camera`'s lock, whoever holds it (another agent released it).
    pub fn forget(&mut self, camera: &str) -> Option<Controller> {
        self.locks.remove(camera).map(|l| l.holder)
    }

    /// Drops every lock of a vanished controller (a relay session ended):
    /// the cameras it was moving must be stopped.
    pub fn drop_site(&mut self, site: &str) -> Vec<Expiry> {
        let mut out = Vec::new();
        self.locks.retain(|camera, l| {
            if l.holder.site != site {
                return true;
            }
            out.push(if l.moving {
                Expiry::DeadmanStop { camera: camera.clone(), controller: l.holder.clone() }
            } else {
                Expiry::Released { camera: camera.clone(), controller: l.holder.clone() }
            });
            false
        });
        out.sort_by(|a, b| expiry_camera(a).cmp(expiry_camera(b)));
        out
    }

    /// The holder of `camera`'s lock, if any and not lapsed.
    pub fn holder(&self, camera: &str, now: Instant) -> Option<PtzHolder> {
        self.locks.get(camera).filter(|l| !self.lapsed(l, now)).map(|l| self.holder_of(l, now))
    }

    /// Dead-man stops and lapsed locks due at `now`, in camera order.
    pub fn poll(&mut self, now: Instant) -> Vec<Expiry> {
        let cfg = self.config;
        let mut out = Vec::new();
        self.locks.retain(|camera, l| {
            let idle = now.saturating_duration_since(l.last);
            if l.moving && idle >= cfg.deadman {
                l.moving = false;
                out.push(Expiry::DeadmanStop { camera: camera.clone(), controller: l.holder.clone() });
            }
            if idle >= cfg.lock_idle {
                out.push(Expiry::Released { camera: camera.clone(), controller: l.holder.clone() });
                return false;
            }
            true
        });
        out.sort_by(|a, b| expiry_camera(a).cmp(expiry_camera(b)));
        out
    }

    /// When [`PtzArbiter::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.locks
            .values()
            .map(|l| {
                l.last
                    + if l.moving {
                        self.config.deadman.min(self.config.lock_idle)
                    } else {
                        self.config.lock_idle
                    }
            })
            .min()
    }

    /// Number of cameras currently locked.
    pub fn locked(&self) -> usize {
        self.locks.len()
    }

    fn lapsed(&self, l: &Lock, now: Instant) -> bool {
        now.saturating_duration_since(l.last) >= self.config.lock_idle
    }

    fn holder_of(&self, l: &Lock, now: Instant) -> PtzHolder {
        let left = (l.last + self.config.lock_idle).saturating_duration_since(now);
        PtzHolder { controller: l.holder.clone(), expires_in_ms: left.as_millis() as u64 }
    }
}

fn expiry_camera(e: &Expiry) -> &str {
    match e {
        Expiry::DeadmanStop { camera, .. } | Expiry::Released { camera, .. } => camera,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(site: &str, viewer: &str, priority: u8) -> Controller {
        Controller { site: site.into(), viewer: viewer.into(), priority }
    }

    fn arbiter() -> PtzArbiter {
        PtzArbiter::new(ArbiterConfig { lock_idle: Duration::from_secs(10), deadman: Duration::from_secs(1) })
    }

    #[test]
    fn first_controller_gets_the_lock_and_renews_it() {
        let mut a = arbiter();
        let t0 = Instant::now();
        let cc = who("carabinieri", "rossi", 50);
        assert_eq!(a.request("cam", &cc, true, t0), Grant::Granted { preempted: None });
        assert_eq!(
            a.request("cam", &cc, true, t0 + Duration::from_millis(900)),
            Grant::Granted { preempted: None }
        );
        // Renewed at 0.9 s: no dead-man at 1.5 s.
        assert!(a.poll(t0 + Duration::from_millis(1500)).is_empty());
        assert_eq!(a.holder("cam", t0 + Duration::from_secs(2)).map(|h| h.controller), Some(cc));
    }

    #[test]
    fn equal_priority_waits_and_higher_preempts() {
        let mut a = arbiter();
        let t0 = Instant::now();
        let cc = who("carabinieri", "rossi", 50);
        let qu = who("questura", "bianchi", 50);
        let master = who(MASTER_SITE, "sala", MASTER_PRIORITY);
        assert!(matches!(a.request("cam", &cc, false, t0), Grant::Granted { .. }));
        match a.request("cam", &qu, false, t0 + Duration::from_secs(1)) {
            Grant::Busy(h) => {
                assert_eq!(h.controller, cc);
                assert_eq!(h.expires_in_ms, 9000);
            }
            g => panic!("equal priority must wait, got {g:?}"),
        }
        assert_eq!(
            a.request("cam", &master, false, t0 + Duration::from_secs(2)),
            Grant::Granted { preempted: Some(cc.clone()) }
        );
        assert!(matches!(a.request("cam", &cc, false, t0 + Duration::from_secs(3)), Grant::Busy(_)));
        // Another viewer of the same site is another controller.
        assert!(matches!(a.request("cam", &who(MASTER_SITE, "altro", 100), false, t0), Grant::Busy(_)));
    }

    #[test]
    fn a_priority_change_keeps_the_holder_its_lock() {
        // Policy reload: the same viewer now asks with another priority.
        let mut a = arbiter();
        let t0 = Instant::now();
        a.request("cam", &who("carabinieri", "rossi", 50), true, t0);
        let lowered = who("carabinieri", "rossi", 20);
        assert_eq!(a.request("cam", &lowered, true, t0), Grant::Granted { preempted: None });
        assert_eq!(a.holder("cam", t0).map(|h| h.controller.priority), Some(20));
        let raised = who("carabinieri", "rossi", 80);
        assert_eq!(a.request("cam", &raised, true, t0), Grant::Granted { preempted: None });
        assert_eq!(a.release("cam", &lowered), Some(true));
    }

    #[test]
    fn unrenewed_move_is_stopped_then_the_lock_lapses() {
        let mut a = arbiter();
        let t0 = Instant::now();
        let cc = who("carabinieri", "rossi", 50);
        a.request("cam", &cc, true, t0);
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(a.poll(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            a.poll(t0 + Duration::from_secs(1)),
            vec![Expiry::DeadmanStop { camera: "cam".into(), controller: cc.clone() }]
        );
        // Stopped once only; the lock is still held until idle.
        assert!(a.poll(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            a.poll(t0 + Duration::from_secs(10)),
            vec![Expiry::Released { camera: "cam".into(), controller: cc }]
        );
        assert_eq!(a.locked(), 0);
    }

    #[test]
    fn lapsed_lock_goes_to_the_next_requester_without_preemption() {
        let mut a = arbiter();
        let t0 = Instant::now();
        a.request("cam", &who("carabinieri", "rossi", 50), false, t0);
        let qu = who("questura", "bianchi", 10);
        assert_eq!(
            a.request("cam", &qu, false, t0 + Duration::from_secs(10)),
            Grant::Granted { preempted: None }
        );
    }

    #[test]
    fn release_and_vanished_site() {
        let mut a = arbiter();
        let t0 = Instant::now();
        let cc = who("carabinieri", "rossi", 50);
        let qu = who("questura", "bianchi", 10);
        a.request("a", &cc, true, t0);
        a.request("b", &cc, false, t0);
        a.request("c", &qu, true, t0);
        assert_eq!(a.release("c", &cc), None, "only the holder releases");
        assert_eq!(
            a.drop_site("carabinieri"),
            vec![
                Expiry::DeadmanStop { camera: "a".into(), controller: cc.clone() },
                Expiry::Released { camera: "b".into(), controller: cc }
            ]
        );
        assert_eq!(a.release("c", &qu), Some(true));
        assert_eq!(a.locked(), 0);
    }

    #[test]
    fn only_json_content_types_pass() {
        for ok in ["application/json", "Application/JSON; charset=utf-8", " application/json "] {
            assert!(is_json_content_type(Some(ok)), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", "json"] {
            assert!(!is_json_content_type(Some(bad)), "{bad}");
        }
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn commands_validate_and_round_trip_as_json() {
        let m: PtzCommand = serde_json::from_str(r#"{"op":"move","pan":500,"tilt":-250}"#).unwrap();
        assert_eq!(m, PtzCommand::Move { pan: 500, tilt: -250, zoom: 0 });
        assert!(m.validate().is_ok() && m.steers());
        assert!(PtzCommand::Move { pan: 1001, tilt: 0, zoom: 0 }.validate().is_err());
        assert!(PtzCommand::GotoPreset { preset: String::new() }.validate().is_err());
        assert!(serde_json::from_str::<PtzCommand>(r#"{"op":"fly"}"#).is_err());
        let r = PtzReply::Refused {
            code: PtzErrorCode::Locked,
            reason: "held".into(),
            holder: Some(PtzHolder { controller: who("master", "sala", 100), expires_in_ms: 5 }),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""code":"locked""#) && json.contains(r#""site":"master""#), "{json}");
        assert_eq!(serde_json::from_str::<PtzReply>(&json).unwrap(), r);
        assert_eq!(r.http_status(), 409);
    }
}
