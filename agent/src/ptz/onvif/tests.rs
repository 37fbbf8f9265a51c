use super::soap::*;
use super::*;
use crate::secret::Secret;
use ponte_tests::onvif_camera::{require_onvif_camera, OnvifCamera, OnvifCameraOptions, RecordedOp};
use std::time::Instant;

fn endpoint() -> Endpoint {
    Endpoint::parse("http://10.1.2.3/onvif/ptz_service", "device.onvif.url").unwrap()
}

fn answer(status: u16, body: &str) -> HttpAnswer {
    HttpAnswer { status, www_authenticate: None, body: Bytes::from(body.to_owned()) }
}

fn run<T>(
    op: &'static str,
    status: u16,
    body: &str,
    extract: impl FnOnce(Node) -> Result<T, String>,
) -> Result<T, OnvifError> {
    interpret("dome-1", op, &endpoint(), &answer(status, body), extract)
}

const ENV12: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:SOAP-ENC="http://www.w3.org/2003/05/soap-encoding" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:ter="http://www.onvif.org/ver10/error">
<SOAP-ENV:Header></SOAP-ENV:Header>
<SOAP-ENV:Body>BODY</SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

fn wrap(body: &str) -> String {
    ENV12.replace("BODY", body)
}

#[test]
fn numbers_and_durations_in_onvif_form() {
    assert_eq!(per_mille_to_generic(500), "0.5");
    assert_eq!(per_mille_to_generic(-1000), "-1");
    assert_eq!(per_mille_to_generic(0), "0");
    assert_eq!(per_mille_to_generic(-7), "-0.007");
    assert_eq!(per_mille_to_generic(125), "0.125");
    assert_eq!(xs_duration(Duration::from_millis(1500)), "PT1.5S");
    assert_eq!(xs_duration(Duration::from_secs(2)), "PT2S");
    assert_eq!(xs_duration(Duration::from_millis(250)), "PT0.25S");
    assert_eq!(generic_to_per_mille("0.5"), Some(500));
    assert_eq!(generic_to_per_mille("-1"), Some(-1000));
    assert_eq!(generic_to_per_mille("1E-3"), Some(1));
    assert_eq!(generic_to_per_mille("178.5"), None, "degrees, not the generic space");
    assert_eq!(generic_to_per_mille("NaN"), None);
    assert_eq!(generic_to_per_mille("fast"), None);
}

#[test]
fn digest_matches_ws_security_formula() {
    // Base64(SHA1(nonce + created + password)), computed independently with Python's hashlib.
    let nonce: Vec<u8> = (0u8..16).collect();
    let h = security_header("admin", "secret", &nonce, "2026-01-01T00:00:00.000Z");
    assert!(h.contains(">/PGfLJjPPKwfA6OflIdGffTARFw=</wsse:Password>"), "{h}");
    assert!(h.contains(">AAECAwQFBgcICQoLDA0ODw==</wsse:Nonce>"), "{h}");
    assert!(h.contains("<wsu:Created>2026-01-01T00:00:00.000Z</wsu:Created>"), "{h}");
    assert!(h.contains("<wsse:Username>admin</wsse:Username>"));
    let created = created_now();
    assert_eq!(created.len(), 24, "{created}");
    assert!(created.ends_with('Z') && created.as_bytes()[10] == b'T', "{created}");
}

#[test]
fn interpolated_text_is_escaped() {
    let body = continuous_move_body("P<1>&\"'", 1, -2, 3, Some(Duration::from_secs(1)));
    assert!(body.contains("<tptz:ProfileToken>P&lt;1&gt;&amp;&quot;&apos;</tptz:ProfileToken>"), "{body}");
    let doc = envelope(Some(&security_header("a<b", "p", b"n", "c")), &body);
    let parsed = roxmltree::Document::parse(&doc).expect("well-formed");
    let token = parsed.descendants().find(|n| n.tag_name().name() == "ProfileToken").unwrap();
    assert_eq!(token.text(), Some("P<1>&\"'"));
    let user = parsed.descendants().find(|n| n.tag_name().name() == "Username").unwrap();
    assert_eq!(user.text(), Some("a<b"));
}

