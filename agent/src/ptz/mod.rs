//! PTZ at the agent: the service (site checks, arbiter, one worker per
//! camera, audit) with the master room's API, and the devices it drives
//! through one trait: an ONVIF client in production, a simulated dome for
//! synthetic cameras.

pub mod device;
pub mod master_api;
pub mod onvif;
pub mod service;
pub mod sim;
pub mod withhold;

pub use service::{devices, session_gate, PtzService, Requester, Setup};
