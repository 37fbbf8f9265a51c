//! The relay's config loader: any TOML-ish text is an error or a config,
//! never a panic.

use crate::class_of_message;
use ponte_relay::config::RelayConfig;

/// Section headers and keys of `relay.toml`, with edge values.
pub const DICT: &[&[u8]] = &[
    b"[relay]\n",
    b"[tls]\n",
    b"[rtsp]\n",
    b"[[viewer]]\n",
    b"[[token]]\n",
    b"[[downstream]]\n",
    b"site = \"x\"\n",
    b"allow_anonymous = true\n",
    b"upstreams = [\"master\"]\n",
    b"listen = \"127.0.0.1:0\"\n",
    b"udp_port = 65535\n",
    b"= ",
    b"\"\"\"",
    b"[[",
    b"18446744073709551616",
];

/// Loads `data` (lossy UTF-8) as `relay.toml`.
pub fn run(data: &[u8]) -> u64 {
    class_of_message(&RelayConfig::from_toml(&String::from_utf8_lossy(data)))
}
