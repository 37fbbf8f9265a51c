//! Working together on an incident (issue 23): shares, asks and camera
//! alarms at the master room.
//!
//! - [`alarms`]: where alarms come from (ONVIF events, the stream watch).
//! - [`book`]: the sans-IO state (what is shared, asked, raised; the rate
//!   limit; what survives a restart).
//! - [`master_api`]: the master-room console and its API.
//! - [`service`]: its shell (timer, state file, notices to the sessions).

pub mod alarms;
pub mod book;
pub mod master_api;
pub mod service;

pub use service::{Incidents, Setup};
