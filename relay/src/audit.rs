//! The relay's audit log: who logged in, who watched which camera and for how
//! long, and what was refused. Hash-chained JSON lines
//! ([`ponte_proto::audit::AuditLog`]), checked by `ponte-relay audit verify`.

use crate::watching::{upstream_name, Watching};
use ponte_proto::audit::{AnchoredHead, AuditLog, AuditRecord, ACTION_ANCHOR};
use ponte_proto::media::Quality;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::error;

/// Actions this relay writes.
pub mod action {
    /// A login attempt (web form, RTSP credentials, bearer token).
    pub const LOGIN: &str = "login";
    /// A browser logged out.
    pub const LOGOUT: &str = "logout";
    /// A viewer started watching a camera.
    pub const VIEW_START: &str = "view-start";
    /// A viewer stopped watching (or was stopped).
    pub const VIEW_STOP: &str = "view-stop";
    /// A viewer asked for a camera it may not have, or the upstream refused it.
    pub const REFUSED: &str = "refused";
    /// A PTZ command of a viewer: carried out, or refused here or upstream.
    pub const PTZ: &str = "ptz";
    /// A QUIC peer that tried to feed this relay without being one of its upstreams.
    pub const UPSTREAM: &str = "upstream";
    /// A viewer saved a still of a camera from the console.
    pub const SNAPSHOT: &str = "snapshot";
}

/// One viewing, as the audit log names it.
#[derive(Debug, Clone, Copy)]
pub struct Viewing<'a> {
    /// Account or token name; `None` on a relay without accounts.
    pub viewer: Option<&'a str>,
    /// Camera watched.
    pub camera: &'a str,
    /// Quality watched.
    pub quality: Quality,
    /// WHEP (or RTSP) session id.
    pub session: &'a str,
    /// The viewer is a `[[token]]`: the agent's audit names it
    /// `token:<name>@<site>` (`crate::watching::upstream_name`).
    pub token: bool,
}

/// The relay's audit log. Writing never fails the caller: a write error is
/// logged loudly (the log's chain head stays where it was). Every viewing
/// it records is also on the [`Watching`] board, which the upstream links
/// report to the agent.
pub struct RelayAudit {
    log: Option<AuditLog>,
    site: String,
    watching: Arc<Watching>,
    anchor_every: Duration,
}

/// `audit.anchor_every_secs` by default.
const ANCHOR_EVERY: Duration = Duration::from_secs(300);

impl RelayAudit {
    /// Audit lines that could not be written since start.
    pub fn write_errors(&self) -> u64 {
        self.log.as_ref().map_or(0, AuditLog::write_errors)
    }

    /// The log opened by `[audit]`.
    pub fn new(log: AuditLog, site: &str) -> Self {
        Self { log: Some(log), site: site.to_owned(), watching: Arc::default(), anchor_every: ANCHOR_EVERY }
    }

    /// Sends the head of this log to each peer every `every` (`audit.anchor_every_secs`).
    pub fn with_anchor_every(self, every: Duration) -> Self {
        Self { anchor_every: every, ..self }
    }

    /// How often the head of this log goes to each peer.
    pub fn anchor_every(&self) -> Duration {
        self.anchor_every
    }

    /// Who watches which camera here, by name.
    pub fn watching(&self) -> &Arc<Watching> {
        &self.watching
    }

    /// Sequence number and hash of the newest line, for `Control::AuditHead`.
    pub fn head(&self) -> Option<(u64, String)> {
        self.log.as_ref()?.chain_head()
    }

    /// The head of a peer's audit chain (`node` as its `Hello` named it,
    /// from the site `peer` its certificate names): an `anchor` line.
    pub fn anchor(&self, peer: &str, node: &str, seq: u64, hash: String) {
        self.write(AuditRecord {
            viewer: Some(format!("site:{peer}")),
            action: ACTION_ANCHOR.into(),
            outcome: "recorded".into(),
            anchor: Some(AnchoredHead { node: node.to_owned(), seq, hash }),
            ..Default::default()
        });
    }

