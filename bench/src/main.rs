//! ponte-bench: measures ponte on this machine against its transport's own
//! limit, in one run. Each scenario prints tables and writes a JSON report;
//! `ponte-bench report` turns the reports into Markdown for BENCHMARKS.md.
//!
//! `cargo run --release -p ponte-bench -- <scenario>`; the agent and relay
//! binaries of the same profile are built first when run through cargo.

mod callgrind;
mod city;
mod cluster;
mod failover;
mod fanout;
mod glass;
mod incidents;
mod machine;
mod memory;
mod record;
mod report;
mod scan;
mod seek;
mod sizing;
mod stats;
mod subscriber;
mod transport;
mod ttff;
mod wall;
mod webrtc_limit;
mod whep_viewer;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use cluster::Replay;
use machine::Machine;
use report::{Check, Report, Table};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Raw quinn bulk transfer on loopback with ponte's TLS and transport config.
    TransportLimit,
    /// Replay tracks → agent → relay → M QUIC subscribers, load stepped to the maximum.
    Fanout,
    /// Per-hop latency at 10%, 50% and 90% of the fan-out maximum.
    Latency,
    /// Subscribe → first decodable frame, QUIC subscriber and Chromium WHEP viewer.
    Ttff,
    /// Capture → frame shown in Chromium's video wall (`/console`), 1 tile and 16.
    Glass,
    /// Relay CPU per WHEP viewer at 4 Mbit/s, headless non-decoding receivers, stepped.
    Wall,
    /// RSS of agent and relay with 0, 50 and 200 streams.
    Memory,
    /// The Cremona inventory, always on, to two relays: agent CPU.
    City,
    /// Two agents, three relays: the cost of each stream and viewer, a check of that model, the sizing table.
    Sizing,
    /// The Cremona inventory's main streams recorded: agent CPU without and with, disk write rate, GOPs lost.
    Record,
    /// A recording played back from random points in Chromium's console: seek → first replayed frame shown.
    Seek,
    /// Two agents feed one relay; one is killed and restarted, again and again: the viewers' gaps.
    Failover,
    /// Shares, their end under a playing viewer, camera alarms and a chattering camera, at a partner relay.
    Incidents,
    /// Every scenario above, in order, sharing the transport limit and fan-out maximum.
    All,
    /// Render the JSON reports as Markdown (`--update BENCHMARKS.md` rewrites its generated section).
    Report,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::TransportLimit => "transport-limit",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::Ttff => "ttff",
            Scenario::Glass => "glass",
            Scenario::Wall => "wall",
            Scenario::Memory => "memory",
            Scenario::City => "city",
            Scenario::Sizing => "sizing",
            Scenario::Record => "record",
            Scenario::Seek => "seek",
            Scenario::Failover => "failover",
            Scenario::Incidents => "incidents",
            Scenario::All => "all",
            Scenario::Report => "report",
        }
    }
}

const ORDER: [Scenario; 13] = [
    Scenario::TransportLimit,
    Scenario::Fanout,
    Scenario::Latency,
    Scenario::Ttff,
    Scenario::Glass,
    Scenario::Wall,
    Scenario::Memory,
    Scenario::City,
    Scenario::Sizing,
    Scenario::Record,
    Scenario::Seek,
    Scenario::Failover,
    Scenario::Incidents,
];

