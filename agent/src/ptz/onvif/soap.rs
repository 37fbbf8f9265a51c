//! The SOAP text of the ONVIF exchanges: requests built as text (everything
//! interpolated is escaped, WS-UsernameToken digest in the header) and
//! answers read with roxmltree by local name, bounded and cleaned. No I/O.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ponte_proto::ptz::{PtzPosition, PtzPreset, MAX_PRESET_LEN};
use roxmltree::Node;
use sha1::{Digest as _, Sha1};
use std::time::Duration;

/// Most presets relayed from one camera (PTZ domes offer 100 to 300).
pub const MAX_PRESETS: usize = 512;
/// Longest preset name kept, in characters (ONVIF's `tt:Name` is at most 64).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest fault reason kept, in characters.
pub const MAX_FAULT_CHARS: usize = 512;
/// Longest fault code kept, in characters, and the most code levels.
pub(crate) const MAX_CODE_CHARS: usize = 64;
pub(crate) const MAX_CODE_LEVELS: usize = 8;

pub(crate) const NS_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
pub(crate) const NS_TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
pub(crate) const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
pub(crate) const NS_TT: &str = "http://www.onvif.org/ver10/schema";
pub(crate) const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub(crate) const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
pub(crate) const PASSWORD_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
pub(crate) const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// A SOAP fault, code path as local names (`Sender/InvalidArgVal/NoToken`).
#[derive(Debug, PartialEq)]
pub(crate) struct SoapFault {
    pub(crate) codes: Vec<String>,
    pub(crate) reason: String,
}

impl SoapFault {
    pub(crate) fn is_auth(&self) -> bool {
        self.codes
            .iter()
            .any(|c| matches!(c.as_str(), "NotAuthorized" | "FailedAuthentication" | "InvalidSecurity"))
    }
}

/// First characters of a body, on one line, for messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let head = body.get(..4096).unwrap_or(body);
    let one_line = clean(&String::from_utf8_lossy(head), 160);
    if one_line.is_empty() {
        "empty body".into()
    } else {
        one_line
    }
}

/// The SOAP Body (SOAP 1.2 or 1.1) of a document.
pub(crate) fn soap_body<'a>(doc: &'a roxmltree::Document<'a>) -> Option<Node<'a, 'a>> {
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return None;
    }
    child(root, "Body")
}

pub(crate) fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

pub(crate) fn children<'a, 'n: 'a>(
    node: Node<'a, 'a>,
    name: &'n str,
) -> impl Iterator<Item = Node<'a, 'a>> + 'a {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// Text of an element, trimmed.
pub(crate) fn text<'a>(node: Node<'a, 'a>) -> &'a str {
    node.text().map(str::trim).unwrap_or_default()
}

/// Local part of a QName value (`ter:NoToken` → `NoToken`), cleaned.
pub(crate) fn local(qname: &str) -> String {
    clean(qname.rsplit(':').next().unwrap_or(qname), MAX_CODE_CHARS)
}

