//! The book alone: every call gets the time, so expiry, the ask's time to
//! live and the alarm rate limit are exact.

use super::*;

/// 2027-01-15T08:00:00Z.
const T0: u64 = 1_800_000_000_000;
const MINUTE: u64 = 60_000;

fn settings() -> Settings {
    Settings { alarm_interval_ms: 10_000, ask_ttl_ms: 5 * MINUTE }
}

fn book() -> Book {
    Book::new(settings(), T0)
}

fn cams(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|c| (*c).to_owned()).collect()
}

/// (site, notice) of each notification, in order.
fn notices(out: &[Out]) -> Vec<(&str, &Notice)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Notify { site, notice } => Some((site.as_str(), notice)),
            _ => None,
        })
        .collect()
}

fn audits(out: &[Out]) -> Vec<&AuditRecord> {
    out.iter().filter_map(|o| if let Out::Audit(r) = o { Some(&**r) } else { None }).collect()
}

fn key(site: &str, camera: &str) -> (String, String) {
    (site.to_owned(), camera.to_owned())
}

/// A share of `minutes` with the usual arguments, its id.
fn share(b: &mut Book, site: &str, cameras: &[&str], minutes: u64, now: u64) -> u64 {
    b.share(site, cams(cameras), minutes * MINUTE, "sala-rossi", "rissa in piazza", now).unwrap().0
}

#[test]
fn a_share_tells_the_site_audits_the_operator_and_grants_until_it_expires() {
    let mut b = book();
    let (id, out) =
        b.share("questura", cams(&["piazza", "dome"]), 30 * MINUTE, "sala-rossi", "guardate", T0).unwrap();
    let until = T0 + 30 * MINUTE;
    assert_eq!(
        notices(&out),
        [(
            "questura",
            &Notice::Share {
                id,
                cameras: cams(&["piazza", "dome"]),
                until_ms: until,
                by: "sala-rossi".into(),
                note: "guardate".into(),
                accepted_by: None,
            }
        )]
    );
    let a = audits(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].site.as_deref(), a[0].viewer.as_deref(), a[0].action.as_str(), a[0].outcome.as_str()),
        (Some("questura"), Some("sala-rossi"), "share", "offered")
    );
    assert_eq!(a[0].camera.as_deref(), Some("piazza,dome"));
    assert!(out.contains(&Out::GrantsChanged) && out.contains(&Out::Persist), "{out:?}");

    let g = b.grants();
    assert_eq!(g.live.len(), 2);
    let grant = &g.live[&key("questura", "piazza")];
    assert_eq!((grant.id, grant.until_ms, grant.by.as_str()), (id, until, "sala-rossi"));
    assert_eq!(grant.origin, GrantOrigin::Share);
    assert!(!g.live.contains_key(&key("carabinieri", "piazza")), "only the site shared with");
    assert!(g.ended.is_empty());
    assert_eq!(b.next_deadline(), Some(until));

    // One ms before the end nothing happens.
    assert!(b.poll(until - 1).is_empty());
    assert_eq!(b.grants().live.len(), 2);

    let out = b.poll(until);
    let n = notices(&out);
    assert_eq!(n.len(), 1);
    let ("questura", Notice::ShareEnded { id: ended, reason }) = n[0] else { panic!("{out:?}") };
    assert_eq!(*ended, id);
    assert!(reason.contains("expired"), "{reason}");
    let a = audits(&out);
    assert_eq!((a[0].action.as_str(), a[0].outcome.as_str()), ("share", "expired"));
    assert!(out.contains(&Out::GrantsChanged) && out.contains(&Out::Persist), "{out:?}");

    let g = b.grants();
    assert!(g.live.is_empty());
    let why = &g.ended[&key("questura", "dome")];
    assert!(why.contains(&format!("share #{id}")) && why.contains("expired"), "{why}");
    assert!(why.contains("sala-rossi"), "names who shared: {why}");
    assert_eq!(b.next_deadline(), None);
    assert!(b.poll(until + 1).is_empty(), "ends once");
    assert!(b.shares().next().unwrap().ended.is_some());
}