#[derive(Parser, Debug)]
#[command(
    name = "ponte-bench",
    version,
    about = "ponte benchmarks: throughput, latency, time to first frame, glass to glass, viewers per core, memory, the city, recording, seek, failover, incidents"
)]
struct Cli {
    /// What to run.
    scenario: Scenario,
    /// A few seconds with tiny loads: checks the harness works (figures mean nothing).
    #[arg(long)]
    smoke: bool,
    /// Directory of the JSON reports.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// JSON report path for a single scenario (default `<out-dir>/<scenario>.json`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Use the agent and relay binaries as they are (do not run `cargo build` first).
    #[arg(long)]
    no_build: bool,
    /// Skip the Chromium parts: ttff's WHEP path, glass, sizing's browser viewers.
    #[arg(long)]
    no_whep: bool,
    /// Fan-out: QUIC subscribers the relay feeds.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Bitrate of each replayed main stream, kbit/s.
    #[arg(long)]
    kbps: Option<u32>,
    /// Frames per second of the replay cameras.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// GOP length of the replay cameras, seconds (default 2; 1 in a smoke run).
    #[arg(long)]
    gop_secs: Option<f64>,
    /// Measured window of each load step, seconds.
    #[arg(long)]
    window_secs: Option<f64>,
    /// Fan-out: most tracks the agent is given.
    #[arg(long, default_value_t = 400)]
    max_tracks: usize,
    /// Latency: the fan-out maximum (Gbit/s) to take shares of, instead of measuring it first.
    #[arg(long)]
    max_gbps: Option<f64>,
    /// Latency: loads to measure, percent of the fan-out maximum, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,90")]
    loads: Vec<u32>,
    /// City: tracks (lens × quality) to reach, the inventory first (0 = the inventory alone).
    #[arg(long, default_value_t = 120)]
    tracks: usize,
    /// ttff: measurements per path.
    #[arg(long)]
    rounds: Option<usize>,
    /// Memory: stream counts, comma separated, starting at 0.
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<usize>>,
    /// Sizing: replay cameras on the first agent.
    #[arg(long, default_value_t = 60)]
    sizing_tracks: usize,
    /// Sizing: WHEP viewers (Chromium).
    #[arg(long, default_value_t = 8)]
    viewers: usize,
    /// Wall: WHEP viewer counts to step through, comma separated.
    #[arg(long, value_delimiter = ',')]
    wall_viewers: Option<Vec<usize>>,
    /// Wall: replay cameras the viewers are spread over.
    #[arg(long, default_value_t = 4)]
    wall_cameras: usize,
    /// Glass: seconds each layout plays before its window; record: seconds each phase settles before its window.
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Seek: seconds the agent records before the first seek.
    #[arg(long)]
    record_secs: Option<f64>,
    /// Seek: seeks to random points of the recording.
    #[arg(long)]
    seeks: Option<usize>,
    /// Failover: replay cameras, half on each agent.
    #[arg(long, default_value_t = 8)]
    failover_cameras: usize,
    /// Failover: agents killed and restarted, alternating master-a and master-b.
    #[arg(long)]
    kills: Option<usize>,
    /// Incidents: shares posted, odd ones left to expire, even ones withdrawn (default 20).
    #[arg(long)]
    shares: Option<usize>,
    /// Incidents: motion events at each of the two ONVIF cameras (default 20).
    #[arg(long)]
    alarms: Option<usize>,
    /// Report: rewrite the generated section of this Markdown file (scenarios
    /// without a report in --out-dir keep their section).
    #[arg(long)]
    update: Option<PathBuf>,
}

/// What a scenario function hands back.
struct Output {
    tables: Vec<Table>,
    checks: Vec<Check>,
    notes: Vec<String>,
    data: serde_json::Value,
}

impl Cli {
    fn replay(&self, main_kbps: u32, sub_kbps: u32) -> Replay {
        Replay {
            main_kbps,
            sub_kbps,
            fps: self.fps,
            gop_frames: ((self.gop_secs.unwrap_or(if self.smoke { 1.0 } else { 2.0 }) * f64::from(self.fps))
                .round() as u32)
                .max(1),
        }
    }

    fn fanout_params(&self) -> fanout::FanoutParams {
        let smoke = self.smoke;
        fanout::FanoutParams {
            subscribers: self.subscribers.unwrap_or(if smoke { 2 } else { 8 }),
            replay: self.replay(self.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
            max_tracks: if smoke { self.max_tracks.min(3) } else { self.max_tracks },
            steps: if smoke { 2 } else { 8 },
            refine: if smoke { 0 } else { 3 },
            settle_secs: if smoke { 0.5 } else { 3.0 },
            window_secs: self.window_secs.unwrap_or(if smoke { 0.7 } else { 5.0 }),
        }
    }

    fn command(&self) -> String {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let release = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.ends_with("release")))
            .unwrap_or(false);
        if release {
            format!("cargo run --release -p ponte-bench -- {}", args.join(" "))
        } else {
            format!("ponte-bench {}", args.join(" "))
        }
    }
}

