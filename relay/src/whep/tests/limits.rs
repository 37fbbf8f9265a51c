//! Refusals at the configured limits: sessions, viewers per camera, offers per minute, streams per account.

use super::{entry, fake, http, http_with, publish, push_frame, serve, test_settings, viewer};
use crate::audit::RelayAudit;
use crate::auth::Auth;
use crate::web::router;
use crate::whep::{WhepSettings, WhepState};
use ponte_proto::media::Codec;
use std::net::SocketAddr;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_limit_are_refused() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    push_frame(&writer, 0);
    let settings = WhepSettings { max_sessions: 1, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.body.contains("limit"), "{}", second.body);
    assert_eq!(state.sessions().len(), 1);
    let _ = pc1.close().await;
    let _ = pc2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_per_camera_are_limited_and_counted() {
    let source = fake(vec![entry("duomo", Codec::H264), entry("po", Codec::H264)]);
    let duomo = publish(&source.hub, "duomo");
    let po = publish(&source.hub, "po");
    push_frame(&duomo, 0);
    push_frame(&po, 0);
    let settings = WhepSettings { max_per_camera: 1, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let (pc3, offer3, _, _) = viewer().await;
    let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.body.contains("`whep.max_per_camera`"), "names the key: {}", second.body);
    let other = http(addr, "POST", "/whep/po", Some("application/sdp"), offer3.as_bytes()).await;
    assert_eq!(other.status, 201, "another camera is not limited: {}", other.body);
    assert_eq!(state.refusals().get("whep.max_per_camera"), Some(&1));
    for pc in [pc1, pc2, pc3] {
        let _ = pc.close().await;
    }
}

#[tokio::test]
async fn offers_per_client_per_minute_are_limited_with_429() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let settings = WhepSettings { offers_per_minute: 2, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http(addr, "POST", "/whep/duomo", Some("application/sdp"), b"not sdp").await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
    assert_eq!(codes, [400, 400, 429, 429], "two offers a minute, then 429");
    assert!(statuses[2].body.contains("`whep.offers_per_minute`"), "{}", statuses[2].body);
    assert_eq!(state.refusals().get("whep.offers_per_minute"), Some(&2));
}

/// One account cannot take every slot: `whep.max_per_viewer` refuses
/// its next stream (503 naming the key, audited); another account plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_account_are_limited() {
    use crate::auth::{Accounts, AuthSettings, TokenConfig};
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    push_frame(&writer, 0);
    let (one, one_sha256) = crate::auth::new_token();
    let (two, two_sha256) = crate::auth::new_token();
    let token = |name: &str, token_sha256: String| TokenConfig {
        name: name.into(),
        token_sha256,
        cameras: None,
        max_quality: None,
        ptz: false,
    };
    let accounts =
        Accounts::from_config(&[], &[token("wall", one_sha256), token("vms", two_sha256)]).unwrap();
    let audit = Arc::new(RelayAudit::disabled("carabinieri"));
    let auth = Arc::new(Auth::new(accounts, audit.clone(), AuthSettings::default()));
    let settings = WhepSettings { max_per_viewer: 1, ..test_settings() };
    let state = Arc::new(WhepState::with_source(Arc::new(source), settings).with_access(auth, audit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sdp = ("Content-Type", "application/sdp");
    let (wall, vms) = (format!("Bearer {one}"), format!("Bearer {two}"));
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let (pc3, offer3, _, _) = viewer().await;
    let first =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(
        second.body.contains("`whep.max_per_viewer`") && second.body.contains("`wall`"),
        "{}",
        second.body
    );
    let other =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &vms), sdp], offer3.as_bytes()).await;
    assert_eq!(other.status, 201, "another account still plays: {}", other.body);
    assert_eq!(state.refusals().get("whep.max_per_viewer"), Some(&1));
    for pc in [pc1, pc2, pc3] {
        let _ = pc.close().await;
    }
}