/// Device text made fit for a message: control characters and runs of
/// whitespace become one space, and it is cut to `max` characters (with
/// `…`).
pub(crate) fn clean(raw: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in raw.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= max {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// The fault in a SOAP Body, SOAP 1.2 (Code/Value, Subcode…, Reason/Text)
/// or SOAP 1.1 (faultcode, faultstring); codes and reason bounded.
pub(crate) fn parse_fault(body: Node) -> Option<SoapFault> {
    let fault = child(body, "Fault")?;
    let mut codes = Vec::new();
    let mut reason = String::new();
    if let Some(code) = child(fault, "Code") {
        let mut level = Some(code);
        while let Some(l) = level {
            if codes.len() == MAX_CODE_LEVELS {
                codes.push("…".to_owned());
                break;
            }
            if let Some(v) = child(l, "Value") {
                codes.push(local(text(v)));
            }
            level = child(l, "Subcode");
        }
        if let Some(r) = child(fault, "Reason") {
            let texts: Vec<Node> = children(r, "Text").collect();
            let english = texts.iter().find(|t| {
                t.attribute(("http://www.w3.org/XML/1998/namespace", "lang"))
                    .is_some_and(|l| l.starts_with("en"))
            });
            reason = english.or(texts.first()).map(|t| clean(text(*t), MAX_FAULT_CHARS)).unwrap_or_default();
        }
    } else {
        if let Some(c) = child(fault, "faultcode") {
            codes.push(local(text(c)));
        }
        if let Some(s) = child(fault, "faultstring") {
            reason = clean(text(s), MAX_FAULT_CHARS);
        }
    }
    // ONVIF 1.x-style detail text, when the reason is empty.
    if reason.is_empty() {
        if let Some(d) = child(fault, "Detail").or_else(|| child(fault, "detail")) {
            let mut joined = String::new();
            for t in d.descendants().filter_map(|n| n.text()).map(str::trim).filter(|t| !t.is_empty()) {
                if joined.len() > 4 * MAX_FAULT_CHARS {
                    break;
                }
                joined.push_str(t);
                joined.push(' ');
            }
            reason = clean(&joined, MAX_FAULT_CHARS);
        }
    }
    if reason.is_empty() {
        reason = "(no reason given)".into();
    }
    Some(SoapFault { codes, reason })
}

/// GetPresetsResponse → presets (entries without a token are skipped). More
/// than [`MAX_PRESETS`], or a token no `GotoPreset` could send back, make
/// the answer unusable; names are cleaned and cut to [`MAX_NAME_CHARS`].
pub(crate) fn parse_presets(response: Node) -> Result<Vec<PtzPreset>, String> {
    let mut presets = Vec::new();
    for p in children(response, "Preset") {
        let Some(token) = p.attribute("token").map(str::trim).filter(|t| !t.is_empty()) else { continue };
        if presets.len() == MAX_PRESETS {
            let total = children(response, "Preset").count();
            return Err(format!("the camera lists {total} presets; ponte relays at most {MAX_PRESETS}"));
        }
        if token.len() > MAX_PRESET_LEN || token.chars().any(char::is_control) {
            return Err(format!(
                "preset token {:?} is not a ReferenceToken (1 to {MAX_PRESET_LEN} bytes, no control \
                 characters)",
                clean(token, 32)
            ));
        }
        let name = child(p, "Name").map(|n| clean(text(n), MAX_NAME_CHARS)).unwrap_or_default();
        presets.push(PtzPreset { token: token.to_owned(), name });
    }
    Ok(presets)
}

/// GetStatusResponse → position per mille and motion.
pub(crate) fn parse_status(response: Node) -> Result<PtzPosition, String> {
    let status = child(response, "PTZStatus").ok_or("GetStatusResponse has no PTZStatus")?;
    let mut position = PtzPosition::default();
    if let Some(pos) = child(status, "Position") {
        if let Some(pt) = child(pos, "PanTilt") {
            position.pan = pt.attribute("x").and_then(generic_to_per_mille);
            position.tilt = pt.attribute("y").and_then(generic_to_per_mille);
        }
        if let Some(z) = child(pos, "Zoom") {
            position.zoom = z.attribute("x").and_then(generic_to_per_mille);
        }
    }
    if let Some(moves) = child(status, "MoveStatus") {
        // ONVIF 2: PanTilt/Zoom children; some 1.x cameras put the state in the element itself.
        let states: Vec<&str> = match (child(moves, "PanTilt"), child(moves, "Zoom")) {
            (None, None) => vec![text(moves)],
            (pt, z) => [pt, z].into_iter().flatten().map(text).collect(),
        };
        position.moving = states.iter().any(|s| s.eq_ignore_ascii_case("MOVING"));
    }
    Ok(position)
}

/// GetProfilesResponse → token of the first profile with a PTZ configuration.
pub(crate) fn first_ptz_profile(response: Node) -> Option<String> {
    children(response, "Profiles")
        .find(|p| child(*p, "PTZConfiguration").is_some())
        .and_then(|p| p.attribute("token"))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A coordinate of ONVIF's generic space (-1..1) per mille; None when the
/// camera reports something else (another space, NaN).
pub(crate) fn generic_to_per_mille(value: &str) -> Option<i16> {
    let v: f64 = value.trim().parse().ok()?;
    if !v.is_finite() || v.abs() > 1.0 + 1e-6 {
        return None;
    }
    Some((v * 1000.0).round().clamp(-1000.0, 1000.0) as i16)
}

/// Per mille → an xs:float of the generic space (`500` → `0.5`).
pub(crate) fn per_mille_to_generic(v: i16) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let frac = format!("{:03}", a % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", a / 1000)
    } else {
        format!("{sign}{}.{frac}", a / 1000)
    }
}

/// A duration as xs:duration (`1.5 s` → `PT1.5S`), millisecond precision.
pub(crate) fn xs_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let frac = format!("{:03}", ms % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("PT{}S", ms / 1000)
    } else {
        format!("PT{}.{frac}S", ms / 1000)
    }
}

/// A tt:ReferenceToken: 1..=64 characters, no control characters.
pub(crate) fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.chars().count() > MAX_PRESET_LEN {
        return Err(format!("{token:?} must be 1 to {MAX_PRESET_LEN} characters"));
    }
    if token.chars().any(char::is_control) {
        return Err(format!("{token:?} holds control characters"));
    }
    Ok(())
}

