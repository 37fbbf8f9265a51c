//! The site's incident board: shares, asks and alarms as the agent last
//! told them, for the console. Bounded: the newest [`KEEP_ALARMS`] alarms,
//! ended shares and answered asks for [`KEEP_ENDED_MS`].

use crate::audit::RelayAudit;
use crate::upstream::Upstreams;
use bytes::Bytes;
use ponte_proto::audit::AuditRecord;
use ponte_proto::incident::{AlarmKind, Notice, SiteAction};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tracing::{info, warn};

/// Alarms kept (newest).
pub const KEEP_ALARMS: usize = 200;
/// Ended shares and answered asks stay listed this long, ms.
pub const KEEP_ENDED_MS: u64 = 3_600_000;
/// Asks not answered at once by the agent wait at most this many at a time.
const MAX_OPEN_ASKS: usize = 32;

/// A share as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ShareView {
    /// The agent's id.
    pub id: u64,
    /// Camera ids.
    pub cameras: Vec<String>,
    /// End, Unix ms.
    pub until_ms: u64,
    /// The master operator who shared.
    pub by: String,
    /// The note.
    pub note: String,
    /// Who accepted here.
    pub accepted_by: Option<String>,
    /// `offered`, `accepted` or `ended`.
    pub state: &'static str,
    /// Why it ended.
    pub ended_reason: Option<String>,
    #[serde(skip)]
    peer: String,
    #[serde(skip)]
    ended_ms: Option<u64>,
}

/// An ask of this site.
#[derive(Debug, Clone, Serialize)]
pub struct AskView {
    /// This relay's id.
    pub id: u64,
    /// The camera asked for.
    pub camera: String,
    /// Why.
    pub reason: String,
    /// Who asked here.
    pub operator: String,
    /// When, Unix ms.
    pub asked_ms: u64,
    /// `pending`, `approved` or `refused`.
    pub state: &'static str,
    /// Who answered at the master.
    pub answer_by: Option<String>,
    /// The master's reason (a refusal).
    pub answer_reason: Option<String>,
    /// End of the grant (approved).
    pub until_ms: Option<u64>,
    #[serde(skip)]
    answered_ms: Option<u64>,
}

/// An acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct AckView {
    /// `master` or a site.
    pub site: String,
    /// Who.
    pub operator: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// An alarm.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    /// The agent's id.
    pub id: u64,
    /// Camera id.
    pub camera: String,
    /// Kind.
    pub kind: AlarmKind,
    /// When, Unix ms.
    pub at_ms: u64,
    /// More words.
    pub detail: String,
    /// Whether a thumbnail came with it.
    pub thumbnail: bool,
    /// Suppressed before it at the agent.
    pub suppressed: u64,
    /// Acknowledgements.
    pub acks: Vec<AckView>,
    #[serde(skip)]
    jpeg: Option<Bytes>,
    #[serde(skip)]
    peer: String,
}

#[derive(Default)]
struct Board {
    shares: BTreeMap<u64, ShareView>,
    asks: BTreeMap<u64, AskView>,
    alarms: BTreeMap<u64, AlarmView>,
    next_ask: u64,
}

