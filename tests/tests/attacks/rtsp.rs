//! The relay's RTSP port (the site VMS's way in): a request whose
//! Content-Length wraps the framer's arithmetic, online password guessing
//! against the Digest brake, a Digest answer replayed on another camera, and
//! a slowloris of idle sockets. The attacker speaks raw RTSP from
//! 127.0.0.2; the legitimate VMS is ffmpeg from 127.0.0.1 (it cannot pick its
//! source address), logging in with its own Digest account and decoding.

use anyhow::{bail, Context, Result};
use md5::{Digest as _, Md5};
use ponte_tests::{
    free_tcp_port, relay_digest_viewer, relay_token, Device, DeviceExt, RtspReader, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const VMS_PASSWORD: &str = "videosorveglianza-2026";
/// Where the attacker's sockets come from.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Every failed login is answered this late (the relay's default).
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(900);

/// A relay with RTSP on 127.0.0.1 (`rtsp.auth_deadline_secs` if given,
/// defaults otherwise), fed two synthetic cameras; Digest account `vms`
/// (both cameras) made by the real `ponte-relay passwd`, and a token for the
/// harness.
async fn start(auth_deadline_secs: Option<u64>) -> Result<(Stack, u16)> {
    let vms = relay_digest_viewer("vms", VMS_PASSWORD)?;
    let (ops, ops_table) = relay_token("ops")?;
    let port = free_tcp_port();
    let stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a"), Device::synthetic("cam-b")],
        relay: Tweak::relay(move |relay| {
            let rtsp = relay.rtsp_on(port);
            if let Some(secs) = auth_deadline_secs {
                rtsp.auth_deadline_secs = secs;
            }
            relay.viewer(vms.clone()).token(ops_table.clone());
        }),
        catalog_token: Some(ops),
        ..StackSpec::default()
    })
    .await?;
    Ok((stack, port))
}

/// The legitimate VMS: ffmpeg decoding `camera` with the `vms` account.
fn player(port: u16, camera: &str, secs: u32) -> Result<RtspReader> {
    RtspReader::start(&format!("rtsp://vms:{VMS_PASSWORD}@127.0.0.1:{port}/{camera}"), secs)
}

/// A TCP connection to the relay's RTSP port from `source`.
async fn connect_from(source: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding {source}"))?;
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.context("connecting to RTSP")
}

/// One response: its status and head.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
}

impl Reply {
    /// The `nonce` of the Digest challenge of a 401.
    fn nonce(&self) -> Result<String> {
        let at = self.head.find("nonce=\"").context("a Digest challenge")? + 7;
        let len = self.head[at..].find('"').context("a closed nonce")?;
        Ok(self.head[at..at + len].to_owned())
    }
}