/// Shared between scenarios of one run.
#[derive(Default)]
struct RunState {
    transport: Option<transport::TransportResult>,
    transports: Vec<transport::TransportResult>,
    fanout_max: Option<f64>,
}

/// Builds `ponte-agent` and `ponte-relay` in this binary's profile when run
/// through cargo, so a benchmark never measures stale binaries.
fn build_binaries(no_build: bool) -> Result<()> {
    if !no_build {
        if let Some(cargo) = std::env::var_os("CARGO") {
            let exe = std::env::current_exe()?;
            let profile = exe.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("debug");
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "-p", "ponte-agent", "-p", "ponte-relay"]);
            match profile {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            eprintln!("ponte-bench: building the agent and relay ({profile})");
            let status = cmd.status().context("running cargo build")?;
            if !status.success() {
                bail!("cargo build of ponte-agent and ponte-relay failed ({status})");
            }
        }
    }
    for bin in ["ponte-agent", "ponte-relay"] {
        ponte_tests::bin_path(bin)?;
    }
    Ok(())
}

async fn run_transport(cli: &Cli, st: &mut RunState) -> Result<Output> {
    let params = cli.fanout_params();
    let m = params.subscribers;
    let frame_bytes =
        (u64::from(params.replay.main_kbps) * 125 / u64::from(params.replay.fps.max(1))) as usize;
    let mut shapes = vec![("bulk", 1, 4, 64 << 10)];
    if m > 1 {
        shapes.push(("bulk", m, 4, 64 << 10));
    }
    if !cli.smoke {
        // What the relay does: M connections, a stream per track, frame-sized writes.
        shapes.push(("media-shaped", m, 96, frame_bytes.max(1)));
    }
    let mut results = Vec::new();
    for (shape, connections, streams, chunk_bytes) in shapes {
        let spec = transport::TransportSpec {
            shape: shape.into(),
            connections,
            streams: if cli.smoke { 2 } else { streams },
            chunk_bytes,
            warmup_secs: if cli.smoke { 0.2 } else { 1.0 },
            secs: cli.window_secs.unwrap_or(if cli.smoke { 0.5 } else { 5.0 }),
        };
        let r = transport::run(spec).await?;
        eprintln!("ponte-bench: transport-limit, {shape}, {connections} connection(s): {:.3} Gbit/s", r.gbps);
        results.push(r);
    }
    let mut t = Table::new(
        "Raw QUIC transfer on loopback, ponte's TLS (mutual, ring) and transport config; sender and receiver each on a \
         thread of its own",
        &[
            "shape",
            "connections",
            "streams each",
            "write bytes",
            "Gbit/s",
            "cores busy",
            "Gbit/s per core",
            "CPU s per Gbit",
            "sender s/Gbit",
            "receiver s/Gbit",
        ],
    );
    for r in &results {
        t.row(vec![
            r.spec.shape.clone(),
            r.spec.connections.to_string(),
            r.spec.streams.to_string(),
            r.spec.chunk_bytes.to_string(),
            format!("{:.3}", r.gbps),
            format!("{:.2}", r.cores),
            format!("{:.3}", r.gbps_per_core),
            format!("{:.3}", r.cpu_secs_per_gbit),
            format!("{:.3}", r.sender_cpu_s_per_gbit),
            format!("{:.3}", r.receiver_cpu_s_per_gbit),
        ]);
    }
    let best = results
        .iter()
        .filter(|r| r.spec.shape == "bulk")
        .max_by(|a, b| a.gbps.total_cmp(&b.gbps))
        .cloned()
        .context("no result")?;
    let notes = vec![format!(
        "The transport limit used for ratios is the best bulk row ({:.3} Gbit/s, {} connection(s)); CPU is the whole \
         process (sender and receiver, from getrusage). The media-shaped row writes frame-sized chunks on a stream per \
         track over M connections, as the relay does, to show what that shape costs quinn itself.",
        best.gbps, best.spec.connections
    )];
    st.transport = Some(best);
    st.transports = results.clone();
    Ok(Output { tables: vec![t], checks: vec![], notes, data: serde_json::to_value(&results)? })
}

