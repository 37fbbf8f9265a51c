use super::*;
use crate::ptz::onvif::soap::soap_body;
use std::time::UNIX_EPOCH;

/// What a Hikvision-style camera answers to PullMessages: three alarms of
/// known topics, one vendor topic, one motion message without a state.
const PULLED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:tns1="http://www.onvif.org/ver10/topics" xmlns:tnshik="http://www.hikvision.com/2011/event/topics">
<env:Header><wsa:Action>http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesResponse</wsa:Action></env:Header>
<env:Body><tev:PullMessagesResponse>
<tev:CurrentTime>2026-11-25T15:22:33Z</tev:CurrentTime>
<tev:TerminationTime>2026-11-25T15:23:33Z</tev:TerminationTime>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="2026-11-25T15:22:32.500Z" PropertyOperation="Changed">
<tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="VideoSourceConfig_2"/><tt:SimpleItem Name="VideoAnalyticsConfigurationToken" Value="VideoAnalyticsConfig_1"/><tt:SimpleItem Name="Rule" Value="MyMotionDetectorRule"/></tt:Source>
<tt:Data><tt:SimpleItem Name="IsMotion" Value="true"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tnshik:VideoSource/VendorThing</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="2026-11-25T15:22:32Z"><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:VideoSource/GlobalSceneChange/ImagingService</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="2026-11-25T15:22:33" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="Source" Value="VideoSource_1"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value="false"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">ns1:VideoSource/SignalLoss</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="yesterday"><tt:Source><tt:SimpleItem Name="Source" Value="0"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value="1"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic>
<wsnt:Message><tt:Message UtcTime="2026-11-25T15:22:33Z"><tt:Data><tt:SimpleItem Name="IsMotion" Value="maybe"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>
</tev:PullMessagesResponse></env:Body></env:Envelope>"#;

/// Parses a whole answer with `parse` applied to the Body's operation element.
fn parsed<T>(xml: &str, parse: impl FnOnce(Node) -> Result<T, String>) -> Result<T, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let body = soap_body(&doc).ok_or("no Body")?;
    let op = body.children().find(Node::is_element).ok_or("empty Body")?;
    parse(op)
}

fn at(secs: u64, ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
}

/// 2026-11-25T15:22:33Z in Unix seconds.
const T: u64 = 1_795_620_153;

#[test]
fn pull_messages_answer_gives_the_known_alarms_in_order() {
    let pulled = parsed(PULLED, parse_pull).unwrap();
    assert_eq!((pulled.current, pulled.termination), (Some(at(T, 0)), Some(at(T + 60, 0))));
    assert_eq!(
        pulled.notifications,
        [
            Notification {
                kind: EventKind::Motion,
                active: true,
                at: Some(at(T - 1, 500)),
                source: Some("VideoSourceConfig_2".into())
            },
            Notification {
                kind: EventKind::Tampering,
                active: false,
                at: Some(at(T, 0)),
                source: Some("VideoSource_1".into())
            },
            Notification { kind: EventKind::VideoLoss, active: true, at: None, source: Some("0".into()) },
        ]
    );
    assert_eq!(pulled.ignored, 2, "the vendor topic and the motion without a state");
}

#[test]
fn subscription_and_renew_answers_are_read() {
    let created = wrap(
        "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>\
         http://10.1.2.3/onvif/events_service/pullpoint/7</wsa:Address></tev:SubscriptionReference>\
         <wsnt:CurrentTime>2026-11-25T15:22:33Z</wsnt:CurrentTime>\
         <wsnt:TerminationTime>2026-11-25T15:23:33Z</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
    );
    let s = parsed(&created, parse_subscription).unwrap();
    assert_eq!(s.address, "http://10.1.2.3/onvif/events_service/pullpoint/7");
    assert_eq!((s.current, s.termination), (Some(at(T, 0)), Some(at(T + 60, 0))));
    let renewed = wrap(
        "<wsnt:RenewResponse><wsnt:TerminationTime>2026-11-25T15:23:33.250+00:00</wsnt:TerminationTime>\
         </wsnt:RenewResponse>",
    );
    assert_eq!(parsed(&renewed, parse_renew).unwrap(), (Some(at(T + 60, 250)), None));
    for bad in [
        "<tev:CreatePullPointSubscriptionResponse/>",
        "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference/></tev:CreatePullPointSubscriptionResponse>",
        "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://x/&#x1b;[2J\
         </wsa:Address></tev:SubscriptionReference></tev:CreatePullPointSubscriptionResponse>",
    ] {
        assert!(parsed(&wrap(bad), parse_subscription).is_err(), "{bad}");
    }
    assert!(parsed(&wrap("<wsnt:RenewResponse/>"), parse_renew).is_err());
}

