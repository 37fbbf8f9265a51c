//! Reading, checking and describing `agent.toml`.

use super::*;
use crate::sources::rtsp::RtspTransport;
use ponte_proto::media::Codec;

/// `toml` written to an `agent.toml` of its own.
fn file(toml: &str) -> Result<std::path::PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ponte-cfg-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let p = dir.join("agent.toml");
    std::fs::write(&p, toml)?;
    Ok(p)
}

fn parse(toml: &str) -> Result<AgentConfig> {
    AgentConfig::load(&file(toml)?)
}

const BASE: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[[relay]]
site = "carabinieri"
addr = "127.0.0.1:7443"
[[device]]
id = "zaist"
name = "rotatoria"
zone = "Zaist"
type = "fixed-quad-optic"
source = "synthetic"
"#;

#[test]
fn a_bad_site_entry_is_named_by_id_position_and_line() {
    let toml = format!(
        "{BASE}[[site]]\nid = \"carabinieri\"\nallow = [\"*\"]\n\n\
         [[site]]\nid = \"questura\"\nallow = [\"*\"]\nbudget_mbps = \"lots\"\n"
    );
    let line = toml.lines().position(|l| l.starts_with("budget_mbps")).unwrap() + 1;
    let err = format!("{:#}", parse(&toml).unwrap_err());
    assert!(
        err.contains(&format!(
            "`[[site]]` #2 (id \"questura\"), key `budget_mbps` (line {line}): invalid type"
        )),
        "{err}"
    );
    assert!(!err.contains("site[1]"), "{err}");
}

#[test]
fn shaping_budget_priorities_and_synthetic_bitrates_load() {
    let toml = format!(
        "{BASE}[device.synthetic]\nmain_kbps = 4000\nmain_width = 960\nmain_height = 540\nsub_kbps = 500\n\
         [[site]]\nid = \"carabinieri\"\nallow = [\"*\"]\nbudget_mbps = 16\nburst_kb = 512\n\
         priority = {{ critical = [\"camera:zaist-1\"], low = [\"zone:Zaist\"] }}\n"
    );
    let c = parse(&toml).unwrap();
    let s = c.devices[0].source.synthetic().unwrap();
    assert_eq!(
        (s.main_kbps, s.main_width, s.main_height, s.sub_kbps),
        (Some(4000), Some(960), Some(540), Some(500))
    );
    let p = c.sites[0].compile().unwrap();
    assert_eq!((p.budget_mbps, p.burst_kb), (Some(16.0), Some(512)));
    assert_eq!(p.priority.critical.len(), 1);

    let typo = toml.replace("critical =", "critcal =");
    assert!(format!("{:#}", parse(&typo).unwrap_err()).contains("critcal"));
    let odd = toml.replace("main_width = 960", "main_width = 961");
    assert!(format!("{:#}", parse(&odd).unwrap_err()).contains("[device.synthetic]"));
    let rtsp = format!("{BASE}[device.synthetic]\nmain_kbps = 1\n").replace(
        "source = \"synthetic\"",
        "source = \"rtsp\"\n[[device.lens]]\nmain = \"rtsp://h/1\"\n[[device.lens]]\nmain = \"rtsp://h/2\"\n\
         [[device.lens]]\nmain = \"rtsp://h/3\"\n[[device.lens]]\nmain = \"rtsp://h/4\"",
    );
    assert!(format!("{:#}", parse(&rtsp).unwrap_err()).contains("only applies to `source = \"synthetic\"`"));
}

