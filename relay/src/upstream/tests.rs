//! The shell over real channels and tokio's paused clock; the state
//! machine's own scenarios are in `state`'s tests.

use super::state::tests::{entry, holder};
use super::*;
use ponte_proto::media::Codec;
use ponte_proto::tls::{self, Identity, TransportOptions};
use std::sync::OnceLock;

/// One live QUIC connection for the links' `conn` (only status reads
/// it), made once on a runtime of its own that outlives the tests.
fn connection() -> quinn::Connection {
    static CONN: OnceLock<quinn::Connection> = OnceLock::new();
    CONN.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let ca_key = rcgen::KeyPair::generate().expect("key");
                let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
                ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                let ca = ca_params.self_signed(&ca_key).expect("CA");
                let key = rcgen::KeyPair::generate().expect("key");
                let mut params = rcgen::CertificateParams::new(vec!["relay".to_owned()]).expect("params");
                params.extended_key_usages = vec![
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                    rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                ];
                let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
                let id = Identity::from_pem(&ca.pem(), &cert.pem(), &key.serialize_pem()).expect("identity");
                let opts = TransportOptions { idle_timeout: Duration::from_secs(3600), ..Default::default() };
                let server_cfg = tls::server_config(&id, &opts).expect("server config");
                let server = quinn::Endpoint::server(server_cfg, ([127, 0, 0, 1], 0).into()).expect("server");
                let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client");
                client.set_default_client_config(tls::client_config(&id, &opts).expect("client config"));
                let addr = server.local_addr().expect("addr");
                let connecting = client.connect(addr, "relay").expect("connect");
                let incoming = server.accept().await.expect("incoming");
                let (a, b) = tokio::join!(incoming, connecting);
                let (_a, b) = (a.expect("accepted"), b.expect("connected"));
                let _ = tx.send(b);
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("test connection")
    })
    .clone()
}

impl Upstreams {
    /// Registers a link as `run_link` does, without its session.
    fn attach(&self, peer: &str) -> (u64, mpsc::Receiver<Control>) {
        let (ctl, rx) = mpsc::channel(4);
        (self.add_link(peer, ([127, 0, 0, 1], 7443).into(), connection(), ctl), rx)
    }

    /// Tracks and links agree on who feeds whom, and the shell holds
    /// the I/O side of exactly the tracks and links of the state machine.
    fn check(&self) {
        let inner = self.lock();
        inner.state.check();
        let mut state: Vec<&TrackKey> = inner.state.tracks.keys().collect();
        let mut io: Vec<&TrackKey> = inner.tracks.keys().collect();
        state.sort_by_key(|k| k.to_string());
        io.sort_by_key(|k| k.to_string());
        assert_eq!(state, io, "one hub track per track of the table");
        let mut links: Vec<&LinkId> = inner.state.links.keys().collect();
        let mut io: Vec<&LinkId> = inner.links.keys().collect();
        links.sort();
        io.sort();
        assert_eq!(links, io, "one connection per link of the table");
    }
}

/// A relay fed by `master` (first) and `shard`, auditing nothing.
fn test_upstreams(grace: Duration) -> Arc<Upstreams> {
    let audit = Arc::new(RelayAudit::disabled("site"));
    Upstreams::new("site", vec!["master".into(), "shard".into()], audit, Duration::from_millis(300), grace)
}

fn ptz_entry(camera: &str) -> CatalogEntry {
    CatalogEntry { kind: "dome-ptz".into(), ptz: true, ..entry(camera, false) }
}