#[test]
fn reads_real_world_status_presets_and_profiles() {
    // Shaped like a Hikvision DS-2DE answer.
    let status = wrap(
        r#"<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>
<tt:PanTilt space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace" x="0.244444" y="-0.6"></tt:PanTilt>
<tt:Zoom space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace" x="0.0500"></tt:Zoom></tt:Position>
<tt:MoveStatus><tt:PanTilt>IDLE</tt:PanTilt><tt:Zoom>MOVING</tt:Zoom></tt:MoveStatus>
<tt:UtcTime>2026-11-25T15:30:00Z</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"#,
    );
    let p = run("GetStatus", 200, &status, parse_status).unwrap();
    assert_eq!(p, PtzPosition { pan: Some(244), tilt: Some(-600), zoom: Some(50), moving: true });
    // ONVIF 1.x style: MoveStatus holds the state; no position.
    let old = wrap(
        "<tptz:GetStatusResponse><tptz:PTZStatus><tt:MoveStatus>IDLE</tt:MoveStatus>\
         <tt:UtcTime>2026-11-25T15:30:00Z</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>",
    );
    assert_eq!(run("GetStatus", 200, &old, parse_status).unwrap(), PtzPosition::default());

    let presets = wrap(
        r#"<tptz:GetPresetsResponse><tptz:Preset token="1"><tt:Name>Ingresso</tt:Name><tt:PTZPosition>
<tt:PanTilt x="0.1" y="0.2"/><tt:Zoom x="0"/></tt:PTZPosition></tptz:Preset>
<tptz:Preset token="2"><tt:Name>Rotatoria &amp; via Po</tt:Name></tptz:Preset><tptz:Preset token="3"/>
<tptz:Preset><tt:Name>tokenless</tt:Name></tptz:Preset></tptz:GetPresetsResponse>"#,
    );
    let list = run("GetPresets", 200, &presets, parse_presets).unwrap();
    let got: Vec<(&str, &str)> = list.iter().map(|p| (p.token.as_str(), p.name.as_str())).collect();
    assert_eq!(got, [("1", "Ingresso"), ("2", "Rotatoria & via Po"), ("3", "")]);

    // The first profile (JPEG substream) has no PTZ configuration.
    let profiles = wrap(
        r#"<trt:GetProfilesResponse><trt:Profiles fixed="true" token="Profile_0"><tt:Name>jpeg</tt:Name></trt:Profiles>
<trt:Profiles fixed="true" token="Profile_1"><tt:Name>mainStream</tt:Name><tt:PTZConfiguration token="PTZToken">
<tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount><tt:NodeToken>PTZNODETOKEN</tt:NodeToken></tt:PTZConfiguration></trt:Profiles>
</trt:GetProfilesResponse>"#,
    );
    assert_eq!(
        run("GetProfiles", 200, &profiles, |r| Ok(first_ptz_profile(r))).unwrap().as_deref(),
        Some("Profile_1")
    );
    let none = wrap(
        r#"<trt:GetProfilesResponse><trt:Profiles token="a"><tt:Name>x</tt:Name></trt:Profiles></trt:GetProfilesResponse>"#,
    );
    assert_eq!(run("GetProfiles", 200, &none, |r| Ok(first_ptz_profile(r))).unwrap(), None);
}

#[test]
fn faults_are_named_with_code_and_reason() {
    let no_token = wrap(
        r#"<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value><SOAP-ENV:Subcode>
<SOAP-ENV:Value>ter:InvalidArgVal</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>ter:NoToken</SOAP-ENV:Value>
</SOAP-ENV:Subcode></SOAP-ENV:Subcode></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="it">Preset inesistente</SOAP-ENV:Text>
<SOAP-ENV:Text xml:lang="en">The requested preset token does not exist.</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>"#,
    );
    let e = run("GotoPreset", 400, &no_token, |_| Ok(())).unwrap_err();
    assert_eq!(e.code(), PtzErrorCode::CameraError);
    let msg = e.to_string();
    assert!(msg.contains("camera `dome-1`") && msg.contains("GotoPreset"), "{msg}");
    assert!(msg.contains("Sender/InvalidArgVal/NoToken"), "{msg}");
    assert!(msg.contains("The requested preset token does not exist."), "{msg}");

    // NotAuthorized, with HTTP 400 (as many cameras) or 500.
    let not_auth = wrap(
        r#"<env:Fault xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Code><env:Value>env:Sender</env:Value>
<env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code>
<env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason></env:Fault>"#,
    );
    for status in [400, 500] {
        let e = run("GetStatus", status, &not_auth, |_| Ok(())).unwrap_err();
        assert!(matches!(e, OnvifError::Auth { .. }), "{e:?}");
        assert!(e.to_string().contains("check `device.onvif` username/password"), "{e}");
    }
    // A bare 401, and one asking for HTTP digest.
    let e = run("Stop", 401, "", |_| Ok(())).unwrap_err();
    assert!(matches!(e, OnvifError::Auth { .. }) && e.to_string().contains("HTTP 401"), "{e}");
    let mut digest = answer(401, "<html>401</html>");
    digest.www_authenticate = Some("Digest realm=\"IP Camera\", nonce=\"x\"".into());
    let e = interpret("dome-1", "Stop", &endpoint(), &digest, |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("HTTP digest"), "{e}");

    // SOAP 1.1 fault from an older firmware.
    let soap11 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>Invalid profile</faultstring></s:Fault></s:Body></s:Envelope>"#;
    let e = run("GetPresets", 500, soap11, |_| Ok(())).unwrap_err();
    assert!(
        matches!(&e, OnvifError::Fault { code, reason, .. } if code == "Client" && reason == "Invalid profile"),
        "{e:?}"
    );
}