async fn transport_of(cli: &Cli, st: &mut RunState) -> Result<transport::TransportResult> {
    if st.transport.is_none() {
        let out = run_transport(cli, st).await?;
        finish(cli, Scenario::TransportLimit, out, Instant::now(), Machine::probe(), None)?;
    }
    st.transport.clone().context("transport limit missing")
}

async fn run_fanout(cli: &Cli, st: &mut RunState) -> Result<Output> {
    let t = transport_of(cli, st).await?;
    let params = cli.fanout_params();
    let r = fanout::ramp(&params, t.gbps).await?;
    // A smoke run's windows are too short to judge "carried"; any load will do.
    st.fanout_max = Some(if cli.smoke && r.max_gbps == 0.0 { r.peak_gbps } else { r.max_gbps });
    let (tables, checks, notes) = fanout::fanout_tables(&r, &st.transports);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "fanout": r, "transport": t }) })
}

async fn run_latency(cli: &Cli, st: &mut RunState) -> Result<Output> {
    let max = match cli.max_gbps.or(st.fanout_max) {
        Some(m) => m,
        None => {
            let started = Instant::now();
            let machine = Machine::probe();
            let out = run_fanout(cli, st).await?;
            finish(cli, Scenario::Fanout, out, started, machine, None)?;
            st.fanout_max.context("fan-out maximum missing")?
        }
    };
    anyhow::ensure!(
        max > 0.0,
        "the fan-out maximum is 0: nothing was carried, so there is no load to take shares of"
    );
    let mut params = cli.fanout_params();
    if cli.window_secs.is_none() && !cli.smoke {
        params.window_secs = 10.0;
    }
    let levels = fanout::latency(&params, max, &cli.loads).await?;
    let (tables, checks) = fanout::latency_tables(&levels, max);
    let notes = vec![
        "Agent hop: SEI capture time → arrival at a probe the agent feeds directly. Relay hop: for the same frame, arrival \
         at a relay subscriber minus arrival at the probe. Arrival is when the frame's last byte is read."
            .into(),
    ];
    Ok(Output {
        tables,
        checks,
        notes,
        data: serde_json::json!({ "max_gbps": max, "params": params, "levels": levels }),
    })
}

async fn run_ttff(cli: &Cli) -> Result<Output> {
    let whep = chromium_wanted(cli);
    let params = ttff::TtffParams {
        rounds: cli.rounds.unwrap_or(if cli.smoke { 1 } else { 10 }),
        replay: cli.replay(cli.kbps.unwrap_or(if cli.smoke { 1_000 } else { 4_000 }), 500),
        whep,
    };
    let paths = ttff::run(&params).await?;
    let (tables, checks) = ttff::tables(&paths, &params);
    let mut notes = Vec::new();
    if !whep {
        notes.push(if cli.no_whep {
            "WHEP part skipped (--no-whep).".to_owned()
        } else {
            format!("WHEP part skipped: no Chromium at {}.", ponte_tests::Chromium::binary().display())
        });
    }
    notes.push(
        "QUIC: `Subscribe` sent by a cascade downstream of the relay → first frame complete. WHEP: \
         `ponteViewer.play()` in the relay's viewer page → first decoded frame handed to the compositor \
         (`requestVideoFrameCallback` on the page's video element). getStats phases are up to 50 ms late: \
         Chromium caches the stats report for 50 ms."
            .into(),
    );
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "paths": paths }) })
}

fn chromium_wanted(cli: &Cli) -> bool {
    !cli.no_whep && (ponte_tests::Chromium::available() || ponte_tests::in_ci())
}