    /// Deletes what retention no longer keeps (each deletion recorded) and
    /// tells what is kept and what is due for deletion.
    pub fn retention(&self) -> Option<ponte_proto::audit::RetentionStatus> {
        let log = self.log.as_ref()?;
        log.enforce_retention();
        Some(log.retention_status())
    }

    /// Opens (or continues) the log at `path`, keeping every file (tests).
    #[cfg(test)]
    pub fn open(path: &std::path::Path, site: &str, max_bytes: u64) -> std::io::Result<Self> {
        Ok(Self::new(AuditLog::open(path, site, max_bytes)?, site))
    }

    /// A log that writes nothing (unit tests).
    pub fn disabled(site: &str) -> Self {
        Self { log: None, site: site.to_owned(), watching: Arc::default(), anchor_every: ANCHOR_EVERY }
    }

    pub(crate) fn write(&self, mut record: AuditRecord) {
        let Some(log) = &self.log else { return };
        record.site = Some(self.site.clone());
        if let Err(e) = log.write(record) {
            error!(error = %e, path = %log.path().display(), "cannot write the audit log");
        }
    }

    /// A peer refused or cut off because its certificate is revoked.
    pub fn certificate(&self, event: &ponte_proto::tls::live::TlsEvent) {
        self.write(event.record(""));
    }

    /// A login attempt: `outcome` is `ok`, `failed` or `throttled`.
    pub fn login(&self, user: &str, client: IpAddr, outcome: &str, reason: String) {
        self.write(AuditRecord {
            viewer: Some(user.to_owned()),
            action: action::LOGIN.into(),
            outcome: outcome.into(),
            reason: Some(reason),
            client: Some(client.to_string()),
            ..Default::default()
        });
    }

    /// A browser session ended by its viewer.
    pub fn logout(&self, user: &str, client: IpAddr) {
        self.write(AuditRecord {
            viewer: Some(user.to_owned()),
            action: action::LOGOUT.into(),
            outcome: "ok".into(),
            client: Some(client.to_string()),
            ..Default::default()
        });
    }

    /// A viewer started watching.
    pub fn view_start(&self, v: Viewing<'_>, how: &str) {
        self.watching.start(&upstream_name(v.viewer, v.token), v.camera, v.quality);
        self.write(AuditRecord {
            action: action::VIEW_START.into(),
            outcome: "allowed".into(),
            reason: Some(how.to_owned()),
            ..viewing(v)
        });
    }

    /// A viewing ended after `lasted`, for `why`.
    pub fn view_stop(&self, v: Viewing<'_>, lasted: Duration, why: &str) {
        self.watching.stop(&upstream_name(v.viewer, v.token), v.camera, v.quality);
        self.write(AuditRecord {
            action: action::VIEW_STOP.into(),
            outcome: "ended".into(),
            reason: Some(why.to_owned()),
            duration_ms: Some(u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX)),
            ..viewing(v)
        });
    }

    /// A refused request: `outcome` is the refusal's category (`unknown`,
    /// `forbidden`, `offline`, `over-budget`), `reason` says who decided why.
    pub fn refused(&self, viewer: Option<&str>, camera: &str, quality: Quality, outcome: &str, reason: &str) {
        self.write(AuditRecord {
            viewer: viewer.map(str::to_owned),
            camera: Some(camera.to_owned()),
            quality: Some(quality.name().to_owned()),
            action: action::REFUSED.into(),
            outcome: outcome.to_owned(),
            reason: Some(reason.to_owned()),
            ..Default::default()
        });
    }

    /// A peer refused as an upstream: `peer` is the site its certificate
    /// names, `addr` where it came from.
    pub fn upstream_refused(&self, peer: &str, addr: std::net::SocketAddr, reason: &str) {
        self.write(AuditRecord {
            viewer: Some(format!("site:{peer}")),
            action: action::UPSTREAM.into(),
            outcome: "forbidden".into(),
            reason: Some(reason.to_owned()),
            client: Some(addr.to_string()),
            ..Default::default()
        });
    }

    /// A viewer's PTZ command: `outcome` is `done` or the refusal's code
    /// (`forbidden`, `unknown`, `locked`, `timeout`, ...); `detail` names
    /// the command and, for a refusal, who refused it and why.
    pub fn ptz(&self, viewer: Option<&str>, camera: &str, outcome: &str, detail: &str) {
        self.write(AuditRecord {
            viewer: viewer.map(str::to_owned),
            camera: Some(camera.to_owned()),
            action: action::PTZ.into(),
            outcome: outcome.to_owned(),
            reason: Some(detail.to_owned()),
            ..Default::default()
        });
    }
}

