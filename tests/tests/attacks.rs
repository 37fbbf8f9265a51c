//! Attacks on ponte's trust boundaries, each run against the real binaries
//! (issue 15). One test per attack, named after it: each asserts the refusal
//! (a status code or a closed connection), that the victim kept serving its
//! legitimate clients meanwhile, and the audit line where one is due.
//!
//! The attacks are grouped by the boundary they cross, one file each.
#[path = "attacks/access.rs"]
mod access;
#[path = "attacks/agent.rs"]
mod agent;
#[path = "attacks/http.rs"]
mod http;
#[path = "attacks/incidents.rs"]
mod incidents;
#[path = "attacks/rtsp.rs"]
mod rtsp;
