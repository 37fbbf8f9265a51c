use super::worker::QUEUE;
use super::*;
use crate::config::AgentConfig;
use crate::ptz::device::{DeviceFuture, DeviceOp, Output};
use crate::ptz::master_api;
use ponte_proto::ptz::PtzCommand;
use ponte_proto::ptz::{PtzPosition, PtzPreset};
use ponte_proto::wire::Control;
use std::time::Duration;

/// Records what the service asked, with when.
#[derive(Default)]
struct FakeDome {
    ops: Mutex<Vec<(String, Instant)>>,
    delay: Duration,
}

impl FakeDome {
    fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap().iter().map(|(o, _)| o.clone()).collect()
    }
}

impl PtzDevice for FakeDome {
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output> {
        let op = match op {
            DeviceOp::Move { pan, tilt, zoom, timeout } => {
                format!("move {pan} {tilt} {zoom} {}", timeout.as_millis())
            }
            DeviceOp::Stop => "stop".into(),
            DeviceOp::Goto(token) => format!("goto {token}"),
            DeviceOp::Presets => {
                let presets = vec![PtzPreset { token: "1".into(), name: "Ingresso".into() }];
                return Box::pin(async { Ok(Output::Presets(presets)) });
            }
            DeviceOp::Status => return Box::pin(async { Ok(Output::Position(PtzPosition::default())) }),
        };
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.ops.lock().unwrap().push((op, Instant::now()));
            Ok(Output::Nothing)
        })
    }
}

/// A master agent with two PTZ domes (one without ONVIF), a fixed camera,
/// the PTZ tests' two sites and three more.
fn config() -> AgentConfig {
    AgentConfig::from_toml(&format!("{CONFIG}{}", ponte_tests::onvif_camera::PTZ_SITES)).unwrap()
}

const CONFIG: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[ptz]
lock_idle_secs = 2
deadman_ms = 300
[[device]]
id = "dome"
name = "rotatoria"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "dome-b"
name = "senza onvif"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "fix"
name = "fissa"
type = "fixed"
source = "synthetic"
[[site]]
id = "polizia"
allow = ["*"]
ptz = true
ptz_priority = 50
[[site]]
id = "vigili"
allow = ["camera:fix"]
ptz = true
[[site]]
id = "notte"
allow = ["*"]
ptz = true
ptz_priority = 20
windows = ["daily 22:00-06:00"]
"#;