#[test]
fn broken_answers_are_errors_not_panics() {
    let e = run("GetStatus", 404, "<html><body>Not Found</body></html>", |_| Ok(())).unwrap_err();
    assert!(matches!(e, OnvifError::Http { status: 404, .. }), "{e:?}");
    assert!(e.to_string().contains("device.onvif.url"), "{e}");
    for body in ["", "not xml", "<a/>", "\u{0}\u{1}", &wrap(""), &wrap("<tptz:StopResponse/>")] {
        let e = run("GetStatus", 200, body, parse_status).unwrap_err();
        assert!(matches!(e, OnvifError::Parse { .. }), "{body:?}: {e:?}");
    }
    let e = run("GetStatus", 200, &wrap("<tptz:GetStatusResponse/>"), parse_status).unwrap_err();
    assert!(e.to_string().contains("no PTZStatus"), "{e}");
    // No DTDs (entity expansion).
    let dtd = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
    assert!(matches!(run("Stop", 200, dtd, |_| Ok(())), Err(OnvifError::Parse { .. })));
    let bytes =
        HttpAnswer { status: 200, www_authenticate: None, body: Bytes::from_static(&[0xff, 0xfe, 0x00]) };
    assert!(interpret("d", "Stop", &endpoint(), &bytes, |_| Ok(())).is_err());
}

