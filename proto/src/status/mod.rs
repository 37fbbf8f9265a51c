//! The status document every node publishes on its management port, and its
//! renderings: JSON (serde), Prometheus text, a human HTML page and the CLI
//! table. One model, so the page, the metrics and `status` never disagree.
//!
//! The model is here; each rendering has its file (`prometheus`, `html`,
//! `table`), and `rate_meter` turns the counters into rates.

mod html;
mod prometheus;
mod rate_meter;
mod table;

pub use rate_meter::RateMeter;

use serde::{Deserialize, Serialize};

/// Overall verdict, also the CLI's exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Everything expected is working.
    #[default]
    Ok,
    /// Serving, but something expected is missing (a link, a camera).
    Degraded,
    /// Not serving its purpose.
    Down,
}

impl Health {
    /// Exit code of `status`: 0 ok, 1 degraded, 2 down (3 = unreachable).
    pub fn exit_code(self) -> i32 {
        match self {
            Health::Ok => 0,
            Health::Degraded => 1,
            Health::Down => 2,
        }
    }

    /// How the status page and `status` spell it: `OK`, `DEGRADED`, `DOWN`
    /// (the JSON keeps serde's lowercase).
    pub fn label(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Degraded => "DEGRADED",
            Health::Down => "DOWN",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Health::Ok => "green",
            Health::Degraded => "amber",
            Health::Down => "red",
        }
    }
}

/// One QUIC link (agent→relay, relay←agent, relay→downstream relay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Peer site / node id.
    pub peer: String,
    /// `to-relay`, `from-agent`, `from-upstream`, `to-downstream`.
    pub direction: String,
    /// `up`, `connecting`, `down`.
    pub state: String,
    /// Peer address.
    pub addr: String,
    /// Smoothed round-trip time in milliseconds, when up.
    pub rtt_ms: Option<f64>,
    /// Packets declared lost since the link came up.
    pub lost_packets: u64,
    /// Media bytes sent since the node started.
    pub bytes_sent: u64,
    /// Media bytes received since the node started.
    pub bytes_received: u64,
    /// Send rate over the last sampling interval, bit/s.
    pub send_bps: f64,
    /// Receive rate over the last sampling interval, bit/s.
    pub recv_bps: f64,
    /// Active subscriptions on the link.
    pub subscriptions: u32,
    /// Streams dropped or reset (stale GOPs, slow link).
    pub drops: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// The site's link budget the upstream applies, bit/s (relay, from
    /// the agent's stats; absent when unlimited or not reported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bps: Option<u64>,
}

/// One camera stream (a lens at a quality) as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// `main` or `sub`.
    pub quality: String,
    /// `online`, `connecting`, `offline`, `idle` (on demand, nobody watching).
    pub state: String,
    /// `h264` / `h265`, when known.
    pub codec: Option<String>,
    /// Width in pixels (0 unknown).
    pub width: u16,
    /// Height in pixels (0 unknown).
    pub height: u16,
    /// Bitrate over the last sampling interval, bit/s.
    pub bitrate_bps: f64,
    /// Frames received since start.
    pub frames: u64,
    /// Bytes received since start.
    pub bytes: u64,
    /// Consumers of the stream (links + local viewers).
    pub viewers: u32,
    /// Frames skipped for slow consumers or malformed input.
    pub drops: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// One local viewer (WHEP browser or RTSP client).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewerStatus {
    /// Session id.
    pub id: String,
    /// `whep` or `rtsp`.
    pub kind: String,
    /// Camera watched.
    pub camera: String,
    /// Quality watched.
    pub quality: String,
    /// Account name, when authenticated.
    pub user: Option<String>,
    /// Seconds since it started.
    pub age_secs: u64,
}

/// One subscription's place on the shaping ladder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapingStatus {
    /// Site.
    pub site: String,
    /// Camera.
    pub camera: String,
    /// `main`, `sub`, `keyframes-only`, `paused`.
    pub rung: String,
    /// Priority class.
    pub priority: String,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// GOPs dropped.
    pub gops_dropped: u64,
    /// Step-downs so far.
    pub step_downs: u64,
}

/// A certificate in use, and how long it has left.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// `own` (this node's QUIC identity), `https` (its web port) or `peer`.
    pub cert: String,
    /// Whose: this node's id, or the peer's site.
    pub subject: String,
    /// Serial (hex).
    pub serial: String,
    /// Seconds until it expires (negative: expired).
    pub expires_in_secs: i64,
}

/// A certificate this close to expiry makes the node `degraded`.
pub const CERTIFICATE_WARNING_SECS: i64 = 14 * 86_400;

impl CertificateStatus {
    /// From an expiry, at `now_unix`.
    pub fn new(cert: &str, subject: &str, e: &crate::tls::live::Expiry, now_unix: i64) -> Self {
        Self {
            cert: cert.to_owned(),
            subject: subject.to_owned(),
            serial: e.serial.clone(),
            expires_in_secs: e.not_after_unix.saturating_sub(now_unix),
        }
    }

