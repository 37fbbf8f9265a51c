//! Fuzz targets of the agent (see `ponte_fuzz`). A short run of each is
//! part of the test suite.

use crate::config::AgentConfig;
use ponte_fuzz::{class_of_message, fuzz};

/// The config loader: any TOML-ish text is an error or a config, never a panic.
#[test]
fn fuzz_agent_config() {
    let dict: &[&[u8]] = &[
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
    fuzz("agent_config", dict, |data| {
        let text = String::from_utf8_lossy(data);
        class_of_message(&AgentConfig::from_toml(&text))
    });
}