/// The board, shared by the upstream sessions and the console routes.
pub struct IncidentBoard {
    site: String,
    board: Mutex<Board>,
    audit: Arc<RelayAudit>,
    upstreams: Weak<Upstreams>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl IncidentBoard {
    /// An empty board of `site`, sending actions up through `upstreams`.
    pub fn new(site: &str, audit: Arc<RelayAudit>, upstreams: &Arc<Upstreams>) -> Arc<Self> {
        Arc::new(Self {
            site: site.to_owned(),
            board: Mutex::new(Board { next_ask: now_ms(), ..Default::default() }),
            audit,
            upstreams: Arc::downgrade(upstreams),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn audit(
        &self,
        viewer: Option<&str>,
        camera: Option<String>,
        action: &str,
        outcome: &str,
        reason: String,
    ) {
        self.audit.write(AuditRecord {
            viewer: viewer.map(str::to_owned),
            camera,
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            reason: Some(reason),
            ..Default::default()
        });
    }

    /// A notice from the agent `peer`.
    pub fn notice(&self, peer: &str, notice: Notice) {
        let now = now_ms();
        let mut b = self.lock();
        match notice {
            Notice::Share { id, cameras, until_ms, by, note, accepted_by } => {
                if b.shares.get(&id).is_some_and(|s| s.ended_ms.is_some()) {
                    return;
                }
                let new = !b.shares.contains_key(&id);
                if new {
                    info!(peer, share = id, by = %by, cameras = %cameras.join(","), "incident: the master room shares cameras");
                    self.audit(
                        Some(&format!("{by}@{peer}")),
                        Some(cameras.join(",")),
                        "share",
                        "received",
                        format!(
                            "share #{id} until {}: {note}",
                            ponte_proto::audit::rfc3339(
                                std::time::UNIX_EPOCH + std::time::Duration::from_millis(until_ms)
                            )
                        ),
                    );
                }
                let state = if accepted_by.is_some() { "accepted" } else { "offered" };
                b.shares.insert(
                    id,
                    ShareView {
                        id,
                        cameras,
                        until_ms,
                        by,
                        note,
                        accepted_by,
                        state,
                        ended_reason: None,
                        peer: peer.to_owned(),
                        ended_ms: None,
                    },
                );
            }
            Notice::ShareEnded { id, reason } => {
                if let Some(s) = b.shares.get_mut(&id).filter(|s| s.ended_ms.is_none()) {
                    s.state = "ended";
                    s.ended_reason = Some(reason.clone());
                    s.ended_ms = Some(now);
                    let cameras = s.cameras.join(",");
                    info!(peer, share = id, %reason, "incident: a share ended");
                    self.audit(None, Some(cameras), "share", "ended", format!("share #{id}: {reason}"));
                }
            }
            Notice::Answer { ask, approved, by, reason, until_ms } => {
                if let Some(a) = b.asks.get_mut(&ask).filter(|a| a.state == "pending") {
                    a.state = if approved { "approved" } else { "refused" };
                    a.answer_by = Some(by.clone());
                    a.answer_reason = (!reason.is_empty()).then(|| reason.clone());
                    a.until_ms = until_ms;
                    a.answered_ms = Some(now);
                    let (camera, operator) = (a.camera.clone(), a.operator.clone());
                    info!(peer, ask, approved, by = %by, "incident: the master room answered an ask");
                    self.audit(
                        Some(&operator),
                        Some(camera),
                        "ask",
                        if approved { "approved" } else { "refused" },
                        format!("ask #{ask} answered by `{by}`: {reason}"),
                    );
                }
            }
            Notice::Alarm { id, camera, kind, at_ms, detail, thumbnail, suppressed } => {
                if b.alarms.contains_key(&id) {
                    return;
                }
                let jpeg = thumbnail.and_then(|t| {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t)
                        .ok()
                        .map(Bytes::from)
                });
                info!(peer, alarm = id, camera = %camera, kind = kind.name(), "incident: camera alarm");
                self.audit(
                    None,
                    Some(camera.clone()),
                    "alarm",
                    kind.name(),
                    format!("alarm #{id}: {detail}"),
                );
                b.alarms.insert(
                    id,
                    AlarmView {
                        id,
                        camera,
                        kind,
                        at_ms,
                        detail,
                        thumbnail: jpeg.is_some(),
                        suppressed,
                        acks: Vec::new(),
                        jpeg,
                        peer: peer.to_owned(),
                    },
                );
                while b.alarms.len() > KEEP_ALARMS {
                    b.alarms.pop_first();
                }
            }
            Notice::AlarmAck { id, site, operator, at_ms } => {
                if let Some(a) = b.alarms.get_mut(&id) {
                    if !a.acks.iter().any(|k| k.site == site && k.operator == operator) {
                        a.acks.push(AckView { site, operator, at_ms });
                    }
                }
            }
        }
        let old = now.saturating_sub(KEEP_ENDED_MS);
        b.shares.retain(|_, s| s.ended_ms.is_none_or(|t| t > old));
        b.asks.retain(|_, a| a.answered_ms.is_none_or(|t| t > old));
    }

    /// The board for a viewer who sees `cameras` (alarms of other cameras
    /// are left out: a narrowed account sees only its own).
    pub fn view(&self, cameras: &std::collections::HashSet<String>) -> serde_json::Value {
        let now = now_ms();
        let b = self.lock();
        let shares: Vec<ShareView> = b
            .shares
            .values()
            .rev()
            .map(|s| {
                let mut s = s.clone();
                if s.ended_ms.is_none() && s.until_ms <= now {
                    s.state = "ended";
                    s.ended_reason = Some("expired".into());
                }
                s
            })
            .collect();
        let asks: Vec<&AskView> = b.asks.values().rev().collect();
        let alarms: Vec<&AlarmView> =
            b.alarms.values().rev().filter(|a| cameras.contains(&a.camera)).collect();
        serde_json::json!({ "now_ms": now, "site": self.site, "shares": shares, "asks": asks, "alarms": alarms })
    }

    /// The thumbnail of alarm `id`, if the viewer sees its camera.
    pub fn thumbnail(&self, id: u64, cameras: &std::collections::HashSet<String>) -> Option<Bytes> {
        self.lock().alarms.get(&id).filter(|a| cameras.contains(&a.camera)).and_then(|a| a.jpeg.clone())
    }

    fn send(&self, peer: Option<&str>, action: SiteAction) -> Result<(), String> {
        let Some(up) = self.upstreams.upgrade() else { return Err("the relay is shutting down".into()) };
        up.incident_action(peer, action)
    }

    /// `viewer` accepts share `id`.
    pub fn accept(&self, id: u64, viewer: &str) -> Result<Vec<String>, String> {
        let (peer, cameras) = {
            let b = self.lock();
            let Some(s) = b.shares.get(&id) else { return Err(format!("no share #{id}")) };
            if s.ended_ms.is_some() || s.until_ms <= now_ms() {
                return Err(format!("share #{id} has ended"));
            }
            (s.peer.clone(), s.cameras.clone())
        };
        self.send(Some(&peer), SiteAction::Accept { share: id, operator: viewer.to_owned() })?;
        self.audit(Some(viewer), Some(cameras.join(",")), "accept", "accepted", format!("share #{id}"));
        Ok(cameras)
    }

    /// `viewer` asks for `camera`: the relay's ask id.
    pub fn ask(&self, camera: &str, reason: &str, viewer: &str) -> Result<u64, String> {
        let max = ponte_proto::incident::MAX_TEXT_LEN;
        if reason.trim().len() > max {
            return Err(format!(
                "the reason is {} bytes long; write it in at most {max}",
                reason.trim().len()
            ));
        }
        let reason = ponte_proto::incident::wire_text(reason.trim());
        if reason.is_empty() {
            return Err("say why you need the camera: the master room decides on your reason".into());
        }
        let camera: String = camera.trim().chars().filter(|c| !c.is_control()).collect();
        if camera.is_empty() || camera.len() > ponte_proto::incident::MAX_CAMERA_LEN {
            return Err("name the camera (its id or name, as the master room knows it)".into());
        }
        let id = {
            let mut b = self.lock();
            if b.asks.values().filter(|a| a.state == "pending").count() >= MAX_OPEN_ASKS {
                return Err(format!(
                    "{MAX_OPEN_ASKS} asks already wait for the master room; wait for an answer"
                ));
            }
            b.next_ask += 1;
            b.next_ask
        };
        let action = SiteAction::Ask {
            id,
            camera: camera.clone(),
            operator: viewer.to_owned(),
            reason: reason.clone(),
        };
        self.send(None, action)?;
        self.lock().asks.insert(
            id,
            AskView {
                id,
                camera: camera.clone(),
                reason: reason.clone(),
                operator: viewer.to_owned(),
                asked_ms: now_ms(),
                state: "pending",
                answer_by: None,
                answer_reason: None,
                until_ms: None,
                answered_ms: None,
            },
        );
        self.audit(Some(viewer), Some(camera), "ask", "sent", format!("ask #{id}: {reason}"));
        Ok(id)
    }

    /// `viewer` acknowledges alarm `id` (if they see its camera).
    pub fn ack(
        &self,
        id: u64,
        viewer: &str,
        cameras: &std::collections::HashSet<String>,
    ) -> Result<(), String> {
        let (peer, camera) = {
            let b = self.lock();
            match b.alarms.get(&id).filter(|a| cameras.contains(&a.camera)) {
                Some(a) => (a.peer.clone(), a.camera.clone()),
                None => return Err(format!("no alarm #{id}")),
            }
        };
        self.send(Some(&peer), SiteAction::Ack { alarm: id, operator: viewer.to_owned() })?;
        self.audit(Some(viewer), Some(camera), "acknowledge", "sent", format!("alarm #{id}"));
        Ok(())
    }

    /// Logs a refused action for the on-call person.
    pub fn refused(&self, what: &str, why: &str) {
        warn!(site = %self.site, what, "incident action refused: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    /// A board of `questura` whose relay has no link up (actions are refused).
    fn board() -> (Arc<IncidentBoard>, Arc<Upstreams>) {
        let audit = Arc::new(RelayAudit::disabled("questura"));
        let up = Upstreams::new(
            "questura",
            vec!["master".into()],
            audit.clone(),
            Duration::from_millis(300),
            Duration::from_secs(60),
        );
        (IncidentBoard::new("questura", audit, &up), up)
    }

    fn sees(cameras: &[&str]) -> HashSet<String> {
        cameras.iter().map(|c| (*c).to_owned()).collect()
    }

    fn share(id: u64, until_ms: u64, accepted_by: Option<&str>) -> Notice {
        Notice::Share {
            id,
            cameras: vec!["piazza".into(), "dome".into()],
            until_ms,
            by: "sala-rossi".into(),
            note: "rissa".into(),
            accepted_by: accepted_by.map(str::to_owned),
        }
    }

    fn alarm(id: u64, camera: &str, jpeg: Option<&[u8]>) -> Notice {
        Notice::Alarm {
            id,
            camera: camera.into(),
            kind: AlarmKind::Motion,
            at_ms: 1_000,
            detail: "movimento".into(),
            thumbnail: jpeg.map(|j| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, j)),
            suppressed: 3,
        }
    }

    #[test]
    fn notices_build_the_view() {
        let (b, _up) = board();
        let later = now_ms() + 3_600_000;
        b.notice("master", share(7, later, None));
        let v = b.view(&sees(&["piazza"]));
        assert_eq!(v["site"], "questura");
        let s = &v["shares"][0];
        assert_eq!((s["id"].as_u64(), s["state"].as_str()), (Some(7), Some("offered")));
        assert_eq!(s["cameras"], serde_json::json!(["piazza", "dome"]));
        assert_eq!((s["by"].as_str(), s["note"].as_str()), (Some("sala-rossi"), Some("rissa")));
        assert!(s.get("peer").is_none(), "internal fields stay internal: {s}");

        b.notice("master", share(7, later, Some("verdi@questura")));
        let v = b.view(&sees(&["piazza"]));
        assert_eq!(v["shares"].as_array().unwrap().len(), 1, "the same share, updated");
        assert_eq!(v["shares"][0]["state"], "accepted");
        assert_eq!(v["shares"][0]["accepted_by"], "verdi@questura");

        b.notice("master", alarm(1, "piazza", Some(b"\xff\xd8jpeg")));
        b.notice(
            "master",
            Notice::AlarmAck { id: 1, site: "master".into(), operator: "sala".into(), at_ms: 2 },
        );
        b.notice(
            "master",
            Notice::AlarmAck { id: 1, site: "master".into(), operator: "sala".into(), at_ms: 3 },
        );
        let v = b.view(&sees(&["piazza"]));
        let a = &v["alarms"][0];
        assert_eq!(
            (a["id"].as_u64(), a["camera"].as_str(), a["kind"].as_str()),
            (Some(1), Some("piazza"), Some("motion"))
        );
        assert_eq!((a["thumbnail"].as_bool(), a["suppressed"].as_u64()), (Some(true), Some(3)));
        assert_eq!(a["acks"].as_array().unwrap().len(), 1, "one ack per operator: {a}");
        assert!(a.get("jpeg").is_none(), "the JPEG is served apart: {a}");
        assert_eq!(b.thumbnail(1, &sees(&["piazza"])).as_deref(), Some(&b"\xff\xd8jpeg"[..]));

        // A share past its end reads as ended before the agent says so.
        b.notice("master", share(8, now_ms() - 1, None));
        let v = b.view(&sees(&[]));
        let s = v["shares"].as_array().unwrap().iter().find(|s| s["id"] == 8).unwrap().clone();
        assert_eq!((s["state"].as_str(), s["ended_reason"].as_str()), (Some("ended"), Some("expired")));
        assert!(b.accept(8, "verdi").unwrap_err().contains("ended"));
    }

    #[test]
    fn a_viewer_gets_no_alarm_and_no_thumbnail_of_a_camera_they_do_not_see() {
        let (b, _up) = board();
        b.notice("master", alarm(1, "piazza", Some(b"p")));
        b.notice("master", alarm(2, "dome", Some(b"d")));
        b.notice("master", alarm(3, "dome", None));
        let v = b.view(&sees(&["piazza"]));
        let cameras: Vec<&str> =
            v["alarms"].as_array().unwrap().iter().map(|a| a["camera"].as_str().unwrap()).collect();
        assert_eq!(cameras, ["piazza"]);
        assert_eq!(b.thumbnail(2, &sees(&["piazza"])), None);
        assert_eq!(b.thumbnail(2, &sees(&["dome"])).as_deref(), Some(&b"d"[..]));
        assert_eq!(b.thumbnail(3, &sees(&["dome"])), None, "no thumbnail came");
        assert!(b.ack(2, "verdi", &sees(&["piazza"])).unwrap_err().contains("no alarm"));
        assert_eq!(b.view(&sees(&["piazza", "dome"]))["alarms"].as_array().unwrap().len(), 3);
        assert!(b.view(&sees(&[]))["alarms"].as_array().unwrap().is_empty());
    }

    #[test]
    fn a_share_ended_keeps_its_reason_and_is_not_revived() {
        let (b, _up) = board();
        let later = now_ms() + 3_600_000;
        b.notice("master", share(7, later, None));
        b.notice("master", Notice::ShareEnded { id: 7, reason: "withdrawn by `sala`".into() });
        let s = b.view(&sees(&[]))["shares"][0].clone();
        assert_eq!(
            (s["state"].as_str(), s["ended_reason"].as_str()),
            (Some("ended"), Some("withdrawn by `sala`"))
        );
        // A late copy of the share (a resent snapshot) does not bring it back.
        b.notice("master", share(7, later, Some("verdi@questura")));
        assert_eq!(b.view(&sees(&[]))["shares"][0]["state"], "ended");
        b.notice("master", Notice::ShareEnded { id: 7, reason: "expired".into() });
        assert_eq!(
            b.view(&sees(&[]))["shares"][0]["ended_reason"],
            "withdrawn by `sala`",
            "the first reason stays"
        );
        assert!(b.accept(7, "verdi").is_err());
        // The end of a share the board never had is ignored.
        b.notice("master", Notice::ShareEnded { id: 99, reason: "x".into() });
        assert_eq!(b.view(&sees(&[]))["shares"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_answer_to_an_unknown_ask_is_ignored_and_an_ask_not_sent_is_not_kept() {
        let (b, _up) = board();
        let answer = Notice::Answer {
            ask: 42,
            approved: true,
            by: "sala".into(),
            reason: String::new(),
            until_ms: Some(now_ms() + 60_000),
        };
        b.notice("master", answer);
        assert!(b.view(&sees(&[]))["asks"].as_array().unwrap().is_empty());
        // No link to the master room: refused, nothing left pending.
        assert!(b.ask("osp", "   ", "verdi").is_err(), "a reason is required");
        let down = b.ask("osp", "rissa", "verdi").unwrap_err();
        assert!(down.contains("down"), "{down}");
        assert!(b.view(&sees(&[]))["asks"].as_array().unwrap().is_empty());
    }
}