#[test]
fn a_withdrawn_share_ends_at_once_and_only_once() {
    let mut b = book();
    let id = share(&mut b, "questura", &["piazza"], 60, T0);
    let out = b.withdraw(id, "sala-bianchi", T0 + MINUTE).unwrap();
    let a = audits(&out);
    assert_eq!(
        (a[0].viewer.as_deref(), a[0].action.as_str(), a[0].outcome.as_str()),
        (Some("sala-bianchi"), "withdraw", "ended")
    );
    let n = notices(&out);
    let [("questura", Notice::ShareEnded { reason, .. })] = n[..] else { panic!("{out:?}") };
    assert!(reason.contains("withdrawn") && reason.contains("sala-bianchi"), "{reason}");
    assert!(out.contains(&Out::GrantsChanged));
    let g = b.grants();
    assert!(g.live.is_empty());
    assert!(g.ended[&key("questura", "piazza")].contains("withdrawn"));
    assert!(b.withdraw(id, "sala-bianchi", T0 + 2 * MINUTE).is_err(), "already ended");
    assert!(b.withdraw(999, "sala-bianchi", T0).is_err(), "no such share");
    // It expires no more.
    assert!(b.poll(T0 + 61 * MINUTE).is_empty());
}

#[test]
fn only_the_site_shared_with_accepts_and_only_once() {
    let mut b = book();
    let id = share(&mut b, "questura", &["piazza"], 60, T0);
    assert!(b.accept("carabinieri", id, "neri@carabinieri", T0 + 1).is_err(), "another site");
    assert!(b.accept("questura", id + 100, "verdi@questura", T0 + 1).is_err(), "no such share");
    let out = b.accept("questura", id, "verdi@questura", T0 + 1000).unwrap();
    let n = notices(&out);
    let [("questura", Notice::Share { accepted_by: Some(who), .. })] = n[..] else { panic!("{out:?}") };
    assert_eq!(who, "verdi@questura");
    let a = audits(&out);
    assert_eq!((a[0].viewer.as_deref(), a[0].outcome.as_str()), (Some("verdi@questura"), "accepted"));
    assert!(out.contains(&Out::Persist));
    let s = b.shares().next().unwrap();
    assert_eq!((s.accepted_by.as_deref(), s.accepted_ms), (Some("verdi@questura"), Some(T0 + 1000)));

    let again = b.accept("questura", id, "gialli@questura", T0 + 2000).unwrap();
    assert!(notices(&again).is_empty(), "no second notice: {again:?}");
    assert_eq!(b.shares().next().unwrap().accepted_by.as_deref(), Some("verdi@questura"));

    b.withdraw(id, "sala", T0 + 3000).unwrap();
    let other = share(&mut b, "questura", &["dome"], 60, T0 + 3000);
    b.withdraw(other, "sala", T0 + 4000).unwrap();
    assert!(b.accept("questura", other, "verdi@questura", T0 + 5000).is_err(), "ended");
}