fn wrap(op: &str) -> String {
    format!(
        "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"{NS_WSA}\" \
         xmlns:wsnt=\"{NS_WSNT}\" xmlns:tev=\"{NS_TEV}\"><env:Body>{op}</env:Body></env:Envelope>"
    )
}

#[test]
fn garbage_is_an_error_or_nothing_never_a_panic() {
    let cases = [
        String::new(),
        "<".into(),
        "\u{0}\u{1}".into(),
        wrap(
            "<tev:PullMessagesResponse><wsnt:NotificationMessage/><wsnt:NotificationMessage><wsnt:Topic/>\
              <wsnt:Message/></wsnt:NotificationMessage></tev:PullMessagesResponse>",
        ),
        wrap(&format!(
            "<tev:PullMessagesResponse><wsnt:NotificationMessage><wsnt:Topic>{}</wsnt:Topic>\
             </wsnt:NotificationMessage></tev:PullMessagesResponse>",
            "tns1:é/".repeat(5000)
        )),
        PULLED.replace("UtcTime=\"2026", "UtcTime=\"99999999"),
        PULLED[..PULLED.len() / 2].to_owned(),
    ];
    for xml in cases {
        if let Ok(pulled) = parsed(&xml, parse_pull) {
            assert!(pulled.notifications.len() <= 3);
        }
        let _ = parsed(&xml, parse_subscription);
        let _ = parsed(&xml, parse_renew);
    }
    let start = PULLED.find("<wsnt:NotificationMessage>").unwrap();
    let end = PULLED.find("</wsnt:NotificationMessage>").unwrap() + "</wsnt:NotificationMessage>".len();
    let flood = PULLED.replace(&PULLED[start..end], &PULLED[start..end].repeat(MAX_NOTIFICATIONS + 10));
    assert_eq!(parsed(&flood, parse_pull).unwrap().notifications.len(), MAX_NOTIFICATIONS);
}

#[test]
fn times_tokens_and_requests() {
    assert_eq!(parse_xs_datetime("2026-11-25T15:22:33Z"), Some(at(T, 0)));
    assert_eq!(parse_xs_datetime("2026-11-25T16:22:33.5+01:00"), Some(at(T, 500)));
    assert_eq!(parse_xs_datetime(" 2026-11-25T15:22:33 "), Some(at(T, 0)));
    for bad in ["", "now", "2026-13-01T00:00:00Z", "2026-11-25"] {
        assert_eq!(parse_xs_datetime(bad), None, "{bad}");
    }
    assert_eq!(lens_of(Some("VideoSource_2"), 4), 2);
    assert_eq!(lens_of(Some("VideoSourceConfig_4"), 4), 4);
    assert_eq!(lens_of(Some("VideoSource_5"), 4), 1);
    assert_eq!(lens_of(Some("0"), 2), 1);
    assert_eq!(lens_of(Some("99999999999"), 2), 1);
    assert_eq!(lens_of(Some("é2"), 2), 2);
    assert_eq!(lens_of(None, 4), 1);
    assert_eq!(
        pull_body(Duration::from_millis(1000)),
        format!(
            "<tev:PullMessages xmlns:tev=\"{NS_TEV}\"><tev:Timeout>PT1S</tev:Timeout>\
             <tev:MessageLimit>{MESSAGE_LIMIT}</tev:MessageLimit></tev:PullMessages>"
        )
    );
    assert!(create_body(Duration::from_secs(60)).contains(">PT60S</tev:InitialTerminationTime>"));
    assert!(addressing_header(ACTION_PULL, "http://h/p?a=1&b=2").contains("http://h/p?a=1&amp;b=2"));
}
