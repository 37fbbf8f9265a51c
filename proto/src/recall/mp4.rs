//! MP4 muxing of recorded GOPs.
