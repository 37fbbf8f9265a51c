//! Working together on an incident (issue 23): what the master room and a
//! partner site tell each other about shares, requests and camera alarms.
//!
//! - A **share** is a temporary grant the master room gives a site for a
//!   few cameras, with a note: the agent grants it (even for cameras outside
//!   the site's policy), the site's consoles are told ([`Notice::Share`]),
//!   an operator there accepts ([`SiteAction::Accept`]) and the master sees
//!   who did. When it ends ([`Notice::ShareEnded`]) the streams it allowed
//!   end, exactly as after a policy reload.
//! - An **ask** is a site's request for a camera it is not granted, with a
//!   reason ([`SiteAction::Ask`]); the master approves it for a while (a
//!   grant like a share) or refuses with a reason ([`Notice::Answer`]).
//! - An **alarm** is a camera event (ONVIF motion, tampering, video loss)
//!   or one the agent raises itself (offline, stalled, recovered), sent only
//!   to the sites that may see the camera, with a JPEG thumbnail from the
//!   GOP cache; an acknowledgement by anyone is shown to all who got it.
//!
//! The messages ride the control stream ([`crate::wire::Control::Incident`]
//! and [`crate::wire::Control::IncidentAction`]); fields a peer sends are
//! bounded by the wire codec (`Control::decode` refuses what is too long
//! or carries control characters).

use serde::{Deserialize, Serialize};

/// Longest note, reason or alarm detail, bytes.
pub const MAX_TEXT_LEN: usize = 500;
/// Most cameras in one share.
pub const MAX_SHARE_CAMERAS: usize = 64;
/// Largest thumbnail on the wire (base64 of the JPEG), bytes.
pub const MAX_THUMBNAIL_LEN: usize = 256 * 1024;
/// Longest camera id on the wire, bytes.
pub const MAX_CAMERA_LEN: usize = 128;

/// What kind of alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// Motion reported by the camera (ONVIF `CellMotionDetector`).
    Motion,
    /// The camera was tampered with (ONVIF `GlobalSceneChange`).
    Tampering,
    /// The camera lost its video input (ONVIF `SignalLoss`).
    VideoLoss,
    /// The agent lost the camera's stream.
    Offline,
    /// The stream is connected but no frame came for a while.
    Stalled,
    /// The stream is back after `offline` or `stalled`.
    Recovered,
}

impl AlarmKind {
    /// Lower-case name, as in the audit and the consoles.
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::Motion => "motion",
            AlarmKind::Tampering => "tampering",
            AlarmKind::VideoLoss => "video_loss",
            AlarmKind::Offline => "offline",
            AlarmKind::Stalled => "stalled",
            AlarmKind::Recovered => "recovered",
        }
    }
}

/// Agent → relay: what the master room did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Notice {
    /// The master room shares cameras with the site until `until_ms`
    /// (sent again, with `accepted_by`, once an operator of the site accepted).
    Share {
        /// Share id (the agent's).
        id: u64,
        /// Camera ids.
        cameras: Vec<String>,
        /// End of the share, Unix ms.
        until_ms: u64,
        /// The master operator who shared.
        by: String,
        /// What to look at, from the master operator.
        note: String,
        /// Who accepted at the site, once someone did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepted_by: Option<String>,
    },
    /// A share ended (expired or withdrawn): its streams end now.
    ShareEnded {
        /// Share id.
        id: u64,
        /// Why, for the operators.
        reason: String,
    },
    /// The master's answer to an ask of the site.
    Answer {
        /// The ask's id (the relay's).
        ask: u64,
        /// Approved (a grant until `until_ms`) or refused.
        approved: bool,
        /// The master operator who answered (`master` for an ask that expired).
        by: String,
        /// The reason given (required for a refusal).
        reason: String,
        /// End of the grant, Unix ms, when approved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
    },
    /// A camera alarm.
    Alarm {
        /// Alarm id (the agent's).
        id: u64,
        /// Camera id.
        camera: String,
        /// What happened.
        kind: AlarmKind,
        /// When, Unix ms.
        at_ms: u64,
        /// More words (the camera's topic, the agent's reason).
        detail: String,
        /// JPEG of the camera at the alarm time, base64, when one was cached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbnail: Option<String>,
        /// Alarms of this camera and kind suppressed since the last one sent
        /// (rate limit).
        #[serde(default)]
        suppressed: u64,
    },
    /// Someone acknowledged an alarm.
    AlarmAck {
        /// Alarm id.
        id: u64,
        /// The acknowledging site (`master` for the master room).
        site: String,
        /// The operator who did.
        operator: String,
        /// When, Unix ms.
        at_ms: u64,
    },
}

