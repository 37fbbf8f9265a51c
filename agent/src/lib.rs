//! ponte-agent: runs at the master room, pulls each camera once and fans the
//! streams out over QUIC to the partner relays. The binary (`main.rs`) is
//! its command line; this library is the node, so tests, fuzz targets
//! (`ponte-fuzz`) and benchmarks can use its types.

pub mod access;
pub mod camera_events;
pub mod config;
pub mod incidents;
pub mod node;
pub mod operators;
pub mod ops;
pub mod peers;
pub mod ptz;
pub mod recall;
pub mod reload;
pub mod secret;
pub mod sources;
pub mod status;
pub mod uplink;

pub use node::{shutdown_signal, Agent};
