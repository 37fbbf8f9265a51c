//! The viewer page: one self-contained HTML document (inline style and script,
//! no external resources, no build step). The camera list is fetched from
//! `/api/catalog` and playback uses the relay's own WHEP endpoint. When the
//! relay answers 401, the page shows its login form (`POST /login`). A PTZ
//! pad (`/api/ptz/{camera}`) appears for cameras the viewer may steer.

const TEMPLATE: &str = include_str!("../assets/viewer.html");
const SCRIPT: &str = include_str!("../assets/viewer.js");

/// Renders the viewer page for a site.
pub fn render(site: &str) -> String {
    let title = if site.is_empty() { "ponte viewer".to_owned() } else { format!("ponte viewer — {site}") };
    fill(TEMPLATE, &[("title", &escape_html(&title)), ("site", &escape_html(site)), ("script", SCRIPT)])
}

/// Fills the `{{name}}` placeholders of `template` with `values` (already
/// escaped where they need to be) in one pass, so text coming from a value
/// (a site name) is never itself scanned for placeholders. Unknown
/// placeholders are left as they are.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let extra: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut out = String::with_capacity(template.len() + extra);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = &rest[start..];
            break;
        };
        match values.iter().find(|(name, _)| *name == &after[..end]) {
            Some((_, value)) => out.push_str(value),
            None => {
                out.push_str("{{");
                out.push_str(&after[..end]);
                out.push_str("}}");
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The page's `Content-Security-Policy`: its one inline script and one
/// inline style by their SHA-256, nothing else loaded from anywhere, never
/// framed (clickjacking a PTZ pad), forms only to this relay. A script
/// injected into the page (a camera name that slipped an escape) does not
/// run.
pub fn content_security_policy() -> &'static str {
    static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let page = render("");
        let hash = |open: &str, close: &str| {
            use base64::Engine as _;
            use sha2::Digest;
            let body =
                page.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map_or("", |(b, _)| b);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
             media-src 'self' blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            hash("<script>", "</script>"),
            hash("<style>", "</style>")
        )
    });
    &CSP
}

/// Escapes text for use in HTML content and double-quoted attributes.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_names_the_site_escaped() {
        let html = render("Carabinieri <Cremona> & \"co\"");
        assert!(
            html.contains("<title>ponte viewer — Carabinieri &lt;Cremona&gt; &amp; &quot;co&quot;</title>")
        );
        assert!(!html.contains("<Cremona>"));
        assert!(!html.contains("{{"), "every placeholder is filled");
    }

    #[test]
    fn placeholders_in_the_site_name_are_not_expanded() {
        let html = render("{{script}}");
        assert_eq!(html.matches("window.ponteViewer").count(), 1);
    }

    #[test]
    fn page_is_self_contained_and_exposes_the_test_api() {
        let html = render("questura");
        for needle in [
            "window.ponteViewer",
            "async function stats()",
            "framesDecoded",
            "frameWidth",
            "bytesReceived",
            "direction: 'recvonly'",
            "'Content-Type': 'application/sdp'",
            "method: 'DELETE'",
            "/api/catalog",
            "muted autoplay playsinline",
            "id=\"login-form\"",
            "fetch('/login'",
            "fetch('/logout'",
            "type=\"password\"",
            "/api/ptz/",
            "id=\"ptz\" hidden",
            "aria-label=\"Pan right\"",
            "aria-label=\"Zoom in\"",
            "id=\"ptz-preset\"",
            "op: 'stop'",
            "'pointerleave'",
            "visibilitychange",
        ] {
            assert!(html.contains(needle), "page lacks {needle}");
        }
        for external in ["src=\"http", "href=\"http", "@import", "src=\"//"] {
            assert!(!html.contains(external), "page loads an external resource: {external}");
        }
        assert!(!SCRIPT.contains("</script"), "the inline script would end early");
    }
}