#[test]
fn an_approved_ask_is_a_grant_accepted_by_the_asker_and_answered_with_the_relays_id() {
    let mut b = book();
    let out = b.ask("questura", 77, "piazza", "verdi@questura", "furto in corso", T0);
    assert!(notices(&out).is_empty(), "the master room is not a site");
    let a = audits(&out);
    assert_eq!((a[0].action.as_str(), a[0].outcome.as_str()), ("ask", "pending"));
    assert_eq!(a[0].viewer.as_deref(), Some("verdi@questura"));
    let ask = b.asks().next().unwrap().clone();
    assert_eq!((ask.relay_id, ask.expires_ms), (77, T0 + 5 * MINUTE));
    // The relay sending the same ask again (a reconnect) adds nothing.
    assert!(b.ask("questura", 77, "piazza", "verdi@questura", "furto in corso", T0 + 1).is_empty());
    assert_eq!(b.asks().count(), 1);

    let out = b.approve(ask.id, "piazza", 20, "sala-rossi", T0 + MINUTE).unwrap();
    let until = T0 + 21 * MINUTE;
    let n = notices(&out);
    assert_eq!(n.len(), 2, "{out:?}");
    let ("questura", Notice::Share { accepted_by, cameras, until_ms, .. }) = n[0] else { panic!("{out:?}") };
    assert_eq!(
        (accepted_by.as_deref(), cameras.as_slice(), *until_ms),
        (Some("verdi@questura"), &cams(&["piazza"])[..], until)
    );
    assert_eq!(
        n[1],
        (
            "questura",
            &Notice::Answer {
                ask: 77,
                approved: true,
                by: "sala-rossi".into(),
                reason: String::new(),
                until_ms: Some(until),
            }
        )
    );
    assert!(out.contains(&Out::GrantsChanged) && out.contains(&Out::Persist));
    let a = audits(&out);
    assert_eq!((a[0].viewer.as_deref(), a[0].outcome.as_str()), (Some("sala-rossi"), "approved"));

    let g = b.grants();
    let grant = &g.live[&key("questura", "piazza")];
    assert_eq!(
        (grant.origin, grant.until_ms, grant.by.as_str()),
        (GrantOrigin::Approval, until, "sala-rossi")
    );
    let s = b.shares().next().unwrap();
    assert_eq!((s.origin, s.accepted_by.as_deref()), (GrantOrigin::Approval, Some("verdi@questura")));
    assert_eq!(s.note, "furto in corso", "the approval carries the ask's reason");

    // Answered: no second answer, either way.
    assert!(b.approve(ask.id, "piazza", 20, "sala-rossi", T0 + 2 * MINUTE).is_err());
    assert!(b.refuse(ask.id, "sala-rossi", "no", T0 + 2 * MINUTE).is_err());
    // Expiry of the approval is audited as an approval.
    let out = b.poll(until);
    assert_eq!(audits(&out)[0].action, "approve");
    assert!(b.grants().ended[&key("questura", "piazza")].starts_with("approval #"));
}

#[test]
fn a_refusal_needs_a_reason_and_answers_once() {
    let mut b = book();
    b.ask("questura", 5, "osp", "verdi@questura", "serve", T0);
    let id = b.asks().next().unwrap().id;
    assert!(b.refuse(id, "sala", "   ", T0).is_err(), "a blank reason");
    assert!(b.asks().next().unwrap().answer.is_none(), "a refused refusal leaves the ask pending");
    let out = b.refuse(id, "sala", "telecamera in ospedale", T0 + 1).unwrap();
    assert_eq!(
        notices(&out),
        [(
            "questura",
            &Notice::Answer {
                ask: 5,
                approved: false,
                by: "sala".into(),
                reason: "telecamera in ospedale".into(),
                until_ms: None,
            }
        )]
    );
    assert!(!out.contains(&Out::GrantsChanged), "no grant changed");
    assert!(b.grants().live.is_empty());
    assert!(b.refuse(id, "sala", "di nuovo", T0 + 2).is_err());
    assert!(b.approve(id, "osp", 10, "sala", T0 + 2).is_err());
    assert!(b.refuse(id + 1000, "sala", "x", T0).is_err(), "no such ask");
    // A refused ask does not expire later.
    assert!(b.poll(T0 + 6 * MINUTE).is_empty());
}

