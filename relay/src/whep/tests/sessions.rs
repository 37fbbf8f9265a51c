//! Sessions with a real viewer: media, DELETE, leased UDP ports, and how a session ends.

use super::{entry, eventually, fake, http, publish, push_frame, serve, test_settings, viewer};
use crate::media_ports::PortRange;
use crate::whep::{check_offer, WhepSettings};
use ponte_proto::media::Codec;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use webrtc::peer_connection::RTCSessionDescription;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_h264_and_delete_unsubscribes() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    let subscribers = writer.subscribers();
    // A GOP in the cache before anyone watches.
    for n in 0..5 {
        push_frame(&writer, n);
    }
    let (addr, state) = serve(source, test_settings()).await;
    let producer = tokio::spawn(async move {
        let mut n = 5;
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        loop {
            tick.tick().await;
            push_frame(&writer, n);
            n += 1;
        }
    });

    let (pc, offer, _states, received) = viewer().await;
    assert_eq!(check_offer(&offer), Ok(()), "webrtc-rs offer: {offer}");
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/sdp");
    let location = reply.headers["location"].clone();
    assert!(location.starts_with("/whep/session/"), "{location}");
    assert!(reply.body.contains("a=candidate:"), "non-trickle answer: {}", reply.body);
    assert!(reply.body.contains("a=sendonly"), "{}", reply.body);
    assert_eq!(state.sessions().len(), 1);
    assert_eq!(state.sessions()[0].camera, "duomo");
    assert_eq!(*subscribers.borrow(), 1);

    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("20 frames", || received.frames.load(Ordering::Relaxed) >= 20).await;
    assert_eq!(received.payload_type.load(Ordering::Relaxed), 109);
    assert!(received.bytes.load(Ordering::Relaxed) > 20 * 300);

    let reply = http(addr, "DELETE", &location, None, b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the reader to be dropped", || *subscribers.borrow() == 0).await;
    assert_eq!(state.sessions().len(), 0);
    assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 404);
    // The permit comes back once the peer connection is closed: the
    // limit counts live sessions only.
    eventually("the permit to come back", || state.slots.available_permits() == 4).await;
    producer.abort();
    let _ = pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_goes_through_a_leased_port_of_the_configured_range() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    for n in 0..5 {
        push_frame(&writer, n);
    }
    // One port: a range the firewall would open, free on this machine.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = WhepSettings { udp_ports: Some(PortRange { low: port, high: port }), ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for n in 5.. {
            tick.tick().await;
            push_frame(&writer, n);
        }
    });
    let candidate_ports = |sdp: &str| -> Vec<u16> {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
            .collect()
    };

    let (pc, offer, _, received) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let ports = candidate_ports(&reply.body);
    assert!(!ports.is_empty() && ports.iter().all(|p| *p == port), "{ports:?} in {}", reply.body);
    let location = reply.headers["location"].clone();
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("10 frames through the leased port", || received.frames.load(Ordering::Relaxed) >= 10).await;

    // The range is used up: the next viewer is told which key to widen.
    let (pc2, offer2, _, _) = viewer().await;
    let refused = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("`whep.udp_ports`"), "{}", refused.body);
    assert_eq!(state.refusals().get("whep.udp_ports"), Some(&1));

    // The session ends: its port comes back for the next viewer.
    assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 200);
    let pool = state.ports.clone().unwrap();
    eventually("the port to come back", || pool.in_use() == 0).await;
    let (pc3, offer3, _, received3) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer3.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(candidate_ports(&reply.body).iter().all(|p| *p == port));
    pc3.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("frames for the next viewer", || received3.frames.load(Ordering::Relaxed) >= 5).await;
    producer.abort();
    for pc in [pc, pc2, pc3] {
        let _ = pc.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ends_when_the_track_ends_or_the_viewer_leaves() {
    let source = fake(vec![entry("duomo", Codec::H264), entry("torrazzo", Codec::H264)]);
    let duomo = publish(&source.hub, "duomo");
    let torrazzo = publish(&source.hub, "torrazzo");
    for n in 0..3 {
        push_frame(&duomo, n);
        push_frame(&torrazzo, n);
    }
    let torrazzo_subscribers = torrazzo.subscribers();
    let (addr, state) = serve(source, test_settings()).await;

    // The track ends: the session goes away by itself.
    let (pc1, offer, _, received1) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    pc1.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received1.frames.load(Ordering::Relaxed) >= 3).await;
    drop(duomo);
    eventually("the session to end", || state.sessions().is_empty()).await;

    // The viewer goes away without DELETE: the session notices and unsubscribes.
    let (pc2, offer, _, received2) = viewer().await;
    let reply = http(addr, "POST", "/whep/torrazzo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    pc2.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received2.frames.load(Ordering::Relaxed) >= 3).await;
    assert_eq!(*torrazzo_subscribers.borrow(), 1);
    pc2.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while *torrazzo_subscribers.borrow() != 0 {
        assert!(Instant::now() < deadline, "session outlived its viewer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.sessions().len(), 0);
    let _ = pc1.close().await;
}
