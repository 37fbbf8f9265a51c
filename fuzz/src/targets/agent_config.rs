//! The agent's config loader: any TOML-ish text is an error or a config,
//! never a panic.

use crate::class_of_message;
use ponte_agent::config::AgentConfig;

/// Section headers and keys of `agent.toml`, with edge values.
pub const DICT: &[&[u8]] = &[
    b"[agent]\n",
    b"[[relay]]\n",
    b"[[device]]\n",
    b"[[device.lens]]\n",
    b"[device.synthetic]\n",
    b"[[site]]\n",
    b"lenses = 255\n",
    b"main = \"rtsp://u:p@h:554/x\"\n",
    b"type = \"fixed-quad-optic\"\n",
    b"allow = [\"*\"]\n",
    b"budget_mbps = -1\n",
    b"main_width = 0\n",
    b"= ",
    b"[[",
];

/// Loads `data` (lossy UTF-8) as `agent.toml`.
pub fn run(data: &[u8]) -> u64 {
    class_of_message(&AgentConfig::from_toml(&String::from_utf8_lossy(data)))
}