async fn run_glass(cli: &Cli) -> Result<Output> {
    if !chromium_wanted(cli) {
        bail!(
            "glass needs Chromium ({}); without it (or with --no-whep) run the other scenarios",
            ponte_tests::Chromium::binary().display()
        );
    }
    let smoke = cli.smoke;
    let params = glass::GlassParams {
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        warmup_secs: cli.warmup_secs.unwrap_or(if smoke { 0.5 } else { 5.0 }),
        window_secs: cli.window_secs.unwrap_or(if smoke { 2.0 } else { 60.0 }),
    };
    let layouts = glass::run(&params).await?;
    let (tables, checks, notes) = glass::tables(&layouts, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "layouts": layouts }) })
}

async fn run_wall(cli: &Cli, st: &mut RunState) -> Result<Output> {
    let t = transport_of(cli, st).await?;
    let smoke = cli.smoke;
    let viewers = cli.wall_viewers.clone().unwrap_or(if smoke { vec![2, 4] } else { vec![10, 50, 100, 200] });
    anyhow::ensure!(!viewers.is_empty(), "--wall-viewers needs at least one count");
    let params = wall::WallParams {
        // Enough pairs for a cost per Gbit, few enough to keep the run short.
        raw_viewers: viewers.iter().copied().max().unwrap_or(0).min(50),
        viewers,
        cameras: if smoke { cli.wall_cameras.min(2) } else { cli.wall_cameras },
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        settle_secs: if smoke { 0.5 } else { 3.0 },
        window_secs: cli.window_secs.unwrap_or(if smoke { 1.0 } else { 10.0 }),
    };
    let r = wall::run(&params).await?;
    let (tables, checks, notes) = wall::tables(&r, &params, &t);
    Ok(Output {
        tables,
        checks,
        notes,
        data: serde_json::json!({ "params": params, "result": r, "transport": t }),
    })
}

async fn run_memory(cli: &Cli) -> Result<Output> {
    let params = memory::MemoryParams {
        levels: cli.levels.clone().unwrap_or(if cli.smoke { vec![0, 2, 4] } else { vec![0, 50, 200] }),
        replay: cli.replay(cli.kbps.unwrap_or(if cli.smoke { 1_000 } else { 4_000 }), 500),
        settle_secs: if cli.smoke { 0.3 } else { 10.0 },
        samples: if cli.smoke { 2 } else { 5 },
        // Two samples span a whole smoke GOP, so its ingest check sees every frame kind.
        sample_secs: 0.5,
    };
    anyhow::ensure!(params.levels.first() == Some(&0), "--levels must start at 0");
    let levels = memory::run(&params).await?;
    let (tables, checks) = memory::tables(&levels, &params);
    let notes = vec![
        format!(
            "Per stream: (RSS at the level − RSS at 0 streams) / streams; RSS is the largest of {} samples {} s apart, \
             taken once the streams have flowed for {} s.",
            params.samples, params.sample_secs, params.settle_secs
        ),
    ];
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "levels": levels }) })
}

async fn run_city(cli: &Cli) -> Result<Output> {
    let params = city::CityParams {
        tracks: if cli.smoke { 0 } else { cli.tracks },
        points: if cli.smoke { 3 } else { 0 },
        replay: cli.replay(cli.kbps.unwrap_or(4_000), 500),
        settle_secs: if cli.smoke { 0.5 } else { 5.0 },
        window_secs: cli.window_secs.unwrap_or(if cli.smoke { 1.0 } else { 30.0 }),
    };
    let c = city::run(&params).await?;
    let (tables, checks, notes) = city::tables(&c, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": c }) })
}

async fn run_sizing(cli: &Cli) -> Result<Output> {
    let whep = chromium_wanted(cli);
    let smoke = cli.smoke;
    let params = sizing::SizingParams {
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        tracks: if smoke { 2 } else { cli.sizing_tracks },
        rtsp: if smoke { 1 } else { (cli.sizing_tracks / 5).max(1) },
        viewers: match (whep, smoke) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => cli.viewers,
        },
        // On-demand RTSP pulls linger 5 s after their last viewer.
        settle_secs: if smoke { 1.5 } else { 6.0 },
        window_secs: cli.window_secs.unwrap_or(if smoke { 1.0 } else { 20.0 }),
    };
    let r = sizing::run(&params).await?;
    let (tables, checks, mut notes) = sizing::tables(&r, &params);
    if !whep {
        notes.push("WHEP viewers skipped (no Chromium, or --no-whep): the per-viewer cost reads 0.".into());
    }
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": r }) })
}

