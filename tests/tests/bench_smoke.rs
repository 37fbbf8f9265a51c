//! Smoke run of every benchmark scenario (`ponte-bench all --smoke`): tiny
//! loads for a few seconds each, so the harness never rots. The figures are
//! meaningless at this size; what is checked is that each scenario ran end
//! to end through the real agent, relays and (where installed) Chromium and
//! measured something consistent. Real runs stay out of the test suite: see
//! BENCHMARKS.md.

use ponte_tests::{bin_path, require_program, Chromium, Proc};
use serde_json::Value;
use std::time::Duration;

/// The whole smoke run's budget (it takes about 70 s on 2 cores).
const BUDGET: Duration = Duration::from_secs(240);

fn report(dir: &std::path::Path, scenario: &str) -> Value {
    let path = dir.join(format!("{scenario}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(v["scenario"], scenario);
    assert_eq!(v["smoke"], true);
    assert!(!v["tables"].as_array().expect("tables").is_empty(), "{scenario}: no table");
    v
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_benchmark_scenario_runs_at_smoke_size() {
    let _heavy = ponte_tests::e2e_lock();
    let whep = require_program(Chromium::binary(), "chromium");
    let out = tempfile::tempdir().expect("temp dir");
    let mut cmd = std::process::Command::new(bin_path("ponte-bench").expect("ponte-bench built"));
    cmd.args(["all", "--smoke", "--no-build", "--out-dir"]).arg(out.path());
    if !whep {
        cmd.arg("--no-whep");
    }
    let mut bench = Proc::spawn_command("ponte-bench", cmd).expect("spawn ponte-bench");
    let status = bench.wait_exit(BUDGET).await.expect("ponte-bench finished in time");
    assert!(status.success(), "ponte-bench failed ({status}):\n{}", bench.tail(60));
    let dir = out.path();

    let transport = report(dir, "transport-limit");
    for run in transport["data"].as_array().expect("transport runs") {
        assert!(f(&run["gbps"]) > 0.05, "transport limit {run}");
    }

    let fanout = report(dir, "fanout");
    let steps = fanout["data"]["fanout"]["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    for s in steps {
        // A tiny load on an idle relay: everything offered arrives.
        let delivery = f(&s["delivery"]);
        assert!((0.8..1.2).contains(&delivery), "delivery {delivery} in {s}");
        assert!(f(&s["end_to_end"]["n"]) > 0.0, "latency samples in {s}");
        // /proc counts CPU in 10 ms ticks: a tiny step may read 0.
        assert!(f(&s["relay_cpu"]["cpu_secs"]) >= 0.0, "relay CPU in {s}");
    }
    assert!(f(&fanout["data"]["fanout"]["max_gbps"]) > 0.0);

    let latency = report(dir, "latency");
    let levels = latency["data"]["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 3);
    for l in levels {
        for hop in ["agent_hop", "relay_hop", "end_to_end"] {
            let d = &l["step"][hop];
            assert!(f(&d["n"]) > 0.0, "{hop} samples in {l}");
            // Loopback: a hop is well under a second, and the relay's hop
            // is measured on the same frames the probe saw.
            assert!(f(&d["p50_ms"]) < 1000.0, "{hop} in {l}");
        }
    }

    let ttff = report(dir, "ttff");
    let paths: Vec<&str> = ttff["data"]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p["path"].as_str().unwrap_or(""))
        .collect();
    let mut want = vec!["QUIC cold", "QUIC warm"];
    if whep {
        want.extend(["WHEP cold", "WHEP warm"]);
    }
    assert_eq!(paths, want);
    for p in ttff["data"]["paths"].as_array().expect("paths") {
        let ms = f(&p["dist"]["max_ms"]);
        assert!(ms > 0.0 && ms < 10_000.0, "{p}");
    }

    // Capture → shown in the console's wall: one tile on the main stream,
    // sixteen on substreams, every frame aged from its SEI, none lost.
    if whep {
        let glass = report(dir, "glass");
        let layouts = glass["data"]["layouts"].as_array().expect("layouts");
        let grids: Vec<(&str, &str, usize)> = layouts
            .iter()
            .map(|l| {
                (
                    l["grid"].as_str().unwrap_or(""),
                    l["quality"].as_str().unwrap_or(""),
                    l["tiles"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        assert_eq!(grids, [("1x1", "main", 1), ("4x4", "sub", 16)]);
        for l in layouts {
            let d = &l["pooled"];
            assert!(f(&d["n"]) >= 10.0 * l["tiles"].as_array().map_or(0, Vec::len) as f64, "frames in {l}");
            // Loopback: a frame is shown well within a second of capture.
            assert!(f(&d["p50_ms"]) > 0.0 && f(&d["p95_ms"]) < 1000.0, "{d}");
            assert_eq!(f(&l["gaps"]), 0.0, "samples lost between polls: {l}");
            // Chromium decodes every frame sent, and shows no more than it decoded.
            let (shown, decoded, sent) = (f(&l["shown"]), f(&l["decoded"]), f(&l["sent"]));
            assert!(
                decoded >= 0.8 * sent && shown <= decoded + l["tiles"].as_array().map_or(0, Vec::len) as f64,
                "{l}"
            );
            assert!(f(&l["badge_frames"]) > 0.0 && f(&l["badge_error_ms"]) < 100.0, "{l}");
            for t in l["tiles"].as_array().expect("tiles") {
                assert!(f(&t["age"]["n"]) > 0.0 && t["quality"] == l["quality"], "tile {t} of {}", l["grid"]);
            }
        }
    }

    // WHEP viewers in the bench: every step served every viewer its
    // camera's rate, and the relay's CPU was read.
    let wall = report(dir, "wall");
    let r = &wall["data"]["result"];
    assert!(r["error"].is_null(), "{r}");
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), wall["data"]["params"]["viewers"].as_array().map_or(0, Vec::len), "{r}");
    for s in steps {
        let (got, want) = (f(&s["egress_gbps"]), f(&s["nominal_gbps"]));
        assert!((got - want).abs() <= 0.2 * want, "wall step {s}: {got} of {want} Gbit/s");
        assert!(f(&s["min_viewer_share"]) > 0.8, "{s}");
        assert!(f(&s["relay_cpu"]["cpu_secs"]) >= 0.0 && f(&s["bench_cpu"]["cpu_secs"]) > 0.0, "{s}");
    }
    // The WebRTC transport alone (raw webrtc-rs senders → receivers) carried
    // its rate too.
    let raw = &r["raw"];
    assert!(f(&raw["gbps"]) > 0.0 && f(&raw["min_viewer_share"]) > 0.8, "{raw}");

    let memory = report(dir, "memory");
    let kbps = f(&memory["data"]["params"]["replay"]["main_kbps"]);
    for l in memory["data"]["levels"].as_array().expect("levels") {
        let streams = f(&l["streams"]);
        let want = streams * kbps / 1000.0;
        let got = f(&l["ingest_mbps"]);
        assert!((got - want).abs() <= 0.25 * want + 0.1, "{streams} streams: {got} Mbit/s, want {want}");
        assert!(f(&l["agent_rss"]) > 1e6 && f(&l["relay_rss"]) > 1e6, "{l}");
    }

    let city = report(dir, "city");
    let c = &city["data"]["result"];
    let (want, got) = (f(&c["expected_mbps"]), f(&c["received_mbps"]));
    assert!((got - want).abs() <= 0.25 * want, "city: relays received {got} Mbit/s, want {want}");
    assert!(f(&c["agent"]["cpu_secs"]) > 0.0);

    // Two agents, three relays: every phase delivered what it asked for
    // (WHEP viewers included when Chromium runs), and every node was read.
    let sizing = report(dir, "sizing");
    let phases = sizing["data"]["result"]["phases"].as_array().expect("phases");
    assert!(phases.len() >= 11, "{} phases", phases.len());
    assert_eq!(phases.iter().any(|p| p["name"] == "+ WHEP × V"), whep);
    for p in phases {
        let (want, got) = (f(&p["expected_mbps"]), f(&p["received_mbps"]));
        assert!(
            (got - want).abs() <= 0.25 * want + 0.1,
            "sizing phase {p}: received {got} Mbit/s, want {want}"
        );
        assert_eq!(p["cores"].as_array().map(Vec::len), Some(5), "{p}");
    }
    let v = &sizing["data"]["result"]["validation"];
    assert_eq!(v["measured"].as_array().map(Vec::len), Some(5), "{v}");
    for x in v["predicted"].as_array().expect("predicted") {
        // Costs below the noise read 0, never less.
        assert!(f(x) >= 0.0, "a negative prediction: {v}");
    }

    // Two agents, each killed in turn: the moved cameras play again from
    // the other agent, and go back to theirs when it returns.
    let failover = report(dir, "failover");
    let r = &failover["data"]["result"];
    assert!(!r["runs"].as_array().expect("runs").is_empty(), "{r}");
    assert!(r["kill_to_first"]["n"].as_u64() > Some(0), "{r}");
    assert!(f(&r["kill_to_first"]["max_ms"]) < 5000.0, "failover took {}", r["kill_to_first"]);
    assert!(r["restart_to_back"]["n"].as_u64() > Some(0), "{r}");

    // Incidents: every share reached the partner and its stream ended
    // within a second of the share's end; with the test ONVIF camera,
    // alarms reached it and a chattering camera was rate-limited.
    let incidents = report(dir, "incidents");
    let r = &incidents["data"]["result"];
    let shares = r["shares"].as_array().expect("shares");
    assert_eq!(shares.len(), 3, "{r}");
    assert!(f(&r["share_board"]["max_ms"]) < 1000.0 && f(&r["share_catalog"]["max_ms"]) < 1000.0, "{r}");
    for s in shares {
        assert!(f(&s["frames_before"]) > 0.0 && f(&s["last_frame_ms"]) < 1000.0, "stream not ended: {s}");
    }
    if ponte_tests::onvif_camera::onvif_camera_available() {
        assert_eq!(r["alarms"].as_array().map(Vec::len), Some(6), "{r}");
        assert!(f(&r["alarm_watched"]["max_ms"]) < 2000.0, "{r}");
        let c = &r["chatter"];
        assert!(f(&c["raised"]) >= 1.0 && f(&c["raised"]) + f(&c["suppressed"]) == f(&c["events"]), "{c}");
    }
}
