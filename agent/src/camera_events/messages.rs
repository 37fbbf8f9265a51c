//! The SOAP text of a PullPoint subscription: request bodies, and answers
//! read by local name into [`Notification`]s. No I/O, no clock: times
//! come out as the camera wrote them.
//!
//! Topics are matched on their path with every prefix dropped
//! (`tns1:RuleEngine/CellMotionDetector/Motion` →
//! `RuleEngine/CellMotionDetector/Motion`): cameras bind the ONVIF topic
//! namespace to `tns1`, `tns`, `ns1` or others. A topic we do not know is
//! ignored, not an error; so is a message of a known topic without a
//! readable state (a vendor's variant), counted in [`Pulled::ignored`].

use super::EventKind;
use crate::ptz::onvif::soap::{child, children, clean, escape, text, xs_duration};
use roxmltree::Node;
use std::time::{Duration, SystemTime};

pub(crate) const NS_TEV: &str = "http://www.onvif.org/ver10/events/wsdl";
pub(crate) const NS_WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";
pub(crate) const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";

/// SOAPActions the events.wsdl bindings name (a camera may check them).
pub(crate) const ACTION_CREATE: &str =
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
pub(crate) const ACTION_PULL: &str =
    "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
pub(crate) const ACTION_RENEW: &str = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
pub(crate) const ACTION_UNSUBSCRIBE: &str =
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";

/// Most notifications read from one PullMessages answer (we ask for
/// [`MESSAGE_LIMIT`]; a camera sending more is cut, not trusted).
pub(crate) const MAX_NOTIFICATIONS: usize = 2 * MESSAGE_LIMIT as usize;
/// `MessageLimit` of each PullMessages: at ~700 bytes a message, well under
/// the client's 1 MiB answer limit, and five seconds of a camera chattering
/// at 100 events/s.
pub(crate) const MESSAGE_LIMIT: u32 = 500;
/// Longest subscription address accepted.
const MAX_ADDRESS: usize = 2048;

/// One alarm message of a known topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What it reports.
    pub kind: EventKind,
    /// Start (`true`) or end of the condition.
    pub active: bool,
    /// The message's UtcTime; None when absent or unreadable.
    pub at: Option<SystemTime>,
    /// The video source (or its configuration) token it names, if any.
    pub source: Option<String>,
}

/// A CreatePullPointSubscriptionResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where PullMessages, Renew and Unsubscribe go.
    pub address: String,
    /// The camera's clock when it answered.
    pub current: Option<SystemTime>,
    /// When the camera drops the subscription (camera clock).
    pub termination: Option<SystemTime>,
}

/// A PullMessagesResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulled {
    /// The camera's clock when it answered.
    pub current: Option<SystemTime>,
    /// When the camera drops the subscription (camera clock).
    pub termination: Option<SystemTime>,
    /// Messages of known topics, in the camera's order.
    pub notifications: Vec<Notification>,
    /// Messages of unknown topics or without a readable state.
    pub ignored: usize,
}

/// CreatePullPointSubscription asking for `termination` from now.
pub(crate) fn create_body(termination: Duration) -> String {
    format!(
        "<tev:CreatePullPointSubscription xmlns:tev=\"{NS_TEV}\"><tev:InitialTerminationTime>{}\
         </tev:InitialTerminationTime></tev:CreatePullPointSubscription>",
        xs_duration(termination)
    )
}

/// PullMessages waiting up to `timeout` for up to [`MESSAGE_LIMIT`] messages.
pub(crate) fn pull_body(timeout: Duration) -> String {
    format!(
        "<tev:PullMessages xmlns:tev=\"{NS_TEV}\"><tev:Timeout>{}</tev:Timeout>\
         <tev:MessageLimit>{MESSAGE_LIMIT}</tev:MessageLimit></tev:PullMessages>",
        xs_duration(timeout)
    )
}

/// Renew for `termination` from now.
pub(crate) fn renew_body(termination: Duration) -> String {
    format!(
        "<wsnt:Renew xmlns:wsnt=\"{NS_WSNT}\"><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:Renew>",
        xs_duration(termination)
    )
}

/// Unsubscribe.
pub(crate) fn unsubscribe_body() -> String {
    format!("<wsnt:Unsubscribe xmlns:wsnt=\"{NS_WSNT}\"/>")
}

/// WS-Addressing headers of a request to `to`: some cameras route pull
/// points by `wsa:To` rather than by the HTTP path.
pub(crate) fn addressing_header(action: &str, to: &str) -> String {
    format!(
        "<wsa:Action xmlns:wsa=\"{NS_WSA}\">{}</wsa:Action><wsa:To xmlns:wsa=\"{NS_WSA}\">{}</wsa:To>",
        escape(action),
        escape(to)
    )
}

/// CreatePullPointSubscriptionResponse → the pull point.
pub(crate) fn parse_subscription(response: Node) -> Result<Subscription, String> {
    let reference = child(response, "SubscriptionReference")
        .ok_or("CreatePullPointSubscriptionResponse has no SubscriptionReference")?;
    let address = child(reference, "Address").map(text).unwrap_or_default();
    if address.is_empty() {
        return Err("the SubscriptionReference has no Address".into());
    }
    if address.len() > MAX_ADDRESS || address.chars().any(char::is_control) {
        return Err(format!("the SubscriptionReference Address {:?} is not a URL", clean(address, 80)));
    }
    Ok(Subscription {
        address: address.to_owned(),
        current: child(response, "CurrentTime").and_then(|n| parse_xs_datetime(text(n))),
        termination: child(response, "TerminationTime").and_then(|n| parse_xs_datetime(text(n))),
    })
}