/// Commands go up with fresh ids, answers are matched by id whatever
/// their order, the holder is learnt from replies and lock notices and
/// lapses with its lock.
#[tokio::test(start_paused = true)]
async fn ptz_commands_are_matched_by_id_and_holders_remembered() {
    let up = test_upstreams(Duration::from_secs(60));
    let (l1, mut rx) = up.attach("master");
    up.on_control(l1, "master", Control::Catalog { cameras: vec![ptz_entry("dome"), entry("c0", false)] })
        .unwrap();
    let ask = |cmd: PtzCommand| {
        let u = up.clone();
        tokio::spawn(async move { u.ptz("dome", "anna", cmd, PTZ_TIMEOUT).await })
    };
    let first = ask(PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 });
    let second = ask(PtzCommand::Presets);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let Some(Control::Ptz { id, camera, viewer, command }) = rx.recv().await else { panic!("no Ptz") };
        assert_eq!((camera.as_str(), viewer.as_str()), ("dome", "anna"));
        ids.push((id, command));
    }
    assert_ne!(ids[0].0, ids[1].0, "one id per request");
    // Answered in reverse order.
    for (id, command) in ids.iter().rev() {
        let reply = match command {
            PtzCommand::Presets => PtzReply::Done {
                holder: None,
                presets: vec![ponte_proto::ptz::PtzPreset { token: "1".into(), name: "Ingresso".into() }],
                position: None,
            },
            _ => PtzReply::Done { holder: Some(holder("anna", 15_000)), presets: vec![], position: None },
        };
        up.on_control(l1, "master", Control::PtzResult { id: *id, reply }).unwrap();
    }
    let moved = first.await.unwrap();
    assert_eq!(moved.http_status(), 200, "{moved:?}");
    let PtzReply::Done { presets, .. } = second.await.unwrap() else { panic!("presets refused") };
    assert_eq!(presets[0].name, "Ingresso");
    assert_eq!(up.ptz_holder("dome").unwrap().controller.viewer, "anna", "learnt from the move's reply");

    // An answer nobody waits for any more is no protocol error.
    up.on_control(
        l1,
        "master",
        Control::PtzResult { id: 999, reply: PtzReply::refused(PtzErrorCode::Locked, "x") },
    )
    .unwrap();
    // Lock notices: another site takes over; a notice for a camera this
    // link does not carry is ignored; the holder lapses with its lock.
    up.on_control(
        l1,
        "master",
        Control::PtzLock { camera: "dome".into(), holder: Some(holder("bruno", 2_000)) },
    )
    .unwrap();
    up.on_control(
        l1,
        "master",
        Control::PtzLock { camera: "elsewhere".into(), holder: Some(holder("x", 9_000)) },
    )
    .unwrap();
    assert!(up.ptz_holder("elsewhere").is_none());
    tokio::time::advance(Duration::from_millis(500)).await;
    let h = up.ptz_holder("dome").unwrap();
    assert_eq!((h.controller.viewer.as_str(), h.expires_in_ms), ("bruno", 1_500));
    tokio::time::advance(Duration::from_millis(1_500)).await;
    assert!(up.ptz_holder("dome").is_none(), "lapsed");
    up.on_control(
        l1,
        "master",
        Control::PtzLock { camera: "dome".into(), holder: Some(holder("bruno", 2_000)) },
    )
    .unwrap();
    up.on_control(l1, "master", Control::PtzLock { camera: "dome".into(), holder: None }).unwrap();
    assert!(up.ptz_holder("dome").is_none(), "released");

    // A notice overtaking a reply wins: the reply's holder is older.
    let late = ask(PtzCommand::GotoPreset { preset: "1".into() });
    let Some(Control::Ptz { id, .. }) = rx.recv().await else { panic!("no Ptz") };
    up.on_control(
        l1,
        "master",
        Control::PtzLock { camera: "dome".into(), holder: Some(holder("sala", 9_000)) },
    )
    .unwrap();
    let stale = PtzReply::Done { holder: Some(holder("anna", 15_000)), presets: vec![], position: None };
    up.on_control(l1, "master", Control::PtzResult { id, reply: stale }).unwrap();
    assert_eq!(late.await.unwrap().http_status(), 200);
    assert_eq!(up.ptz_holder("dome").unwrap().controller.viewer, "sala", "the newer notice stands");

    // Not in any catalog: unknown, and nothing goes up.
    let reply = up.ptz("nowhere", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await;
    assert!(matches!(reply, PtzReply::Refused { code: PtzErrorCode::Unknown, .. }), "{reply:?}");
    assert!(rx.try_recv().is_err());
    // An agent may not send a relay's message.
    let ptz = Control::Ptz { id: 1, camera: "dome".into(), viewer: "x".into(), command: PtzCommand::Stop };
    assert!(up.on_control(l1, "master", ptz).is_err());
}

