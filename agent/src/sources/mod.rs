//! Where the pictures come from: the camera drivers (RTSP ingest, the
//! synthetic test pattern, the replay camera), the supervision of each
//! stream, and the registry that starts them and describes them to sites.

pub mod cameras;
pub mod device;
pub mod pattern;
pub mod replay;
pub mod rtsp;
pub mod supervision;
pub mod synthetic;
pub mod thumbnail;
pub mod transcode;