async fn run_record(cli: &Cli) -> Result<Output> {
    let smoke = cli.smoke;
    let params = record::RecordParams {
        points: if smoke { 3 } else { 0 },
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        settle_secs: cli.warmup_secs.unwrap_or(if smoke { 3.0 } else { 10.0 }),
        window_secs: cli.window_secs.unwrap_or(if smoke { 2.0 } else { 60.0 }),
    };
    let r = record::run(&params).await?;
    let (tables, checks, notes) = record::tables(&r, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": r }) })
}

async fn run_seek(cli: &Cli) -> Result<Output> {
    if !chromium_wanted(cli) {
        bail!(
            "seek needs Chromium ({}); without it (or with --no-whep) run the other scenarios",
            ponte_tests::Chromium::binary().display()
        );
    }
    let smoke = cli.smoke;
    let params = seek::SeekParams {
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        record_secs: cli.record_secs.unwrap_or(if smoke { 5.0 } else { 120.0 }),
        seeks: cli.seeks.unwrap_or(if smoke { 2 } else { 20 }),
    };
    let r = seek::run(&params).await?;
    let (tables, checks, notes) = seek::tables(&r, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": r }) })
}

async fn run_failover(cli: &Cli) -> Result<Output> {
    let smoke = cli.smoke;
    let params = failover::FailoverParams {
        cameras: if smoke { cli.failover_cameras.min(4) } else { cli.failover_cameras },
        runs: cli.kills.unwrap_or(if smoke { 2 } else { 5 }),
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        settle_secs: cli.warmup_secs.unwrap_or(if smoke { 1.0 } else { 3.0 }),
        down_secs: if smoke { 2.5 } else { 4.0 },
        after_back_secs: if smoke { 0.5 } else { 2.0 },
        back_timeout_secs: 20.0,
    };
    anyhow::ensure!(
        params.cameras >= 2 && params.runs >= 1,
        "failover needs 2 cameras or more (--failover-cameras) and 1 kill or more (--kills)"
    );
    let r = failover::run(&params).await?;
    let (tables, checks, notes) = failover::tables(&r, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": r }) })
}

async fn run_incidents(cli: &Cli) -> Result<Output> {
    let smoke = cli.smoke;
    let params = incidents::IncidentsParams {
        shares: cli.shares.unwrap_or(if smoke { 3 } else { 20 }),
        share_secs: 6,
        play_secs: if smoke { 0.5 } else { 1.0 },
        alarms: cli.alarms.unwrap_or(if smoke { 3 } else { 20 }),
        chatter_rate: 100,
        chatter_secs: if smoke { 1 } else { 5 },
        replay: cli.replay(cli.kbps.unwrap_or(if smoke { 1_000 } else { 4_000 }), 500),
        shared_fps: 100,
    };
    anyhow::ensure!(params.shares >= 1, "incidents needs 1 share or more (--shares)");
    let r = incidents::run(&params).await?;
    let (tables, checks, notes) = incidents::tables(&r, &params);
    Ok(Output { tables, checks, notes, data: serde_json::json!({ "params": params, "result": r }) })
}

/// Prints a scenario's report and writes its JSON.
fn finish(
    cli: &Cli,
    scenario: Scenario,
    out: Output,
    started: Instant,
    mut machine: Machine,
    seen_builds: Option<Vec<String>>,
) -> Result<Report> {
    machine.recheck_builds();
    for b in seen_builds.unwrap_or_default() {
        if !machine.concurrent_builds.contains(&b) {
            machine.concurrent_builds.push(b);
        }
    }
    let report = Report {
        scenario: scenario.name().into(),
        command: cli.command(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(started.elapsed().as_secs()),
        duration_secs: started.elapsed().as_secs_f64(),
        smoke: cli.smoke,
        machine,
        tables: out.tables,
        checks: out.checks,
        notes: out.notes,
        data: out.data,
    };
    println!("== {} ==\n{}", report.scenario, report.text());
    let path = match (&cli.json, cli.scenario) {
        (Some(p), s) if s == scenario => p.clone(),
        _ => cli.out_dir.join(format!("{}.json", scenario.name())),
    };
    report.write(&path)?;
    eprintln!("ponte-bench: wrote {}", path.display());
    Ok(report)
}

/// Watches for compilers and linkers while a scenario runs.
fn watch_builds() -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let now = machine::builds_running();
                {
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for b in now {
                        if !s.contains(&b) {
                            s.push(b);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    (seen, task)
}

async fn run_one(cli: &Cli, scenario: Scenario, st: &mut RunState) -> Result<Report> {
    let started = Instant::now();
    let mut machine = Machine::probe();
    let others = machine::OthersWindow::start();
    let (seen, watcher) = watch_builds();
    let out = match scenario {
        Scenario::TransportLimit => run_transport(cli, st).await,
        Scenario::Fanout => run_fanout(cli, st).await,
        Scenario::Latency => run_latency(cli, st).await,
        Scenario::Ttff => run_ttff(cli).await,
        Scenario::Glass => run_glass(cli).await,
        Scenario::Wall => run_wall(cli, st).await,
        Scenario::Memory => run_memory(cli).await,
        Scenario::City => run_city(cli).await,
        Scenario::Sizing => run_sizing(cli).await,
        Scenario::Record => run_record(cli).await,
        Scenario::Seek => run_seek(cli).await,
        Scenario::Failover => run_failover(cli).await,
        Scenario::Incidents => run_incidents(cli).await,
        Scenario::All | Scenario::Report => unreachable!("not a single scenario"),
    }
    .with_context(|| format!("scenario {}", scenario.name()));
    watcher.abort();
    machine.others_cores = others.finish();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    finish(cli, scenario, out?, started, machine, Some(seen))
}

fn report(cli: &Cli) -> Result<()> {
    let doc = match &cli.update {
        Some(doc) => {
            Some(std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?)
        }
        None => None,
    };
    // Scenarios run at other times keep the section they have.
    let kept = doc.as_deref().map(report::sections).unwrap_or_default();
    let mut md = String::new();
    let mut fresh = 0;
    for s in ORDER {
        let path = cli.out_dir.join(format!("{}.json", s.name()));
        if path.is_file() {
            md.push_str(&Report::read(&path)?.markdown());
            fresh += 1;
        } else if let Some((_, old)) = kept.iter().find(|(name, _)| name == s.name()) {
            md.push_str(old);
        }
    }
    if fresh == 0 {
        bail!("no reports in {}: run a scenario first", cli.out_dir.display());
    }
    match (&cli.update, doc) {
        (Some(doc), Some(text)) => {
            std::fs::write(doc, report::splice(&text, &md)?)
                .with_context(|| format!("writing {}", doc.display()))?;
            eprintln!("ponte-bench: updated {}", doc.display());
        }
        _ => print!("{md}"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.scenario == Scenario::Report {
        return report(&cli);
    }
    build_binaries(cli.no_build)?;
    let mut st = RunState::default();
    let scenarios: Vec<Scenario> = if cli.scenario == Scenario::All {
        // glass and seek are Chromium or nothing.
        ORDER
            .into_iter()
            .filter(|&s| !matches!(s, Scenario::Glass | Scenario::Seek) || chromium_wanted(&cli))
            .collect()
    } else {
        vec![cli.scenario]
    };
    let mut missed = 0;
    for s in scenarios {
        let report = run_one(&cli, s, &mut st).await?;
        missed += report.checks.iter().filter(|c| !c.met).count();
    }
    if missed > 0 {
        eprintln!("ponte-bench: {missed} target(s) missed (see MISS lines above)");
    }
    Ok(())
}