/// Relay → agent: what an operator of the site did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SiteAction {
    /// An operator accepted a share.
    Accept {
        /// Share id.
        share: u64,
        /// The operator (account) at the site.
        operator: String,
    },
    /// An operator asks for a camera the site is not granted.
    Ask {
        /// Ask id, chosen by the relay, unique per relay.
        id: u64,
        /// The camera asked for (as the operator named it).
        camera: String,
        /// The operator at the site.
        operator: String,
        /// Why (required).
        reason: String,
    },
    /// An operator acknowledged an alarm.
    Ack {
        /// Alarm id.
        alarm: u64,
        /// The operator at the site.
        operator: String,
    },
}

/// Most temporary grants in one [`crate::wire::Control::Grants`].
pub const MAX_GRANTS: usize = 1024;

/// A temporary grant (a share, or an approved ask) as the agents of one
/// master room tell each other over their `[redundancy]` link, so that the
/// agent taking a site over keeps the grants the other one gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGrant {
    /// The giving agent's id of the share.
    pub id: u64,
    /// The site.
    pub site: String,
    /// Camera ids.
    pub cameras: Vec<String>,
    /// Given at, Unix ms.
    pub from_ms: u64,
    /// Ends at, Unix ms.
    pub until_ms: u64,
    /// The master operator who gave it.
    pub by: String,
    /// The note, or the ask's reason.
    pub note: String,
    /// `share` or `approval`.
    pub origin: String,
    /// Who accepted it at the site.
    #[serde(default)]
    pub accepted_by: Option<String>,
    /// When, Unix ms.
    #[serde(default)]
    pub accepted_ms: Option<u64>,
    /// Why it ended, once it did.
    #[serde(default)]
    pub ended: Option<String>,
}

impl SiteAction {
    /// The operator named.
    pub fn operator(&self) -> &str {
        match self {
            SiteAction::Accept { operator, .. }
            | SiteAction::Ask { operator, .. }
            | SiteAction::Ack { operator, .. } => operator,
        }
    }
}

/// Cuts `text` to [`MAX_TEXT_LEN`] bytes on a character boundary, control
/// characters (but newlines) dropped: what the wire carries.
pub fn wire_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control() || *c == '\n') {
        if out.len() + c.len_utf8() > MAX_TEXT_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{check_action, check_notice};

    #[test]
    fn actions_and_notices_round_trip_and_bad_fields_are_refused() {
        let ask = SiteAction::Ask {
            id: 7,
            camera: "stadio-1".into(),
            operator: "rossi".into(),
            reason: "rissa all'ingresso".into(),
        };
        let json = serde_json::to_string(&ask).unwrap();
        assert!(json.contains("\"op\":\"ask\""), "{json}");
        assert_eq!(serde_json::from_str::<SiteAction>(&json).unwrap(), ask);
        assert!(check_action(&ask).is_ok());
        let empty = SiteAction::Ask { id: 7, camera: "x".into(), operator: "r".into(), reason: " ".into() };
        assert!(check_action(&empty).is_err());
        let long =
            SiteAction::Ask { id: 7, camera: "x".into(), operator: "r".into(), reason: "a".repeat(501) };
        assert!(check_action(&long).is_err());
        let ctl = SiteAction::Ack { alarm: 1, operator: "r\u{1b}[2J".into() };
        assert!(check_action(&ctl).is_err());
        let many = Notice::Share {
            id: 1,
            cameras: vec!["c".into(); 65],
            until_ms: 0,
            by: "sala".into(),
            note: String::new(),
            accepted_by: None,
        };
        assert!(check_notice(&many).is_err());
        assert_eq!(wire_text(&"è".repeat(400)).len(), 500);
        let grant = PeerGrant {
            id: 1,
            site: "questura".into(),
            cameras: vec!["stadio".into()],
            from_ms: 1,
            until_ms: 2,
            by: "sala".into(),
            note: String::new(),
            origin: "share".into(),
            accepted_by: None,
            accepted_ms: None,
            ended: None,
        };
        assert!(crate::wire::check_grants(std::slice::from_ref(&grant)).is_ok());
        let odd = PeerGrant { origin: "policy".into(), ..grant.clone() };
        assert!(crate::wire::check_grants(&[odd]).is_err());
        let controlled = PeerGrant { site: "q\u{7}".into(), ..grant };
        assert!(crate::wire::check_grants(&[controlled]).is_err());
    }
}
