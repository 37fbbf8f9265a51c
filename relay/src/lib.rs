//! ponte-relay: runs at a partner site, receives streams from the agent over
//! QUIC and serves them to local operators (WHEP) and the site's VMS. The
//! binary (`main.rs`) is its command line; this library is the node, so
//! tests, fuzz targets and benchmarks can use its types.

pub mod audit;
pub mod auth;
pub mod cascade;
pub mod config;
pub mod console;
pub mod incidents;
pub mod limits;
pub mod media_ports;
pub mod node;
pub mod page;
pub mod peers;
pub mod ptz;
pub mod rtsp;
pub mod status;
pub mod upstream;
pub mod watching;
pub mod web;
pub mod whep;
