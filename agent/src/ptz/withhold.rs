//! What a partner site may read of a PTZ refusal: the camera LAN stays at
//! the master room.

use ponte_proto::ptz::PtzReply;

/// A reply as a partner site may read it: the camera LAN stays at the
/// master room, so URLs and IP addresses in a refusal's reason (the ONVIF
/// service's URL, a hostile camera's fault text) are withheld. The agent's
/// log and audit keep the full text.
pub fn for_partners(reply: PtzReply) -> PtzReply {
    match reply {
        PtzReply::Refused { code, reason, holder } => {
            PtzReply::Refused { code, reason: withhold_addresses(&reason), holder }
        }
        done => done,
    }
}

/// What stands in for a withheld URL or address.
const WITHHELD: &str = "[address withheld]";

/// `text` with every URL (`scheme://...`) and IP address or socket address
/// (`10.1.2.3`, `10.1.2.3:80`, `fd00::5`, `[fd00::5]:8080`, also after `=`,
/// `@` or `/`) replaced by [`WITHHELD`].
fn withhold_addresses(text: &str) -> String {
    let is_delimiter = |c: char| c.is_whitespace() || c.is_control() || "\"'`<>(){},;".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !is_delimiter(c)) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        // Sentence punctuation after an address is not part of it.
        let body = word.trim_end_matches(['.', ':', '!', '?']);
        out.push_str(&withhold_in_word(body));
        out.push_str(&word[body.len()..]);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn withhold_in_word(word: &str) -> String {
    if let Some(at) = word.find("://") {
        let scheme = word[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || "+-.".contains(*c))
            .last()
            .map_or(at, |(i, _)| i);
        return format!("{}{WITHHELD}", &word[..scheme]);
    }
    let is_address = |piece: &str| {
        !piece.is_empty()
            && (piece.parse::<std::net::IpAddr>().is_ok() || piece.parse::<std::net::SocketAddr>().is_ok())
    };
    if is_address(word) {
        return WITHHELD.to_owned();
    }
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    loop {
        let cut = rest.find(['=', '@', '/']).unwrap_or(rest.len());
        let piece = &rest[..cut];
        out.push_str(if is_address(piece) { WITHHELD } else { piece });
        match rest[cut..].chars().next() {
            Some(separator) => {
                out.push(separator);
                rest = &rest[cut + 1..];
            }
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_proto::ptz::PtzErrorCode;

    #[test]
    fn urls_and_addresses_are_withheld_from_partners() {
        let cases = [
            (
                "camera `dome`: ONVIF GetPresets to http://10.1.2.3/onvif/ptz_service: no answer within 2000 ms",
                "camera `dome`: ONVIF GetPresets to [address withheld]: no answer within 2000 ms",
            ),
            ("at http://[fd00::5]:8080/onvif/PTZ?x=1 (HTTP 500)", "at [address withheld] (HTTP 500)"),
            ("see url=rtsp://admin:pw@cam.lan/x, then", "see url=[address withheld], then"),
            ("from 10.1.2.3:554.", "from [address withheld]."),
            ("host fd00::5 and [fd00::6]:80", "host [address withheld] and [address withheld]"),
            ("admin@192.168.1.64/24 ok", "admin@[address withheld]/24 ok"),
            ("at 15:22:33, fault env:Sender/ter:NoToken", "at 15:22:33, fault env:Sender/ter:NoToken"),
            ("(\"http://x\")", "(\"[address withheld]\")"),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(withhold_addresses(text), want, "{text}");
        }
        let reply = for_partners(PtzReply::refused(PtzErrorCode::CameraError, "fault http://10.0.0.9/a"));
        assert_eq!(reply, PtzReply::refused(PtzErrorCode::CameraError, "fault [address withheld]"));
        let done = PtzReply::Done { holder: None, presets: vec![], position: None };
        assert_eq!(for_partners(done.clone()), done);
    }
}