/// A raw RTSP client, as an attacker writes one.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Raw {
    async fn connect(port: u16) -> Result<Raw> {
        Ok(Raw { stream: connect_from(ATTACKER, port).await?, buf: Vec::new(), cseq: 0 })
    }

    async fn request(&mut self, method: &str, url: &str, authorization: Option<&str>) -> Result<Reply> {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(a) = authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<Reply> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let body = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + body {
                    self.buf.drain(..end + 4 + body);
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).context("a status line")?;
                    return Ok(Reply { status, head });
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .context("no answer within 10 s")??;
            if n == 0 {
                bail!("connection closed before a response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The Digest `Authorization` a client holding `password` sends (RFC 2069 style).
fn digest(nonce: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    let md5 =
        |s: String| -> String { Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect() };
    let ha1 = md5(format!("{user}:ponte:{password}"));
    let response = md5(format!("{ha1}:{nonce}:{}", md5(format!("{method}:{uri}"))));
    format!(
        "Digest username=\"{user}\", realm=\"ponte\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
    )
}

/// The relay's audit log.
fn audit(stack: &Stack) -> Result<Vec<Value>> {
    let path = stack.relay_config.audit_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

/// Failed `login` lines from the attacker's address.
fn attacker_failures(stack: &Stack) -> Result<Vec<Value>> {
    let attacker = ATTACKER.to_string();
    Ok(audit(stack)?
        .into_iter()
        .filter(|l| l["action"] == "login" && l["outcome"] == "failed" && l["client"] == attacker.as_str())
        .collect())
}

/// Everything the relay sends on `stream` until it closes it or `quiet`
/// passes without a byte (then `closed` is false), capped at 1 MiB.
async fn read_until_closed(stream: &mut TcpStream, quiet: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    while got.len() < 1 << 20 {
        match tokio::time::timeout(quiet, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return (got, false),
        }
    }
    (got, false)
}

/// One unauthenticated request whose `Content-Length` (2^64 minus the
/// head's own length) once wrapped `head + body` to 0: the relay answered
/// 400 for ever to that one request (a panic in debug builds). Now: one
/// 413 and the connection closed; ffmpeg keeps decoding throughout.
#[tokio::test]
async fn rtsp_content_length_overflow_is_refused() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let (mut stack, port) = start(None).await?;
    let player = player(port, "cam-a", 6)?;
    player.decodes(15, Duration::from_secs(15)).await?;

    let head = |len: u64| {
        format!("SET_PARAMETER rtsp://127.0.0.1:{port}/cam-a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: {len}\r\n\r\n")
    };
    let head_len = head(u64::MAX).len() as u64; // every length here has 20 digits
    let wraps_to_zero = head(u64::MAX - head_len + 1);
    assert_eq!(wraps_to_zero.len() as u64, head_len);
    for attack in [wraps_to_zero, head(u64::MAX)] {
        let frames_before = player.frames();
        let mut s = connect_from(ATTACKER, port).await?;
        s.write_all(attack.as_bytes()).await?;
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        let answer = String::from_utf8_lossy(&answer);
        let replies = answer.matches("RTSP/1.0 ").count();
        assert!(
            replies == 1 && answer.starts_with("RTSP/1.0 413 ") && answer.contains("\r\nCSeq: 1\r\n"),
            "{replies} replies to one request: {:?}",
            answer.chars().take(300).collect::<String>()
        );
        assert!(closed, "the connection stays open after the refusal");
        player.decodes(frames_before + 5, Duration::from_secs(3)).await.context("ffmpeg stalled")?;
    }
    let frames = player.finish().await?;
    assert!(frames >= 60, "6 s of video at 15 fps: {frames} frames");
    assert!(stack.relay.is_running(), "the relay died");
    Ok(())
}

/// Online guessing of the VMS account's Digest password from 127.0.0.2:
/// once braked, every answer is refused unchecked (the right password too),
/// none comes back before the failed-login delay, and each refusal is an
/// audit line; ffmpeg at 127.0.0.1 logs in and decodes meanwhile.
#[tokio::test]
async fn rtsp_digest_guessing_is_braked_even_for_the_right_password() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let (stack, port) = start(None).await?;
    let url = format!("rtsp://127.0.0.1:{port}/cam-a");
    let mut first = Raw::connect(port).await?;
    let challenge = first.request("DESCRIBE", &url, None).await?;
    assert_eq!(challenge.status, 401, "{challenge:?}");
    let nonce = challenge.nonce()?;

    // Guesses from connections in parallel: the first 5 spend the burst,
    // the rest (and then the right password) meet the brake.
    let guess = |i: usize| digest(&nonce, "vms", &format!("guess-{i}"), "DESCRIBE", &url);
    let (guessers, rounds) = (8, 3);
    let player = player(port, "cam-a", 5)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for g in 0..guessers {
        let (url, answers) = (url.clone(), (0..rounds).map(|r| guess(g * rounds + r)).collect::<Vec<_>>());
        tasks.spawn(async move {
            let mut c = Raw::connect(port).await?;
            let mut got = Vec::new();
            for a in answers {
                let t = Instant::now();
                got.push((c.request("DESCRIBE", &url, Some(&a)).await?.status, t.elapsed()));
            }
            anyhow::Ok(got)
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.extend(r??);
    }
    let guessing = started.elapsed();
    let right = digest(&nonce, "vms", VMS_PASSWORD, "DESCRIBE", &url);
    let t = Instant::now();
    let braked_right = Raw::connect(port).await?.request("DESCRIBE", &url, Some(&right)).await?;
    let braked_right_after = t.elapsed();
    eprintln!(
        "{} guesses on {guessers} connections in {guessing:?}; statuses {:?}; the right password braked: {} after {braked_right_after:?}",
        answers.len(),
        answers.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        braked_right.status
    );
    assert_eq!(braked_right.status, 503, "the right password while braked: {braked_right:?}");
    assert!(braked_right.head.contains("\r\nRetry-After: "), "{braked_right:?}");
    assert!(answers.iter().all(|(s, _)| *s == 401 || *s == 503), "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 401).count(), 5, "the burst of 5 is checked");
    let fastest = answers.iter().map(|(_, t)| *t).chain([braked_right_after]).min().unwrap_or_default();
    assert!(fastest >= FAILED_LOGIN_DELAY, "a refusal came back after {fastest:?}: guessing at line rate");

    // Every refusal is audited, naming the attacker's address.
    let failures = attacker_failures(&stack)?;
    assert_eq!(failures.len(), answers.len() + 1, "{failures:#?}");
    assert!(failures.iter().all(|l| l["viewer"] == "vms"));
    let braked =
        failures.iter().filter(|l| l["reason"].as_str().is_some_and(|r| r.contains("refused unchecked")));
    assert_eq!(braked.count(), answers.len() + 1 - 5);

    // The VMS at another address played all along.
    let frames = player.finish().await?;
    assert!(frames >= 50, "5 s of video at 15 fps: {frames} frames");
    Ok(())
}

/// A Digest answer captured on the site LAN for one camera, replayed on
/// another within the nonce's lifetime: refused and audited, because its
/// `uri` is not the request's. The VMS it was captured from goes on playing.
#[tokio::test]
async fn rtsp_digest_answer_replayed_on_another_uri_is_refused() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let (stack, port) = start(None).await?;
    let player = player(port, "cam-a", 4)?;
    let (cam_a, cam_b) = (format!("rtsp://127.0.0.1:{port}/cam-a"), format!("rtsp://127.0.0.1:{port}/cam-b"));
    let mut c = Raw::connect(port).await?;
    let nonce = c.request("DESCRIBE", &cam_a, None).await?.nonce()?;
    // What the VMS sent for cam-a, as a sniffer on the LAN sees it.
    let captured = digest(&nonce, "vms", VMS_PASSWORD, "DESCRIBE", &cam_a);
    let replayed = c.request("DESCRIBE", &cam_b, Some(&captured)).await?;
    assert_eq!(replayed.status, 401, "the answer for cam-a opened cam-b: {replayed:?}");
    let failures = attacker_failures(&stack)?;
    assert!(
        failures.iter().any(|l| l["viewer"] == "vms"
            && l["reason"].as_str().is_some_and(|r| r.contains("does not match the request URI"))),
        "{failures:#?}"
    );
    // The answer is good for what it was made for.
    let own = Raw::connect(port).await?.request("DESCRIBE", &cam_a, Some(&captured)).await?;
    assert_eq!(own.status, 200, "{own:?}");
    let frames = player.finish().await?;
    assert!(frames >= 40, "4 s of video at 15 fps: {frames} frames");
    Ok(())
}

/// Login deadline of the slowloris test (short, so the test is).
const DEADLINE: Duration = Duration::from_secs(3);

/// 300 connections from 127.0.0.2, each dribbling `\r\n` and never logging
/// in: the relay keeps 16 of them (`max_connections_per_client`), closes the
/// rest at once and the 16 at the login deadline whatever they send, and
/// ffmpeg at 127.0.0.1 logs in and plays all the while.
#[tokio::test]
async fn rtsp_slowloris_from_one_address_leaves_others_playing() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let (mut stack, port) = start(Some(DEADLINE.as_secs())).await?;
    let started = Instant::now();
    let mut sockets = Vec::new();
    for _ in 0..300 {
        sockets.push(connect_from(ATTACKER, port).await?);
    }
    // Each socket dribbles a line end every 500 ms until the relay closes it.
    let mut held = tokio::task::JoinSet::new();
    for mut s in sockets {
        held.spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return started.elapsed() },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if s.write_all(b"\r\n").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut refused = 0;
    while held.try_join_next().is_some() {
        refused += 1;
    }
    eprintln!("slowloris: {refused} of 300 connections closed by the relay within 0.5 s");
    assert_eq!(held.len(), 16, "connections the attacker holds (300 opened)");

    // The VMS at another address logs in and plays while they are held.
    let player = player(port, "cam-a", 3)?;
    player.decodes(10, Duration::from_secs(10)).await?;

    // The held ones are closed at the deadline, dribbling or not.
    let mut at_deadline = Vec::new();
    while let Some(r) = tokio::time::timeout(DEADLINE + Duration::from_secs(5), held.join_next()).await? {
        at_deadline.push(r?);
    }
    at_deadline.sort();
    eprintln!(
        "the 16 held connections were closed {:?} .. {:?} after they opened",
        at_deadline[0], at_deadline[15]
    );
    assert!(
        at_deadline[0] >= DEADLINE - Duration::from_millis(200),
        "closed before the deadline: {at_deadline:?}"
    );
    assert!(at_deadline[15] <= DEADLINE + Duration::from_secs(2), "held past the deadline: {at_deadline:?}");
    let frames = player.finish().await?;
    assert!(frames >= 30, "3 s of video at 15 fps: {frames} frames");
    assert!(stack.relay.is_running(), "the relay died");
    Ok(())
}