    /// The problem line when it expires within 14 days, naming it and the fix.
    pub fn problem(&self) -> Option<String> {
        if self.expires_in_secs >= CERTIFICATE_WARNING_SECS {
            return None;
        }
        let whose = match self.cert.as_str() {
            "peer" => format!("the certificate of peer `{}`", self.subject),
            "https" => "this node's HTTPS certificate".to_owned(),
            _ => "this node's certificate".to_owned(),
        };
        Some(if self.expires_in_secs <= 0 {
            format!(
                "{whose} (serial {}) has expired: renew it (`ponte-agent pki renew`) and reload",
                self.serial
            )
        } else {
            format!(
                "{whose} (serial {}) expires in {} days {} h: renew it (`ponte-agent pki renew`) and reload",
                self.serial,
                self.expires_in_secs / 86_400,
                self.expires_in_secs % 86_400 / 3600
            )
        })
    }
}

/// The certificates of a node: its own, its HTTPS one, its peers'; with
/// the problem lines for those near expiry.
pub fn certificates(
    node: &str,
    live: Option<&crate::tls::LiveTls>,
    https: Option<&crate::tls::https::HttpsPair>,
) -> (Vec<CertificateStatus>, Vec<String>) {
    let now = crate::config_check::unix_now();
    let mut out = Vec::new();
    if let Some(live) = live {
        out.extend(live.own_expiry().map(|e| CertificateStatus::new("own", node, &e, now)));
        out.extend(live.peer_expiries().iter().map(|e| CertificateStatus::new("peer", &e.subject, e, now)));
    }
    out.extend(https.and_then(|h| h.expiry()).map(|e| CertificateStatus::new("https", node, &e, now)));
    let problems = out.iter().filter_map(CertificateStatus::problem).collect();
    (out, problems)
}

/// A recent error, newest first in the document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// Unix time, seconds.
    pub unix: u64,
    /// What happened.
    pub what: String,
}

/// The whole status of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Node id (site for a relay).
    pub node: String,
    /// `agent` or `relay`.
    pub role: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Verdict.
    pub health: Health,
    /// Why the verdict is not `ok`.
    pub problems: Vec<String>,
    /// QUIC links.
    pub links: Vec<LinkStatus>,
    /// Camera streams.
    pub cameras: Vec<CameraStatus>,
    /// Local viewers.
    pub viewers: Vec<ViewerStatus>,
    /// Shaping ladder.
    pub shaping: Vec<ShapingStatus>,
    /// Recent errors (bounded).
    pub recent_errors: Vec<ErrorEvent>,
    /// Audit lines that could not be written since start.
    #[serde(default)]
    pub audit_write_errors: u64,
    /// Requests refused by a configured limit since start, by limit (the
    /// config key that bounds it).
    #[serde(default)]
    pub limit_refusals: std::collections::BTreeMap<String, u64>,
    /// PTZ commands since start, by audit outcome (`allowed`, `denied`,
    /// `failed`, `preempted`, `stopped`, `released`); agents only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ptz_commands: std::collections::BTreeMap<String, u64>,
    /// Camera alarms since start (issue 23), `raised` and `suppressed` by
    /// the rate limit (`incidents.alarm_interval_secs`); agents only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub alarms: std::collections::BTreeMap<String, u64>,
    /// The audit files, their retention and the files due for deletion
    /// soon (a notice: it does not change `health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::RetentionStatus>,
    /// Certificates in use and their expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// H.265 → H.264 transcodes for browsers (`browser_h264 =
    /// "transcode"`); agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcodes: Option<TranscodeStatus>,
    /// The recording rules (`[[recording]]`) and their stores; agents only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<RecordingStatus>,
}

/// One `[[recording]]` rule and its store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordingStatus {
    /// Rule name.
    pub rule: String,
    /// Store directory.
    pub dir: String,
    /// Tracks (camera at a quality) being recorded now.
    pub recording: u32,
    /// Bytes on disk.
    pub bytes: u64,
    /// The rule's quota (`max_gb`), bytes.
    pub max_bytes: u64,
    /// `retention_hours`.
    pub retention_hours: f64,
    /// Oldest recorded time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<u64>,
    /// GOPs written since start.
    pub gops_written: u64,
    /// GOPs not recorded since start (disk full, writer behind).
    pub gops_lost: u64,
    /// Segments deleted since start, by why (`retention`, `quota`, `disk-full`).
    pub deleted: std::collections::BTreeMap<String, u64>,
    /// Set while the store cannot write (disk full and nothing left to
    /// delete): what is wrong; live delivery goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
}

/// The agent's transcodes: how many run, the cap, and what the cap refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscodeStatus {
    /// Transcodes running now (one per watched camera, whatever its viewers).
    pub active: u32,
    /// `agent.max_transcodes`.
    pub max: u32,
    /// Subscriptions refused since start because `max` were running.
    pub refused: u64,
    /// The cameras being transcoded.
    pub cameras: Vec<String>,
}

impl StatusDoc {
    /// The audit notice for the table and the page: files due for deletion
    /// (ship them off the host first) and a stuck retention.
    pub fn audit_notices(&self) -> Vec<String> {
        let Some(a) = &self.audit else { return Vec::new() };
        let mut out: Vec<String> = a
            .due_for_deletion
            .iter()
            .map(|f| {
                let when = match f.deleted_in_secs {
                    Some(s) => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
                    None => "at the next rotation".to_owned(),
                };
                format!(
                    "audit file {} ({} to {}) will be deleted {when} by retention: copy it off the host first",
                    f.file, f.first_time, f.last_time
                )
            })
            .collect();
        if let Some(b) = &a.blocked {
            out.push(format!("audit retention is stuck: {b}"));
        }
        out
    }
}

/// Most recent errors kept.
pub const MAX_RECENT_ERRORS: usize = 20;

#[cfg(test)]
mod tests;