/// RenewResponse → (termination, current), camera clock.
pub(crate) fn parse_renew(response: Node) -> Result<(Option<SystemTime>, Option<SystemTime>), String> {
    let termination = child(response, "TerminationTime").ok_or("RenewResponse has no TerminationTime")?;
    Ok((
        parse_xs_datetime(text(termination)),
        child(response, "CurrentTime").and_then(|n| parse_xs_datetime(text(n))),
    ))
}

/// PullMessagesResponse → the alarms it holds.
pub(crate) fn parse_pull(response: Node) -> Result<Pulled, String> {
    let mut pulled = Pulled {
        current: child(response, "CurrentTime").and_then(|n| parse_xs_datetime(text(n))),
        termination: child(response, "TerminationTime").and_then(|n| parse_xs_datetime(text(n))),
        ..Pulled::default()
    };
    for message in children(response, "NotificationMessage").take(MAX_NOTIFICATIONS) {
        match notification(message) {
            Some(n) => pulled.notifications.push(n),
            None => pulled.ignored += 1,
        }
    }
    Ok(pulled)
}

/// One wsnt:NotificationMessage, if its topic is an alarm we know and it
/// says whether the alarm starts or ends.
fn notification(message: Node) -> Option<Notification> {
    let topic = topic_path(text(child(message, "Topic")?));
    let (kind, state_items): (EventKind, &[&str]) = match topic.as_str() {
        "RuleEngine/CellMotionDetector/Motion" => (EventKind::Motion, &["IsMotion"]),
        "VideoSource/MotionAlarm" => (EventKind::Motion, &["State"]),
        "VideoSource/GlobalSceneChange/ImagingService"
        | "VideoSource/GlobalSceneChange/AnalyticsService"
        | "VideoSource/GlobalSceneChange/RecordingService" => (EventKind::Tampering, &["State"]),
        "RuleEngine/TamperDetector/Tamper" => (EventKind::Tampering, &["IsTamper"]),
        "VideoSource/SignalLoss" => (EventKind::VideoLoss, &["State"]),
        _ => return None,
    };
    let body = child(child(message, "Message")?, "Message")?;
    if body.attribute("PropertyOperation").is_some_and(|op| op.trim() == "Deleted") {
        return None;
    }
    let active = child(body, "Data")
        .into_iter()
        .flat_map(|data| children(data, "SimpleItem"))
        .find(|item| item.attribute("Name").is_some_and(|n| state_items.contains(&n.trim())))
        .and_then(|item| parse_bool(item.attribute("Value")?))?;
    let source = child(body, "Source").and_then(|items| {
        children(items, "SimpleItem")
            .find(|item| item.attribute("Name").is_some_and(|n| SOURCE_ITEMS.contains(&n.trim())))
            .and_then(|item| item.attribute("Value"))
            .map(|v| clean(v, 64))
            .filter(|v| !v.is_empty())
    });
    let at = body.attribute("UtcTime").and_then(parse_xs_datetime);
    Some(Notification { kind, active, at, source })
}

/// Source SimpleItems that name the video source, most specific first.
const SOURCE_ITEMS: [&str; 5] =
    ["VideoSource", "VideoSourceToken", "Source", "VideoSourceConfigurationToken", "InputToken"];

/// A topic expression's path without prefixes, bounded.
fn topic_path(expression: &str) -> String {
    let expression = expression.get(..256).unwrap_or(expression);
    expression
        .split('/')
        .map(|segment| segment.rsplit(':').next().unwrap_or(segment).trim())
        .collect::<Vec<_>>()
        .join("/")
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") || v == "1" => Some(true),
        v if v.eq_ignore_ascii_case("false") || v == "0" => Some(false),
        _ => None,
    }
}

/// An xs:dateTime as a time; one without an offset is taken as UTC (ONVIF
/// requires UTC, some cameras leave the `Z` off).
pub(crate) fn parse_xs_datetime(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if value.len() > 64 || !value.contains('T') {
        return None;
    }
    let timestamp = value.parse::<jiff::Timestamp>().ok().or_else(|| {
        let civil = value.parse::<jiff::civil::DateTime>().ok()?;
        civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
    })?;
    Some(SystemTime::from(timestamp))
}

/// The lens (from 1) a source token names: the number it ends with when
/// that is a lens of the device (`VideoSource_2`, `VideoSourceConfig_2`),
/// else lens 1. Cameras number their sources from 0 or 1 as they please;
/// a camera whose tokens say nothing reports on lens 1.
pub(crate) fn lens_of(source: Option<&str>, lenses: u8) -> u8 {
    let Some(source) = source else { return 1 };
    let digits = source.len() - source.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let number = source.get(source.len() - digits..).and_then(|d| d.parse::<u8>().ok());
    match number {
        Some(n) if (1..=lenses).contains(&n) => n,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