impl RelayAudit {
    /// A use of the master room's recordings (`playback`, `export`) by a
    /// viewer here: `outcome` `allowed`, `refused`, `saved`, `failed`.
    pub fn recall(
        &self,
        viewer: Option<&str>,
        camera: &str,
        quality: Quality,
        what: &str,
        outcome: &str,
        detail: &str,
    ) {
        self.write(AuditRecord {
            viewer: viewer.map(str::to_owned),
            camera: Some(camera.to_owned()),
            quality: Some(quality.name().to_owned()),
            action: what.into(),
            outcome: outcome.into(),
            reason: Some(detail.to_owned()),
            ..Default::default()
        });
    }

    /// A viewer saved a still of `camera`; `detail` names the picture's
    /// capture time and the file.
    pub fn snapshot(&self, viewer: Option<&str>, camera: &str, detail: &str) {
        self.write(AuditRecord {
            viewer: viewer.map(str::to_owned),
            camera: Some(camera.to_owned()),
            action: action::SNAPSHOT.into(),
            outcome: "saved".into(),
            reason: Some(detail.to_owned()),
            ..Default::default()
        });
    }
}

fn viewing(v: Viewing<'_>) -> AuditRecord {
    AuditRecord {
        viewer: v.viewer.map(str::to_owned),
        camera: Some(v.camera.to_owned()),
        quality: Some(v.quality.name().to_owned()),
        session: Some(v.session.to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_site_viewer_session_and_duration_and_verify() {
        let dir = std::env::temp_dir().join(format!("ponte-relay-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("relay-audit.log");
        let audit = RelayAudit::open(&path, "carabinieri", 1 << 20).unwrap();
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        audit.login("anna", client, "failed", "wrong password".into());
        let v = Viewing {
            viewer: Some("anna"),
            camera: "duomo",
            quality: Quality::Sub,
            session: "abc",
            token: false,
        };
        audit.view_start(v, "WHEP");
        audit.view_stop(v, Duration::from_millis(1500), "deleted by the viewer");
        audit.refused(Some("anna"), "caserma", Quality::Main, "unknown", "outside the viewer's cameras");
        audit.ptz(Some("anna"), "zaist-mantova", "forbidden", "move: account `anna` has no PTZ right");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["action"], "login");
        assert_eq!(lines[0]["client"], "10.1.2.3");
        assert!(lines.iter().all(|l| l.get("password").is_none()), "no password field: {text}");
        assert_eq!(lines[1]["session"], "abc");
        assert_eq!(lines[2]["duration_ms"], 1500);
        assert_eq!(lines[2]["site"], "carabinieri");
        assert_eq!(lines[2]["node"], "carabinieri");
        assert_eq!(lines[3]["outcome"], "unknown");
        assert!(lines[3].get("session").is_none(), "absent fields are omitted");
        assert_eq!(
            (&lines[4]["action"], &lines[4]["outcome"], &lines[4]["camera"]),
            (&serde_json::json!("ptz"), &serde_json::json!("forbidden"), &serde_json::json!("zaist-mantova"))
        );
        assert_eq!(ponte_proto::audit::verify(&[path]), Ok(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