#[test]
fn an_unanswered_ask_expires_at_its_time_to_live_refused_by_the_master() {
    let mut b = book();
    b.ask("questura", 9, "piazza", "verdi@questura", "serve", T0);
    let id = b.asks().next().unwrap().id;
    assert_eq!(b.next_deadline(), Some(T0 + 5 * MINUTE));
    assert!(b.poll(T0 + 5 * MINUTE - 1).is_empty());
    let out = b.poll(T0 + 5 * MINUTE);
    let n = notices(&out);
    let [("questura", Notice::Answer { ask: 9, approved: false, by, reason, until_ms: None })] = n[..] else {
        panic!("{out:?}")
    };
    assert_eq!(by, MASTER_SITE);
    assert!(!reason.is_empty());
    assert_eq!((audits(&out)[0].action.as_str(), audits(&out)[0].outcome.as_str()), ("ask", "expired"));
    assert!(b.approve(id, "piazza", 10, "sala", T0 + 5 * MINUTE + 1).is_err(), "too late");
    assert!(b.poll(T0 + 6 * MINUTE).is_empty(), "answered once");
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn a_hundred_events_in_a_second_raise_one_alarm_and_the_next_counts_the_rest() {
    let mut b = book();
    let mut raised = Vec::new();
    let mut suppressed = 0;
    for i in 0..100 {
        match b.admit("piazza", AlarmKind::Motion, T0 + i * 10) {
            Admit::Raise { suppressed } => raised.push(suppressed),
            Admit::Suppressed => suppressed += 1,
        }
    }
    assert_eq!((raised, suppressed), (vec![0], 99));
    assert_eq!(b.suppressed_total(), 99);
    assert_eq!(b.suppressed_now(), [("piazza".to_owned(), AlarmKind::Motion, 99)]);
    // Another kind, another camera: limited apart.
    assert_eq!(b.admit("piazza", AlarmKind::Tampering, T0 + 500), Admit::Raise { suppressed: 0 });
    assert_eq!(b.admit("dome", AlarmKind::Motion, T0 + 500), Admit::Raise { suppressed: 0 });
    // Still inside the interval of the first.
    assert_eq!(b.admit("piazza", AlarmKind::Motion, T0 + 9_999), Admit::Suppressed);
    assert_eq!(b.admit("piazza", AlarmKind::Motion, T0 + 10_000), Admit::Raise { suppressed: 100 });
    assert_eq!(b.suppressed_total(), 100, "the total is never reset");
    assert!(b.suppressed_now().is_empty());
    assert_eq!(b.admit("piazza", AlarmKind::Motion, T0 + 10_001), Admit::Suppressed);
}

#[test]
fn an_alarm_goes_to_the_given_sites_and_an_ack_to_all_of_them() {
    let mut b = book();
    let sites = cams(&["questura", "vigili"]);
    let (id, out) = b.raise("piazza", AlarmKind::Motion, "movimento", sites, Some("anBlZw==".into()), 7, T0);
    let n = notices(&out);
    assert_eq!(n.iter().map(|(s, _)| *s).collect::<Vec<_>>(), ["questura", "vigili"]);
    let Notice::Alarm { id: nid, camera, kind, thumbnail, suppressed, at_ms, .. } = n[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!((*nid, camera.as_str(), *kind, *suppressed, *at_ms), (id, "piazza", AlarmKind::Motion, 7, T0));
    assert_eq!(thumbnail.as_deref(), Some("anBlZw=="));
    let a = audits(&out);
    assert_eq!((a[0].action.as_str(), a[0].outcome.as_str()), ("alarm", "motion"));
    assert!(a[0].reason.as_deref().unwrap().contains("7 suppressed"), "{:?}", a[0].reason);
    assert!(!out.contains(&Out::GrantsChanged) && !out.contains(&Out::Persist));

    assert!(b.ack(id, "carabinieri", "neri", T0 + 1).is_err(), "not sent to that site");
    assert!(b.ack(id + 1000, "questura", "verdi", T0 + 1).is_err(), "no such alarm");
    let out = b.ack(id, "questura", "verdi@questura", T0 + 2).unwrap();
    let ack =
        Notice::AlarmAck { id, site: "questura".into(), operator: "verdi@questura".into(), at_ms: T0 + 2 };
    assert_eq!(notices(&out), [("questura", &ack), ("vigili", &ack)]);
    assert_eq!(audits(&out)[0].viewer.as_deref(), Some("verdi@questura"));
    assert!(b.ack(id, "questura", "verdi@questura", T0 + 3).unwrap().is_empty(), "once per operator");
    let out = b.ack(id, MASTER_SITE, "sala", T0 + 4).unwrap();
    assert_eq!(notices(&out).len(), 2, "the master's ack is shown to every site: {out:?}");
    assert_eq!(b.alarm(id).unwrap().acks.len(), 2);

    // An alarm no site may see: audited, told to nobody.
    let (_, out) = b.raise("osp", AlarmKind::Offline, "perso", Vec::new(), None, 0, T0 + 5);
    assert!(notices(&out).is_empty());
    assert!(audits(&out)[0].reason.as_deref().unwrap().contains("no site"));
}

#[test]
fn a_restart_keeps_the_grants_in_force_and_audits_those_that_expired_meanwhile() {
    let mut b = book();
    let short = share(&mut b, "questura", &["piazza"], 10, T0);
    let long = share(&mut b, "vigili", &["dome"], 120, T0);
    let ended = share(&mut b, "questura", &["osp"], 120, T0);
    b.withdraw(ended, "sala", T0 + 1).unwrap();
    let saved = b.persisted();
    assert_eq!(saved.shares.len(), 2, "an ended share is not saved");
    // Through the state file's format.
    let json = serde_json::to_vec(&saved).unwrap();
    let saved: Persisted = serde_json::from_slice(&json).unwrap();

    let now = T0 + 30 * MINUTE;
    let (mut r, out) = Book::restore(settings(), saved, now);
    let a = audits(&out);
    let outcomes: Vec<(&str, &str)> =
        a.iter().map(|x| (x.site.as_deref().unwrap(), x.outcome.as_str())).collect();
    assert!(
        outcomes.contains(&("questura", "expired")) && outcomes.contains(&("vigili", "restored")),
        "{outcomes:?}"
    );
    assert!(out.contains(&Out::GrantsChanged) && out.contains(&Out::Persist));
    let g = r.grants();
    assert_eq!(g.live.keys().collect::<Vec<_>>(), [&key("vigili", "dome")]);
    assert_eq!(g.live[&key("vigili", "dome")].id, long);
    assert!(!g.live.contains_key(&key("questura", "piazza")), "share #{short} expired while down");
    // New ids never repeat the saved ones.
    let (next, _) = r.share("questura", cams(&["piazza"]), 5 * MINUTE, "sala", "", now).unwrap();
    assert!(next > long && next > ended, "{next}");
    // The restored share still expires.
    let out = r.poll(T0 + 120 * MINUTE);
    assert_eq!(notices(&out).iter().filter(|(s, _)| *s == "vigili").count(), 1);
    // An empty state file restores nothing and asks for nothing.
    let (_, out) = Book::restore(settings(), Persisted::default(), now);
    assert!(out.is_empty());
}

#[test]
fn a_reconnecting_relay_is_told_only_its_sites_shares_answers_and_alarms() {
    let mut b = book();
    let q = share(&mut b, "questura", &["piazza"], 60, T0);
    share(&mut b, "vigili", &["dome"], 60, T0);
    let gone = share(&mut b, "questura", &["dome"], 60, T0);
    b.withdraw(gone, "sala", T0 + 1).unwrap();
    b.ask("questura", 3, "osp", "verdi@questura", "serve", T0);
    b.ask("vigili", 4, "osp", "bianchi@vigili", "serve", T0);
    let qa = b.asks().find(|a| a.site == "questura").unwrap().id;
    b.refuse(qa, "sala", "no", T0 + 2).unwrap();
    let va = b.asks().find(|a| a.site == "vigili").unwrap().id;
    b.refuse(va, "sala", "no", T0 + 2).unwrap();
    let (alarm, _) = b.raise("piazza", AlarmKind::Motion, "m", cams(&["questura"]), None, 0, T0 + 3);
    b.raise("dome", AlarmKind::Motion, "m", cams(&["vigili"]), None, 0, T0 + 3);
    b.ack(alarm, MASTER_SITE, "sala", T0 + 4).unwrap();

    let snap = b.snapshot_for("questura");
    assert_eq!(snap.len(), 4, "{snap:#?}");
    assert!(matches!(&snap[0], Notice::Share { id, .. } if *id == q), "the withdrawn share is not re-sent");
    assert!(matches!(&snap[1], Notice::Answer { ask: 3, approved: false, .. }));
    assert!(matches!(&snap[2], Notice::Alarm { id, camera, .. } if *id == alarm && camera == "piazza"));
    assert!(matches!(&snap[3], Notice::AlarmAck { id, site, .. } if *id == alarm && site == MASTER_SITE));
    assert!(b.snapshot_for("carabinieri").is_empty());
}

#[test]
fn shares_and_approvals_outside_the_limits_are_refused() {
    let mut b = book();
    let refused = |b: &mut Book, cameras: Vec<String>, ms| {
        b.share("questura", cameras, ms, "sala", "", T0).map(|_| ()).unwrap_err()
    };
    assert!(refused(&mut b, cams(&["piazza"]), 0).contains("minutes"));
    assert!(refused(&mut b, cams(&["piazza"]), MAX_GRANT_MINUTES * MINUTE + 1).contains("minutes"));
    assert!(!refused(&mut b, Vec::new(), 10).is_empty());
    let many: Vec<String> = (0..=MAX_SHARE_CAMERAS).map(|i| format!("c{i}")).collect();
    assert!(refused(&mut b, many, 10).contains(&MAX_SHARE_CAMERAS.to_string()));
    assert!(b.grants().live.is_empty() && b.shares().next().is_none(), "nothing refused was kept");
    // The limits themselves are allowed.
    let most: Vec<String> = (0..MAX_SHARE_CAMERAS).map(|i| format!("c{i}")).collect();
    assert!(b.share("questura", most, MAX_GRANT_MINUTES * MINUTE, "sala", "", T0).is_ok());

    b.ask("questura", 1, "piazza", "verdi@questura", "serve", T0);
    let id = b.asks().next().unwrap().id;
    assert!(b.approve(id, "piazza", 0, "sala", T0).is_err());
    assert!(b.approve(id, "piazza", MAX_GRANT_MINUTES + 1, "sala", T0).is_err());
    assert!(b.asks().next().unwrap().answer.is_none(), "a refused approval leaves the ask pending");
}

/// Two agents of one master room: the grants one gives are taken over by
/// the other (its site keeps them if the first dies), endings and
/// acceptances follow, and sending the lists back and forth settles.
#[test]
fn the_other_agent_takes_over_grants_and_follows_their_end() {
    let mut a = book();
    let mut b = Book::new(settings(), T0 + 7);
    let (id, _) = a.share("questura", cams(&["stadio"]), 2 * MINUTE, "sala", "derby", T0).unwrap();

    let out = b.merge("master-a", a.export(), T0 + 10);
    assert!(b.grants().live.contains_key(&key("questura", "stadio")), "taken over");
    assert!(out.contains(&Out::GrantsChanged) && out.contains(&Out::Persist));
    assert!(matches!(notices(&out)[..], [("questura", Notice::Share { id: i, .. })] if *i == id));
    assert!(audits(&out).iter().any(|r| r.outcome == "replicated"), "{out:?}");
    // Sent back and forth: nothing more happens.
    assert!(a.merge("master-b", b.export(), T0 + 20).is_empty());
    assert!(b.merge("master-a", a.export(), T0 + 20).is_empty());

    // Accepted through agent a: b knows who accepted.
    a.accept("questura", id, "bianchi@questura", T0 + 30).unwrap();
    let out = b.merge("master-a", a.export(), T0 + 40);
    assert!(
        matches!(notices(&out)[..], [(_, Notice::Share { accepted_by: Some(w), .. })] if w == "bianchi@questura")
    );

    // Withdrawn at a: b ends it too, and tells the site.
    a.withdraw(id, "sala", T0 + 50).unwrap();
    let out = b.merge("master-a", a.export(), T0 + 60);
    assert!(!b.grants().live.contains_key(&key("questura", "stadio")), "ended at b");
    assert!(
        matches!(notices(&out)[..], [(_, Notice::ShareEnded { reason, .. })] if reason.contains("withdrawn"))
    );
    assert!(b.merge("master-a", a.export(), T0 + 70).is_empty(), "once");

    // An ended or expired grant b never knew is not taken over.
    let mut c = Book::new(settings(), T0);
    assert!(c.merge("master-a", a.export(), T0 + 80).is_empty());
    let (_, _) = a.share("questura", cams(&["curva"]), 2 * MINUTE, "sala", "x", T0).unwrap();
    assert!(c.merge("master-a", a.export(), T0 + 3 * MINUTE).is_empty(), "expired by now");
}