/// A silent agent: the command times out and its late answer is dropped.
/// A link lost with commands pending: they are answered `unavailable`,
/// and so is every command until a link is back.
#[tokio::test(start_paused = true)]
async fn ptz_times_out_and_a_lost_link_answers_unavailable() {
    let up = test_upstreams(Duration::from_secs(60));
    let (l1, mut rx) = up.attach("master");
    up.on_control(l1, "master", Control::Catalog { cameras: vec![ptz_entry("dome")] }).unwrap();
    let u = up.clone();
    let silent = tokio::spawn(async move { u.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await });
    let Some(Control::Ptz { id, .. }) = rx.recv().await else { panic!("no Ptz") };
    tokio::time::advance(PTZ_TIMEOUT + Duration::from_millis(1)).await;
    let reply = silent.await.unwrap();
    let PtzReply::Refused { code, reason, .. } = &reply else { panic!("{reply:?}") };
    assert_eq!(*code, PtzErrorCode::Timeout);
    assert!(reason.contains("dome") && reason.contains("master"), "{reason}");
    assert_eq!(reply.http_status(), 504);
    assert!(up.lock().state.links[&l1].ptz_pending.is_empty(), "the timed-out request is forgotten");
    up.on_control(
        l1,
        "master",
        Control::PtzResult { id, reply: PtzReply::refused(PtzErrorCode::Locked, "late") },
    )
    .unwrap();

    up.on_control(
        l1,
        "master",
        Control::PtzLock { camera: "dome".into(), holder: Some(holder("anna", 9_000)) },
    )
    .unwrap();
    let u = up.clone();
    let pending = tokio::spawn(async move {
        u.ptz("dome", "anna", PtzCommand::Move { pan: 0, tilt: 100, zoom: 0 }, PTZ_TIMEOUT).await
    });
    let Some(Control::Ptz { .. }) = rx.recv().await else { panic!("no Ptz") };
    up.drop_link(l1);
    let reply = pending.await.unwrap();
    assert!(matches!(reply, PtzReply::Refused { code: PtzErrorCode::Unavailable, .. }), "{reply:?}");
    assert_eq!(reply.http_status(), 503);
    assert!(up.ptz_holder("dome").is_none(), "nobody knows who holds it now");
    let reply = up.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await;
    let PtzReply::Refused { code: PtzErrorCode::Unavailable, reason, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert!(reason.contains("link to its agent is down"), "{reason}");
}

/// A viewer that gives up mid-wait (its HTTP request dropped) leaves no
/// pending entry behind, so a silent agent cannot fill the link's table.
#[tokio::test(start_paused = true)]
async fn a_dropped_ptz_request_is_forgotten() {
    let up = test_upstreams(Duration::from_secs(60));
    let (l1, mut rx) = up.attach("master");
    up.on_control(l1, "master", Control::Catalog { cameras: vec![ptz_entry("dome")] }).unwrap();
    let u = up.clone();
    let waiting = tokio::spawn(async move { u.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await });
    let Some(Control::Ptz { .. }) = rx.recv().await else { panic!("no Ptz") };
    assert_eq!(up.lock().state.links[&l1].ptz_pending.len(), 1);
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert!(up.lock().state.links[&l1].ptz_pending.is_empty(), "the cancelled request is forgotten");
}

/// The fibre cut as the relay sees it: the link goes, the viewer stays,
/// the agent comes back, the track is subscribed again under a new id on
/// the new link, and its GOP numbering starts over.
#[tokio::test]
async fn a_link_grants_gop_streams_as_its_subscriptions_grow() {
    let up = test_upstreams(Duration::from_secs(60));
    let (l, _rx) = up.attach("master");
    let mut inner = up.lock();
    assert_eq!(inner.links[&l].window.granted(), session::INITIAL_UNI_STREAMS);
    for n in 0..60 {
        inner.state.links.get_mut(&l).unwrap().subs.insert(n, TrackKey::new(format!("c{n}"), Quality::Main));
        inner.fit_window(l);
    }
    assert_eq!(
        inner.links[&l].window.granted(),
        512,
        "60 subscriptions need 304 streams: the next power of two"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_link_orphans_the_track_and_a_new_link_adopts_it() {
    let up = test_upstreams(Duration::from_secs(60));
    let (l1, mut rx1) = up.attach("master");
    up.on_control(l1, "master", Control::Catalog { cameras: vec![entry("c0", false)] }).unwrap();
    let u = up.clone();
    let viewer = tokio::spawn(async move { u.subscribe("c0", Quality::Main).await });
    tokio::task::yield_now().await;
    let Some(Control::Subscribe { id, .. }) = rx1.recv().await else { panic!("no subscribe") };
    up.on_control(l1, "master", Control::SubscribeOk { id, codec: Codec::H264 }).unwrap();
    let mut reader = viewer.await.unwrap().unwrap();
    up.lock().tracks.values().for_each(|t| t.ingest.latest_gop.store(9, Ordering::Relaxed));
    let state = || up.track_state("c0", Quality::Main);
    assert_eq!(state(), Some(TrackState::Live));
    assert_eq!(up.track_state("c0", Quality::Sub), None, "nobody watches the substream");
    // Shaping at the agent holds it back, then lets it go.
    up.on_control(l1, "master", Control::Paused { id, reason: "link budget".into() }).unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(state(), Some(TrackState::Paused { reason: "link budget".into(), since_secs: 3 }));
    up.on_control(l1, "master", Control::Resumed { id }).unwrap();
    assert_eq!(state(), Some(TrackState::Live));
    up.on_control(l1, "master", Control::Paused { id, reason: "link budget".into() }).unwrap();

    up.drop_link(l1);
    assert_eq!(up.catalog().len(), 1, "the lost catalog is kept through the grace");
    assert!(up.lock().state.tracks.values().all(|t| t.orphaned.is_some()));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(state(), Some(TrackState::UpstreamLost { upstream: "master".into(), since_secs: 10 }));
    assert!(reader.try_next().is_none(), "the viewer is still there, waiting");
    assert!(!up.lock().tracks.is_empty());

    let (l2, mut rx2) = up.attach("master");
    up.on_control(l2, "master", Control::Catalog { cameras: vec![entry("c0", false)] }).unwrap();
    let Some(Control::Subscribe { id: id2, camera, .. }) = rx2.recv().await else { panic!("no resubscribe") };
    assert_eq!(camera, "c0");
    {
        let inner = up.lock();
        assert_eq!(inner.state.tracks.values().next().unwrap().feed, Some((l2, id2)));
        let t = inner.tracks.values().next().unwrap();
        assert_eq!(t.ingest.latest_gop.load(Ordering::Relaxed), 0, "GOP numbering starts over");
    }
    assert_eq!(state(), Some(TrackState::Live), "a pause of the old link does not outlive it");
    up.check();

    // Gone for longer than the grace: the viewer's stream ends.
    up.drop_link(l2);
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    assert!(reader.next().await.is_none(), "ended after the grace");
    assert!(up.catalog().is_empty());
}

/// A camera id listed by two trusted links is never merged: its entry,
/// subscriptions, PTZ commands and lock notices belong to the first site
/// of `relay.upstreams` that lists it, and a catalog listing an id twice
/// keeps the first entry.
#[tokio::test(start_paused = true)]
async fn a_camera_listed_by_two_links_comes_from_the_preferred_one() {
    let up = test_upstreams(Duration::from_secs(60));
    let (shard, mut rx_shard) = up.attach("shard");
    let mut shadow = entry("c0", false);
    shadow.zone = "widened".into();
    shadow.ptz = true;
    let own = entry("c1", false);
    up.on_control(shard, "shard", Control::Catalog { cameras: vec![shadow.clone(), own.clone()] }).unwrap();
    assert_eq!(up.catalog()[0].zone, "widened", "alone, the shard's entry counts");
    let (master, mut rx_master) = up.attach("master");
    let mut twice = entry("c0", false);
    twice.name = "second copy".into();
    up.on_control(master, "master", Control::Catalog { cameras: vec![entry("c0", false), twice] }).unwrap();
    let catalog = up.catalog();
    assert_eq!(catalog.len(), 2, "{catalog:?}");
    let c0 = catalog.iter().find(|c| c.id == "c0").unwrap();
    assert_eq!((c0.zone.as_str(), c0.name.as_str(), c0.ptz), ("z", "c0", false), "master's first entry");
    assert_eq!(up.lock().state.links[&master].catalog.len(), 1, "the duplicate in one catalog is dropped");

    // Subscriptions go to the carrier: master for c0, the shard for c1.
    let u = up.clone();
    let viewer = tokio::spawn(async move { u.subscribe("c0", Quality::Main).await });
    let Some(Control::Subscribe { id, camera, .. }) = rx_master.recv().await else { panic!("no subscribe") };
    assert_eq!(camera, "c0");
    up.on_control(master, "master", Control::SubscribeOk { id, codec: Codec::H264 }).unwrap();
    viewer.await.unwrap().unwrap();
    assert!(rx_shard.try_recv().is_err(), "the shard is not asked for c0");

    // PTZ for c0 goes up the master's link only, and only its lock notices count.
    let u = up.clone();
    let ptz =
        tokio::spawn(async move { u.ptz("c0", "anna", PtzCommand::Stop, Duration::from_secs(1)).await });
    let Some(Control::Ptz { camera, viewer, .. }) = rx_master.recv().await else { panic!("no PTZ") };
    assert_eq!((camera.as_str(), viewer.as_str()), ("c0", "anna"));
    assert!(rx_shard.try_recv().is_err(), "the shard never sees the site's PTZ commands or viewers");
    tokio::time::advance(Duration::from_secs(2)).await;
    let _ = ptz.await;
    up.on_control(
        shard,
        "shard",
        Control::PtzLock { camera: "c0".into(), holder: Some(holder("mallory", 9000)) },
    )
    .unwrap();
    assert!(up.ptz_holder("c0").is_none(), "a lock notice from a link that does not carry c0 is ignored");
    up.on_control(
        master,
        "master",
        Control::PtzLock { camera: "c0".into(), holder: Some(holder("anna", 9000)) },
    )
    .unwrap();
    assert!(up.ptz_holder("c0").is_some());
    up.check();
}

/// The first copy of each frame: two copies of one camera (two paths) are
/// taken once, in order; a copy at another quality or of an older GOP
/// never splices in; the feed's own next GOP is always taken (a camera
/// restarted its times), a twin's only if newer; a promoted twin goes on.
#[test]
fn ingest_takes_the_first_copy_of_each_frame_and_never_splices() {
    let ing = Ingest::new(hub::track(TrackKey { camera: "c".into(), quality: Quality::Main }));
    let (feed, twin) = (1, 2);
    // GOP at pts 1000: the feed delivers frames 0 and 1, the twin 0..=2.
    assert!(ing.take(1000, 0, 0, feed, false));
    assert!(!ing.take(1000, 0, 0, twin, true), "the second copy of frame 0");
    assert!(ing.take(1000, 0, 1, feed, false));
    assert!(!ing.take(1000, 0, 1, twin, true));
    assert!(ing.take(1000, 0, 2, twin, true), "the twin is ahead: its frame 2 counts");
    assert!(!ing.take(1000, 0, 2, feed, false));
    assert!(!ing.take(1000, 1, 3, twin, true), "another quality never splices in");
    assert!(!ing.take(1000, 0, 4, feed, false), "a gap is never bridged");
    // An older GOP from the twin is refused; a newer one starts at its keyframe only.
    assert!(!ing.take(500, 0, 0, twin, true));
    assert!(!ing.take(2000, 0, 1, twin, true));
    assert!(ing.take(2000, 0, 0, twin, true));
    // An older GOP from a link that did not deliver the last one is refused.
    assert!(!ing.take(10, 0, 0, feed, false));
    // Promoted: the twin's link carries on mid-GOP and with its next GOP.
    ing.promote(twin);
    let n = ing.next.lock().unwrap().unwrap();
    assert_eq!(n.link, twin);
    assert!(ing.take(n.gop_pts, n.quality, n.index, twin, false));
    assert!(ing.take(5, 0, 0, twin, false), "the new feed's next GOP, whatever its times");
    ing.restart();
    assert!(!ing.take(7, 0, 3, feed, false), "after a restart, a keyframe first");
    assert!(ing.take(7, 0, 0, feed, false));
}