/// XML-escapes text for element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn continuous_move_body(
    profile: &str,
    pan: i16,
    tilt: i16,
    zoom: i16,
    timeout: Option<Duration>,
) -> String {
    let timeout =
        timeout.map(|t| format!("<tptz:Timeout>{}</tptz:Timeout>", xs_duration(t))).unwrap_or_default();
    format!(
        "<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity>\
         <tt:PanTilt x=\"{}\" y=\"{}\"/><tt:Zoom x=\"{}\"/></tptz:Velocity>{timeout}</tptz:ContinuousMove>",
        escape(profile),
        per_mille_to_generic(pan),
        per_mille_to_generic(tilt),
        per_mille_to_generic(zoom)
    )
}

/// The SOAP 1.2 envelope around an operation.
pub(crate) fn envelope(security: Option<&str>, body: &str) -> String {
    let header = security.map(|s| format!("<s:Header>{s}</s:Header>")).unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:Envelope xmlns:s=\"{NS_ENV}\" xmlns:tptz=\"{NS_TPTZ}\" \
         xmlns:trt=\"{NS_TRT}\" xmlns:tt=\"{NS_TT}\">{header}<s:Body>{body}</s:Body></s:Envelope>"
    )
}

/// WS-Security UsernameToken with PasswordDigest = Base64(SHA1(nonce + created + password)).
pub(crate) fn security_header(user: &str, password: &str, nonce: &[u8], created: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(nonce);
    sha.update(created.as_bytes());
    sha.update(password.as_bytes());
    let digest = B64.encode(sha.finalize());
    format!(
        "<wsse:Security s:mustUnderstand=\"1\" xmlns:wsse=\"{NS_WSSE}\" xmlns:wsu=\"{NS_WSU}\"><wsse:UsernameToken>\
         <wsse:Username>{}</wsse:Username><wsse:Password Type=\"{PASSWORD_DIGEST}\">{digest}</wsse:Password>\
         <wsse:Nonce EncodingType=\"{BASE64_BINARY}\">{}</wsse:Nonce><wsu:Created>{}</wsu:Created>\
         </wsse:UsernameToken></wsse:Security>",
        escape(user),
        B64.encode(nonce),
        escape(created)
    )
}

/// Current UTC time as xs:dateTime with milliseconds (`2026-11-25T15:22:33.123Z`).
pub(crate) fn created_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