#[test]
fn ptz_timings_and_onvif_tables_are_checked() {
    let c = parse(BASE).unwrap();
    assert_eq!((c.ptz.lock_idle_secs, c.ptz.deadman_ms), (15, 1500));
    let c = parse(&format!("{BASE}[ptz]\nlock_idle_secs = 30\ndeadman_ms = 800\n")).unwrap();
    assert_eq!(c.ptz.arbiter().deadman, std::time::Duration::from_millis(800));
    let cases = [
        ("[ptz]\ndeadman_ms = 50\n", "`ptz.deadman_ms` = 50"),
        ("[ptz]\nlock_idle_secs = 0\n", "`ptz.lock_idle_secs` = 0"),
        ("[ptz]\nlock_idle_secs = 1\ndeadman_ms = 5000\n", "lower `deadman_ms`"),
        ("[ptz]\ndeadman = 5\n", "deadman"),
    ];
    for (toml, want) in cases {
        let err = format!("{:#}", parse(&format!("{BASE}{toml}")).expect_err(want));
        assert!(err.contains(want), "{err}");
    }
    let dome = "[[device]]\nid = \"dome\"\nname = \"d\"\ntype = \"dome-ptz\"\nsource = \"synthetic\"\n\
                [device.onvif]\nurl = \"http://10.1.2.3/onvif/ptz_service\"\npassword = \"pw\"\n";
    let c = parse(&format!("{BASE}{dome}")).unwrap();
    assert!(c.devices[1].onvif.is_some());
    let err = format!("{:#}", parse(&format!("{BASE}{}", dome.replace("dome-ptz", "dome"))).unwrap_err());
    assert!(err.contains("only applies to `type = \"dome-ptz\"`"), "{err}");
    let sim = "[[device]]\nid = \"dome\"\nname = \"d\"\ntype = \"dome-ptz\"\nsource = \"synthetic\"\n\
               [device.synthetic]\nptz = true\n";
    assert!(parse(&format!("{BASE}{sim}")).unwrap().devices[1].source.synthetic().unwrap().ptz);
    let err = format!("{:#}", parse(&format!("{BASE}{}", sim.replace("dome-ptz", "fixed"))).unwrap_err());
    assert!(err.contains("`device.synthetic.ptz`"), "{err}");
}

#[test]
fn example_config_loads() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent-minimal.toml");
    let c = AgentConfig::load(&p).unwrap();
    assert_eq!(c.relays.len(), 2);
}

/// The commented `[[operator]]` examples are real config: uncommented,
/// with a real hash and digest, they load.
#[test]
fn example_operators_load_once_uncommented() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent-minimal.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let (_, digest) = crate::operators::new_token();
    let phc = crate::operators::hash_password("example password").unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if ["[[operator]]", "name = ", "password_hash = ", "token_sha256 = "]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("$argon2id$v=19$m=19456,t=2,p=1$...$...", &phc)
        .replace("<64 hex digits>", &digest);
    let c = parse(&uncommented).unwrap_or_else(|e| panic!("{e:#}\n{uncommented}"));
    let names: Vec<&str> = c.operators.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["sala-1", "vms-sala"]);
    assert_eq!(c.management.listen, "127.0.0.1:9090".parse::<SocketAddr>().unwrap());
}

