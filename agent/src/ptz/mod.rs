//! PTZ at the agent: the service (site checks, arbiter, one worker per
//! camera, audit, the master room's API) and the devices it drives: an
//! ONVIF client in production, a simulated dome for synthetic cameras.

pub mod onvif;
pub mod service;
pub mod sim;

pub use service::{
    devices, master_api, session_gate, DeviceError, DeviceFuture, DeviceOp, LockChange, Output, PtzDevice,
    PtzService, Requester, Setup,
};
