//! RTSP egress for the partner site's VMS: `rtsp://relay:8554/<camera>` and
//! `.../<camera>/sub`, H.264 and H.265 over RTP/AVP (interleaved TCP or UDP
//! unicast), Digest or Basic authentication against the relay's viewer
//! accounts, and the same narrowing of the catalog as WHEP.
//!
//! - [`framing`]: the request stream, limits and malformed input (sans-IO);
//! - [`admission`]: connection caps, in all and per client address;
//! - [`sdp`]: the DESCRIBE answer;
//! - [`auth`]: Digest/Basic on top of the relay's accounts ([`crate::auth`]);
//! - [`session`]: one client's RTP pump;
//! - [`server`]: listener, connections, methods, session table.

mod admission;
mod auth;
pub mod framing;
pub mod range;
mod sdp;
mod server;
mod session;

pub use auth::RtspAuth;
pub use server::{RtspServer, RtspSettings};

#[cfg(test)]
mod tests;