fn vars(list: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

/// `[[site]]`, `[[relay]]`, `[[device]]` are reached by their number
/// from 1; a variable that names nothing stops the load, named.
#[test]
fn environment_reaches_array_tables_and_refuses_what_names_nothing() {
    let p = file(&format!("{BASE}[[site]]\nid = \"carabinieri\"\nallow = [\"*\"]\n")).unwrap();
    let c = AgentConfig::load_with(
        &p,
        vars(&[
            ("PONTE_SITE__1__BUDGET_MBPS", "20"),
            ("PONTE_RELAY__1__ADDR", "127.0.0.1:9443"),
            ("PONTE_DEVICE__1__ZONE", "Po"),
            ("PONTE_AGENT__MAX_SUBSCRIPTIONS_PER_SESSION", "64"),
        ]),
    )
    .unwrap();
    assert_eq!(c.sites[0].compile().unwrap().budget_mbps, Some(20.0));
    assert_eq!(c.relays[0].addr, "127.0.0.1:9443".parse::<SocketAddr>().unwrap());
    assert_eq!((c.devices[0].zone.as_str(), c.devices[0].id.as_str()), ("Po", "zaist"));
    assert_eq!(c.agent.max_subscriptions_per_session, 64);
    let err = format!(
        "{:#}",
        AgentConfig::load_with(
            &p,
            vars(&[
                ("PONTE_SITE__2__BUDGET_MBPS", "20"),
                ("PONTE_AGENT_ID", "x"),
                ("PONTE_OPERATOR__1__NAME", "a")
            ])
        )
        .unwrap_err()
    );
    for want in ["PONTE_SITE__2__BUDGET_MBPS", "PONTE_AGENT_ID", "PONTE_OPERATOR__1__NAME", "agent.toml"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn loads_and_derives_lens_ids() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.devices[0].lens_count(), 4);
    assert_eq!(c.devices[0].camera_id(3), "zaist-3");
}

#[test]
fn unknown_key_is_named() {
    let err = format!("{:#}", parse(&BASE.replace("zone = ", "zoen = ")).unwrap_err());
    assert!(err.contains("zoen"), "{err}");
}

#[test]
fn duplicate_device_is_refused() {
    let twice = format!(
        "{BASE}\n[[device]]\nid = \"zaist\"\nname = \"x\"\ntype = \"dome\"\nsource = \"synthetic\"\n"
    );
    let err = format!("{:#}", parse(&twice).unwrap_err());
    assert!(err.contains("zaist"), "{err}");
}

const RTSP: &str = r#"
[[device]]
id = "porta-po"
name = "porta Po"
type = "fixed-bi-optic"
source = "rtsp"
username = "ponte"
password = "s3cret"
transport = "udp"
stall_secs = 7
codec = "h265"
[[device.lens]]
main = "rtsp://10.1.2.3/ch1/main"
sub = "rtsp://10.1.2.3/ch1/sub"
[[device.lens]]
main = "rtsp://10.1.2.3/ch2/main"
codec = "h264"
"#;

#[test]
fn rtsp_device_loads_with_lenses_qualities_and_codec_hints() {
    let c = parse(&format!("{BASE}{RTSP}")).unwrap();
    let d = &c.devices[1];
    let rtsp = d.source.rtsp().unwrap();
    assert_eq!((rtsp.transport, d.lens_count()), (RtspTransport::Udp, 2));
    assert_eq!(d.qualities(1), [Quality::Main, Quality::Sub]);
    assert_eq!(d.qualities(2), [Quality::Main], "no `sub` URL, no substream");
    assert_eq!((d.codec_hint(1), d.codec_hint(2)), (Codec::H265, Codec::H264));
    assert_eq!(rtsp.stall_timeout(), std::time::Duration::from_secs(7));
    assert_eq!(d.credentials().unwrap(), Some(("ponte".into(), "s3cret".into())));
    assert!(!format!("{c:?}").contains("s3cret"), "Debug never shows a password");
    // Synthetic devices offer both qualities, H.264.
    assert_eq!(c.devices[0].qualities(3), [Quality::Main, Quality::Sub]);
    assert_eq!(c.devices[0].codec_hint(1), Codec::H264);
}

#[test]
fn rtsp_config_errors_name_the_key_and_the_file() {
    let cases = [
        (RTSP.replace("rtsp://10.1.2.3/ch2/main", "http://10.1.2.3/ch2"), "`main`"),
        (RTSP.replace("rtsp://10.1.2.3/ch1/sub", "rtsp://u:pw@"), "`sub`"),
        (RTSP.replace("main = \"rtsp://10.1.2.3/ch2/main\"", "mian = \"x\""), "mian"),
        (RTSP.replace("transport = \"udp\"", "transport = \"sctp\""), "sctp"),
        (RTSP.replace("type = \"fixed-bi-optic\"", "type = \"fixed-quad-optic\""), "[[device.lens]]"),
        (RTSP.replace("password = \"s3cret\"", "password = \"a\"\npassword_env = \"B\""), "password_env"),
        (RTSP.replace("username = \"ponte\"\n", ""), "username"),
        (RTSP.replace("stall_secs = 7", "stall_secs = 0"), "stall_secs"),
        (
            RTSP.replace("password = \"s3cret\"", "password_env = \"SURELY_UNSET_CAMERA_PW\""),
            "SURELY_UNSET_CAMERA_PW",
        ),
        (RTSP.replace("password = \"s3cret\"", "password_env = \"PONTE_CAMERA_PW\""), "PONTE_*"),
        (
            "[[device]]\nid = \"s\"\nname = \"s\"\ntype = \"dome\"\nsource = \"synthetic\"\n\
             [[device.lens]]\nmain = \"rtsp://h/\"\n"
                .to_owned(),
            "only applies to `source = \"rtsp\"`",
        ),
    ];
    for (toml, key) in cases {
        let err = format!("{:#}", parse(&format!("{BASE}{toml}")).expect_err(key));
        assert!(err.contains(key), "error should name {key}: {err}");
        assert!(err.contains("agent.toml"), "error should name the file: {err}");
        assert!(!err.contains("s3cret") && !err.contains(":pw@"), "no password in errors: {err}");
    }
}

/// The file's `[[device]]` tables written back by `Serialize`.
fn write_devices(devices: &[Device]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        device: &'a [Device],
    }
    toml::to_string(&Doc { device: devices }).unwrap()
}

