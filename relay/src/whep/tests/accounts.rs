//! Local accounts: login, narrowed catalogs, guarded routes and the audit trail.

use super::{entry, eventually, fake, http, http_with, publish, push_frame, test_settings, viewer};
use crate::audit::RelayAudit;
use crate::auth::Auth;
use crate::web::router;
use crate::whep::offer::tests::CHROME_OFFER;
use crate::whep::WhepState;
use ponte_proto::media::{Codec, Quality};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::RTCSessionDescription;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_narrow_the_catalog_and_guard_every_route() {
    use crate::auth::{Accounts, AuthSettings, TokenConfig, ViewerConfig};
    let mut zaist = entry("zaist", Codec::H264);
    zaist.zone = "Zaist".into();
    let source = fake(vec![entry("duomo", Codec::H264), zaist]);
    let writer = publish(&source.hub, "duomo");
    for n in 0..5 {
        push_frame(&writer, n);
    }
    let (token, token_sha256) = crate::auth::new_token();
    let accounts = Accounts::from_config(
        &[ViewerConfig {
            user: "anna".into(),
            password_hash: crate::auth::hash_password("correct horse").unwrap(),
            cameras: Some(vec!["zone:centro".into()]),
            max_quality: None,
            rtsp_digest_ha1: None,
            ptz: false,
        }],
        &[TokenConfig {
            name: "vms".into(),
            token_sha256,
            cameras: Some(vec!["camera:duomo".into(), "camera:zaist".into()]),
            max_quality: Some(Quality::Sub),
            ptz: false,
        }],
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ponte-whep-accounts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let audit_path = dir.join("relay-audit.log");
    let audit = Arc::new(RelayAudit::open(&audit_path, "carabinieri-cremona", 1 << 20).unwrap());
    let settings = AuthSettings { failed_login_delay: Duration::from_millis(10), ..AuthSettings::default() };
    let auth = Arc::new(Auth::new(accounts, audit.clone(), settings));
    let state = Arc::new(WhepState::with_source(Arc::new(source), test_settings()).with_access(auth, audit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sdp = ("Content-Type", "application/sdp");
    let offer = CHROME_OFFER.as_bytes();

    // Nobody: the page (with its form) but nothing else.
    assert_eq!(http(addr, "GET", "/", None, b"").await.status, 200);
    let reply = http(addr, "GET", "/api/catalog", None, b"").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(http_with(addr, "POST", "/whep/duomo", &[sdp], offer).await.status, 401);
    assert_eq!(http(addr, "DELETE", "/whep/session/0123", None, b"").await.status, 401);
    let bogus = ("Cookie", "ponte_session=00ff");
    let reply = http_with(addr, "GET", "/api/catalog", &[bogus], b"").await;
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("log in again"), "{}", reply.body);

    // Login through the form.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=wrong").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(!reply.headers.contains_key("set-cookie"));
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let set_cookie = reply.headers["set-cookie"].clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie_value = set_cookie.split(';').next().unwrap().to_owned();
    assert_eq!(cookie_value.len(), "ponte_session=".len() + 64, "{cookie_value}");
    let cookie = ("Cookie", cookie_value.as_str());
    // Anna in a second browser: the same account, another login.
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
    let other_browser = reply.headers["set-cookie"].split(';').next().unwrap().to_owned();
    assert_ne!(other_browser, cookie_value);

    // Anna sees the Centro zone only; Zaist is answered like a camera that does not exist.
    let reply = http_with(addr, "GET", "/api/catalog", &[cookie], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["viewer"], "anna");
    let ids: Vec<&str> =
        json["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["duomo"]);
    let hidden = http_with(addr, "POST", "/whep/zaist", &[cookie, sdp], offer).await;
    let missing = http_with(addr, "POST", "/whep/nowhere", &[cookie, sdp], offer).await;
    assert_eq!((hidden.status, missing.status), (404, 404), "{} / {}", hidden.body, missing.body);
    assert_eq!(hidden.body.replace("zaist", "X"), missing.body.replace("nowhere", "X"), "indistinguishable");

    // The VMS token: two cameras, substream only.
    let bearer = format!("Bearer {token}");
    let auth_header = ("Authorization", bearer.as_str());
    let reply = http_with(addr, "GET", "/api/catalog", &[auth_header], b"").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["viewer"], "vms");
    assert_eq!(json["cameras"].as_array().unwrap().len(), 2);
    assert_eq!(json["cameras"][0]["qualities"], serde_json::json!(["sub"]));
    let reply = http_with(addr, "POST", "/whep/duomo", &[auth_header, sdp], offer).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("`sub` quality only"), "{}", reply.body);
    let wrong = ("Authorization", "Bearer 0000");
    assert_eq!(http_with(addr, "GET", "/api/catalog", &[wrong], b"").await.status, 401);

    // Anna watches; only she may end her session.
    let (pc, offer, _, received) = viewer().await;
    let reply = http_with(addr, "POST", "/whep/duomo", &[cookie, sdp], offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let location = reply.headers["location"].clone();
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received.frames.load(Ordering::Relaxed) >= 3).await;
    assert_eq!(state.sessions()[0].viewer.as_deref(), Some("anna"));
    assert_eq!(state.sessions()[0].id.len(), 8, "status never shows a whole session id");
    assert!(location.rsplit('/').next().unwrap().starts_with(&state.sessions()[0].id));
    assert_eq!(http_with(addr, "DELETE", &location, &[auth_header], b"").await.status, 404);
    assert_eq!(state.sessions().len(), 1, "the VMS cannot end anna's session");
    let other = ("Cookie", other_browser.as_str());
    assert_eq!(http_with(addr, "DELETE", &location, &[other], b"").await.status, 404);
    assert_eq!(state.sessions().len(), 1, "nor can anna's other browser");
    assert_eq!(http_with(addr, "DELETE", &location, &[cookie], b"").await.status, 200);
    eventually("view-stop in the audit log", || {
        std::fs::read_to_string(&audit_path).is_ok_and(|t| t.contains("view-stop"))
    })
    .await;
    assert!(state.sessions().is_empty());
    let _ = pc.close().await;

    // Logout ends the browser session.
    assert_eq!(http_with(addr, "POST", "/logout", &[cookie], b"").await.status, 204);
    assert_eq!(http_with(addr, "GET", "/api/catalog", &[cookie], b"").await.status, 401);

    // Every decision is in the audit log, which verifies.
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {} {}", l["action"], l["outcome"], l["viewer"], l["camera"]).replace('"', ""))
        .collect();
    assert_eq!(
        summary,
        [
            "login failed anna null",
            "login ok anna null",
            "login ok anna null",
            "refused unknown anna zaist",
            "refused unknown anna nowhere",
            "refused forbidden vms duomo",
            "login failed ? null",
            "view-start allowed anna duomo",
            "view-stop ended anna duomo",
            "logout ok anna null",
        ],
        "{text}"
    );
    assert!(!text.contains("correct horse") && !text.contains(&token), "no secrets in the audit log");
    let stop = &lines[8];
    assert_eq!(stop["session"], lines[7]["session"]);
    assert!(stop["duration_ms"].as_u64().unwrap() > 0, "{stop}");
    assert_eq!(ponte_proto::audit::verify(&[audit_path]), Ok(lines.len()));
    let _ = std::fs::remove_dir_all(&dir);
}
