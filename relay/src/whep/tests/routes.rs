//! The HTTP routes on their own: one-line offer errors, the catalog and the page.

use super::{config, entry, fake, http, publish, serve, test_settings};
use crate::whep::offer::tests::CHROME_OFFER;
use crate::whep::MAX_OFFER_BYTES;
use bytes::Bytes;
use ponte_proto::hub::TrackKey;
use ponte_proto::media::{Codec, Frame, Quality};
use ponte_proto::wire::SubscribeErrorCode;

#[tokio::test]
async fn offer_errors_are_one_line_naming_the_camera() {
    let mut source = fake(vec![entry("duomo", Codec::H264), entry("porta-po", Codec::H265)]);
    source.refusals.insert("caserma".to_owned(), SubscribeErrorCode::Forbidden);
    source.refusals.insert("stazione".to_owned(), SubscribeErrorCode::Offline);
    source.refusals.insert("ponte-po".to_owned(), SubscribeErrorCode::OverBudget);
    // Published but silent.
    let _silent = publish(&source.hub, "torrazzo");
    // The catalog says H.264 (main), but the stream itself is H.265.
    let hevc = source.hub.publish(TrackKey::new("duomo", Quality::Sub));
    hevc.set_config(config(Codec::H265));
    hevc.push(Frame { pts: 0, keyframe: true, payload: Bytes::from_static(&[0, 0, 1, 0x26, 1]) });
    let (addr, _) = serve(source, test_settings()).await;
    let sdp = Some("application/sdp");
    let offer = CHROME_OFFER.as_bytes();
    // (path, content type, body, status, text the one-line body must contain)
    type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], u16, &'a str);
    let cases: &[Case] = &[
        ("/whep/duomo", Some("text/plain"), offer, 415, "Content-Type: application/sdp"),
        ("/whep/duomo", None, offer, 415, "Content-Type: application/sdp"),
        ("/whep/duomo", sdp, b"not sdp at all", 400, "v=0"),
        ("/whep/duomo", sdp, &[0xff, 0xfe, 0x00], 400, "UTF-8"),
        ("/whep/duomo?quality=ultra", sdp, offer, 400, "unknown quality"),
        ("/whep/nowhere", sdp, offer, 404, "not in the catalog"),
        ("/whep/caserma", sdp, offer, 403, "not allowed"),
        ("/whep/stazione", sdp, offer, 503, "offline"),
        ("/whep/ponte-po", sdp, offer, 503, "link budget"),
        (
            "/whep/porta-po",
            sdp,
            offer,
            415,
            "camera `porta-po` is H.265, and this browser cannot decode H.265",
        ),
        ("/whep/duomo?quality=sub", sdp, offer, 415, "camera `duomo` (substream) is H.265, and this browser"),
        ("/whep/torrazzo", Some("application/sdp; charset=utf-8"), offer, 504, "no video within 0.5 s"),
    ];
    for (path, ct, body, status, needle) in cases {
        let reply = http(addr, "POST", path, *ct, body).await;
        assert_eq!(reply.status, *status, "{path}: {}", reply.body);
        assert!(reply.body.contains(needle), "{path}: {}", reply.body);
        let camera = path.trim_start_matches("/whep/").split('?').next().unwrap();
        assert!(reply.body.contains(camera), "{path}: {}", reply.body);
        assert_eq!(reply.body.trim_end().lines().count(), 1, "{path}: {}", reply.body);
        assert!(reply.headers["content-type"].starts_with("text/plain"));
    }
    let huge = vec![b'a'; MAX_OFFER_BYTES + 1];
    assert_eq!(http(addr, "POST", "/whep/duomo", sdp, &huge).await.status, 413);
    let reply = http(addr, "DELETE", "/whep/session/0123abcd", None, b"").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("0123abcd"));
}

#[tokio::test]
async fn catalog_and_page_name_the_site() {
    let (addr, _) = serve(fake(vec![entry("duomo", Codec::H264)]), test_settings()).await;
    let reply = http(addr, "GET", "/api/catalog", None, b"").await;
    assert_eq!(reply.status, 200);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["site"], "carabinieri-cremona");
    assert_eq!(json["cameras"][0]["id"], "duomo");
    assert_eq!(json["cameras"][0]["codec"], "h264");
    let page = http(addr, "GET", "/", None, b"").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.body.contains("<title>ponte viewer — carabinieri-cremona</title>"));
}