#[test]
fn each_source_round_trips_through_the_file() {
    let replay = "[[device]]\nid = \"bench\"\nname = \"b\"\ntype = \"dome\"\nsource = \"replay\"\n\
                  [device.replay]\nmain_kbps = 6000\nfps = 30\n";
    let plain = "[[device]]\nid = \"plain\"\nname = \"p\"\ntype = \"dome\"\nsource = \"synthetic\"\n";
    // Passwords are written as `***` (never serialized): the RTSP device
    // here has a user without one.
    let rtsp = RTSP.replace("password = \"s3cret\"\n", "on_demand = true\n");
    let toml = format!(
        "{BASE}[device.synthetic]\nmain_kbps = 4000\nsub_kbps = 500\n{rtsp}{replay}{plain}\
         [device.onvif]\nurl = \"http://10.1.2.3/onvif/ptz_service\"\n"
    )
    .replace("name = \"p\"\ntype = \"dome\"", "name = \"p\"\ntype = \"dome-ptz\"");
    let c = parse(&toml).unwrap();
    let kinds: Vec<SourceKind> = c.devices.iter().map(|d| d.source.kind()).collect();
    assert_eq!(kinds, [SourceKind::Synthetic, SourceKind::Rtsp, SourceKind::Replay, SourceKind::Synthetic]);
    let rtsp = c.devices[1].source.rtsp().unwrap();
    assert_eq!((rtsp.lenses.len(), rtsp.on_demand, rtsp.codec), (2, true, Some(Codec::H265)));

    let written = write_devices(&c.devices);
    let head = BASE.split("[[device]]").next().unwrap();
    let again = parse(&format!("{head}{written}")).unwrap_or_else(|e| panic!("{e:#}\n{written}"));
    assert_eq!(again.devices, c.devices, "{written}");
    for key in ["transport =", "on_demand =", "[device.replay]", "[device.synthetic]"] {
        assert_eq!(written.matches(key).count(), 1, "{key} only for its source:\n{written}");
    }
}