#[test]
fn time_windows_bound_the_ptz_right() {
    let cfg = config();
    let access = Access::new(&cfg).unwrap();
    let catalog = crate::sources::cameras::catalog_of(&cfg.devices);
    let dome = catalog.iter().find(|c| c.id == "dome").unwrap();
    let noon = ponte_proto::policy::LocalTime { weekday: 2, minute: 12 * 60 };
    let night = ponte_proto::policy::LocalTime { weekday: 2, minute: 23 * 60 };
    match access.may_steer("notte", dome, noon) {
        Err((PtzErrorCode::Forbidden, reason)) => {
            assert!(reason.contains("daily 22:00-06:00"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(access.may_steer("notte", dome, night), Ok(20));
}

struct Rig {
    service: PtzService,
    dome: Arc<FakeDome>,
    audit: std::path::PathBuf,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn rig(delay: Duration) -> Rig {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ponte-ptz-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config();
    let audit = dir.join("audit.log");
    let log = Arc::new(AuditLog::open(&audit, "master", 1 << 20).unwrap());
    let access = watch::channel(Arc::new(Access::new(&cfg).unwrap())).1;
    let dome = Arc::new(FakeDome { delay, ..Default::default() });
    let mut devices: HashMap<String, Arc<dyn PtzDevice>> = HashMap::new();
    devices.insert("dome".into(), dome.clone());
    let service = PtzService::start(Setup {
        config: cfg.ptz.arbiter(),
        cameras: Arc::new(Cameras::start(&cfg.devices)),
        access,
        clock: Clock::default(),
        audit: log,
        devices,
    });
    Rig { service, dome, audit, _dir: tempfile_dir::Dir(dir) }
}

fn site(site: &str, viewer: &str) -> Requester {
    Requester::Site { site: site.into(), viewer: viewer.into() }
}

fn mv(pan: i16) -> PtzCommand {
    PtzCommand::Move { pan, tilt: 0, zoom: 0 }
}

fn code(reply: &PtzReply) -> Option<PtzErrorCode> {
    match reply {
        PtzReply::Refused { code, .. } => Some(*code),
        PtzReply::Done { .. } => None,
    }
}

#[tokio::test]
async fn site_checks_answer_like_subscriptions_and_are_audited() {
    let r = rig(Duration::ZERO);
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let reply = s.submit(&cc, "dome", &mv(500)).reply().await;
    assert!(matches!(&reply, PtzReply::Done { holder: Some(h), .. } if h.controller.site == "carabinieri"));
    assert_eq!(r.dome.ops(), ["move 500 0 0 300"], "the dead-man goes to the camera as the move's timeout");

    let cases = [
        (site("questura", "bianchi"), "dome", mv(1), PtzErrorCode::Forbidden, "ptz = true"),
        (site("vigili", "verdi"), "dome", mv(1), PtzErrorCode::Unknown, "not in the catalog"),
        (site("nessuno", "x"), "dome", mv(1), PtzErrorCode::Unknown, "not in the catalog"),
        (site("vigili", "verdi"), "fix", mv(1), PtzErrorCode::Unsupported, "not a `dome-ptz`"),
        (cc.clone(), "dome-b", mv(1), PtzErrorCode::Unsupported, "[device.onvif]"),
        (cc.clone(), "dome", mv(1001), PtzErrorCode::Invalid, "pan velocity"),
        (site("carabinieri", ""), "dome", mv(1), PtzErrorCode::Invalid, "name"),
    ];
    for (who, camera, cmd, want, words) in cases {
        match s.submit(&who, camera, &cmd).reply().await {
            PtzReply::Refused { code, reason, .. } => {
                assert_eq!(code, want, "{who:?} {camera}: {reason}");
                assert!(reason.contains(words), "{reason}");
            }
            other => panic!("{who:?} {camera}: expected {want:?}, got {other:?}"),
        }
    }
    assert_eq!(r.dome.ops().len(), 1, "no refused command reached the camera");
    let log = std::fs::read_to_string(&r.audit).unwrap();
    let ptz: Vec<&str> = log.lines().filter(|l| l.contains("\"action\":\"ptz\"")).collect();
    assert_eq!(ptz.len(), 8, "{log}");
    assert!(ptz.iter().any(|l| l.contains("\"site\":\"questura\"")
        && l.contains("\"outcome\":\"denied\"")
        && l.contains("move pan=1")));
    assert_eq!(s.counts().get("denied"), Some(&7));
    assert_eq!(s.counts().get("allowed"), Some(&1));
}

#[tokio::test]
async fn master_preempts_equal_priority_waits_and_losers_learn_the_holder() {
    let r = rig(Duration::ZERO);
    let s = &r.service;
    let mut locks = s.subscribe_locks();
    let cc = site("carabinieri", "rossi");
    assert!(code(&s.submit(&cc, "dome", &mv(500)).reply().await).is_none());
    assert_eq!(locks.recv().await.unwrap().holder.unwrap().controller.site, "carabinieri");
    // Equal priority waits.
    match s.submit(&site("polizia", "neri"), "dome", &mv(-500)).reply().await {
        PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
            assert_eq!(h.controller.label(), "rossi@carabinieri", "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The master room takes over.
    let master = Requester::Master { operator: "sala".into() };
    assert!(code(&s.submit(&master, "dome", &mv(-300)).reply().await).is_none());
    let change = locks.recv().await.unwrap();
    assert_eq!(change.holder.unwrap().controller.label(), "sala@master");
    match s.submit(&cc, "dome", &mv(500)).reply().await {
        PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), .. } => {
            assert_eq!((h.controller.site.as_str(), h.controller.priority), ("master", 100))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.dome.ops(), ["move 500 0 0 300", "move -300 0 0 300"]);
    // Release by the holder frees the lock (and stops the move).
    let reply = s.submit(&master, "dome", &PtzCommand::Release).reply().await;
    assert!(matches!(reply, PtzReply::Done { holder: None, .. }), "{reply:?}");
    assert_eq!(locks.recv().await.unwrap().holder, None);
    assert_eq!(r.dome.ops().last().map(String::as_str), Some("stop"));
    let log = std::fs::read_to_string(&r.audit).unwrap();
    assert!(log
        .lines()
        .any(|l| l.contains("\"outcome\":\"preempted\"") && l.contains("\"viewer\":\"rossi\"")));
}

#[tokio::test]
async fn unrenewed_move_is_stopped_by_the_dead_man_and_a_vanished_site_at_once() {
    let r = rig(Duration::ZERO);
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let t0 = Instant::now();
    s.submit(&cc, "dome", &mv(500)).reply().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ops = r.dome.ops.lock().unwrap().clone();
    assert_eq!(ops.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["move 500 0 0 300", "stop"]);
    let delay = ops[1].1 - t0;
    assert!(delay >= Duration::from_millis(300) && delay < Duration::from_millis(450), "{delay:?}");
    // Still the holder after the stop: renewing moves again.
    s.submit(&cc, "dome", &mv(200)).reply().await;
    let t1 = Instant::now();
    s.drop_site("carabinieri");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ops = r.dome.ops.lock().unwrap().clone();
    assert_eq!(ops.last().map(|(o, _)| o.as_str()), Some("stop"));
    assert!(ops.last().unwrap().1 - t1 < Duration::from_millis(50));
    assert!(s.holders().is_empty());
    let log = std::fs::read_to_string(&r.audit).unwrap();
    assert!(log.contains("dead-man: no renewal for 300 ms") && log.contains("site session ended"), "{log}");
}

#[tokio::test]
async fn a_preempted_controllers_queued_commands_do_not_reach_the_camera() {
    let r = rig(Duration::from_millis(100));
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let first = s.submit(&cc, "dome", &mv(500));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let queued: Vec<Pending> = [600, 700].into_iter().map(|p| s.submit(&cc, "dome", &mv(p))).collect();
    let master = Requester::Master { operator: "sala".into() };
    let took = s.submit(&master, "dome", &mv(-300));
    assert!(code(&first.reply().await).is_none());
    for p in queued {
        match p.reply().await {
            PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
                assert_eq!(h.controller.label(), "sala@master", "{reason}");
                assert!(reason.contains("lost the lock"), "{reason}");
            }
            other => panic!("a superseded move must not run: {other:?}"),
        }
    }
    assert!(code(&took.reply().await).is_none());
    assert_eq!(r.dome.ops(), ["move 500 0 0 300", "move -300 0 0 300"]);
    let log = std::fs::read_to_string(&r.audit).unwrap();
    assert!(log.contains("superseded by sala@master while queued"), "{log}");
}

#[tokio::test]
async fn a_command_the_queue_cannot_take_leaves_the_lock_alone() {
    let r = rig(Duration::from_secs(5));
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let mut accepted = Vec::new();
    let full = loop {
        let p = s.submit(&cc, "dome", &mv(500));
        match p.0 {
            Ok(reply) => break reply,
            Err(rx) => accepted.push(rx),
        }
        assert!(accepted.len() <= QUEUE, "the queue is bounded");
    };
    assert_eq!(code(&full), Some(PtzErrorCode::CameraError), "{full:?}");
    let mut locks = s.subscribe_locks();
    let master = Requester::Master { operator: "sala".into() };
    let reply = s.submit(&master, "dome", &mv(-300)).reply().await;
    assert_eq!(code(&reply), Some(PtzErrorCode::CameraError), "{reply:?}");
    let holders = s.holders();
    assert_eq!(holders[0].holder.as_ref().map(|h| h.controller.label()), Some("rossi@carabinieri".into()));
    assert!(locks.try_recv().is_err(), "no lock change was announced");
    let log = std::fs::read_to_string(&r.audit).unwrap();
    assert!(!log.contains("preempted"), "nobody was pre-empted by a command that never ran: {log}");
    // A stop still finds a slot.
    assert!(s.submit(&cc, "dome", &PtzCommand::Stop).0.is_err(), "the stop was queued");
}

#[tokio::test]
async fn the_master_api_takes_json_commands_only() {
    let r = rig(Duration::ZERO);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/ptz/dome", listener.local_addr().unwrap());
    let operator = crate::operators::Operator("sala".into());
    let app = master_api::routes(r.service.clone()).layer(axum::Extension(operator));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let post = |content_type: &'static str| {
        let url = url.clone();
        async move {
            let headers = [("Content-Type", content_type)];
            let body = br#"{"op":"stop"}"#;
            ponte_tests::http_request("POST", &url, &headers, body, Duration::from_secs(5)).await.unwrap()
        }
    };
    assert_eq!(post("text/plain").await.status, 415);
    assert!(r.dome.ops().is_empty(), "a form or text POST steers nothing");
    assert_eq!(post("application/json; charset=utf-8").await.status, 200);
    assert_eq!(r.dome.ops(), ["stop"]);
}

#[tokio::test]
async fn a_relay_that_does_not_read_its_answers_cannot_pile_commands_up() {
    let r = rig(Duration::from_millis(200));
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let gate = Arc::new(Semaphore::new(1));
    let (replies, mut rx) = mpsc::channel(1);
    for id in 1..=3 {
        s.answer_relay(&gate, &replies, &cc, id, "dome", &mv(500));
    }
    // The first is under way; the second is refused at once, the third
    // finds the answer channel full and gets nothing.
    match rx.recv().await {
        Some(Control::PtzResult { id: 2, reply: PtzReply::Refused { code, reason, .. } }) => {
            assert_eq!(code, PtzErrorCode::Unavailable);
            assert!(reason.contains("under way"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(rx.recv().await, Some(Control::PtzResult { id: 1, reply: PtzReply::Done { .. } })));
    assert_eq!(r.dome.ops(), ["move 500 0 0 300"], "refused commands never reached the camera");
    assert_eq!(gate.available_permits(), 1, "the answered command freed its place");
}

#[tokio::test]
async fn a_site_named_master_is_not_the_master_room() {
    let r = rig(Duration::ZERO);
    let s = &r.service;
    let master = Requester::Master { operator: "sala".into() };
    assert!(code(&s.submit(&master, "dome", &PtzCommand::Stop).reply().await).is_none());
    let reply = s.submit(&site(MASTER_SITE, "sala"), "dome", &PtzCommand::Release).reply().await;
    assert_eq!(code(&reply), Some(PtzErrorCode::Forbidden), "{reply:?}");
    s.drop_site(MASTER_SITE);
    assert_eq!(
        s.holders()[0].holder.as_ref().map(|h| h.controller.label()),
        Some("sala@master".into()),
        "the master room keeps its lock"
    );
}

#[tokio::test]
async fn commands_to_a_slow_camera_keep_their_order_and_do_not_block_the_caller() {
    let r = rig(Duration::from_millis(100));
    let s = &r.service;
    let cc = site("carabinieri", "rossi");
    let started = Instant::now();
    let a = s.submit(&cc, "dome", &mv(500));
    let b = s.submit(&cc, "dome", &PtzCommand::Stop);
    let c = s.submit(&cc, "dome", &PtzCommand::GotoPreset { preset: "1".into() });
    assert!(started.elapsed() < Duration::from_millis(50), "submit never waits on the camera");
    let (c, b, a) = (c.reply().await, b.reply().await, a.reply().await);
    assert!([a, b, c].iter().all(|x| code(x).is_none()));
    assert_eq!(r.dome.ops(), ["move 500 0 0 300", "stop", "goto 1"]);
    match s.submit(&cc, "dome", &PtzCommand::Presets).reply().await {
        PtzReply::Done { presets, holder: Some(_), .. } => assert_eq!(presets[0].name, "Ingresso"),
        other => panic!("{other:?}"),
    }
}