#[test]
fn hostile_answers_are_bounded_errors() {
    // Thousands of presets: an error naming the count, not a list of megabytes.
    let many: String = (0..3000)
        .map(|i| format!("<tptz:Preset token=\"{i}\"><tt:Name>p{i}</tt:Name></tptz:Preset>"))
        .collect();
    let body = wrap(&format!("<tptz:GetPresetsResponse>{many}</tptz:GetPresetsResponse>"));
    let e = run("GetPresets", 200, &body, parse_presets).unwrap_err();
    assert!(matches!(e, OnvifError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("lists 3000 presets; ponte relays at most 512"), "{e}");
    assert_eq!(e.code(), PtzErrorCode::CameraError);
    // Exactly the limit is fine; names are cleaned and cut.
    let huge = format!("a\u{9b}31m\nb{}", "\"".repeat(200));
    let limit: String = (0..MAX_PRESETS)
        .map(|i| format!("<tptz:Preset token=\"{i}\"><tt:Name>{}</tt:Name></tptz:Preset>", escape(&huge)))
        .collect();
    let body = wrap(&format!("<tptz:GetPresetsResponse>{limit}</tptz:GetPresetsResponse>"));
    let list = run("GetPresets", 200, &body, parse_presets).unwrap();
    assert_eq!(list.len(), MAX_PRESETS);
    assert_eq!(list[0].name.chars().count(), MAX_NAME_CHARS + 1, "{:?}", list[0].name);
    assert!(list[0].name.starts_with("a 31m b\"\"") && list[0].name.ends_with('…'), "{:?}", list[0].name);
    let json = serde_json::to_vec(&list).unwrap();
    assert!(json.len() < 128 << 10, "{} bytes", json.len());
    // A token GotoPreset could not send back.
    for token in ["x".repeat(65), "a\u{85}b".to_owned()] {
        let body = wrap(&format!(
            "<tptz:GetPresetsResponse><tptz:Preset token=\"{}\"/></tptz:GetPresetsResponse>",
            escape(&token)
        ));
        let e = run("GetPresets", 200, &body, parse_presets).unwrap_err();
        assert!(e.to_string().contains("is not a ReferenceToken"), "{e}");
    }

    // A fault of a megabyte, with control characters and a URL.
    let reason = format!("see http://10.1.2.3/admin\u{9b}2J\r\nforged {}", "x".repeat(1 << 20));
    let fault = wrap(&format!(
        "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:{}</SOAP-ENV:Value></SOAP-ENV:Code>\
         <SOAP-ENV:Reason><SOAP-ENV:Text xml:lang=\"en\">{}</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>",
        "R".repeat(10_000),
        escape(&reason)
    ));
    let e = run("GotoPreset", 400, &fault, |_| Ok(())).unwrap_err();
    let OnvifError::Fault { code, reason, .. } = &e else { panic!("{e:?}") };
    assert_eq!(code.chars().count(), MAX_CODE_CHARS + 1);
    assert_eq!(reason.chars().count(), MAX_FAULT_CHARS + 1);
    assert!(reason.starts_with("see http://10.1.2.3/admin 2J forged xxx"), "{reason}");
    assert!(!e.to_string().chars().any(char::is_control), "{e}");
    // Deeply nested subcodes.
    let mut code = "<SOAP-ENV:Value>s:Sender</SOAP-ENV:Value>".to_owned();
    for _ in 0..100 {
        code = format!("<SOAP-ENV:Value>ter:X</SOAP-ENV:Value><SOAP-ENV:Subcode>{code}</SOAP-ENV:Subcode>");
    }
    let deep = wrap(&format!("<SOAP-ENV:Fault><SOAP-ENV:Code>{code}</SOAP-ENV:Code></SOAP-ENV:Fault>"));
    let e = run("Stop", 500, &deep, |_| Ok(())).unwrap_err();
    let OnvifError::Fault { code, .. } = &e else { panic!("{e:?}") };
    assert_eq!(code.split('/').count(), MAX_CODE_LEVELS + 1, "{code}");
    // An unexpected element with a huge name; a huge non-XML error page.
    let odd = wrap(&format!("<{0}/>", "Z".repeat(100_000)));
    let e = run("Stop", 200, &odd, |_| Ok(())).unwrap_err();
    assert!(e.to_string().len() < 1024, "{e}");
    let page = format!("<html>\u{1b}]0;pwned\u{7}{}</html>", "y".repeat(1 << 20));
    let e = run("Stop", 503, &page, |_| Ok(())).unwrap_err();
    assert!(e.to_string().len() < 1024 && !e.to_string().chars().any(char::is_control), "{e}");
}

#[test]
fn cleaning_keeps_words_and_cuts_on_characters() {
    assert_eq!(clean("  a\n\tb  ", 10), "a b");
    assert_eq!(clean("abcdef", 3), "abc…");
    assert_eq!(clean("ab cdef", 3), "ab…");
    assert_eq!(clean("àèìòù", 2), "àè…");
    assert_eq!(clean("abc", 3), "abc");
    assert_eq!(clean("\u{1b}\u{9b}\u{0}", 10), "");
}

#[test]
fn settings_are_checked() {
    let settings = |url: &str| OnvifSettings { url: url.into(), ..OnvifSettings::default() };
    let e = OnvifPtz::new("d", &settings("https://10.0.0.1/onvif/ptz_service"), None, None).unwrap_err();
    assert!(e.to_string().contains("only http://"), "{e}");
    assert_eq!(e.code(), PtzErrorCode::Unsupported);
    assert!(OnvifPtz::new("d", &settings("10.0.0.1"), None, None).is_err());
    let c =
        OnvifPtz::new("d", &settings("http://[fd00::5]:8080/onvif/PTZ?x=1"), Some("u"), Some("p")).unwrap();
    assert_eq!(c.inner.ptz.host, "fd00::5");
    assert_eq!(c.inner.ptz.authority, "[fd00::5]:8080");
    assert_eq!(c.inner.ptz.path, "/onvif/PTZ?x=1");
    assert_eq!(c.inner.media.url, "http://[fd00::5]:8080/onvif/media_service");
    assert_eq!(c.inner.credentials, Some(("u".into(), "p".into())));
    let own = OnvifSettings {
        username: Some("ptz".into()),
        password: Some(Secret("ptzpw".into())),
        timeout_ms: Some(0),
        ..settings("http://cam/onvif/ptz_service")
    };
    assert!(OnvifPtz::new("d", &own, Some("u"), Some("p")).unwrap_err().to_string().contains("timeout_ms"));
    let own = OnvifSettings { timeout_ms: Some(500), ..own };
    let c = OnvifPtz::new("d", &own, Some("u"), Some("p")).unwrap();
    assert_eq!(c.inner.credentials, Some(("ptz".into(), "ptzpw".into())));
    assert_eq!(c.inner.timeout, Duration::from_millis(500));
    assert!(!format!("{c:?}").contains("ptzpw"));
    let parsed: OnvifSettings =
        toml_from("url = \"http://cam/onvif/ptz_service\"\nprofile = \"Profile_1\"\ntimeout_ms = 1500\n");
    assert_eq!(parsed.profile.as_deref(), Some("Profile_1"));
}

fn toml_from(text: &str) -> OnvifSettings {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

// --- against the schema-checked test camera (tests/onvif_camera.py) -----

fn client(camera: &OnvifCamera, user: &str, password: &str) -> OnvifPtz {
    let settings = OnvifSettings {
        url: camera.ptz_url(),
        username: Some(user.into()),
        password: Some(Secret(password.into())),
        ..OnvifSettings::default()
    };
    OnvifPtz::new("dome-test", &settings, None, None).unwrap()
}

fn assert_all_valid(ops: &[RecordedOp]) {
    for op in ops {
        assert!(op.valid && op.authorized && op.errors.is_empty(), "camera rejected {op:#?}");
    }
}

#[tokio::test]
async fn every_operation_is_valid_onvif() {
    if !require_onvif_camera() {
        return;
    }
    let camera = OnvifCamera::start("admin", "secret").await.unwrap();
    let ptz = client(&camera, "admin", "secret");
    ptz.continuous_move(500, -250, 100, Some(Duration::from_millis(1500))).await.unwrap();
    let moving = ptz.status().await.unwrap();
    assert!(moving.moving, "{moving:?}");
    // The camera integrates velocity over time: let it move a visible amount.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ptz.stop().await.unwrap();
    let stopped = ptz.status().await.unwrap();
    assert!(!stopped.moving, "{stopped:?}");
    assert!(stopped.pan.unwrap() >= 50 && stopped.tilt.unwrap() <= -25, "moved right and down: {stopped:?}");
    let presets = ptz.presets().await.unwrap();
    let got: Vec<(&str, &str)> = presets.iter().map(|p| (p.token.as_str(), p.name.as_str())).collect();
    assert_eq!(got, [("1", "Ingresso"), ("2", "Rotatoria")]);
    ptz.goto_preset("2").await.unwrap();
    // The camera's preset 2 sits at (-0.4, 0.25, 0.1).
    let at = ptz.status().await.unwrap();
    assert_eq!((at.pan, at.tilt, at.zoom, at.moving), (Some(-400), Some(250), Some(100), false));
    ptz.continuous_move(0, 0, -1000, None).await.unwrap();

    let ops = camera.recorded().await.unwrap();
    assert_all_valid(&ops);
    let names: Vec<&str> = ops.iter().filter_map(|o| o.op.as_deref()).collect();
    assert_eq!(
        names,
        [
            "GetProfiles",
            "ContinuousMove",
            "GetStatus",
            "Stop",
            "GetStatus",
            "GetPresets",
            "GotoPreset",
            "GetStatus",
            "ContinuousMove"
        ],
        "one GetProfiles, then the profile is cached"
    );
    assert!(ops.iter().skip(1).all(|o| o.profile.as_deref() == Some("Profile_1")), "{ops:#?}");
    let first = &ops[1];
    assert_eq!((first.pan, first.tilt, first.zoom), (Some(0.5), Some(-0.25), Some(0.1)));
    assert_eq!(first.timeout.as_deref(), Some("PT1.5S"));
    let last = &ops[8];
    assert_eq!(
        (last.pan, last.tilt, last.zoom, last.timeout.as_deref()),
        (Some(0.0), Some(0.0), Some(-1.0), None)
    );
    assert_eq!(ops[6].preset.as_deref(), Some("2"));
}

#[tokio::test]
async fn wrong_password_is_a_clear_auth_error() {
    if !require_onvif_camera() {
        return;
    }
    for auth_status in [400, 401] {
        let camera = OnvifCamera::start_with(OnvifCameraOptions {
            credentials: Some(("admin".into(), "secret".into())),
            auth_status,
            ..OnvifCameraOptions::default()
        })
        .await
        .unwrap();
        let settings = OnvifSettings {
            url: camera.ptz_url(),
            profile: Some("Profile_1".into()),
            ..OnvifSettings::default()
        };
        // The RTSP credentials are the fallback; here they are wrong.
        let ptz = OnvifPtz::new("dome-test", &settings, Some("admin"), Some("wrong")).unwrap();
        let e = ptz.status().await.unwrap_err();
        assert!(matches!(e, OnvifError::Auth { .. }), "{e:?}");
        assert_eq!(e.code(), PtzErrorCode::CameraError);
        let msg = e.to_string();
        assert!(msg.contains("dome-test") && msg.contains("check `device.onvif` username/password"), "{msg}");
        assert!(msg.contains("NotAuthorized"), "{msg}");
        let ops = camera.recorded().await.unwrap();
        assert_eq!(ops.len(), 1);
        assert!(ops[0].valid && !ops[0].authorized, "{ops:#?}");
    }
}

#[tokio::test]
async fn unknown_preset_reports_the_camera_fault() {
    if !require_onvif_camera() {
        return;
    }
    let camera = OnvifCamera::start("admin", "secret").await.unwrap();
    let ptz = client(&camera, "admin", "secret");
    let e = ptz.goto_preset("99").await.unwrap_err();
    assert_eq!(e.code(), PtzErrorCode::CameraError);
    let msg = e.to_string();
    assert!(msg.contains("GotoPreset") && msg.contains("NoToken"), "{msg}");
    assert!(msg.contains("The requested preset token '99' does not exist"), "{msg}");
    // XML specials in a token reach the camera intact (escaped on the wire).
    let odd = "a<&\"'>b";
    let e = ptz.goto_preset(odd).await.unwrap_err();
    assert!(e.to_string().contains("NoToken"), "{e}");
    let e = ptz.goto_preset("").await.unwrap_err();
    assert_eq!(e.code(), PtzErrorCode::Invalid);
    let ops = camera.recorded().await.unwrap();
    assert_all_valid(&ops);
    let presets: Vec<Option<&str>> = ops.iter().map(|o| o.preset.as_deref()).collect();
    assert_eq!(presets, [None, Some("99"), Some(odd)], "{ops:#?}");
}

#[tokio::test]
async fn silent_camera_times_out_on_time() {
    // Accepts connections (the kernel's backlog) and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = OnvifSettings {
        url: format!("http://{}/onvif/ptz_service", hole.local_addr().unwrap()),
        profile: Some("Profile_1".into()),
        timeout_ms: Some(300),
        ..OnvifSettings::default()
    };
    let ptz = OnvifPtz::new("dome-test", &settings, Some("admin"), Some("secret")).unwrap();
    let started = Instant::now();
    let e = ptz.stop().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, OnvifError::Timeout { .. }), "{e:?}");
    assert_eq!(e.code(), PtzErrorCode::Timeout);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1300), "{took:?}");
    assert!(e.to_string().contains("no answer within 300 ms"), "{e}");

    // A closed port: unreachable at once.
    let port = hole.local_addr().unwrap().port();
    drop(hole);
    let settings = OnvifSettings { url: format!("http://127.0.0.1:{port}/onvif/ptz_service"), ..settings };
    let ptz = OnvifPtz::new("dome-test", &settings, None, None).unwrap();
    let e = ptz.status().await.unwrap_err();
    assert!(matches!(e, OnvifError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("check `device.onvif.url`"), "{e}");
}

#[tokio::test]
async fn camera_without_ptz_profile_says_which_setting() {
    // GetProfiles answers with no PTZ profile: served by a one-shot raw HTTP responder.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("</s:Envelope>") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let body = wrap(
            r#"<trt:GetProfilesResponse><trt:Profiles token="p"><tt:Name>x</tt:Name></trt:Profiles></trt:GetProfilesResponse>"#,
        );
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    let settings =
        OnvifSettings { url: format!("http://{addr}/onvif/ptz_service"), ..OnvifSettings::default() };
    let ptz = OnvifPtz::new("dome-test", &settings, None, None).unwrap();
    let e = ptz.status().await.unwrap_err();
    assert!(matches!(e, OnvifError::NoPtzProfile { .. }), "{e:?}");
    assert!(e.to_string().contains("set `device.onvif.profile`"), "{e}");
    let request = server.await.unwrap();
    assert!(request.starts_with("POST /onvif/media_service HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains(
        "content-type: application/soap+xml; charset=utf-8; action=\"http://www.onvif.org/ver10/media/wsdl/getprofiles\""
    ), "{request}");
    assert!(!request.contains("<s:Header>"), "no credentials, no WS-Security header: {request}");
}