#[test]
fn a_key_of_another_source_is_refused_by_name_and_line() {
    let synthetic = "[[device]]\nid = \"s\"\nname = \"s\"\ntype = \"dome\"\nsource = \"synthetic\"\n";
    let cases = [
        (
            synthetic.replace("synthetic\"\n", "synthetic\"\n[[device.lens]]\nmain = \"rtsp://h/\"\n"),
            "device.lens",
        ),
        (format!("{synthetic}username = \"u\"\n"), "device.username"),
        (format!("{synthetic}password = \"s3cret\"\n"), "device.password"),
        (format!("{synthetic}password_env = \"CAMERA_PASSWORD\"\n"), "device.password_env"),
        (format!("{synthetic}transport = \"udp\"\n"), "device.transport"),
        (format!("{synthetic}stall_secs = 3\n"), "device.stall_secs"),
        (format!("{synthetic}on_demand = true\n"), "device.on_demand"),
        (format!("{synthetic}codec = \"h265\"\n"), "device.codec"),
        (synthetic.replace("\"synthetic\"", "\"replay\"") + "on_demand = false\n", "device.on_demand"),
    ];
    let line = BASE.lines().count() + 1;
    for (device, key) in cases {
        let err = format!("{:#}", parse(&format!("{BASE}{device}")).expect_err(key));
        assert!(
            err.contains(&format!(
                "`[[device]]` #2 (id \"s\") (line {line}): device `s`: `{key}` only applies to `source = \"rtsp\"`"
            )),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
    let tables = [
        (RTSP.to_owned() + "[device.synthetic]\nmain_kbps = 1\n", "[device.synthetic]", "synthetic"),
        (RTSP.to_owned() + "[device.replay]\nfps = 5\n", "[device.replay]", "replay"),
        (synthetic.to_owned() + "[device.replay]\nfps = 5\n", "[device.replay]", "replay"),
        (
            synthetic.replace("\"synthetic\"", "\"replay\"") + "[device.synthetic]\n",
            "[device.synthetic]",
            "synthetic",
        ),
    ];
    for (device, key, source) in tables {
        let err = format!("{:#}", parse(&format!("{BASE}{device}")).expect_err(key));
        assert!(err.contains(&format!("`{key}` only applies to `source = \"{source}\"`")), "{err}");
    }
}

#[test]
fn an_unknown_key_is_refused_whatever_the_source() {
    for (toml, typo) in [
        (format!("{BASE}{}", RTSP.replace("stall_secs = 7", "stall_sec = 7")), "stall_sec"),
        (format!("{BASE}{}", RTSP.replace("sub = ", "substream = ")), "substream"),
        (BASE.replace("zone = ", "zoen = "), "zoen"),
        (format!("{BASE}[device.synthetic]\nmain_kpbs = 1\n"), "main_kpbs"),
        (format!("{BASE}{}", RTSP.replace("\"rtsp\"", "\"replay\"") + "[device.replay]\nfsp = 1\n"), "fsp"),
    ] {
        let err = format!("{:#}", parse(&toml).expect_err(typo));
        assert!(err.contains(&format!("unknown field `{typo}`")), "{err}");
    }
}

/// The environment reaches the keys of the device's source even when
/// the file leaves them out, and a key of another source set from the
/// environment is refused like one in the file.
#[test]
fn environment_sets_source_keys_the_file_leaves_out() {
    let p = file(&format!("{BASE}{RTSP}")).unwrap();
    let c = AgentConfig::load_with(
        &p,
        vars(&[("PONTE_DEVICE__2__ON_DEMAND", "true"), ("PONTE_DEVICE__1__SYNTHETIC__MAIN_KBPS", "900")]),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(c.devices[1].source.rtsp().unwrap().on_demand);
    assert_eq!(c.devices[0].source.synthetic().unwrap().main_kbps, Some(900));
    let err =
        format!("{:#}", AgentConfig::load_with(&p, vars(&[("PONTE_DEVICE__1__USERNAME", "u")])).unwrap_err());
    assert!(err.contains("`device.username` only applies to `source = \"rtsp\"`"), "{err}");
}

/// `browser_h264 = "transcode"`: the lenses gain a substream, `[agent]
/// max_transcodes` defaults to 4; a misspelt value, a `sub` URL beside the
/// transcode, the key on a synthetic device and a misspelt cap are each
/// refused naming the key.
#[test]
fn browser_h264_transcode_loads_and_its_mistakes_name_the_key() {
    let transcoded = RTSP
        .replace("codec = \"h265\"", "codec = \"h265\"\nbrowser_h264 = \"transcode\"")
        .replace("sub = \"rtsp://10.1.2.3/ch1/sub\"\n", "");
    let c = parse(&format!("{BASE}{transcoded}")).unwrap();
    let d = &c.devices[1];
    assert!(d.source.rtsp().unwrap().transcodes());
    assert_eq!(d.qualities(2), [Quality::Main, Quality::Sub], "every lens gets the transcode");
    assert_eq!(c.agent.max_transcodes, DEFAULT_MAX_TRANSCODES);
    let catalog = crate::sources::cameras::catalog_of(&c.devices);
    assert_eq!((catalog[4].sub_codec, catalog[4].sub_transcoded), (Some(Codec::H264), true));
    assert_eq!(catalog[4].substream(), Some((Codec::H264, true)));
    assert_eq!((catalog[0].sub_codec, catalog[0].sub_transcoded), (None, false), "synthetic unchanged");
    let capped = parse(&format!(
        "{}{transcoded}",
        BASE.replace("id = \"master\"", "id = \"master\"\nmax_transcodes = 1")
    ));
    assert_eq!(capped.unwrap().agent.max_transcodes, 1);

    let cases = [
        (transcoded.replace("\"transcode\"", "\"transcoding\""), "transcoding"),
        (
            RTSP.replace("codec = \"h265\"", "codec = \"h265\"\nbrowser_h264 = \"transcode\""),
            "`device.browser_h264 = \"transcode\"` makes each lens's substream from its main stream, but `device.lens` #1 also has a `sub` URL",
        ),
        (transcoded.replace("browser_h264", "browser_h246"), "browser_h246"),
        (
            "[[device]]\nid = \"s\"\nname = \"s\"\ntype = \"dome\"\nsource = \"synthetic\"\nbrowser_h264 = \"transcode\"\n"
                .to_owned(),
            "`device.browser_h264` only applies to `source = \"rtsp\"`",
        ),
    ];
    for (toml, key) in cases {
        let err = format!("{:#}", parse(&format!("{BASE}{toml}")).expect_err(key));
        assert!(err.contains(key), "error should name {key}: {err}");
    }
    let misspelt = BASE.replace("id = \"master\"", "id = \"master\"\nmax_transcode = 1");
    let err = format!("{:#}", parse(&misspelt).unwrap_err());
    assert!(err.contains("max_transcode"), "{err}");
}

#[test]
fn onvif_events_apply_to_any_camera_and_ptz_keys_to_domes_only() {
    let fixed = "[[device]]\nid = \"gate\"\nname = \"g\"\ntype = \"fixed\"\nsource = \"synthetic\"\n\
                 [device.onvif]\nurl = \"http://10.1.2.3/onvif/device_service\"\nevents = true\n";
    let c = parse(&format!("{BASE}{fixed}")).unwrap();
    let onvif = c.devices[1].onvif.as_ref().unwrap();
    assert!(onvif.events && onvif.events_url.is_none());
    let ptz = crate::ptz::devices(&c.devices).unwrap();
    assert!(ptz.is_empty(), "a fixed camera with ONVIF events gets no PTZ endpoint");
    let dome = "[[device]]\nid = \"dome\"\nname = \"d\"\ntype = \"dome-ptz\"\nsource = \"synthetic\"\n\
                [device.onvif]\nurl = \"http://10.1.2.3/onvif/ptz_service\"\nevents = true\n\
                events_url = \"http://10.1.2.3:8080/onvif/Events\"\n";
    let c = parse(&format!("{BASE}{dome}")).unwrap();
    assert_eq!(
        c.devices[1].onvif.as_ref().unwrap().events_url.as_deref(),
        Some("http://10.1.2.3:8080/onvif/Events")
    );
    assert_eq!(crate::ptz::devices(&c.devices).unwrap().len(), 1, "the dome keeps its PTZ endpoint");
    assert!(
        !parse(&format!("{BASE}{}", dome.replace("events = true", "events = false"))).unwrap().devices[1]
            .onvif
            .as_ref()
            .unwrap()
            .events
    );

    let cases = [
        (fixed.replace("events = true", "events = false"), "or to any camera with `events = true`"),
        (fixed.replace("events = true\n", ""), "only applies to `type = \"dome-ptz\"`"),
        (
            fixed.replace("events = true", "events = true\nprofile = \"Profile_1\""),
            "`device.onvif.profile` is for PTZ",
        ),
        (
            fixed.replace(
                "events = true",
                "events = true\nmedia_url = \"http://10.1.2.3/onvif/media_service\"",
            ),
            "`device.onvif.media_url` is for PTZ",
        ),
        (
            fixed.replace("events = true", "events = true\nevents_url = \"https://10.1.2.3/e\""),
            "`device.onvif.events_url`",
        ),
        (
            fixed.replace("events = true", "events = true\nevents_url = \"not a url\""),
            "`device.onvif.events_url`",
        ),
        (
            fixed.replace("http://10.1.2.3/onvif/device_service", "10.1.2.3"),
            "`device.onvif.url` is not a URL",
        ),
        (fixed.replace("events = true", "events = true\ntimeout_ms = 5"), "`device.onvif.timeout_ms` = 5"),
        (fixed.replace("events = true", "events = \"maybe\""), "events"),
        (fixed.replace("events = true", "event = true"), "event"),
    ];
    for (toml, want) in cases {
        let err = format!("{:#}", parse(&format!("{BASE}{toml}")).expect_err(want));
        assert!(err.contains(want) && err.contains("gate"), "error should name {want} and the device: {err}");
    }
}
