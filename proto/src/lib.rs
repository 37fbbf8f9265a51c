//! ponte's shared language: the media model, H.264 helpers, the wire codec
//! and fan-out hub (sans-IO), and on top the QUIC session both ends speak.

pub mod audit;
pub mod config_check;
pub mod config_env;
pub mod config_error;
pub mod credentials;
pub mod egress;
pub mod endpoint;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod h264;
pub mod h265;
#[cfg(feature = "mgmt")]
pub mod http_server;
pub mod hub;
pub mod incident;
#[cfg(feature = "mgmt")]
pub mod json_api;
pub mod logging;
pub mod login_brake;
pub mod media;
#[cfg(feature = "mgmt")]
pub mod mgmt;
pub mod password_prompt;
pub mod policy;
pub mod ptz;
pub mod recall;
pub mod redundancy;
pub mod rtp;
pub mod session;
pub mod shaping;
pub mod status;
pub mod tls;
pub mod wire;
