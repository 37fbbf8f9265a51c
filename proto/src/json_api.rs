//! The JSON routes' common edge (the master console on the agent, the
//! partner console's incident routes on the relay): a refusal is
//! `{"error": why}` with its status, and a body is taken only as
//! `Content-Type: application/json`, which a cross-site form cannot send
//! without a CORS preflight these ports never grant.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// A refusal: the status and `{"error": why}`.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// [`Refused`] as a response.
pub fn refused(status: StatusCode, why: impl Into<String>) -> Response {
    Refused(status, why.into()).into_response()
}

/// The body as JSON of `T` (an empty body reads as `{}`); `example` shows
/// the shape in the refusal.
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    example: &str,
) -> Result<T, Refused> {
    let json =
        crate::ptz::is_json_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    if !json {
        return Err(Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON with Content-Type: application/json".into(),
        ));
    }
    let bytes: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(bytes).map_err(|e| {
        Refused(
            StatusCode::BAD_REQUEST,
            format!("the body is not what this route takes ({e}); e.g. {example}"),
        )
    })
}
