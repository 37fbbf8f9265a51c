//! The WebRTC transport's own cost, for `wall`: V raw webrtc-rs senders →
//! V of the bench's receivers, in this process, with no relay between. Each
//! sender is a peer connection with one H.264 track, as the relay builds
//! for a viewer, and packetizes a frame of the camera's size (one slice NAL)
//! for its track every frame period, as the relay does per viewer; the
//! senders run on one thread and the receivers on another, so each side's
//! CPU is known. What the relay costs beyond this is ponte's.

use crate::machine::{self_cpu, thread_cpu};
use crate::transport::{spawn_side, thread_id};
use crate::whep_viewer::{WhepViewer, H264_FMTP, H264_PAYLOAD_TYPE};
use anyhow::{anyhow, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use ponte_proto::rtp::{DEFAULT_MTU, HEADER_LEN};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCSessionDescription,
    Registry,
};

/// Shape of the raw run.
#[derive(Debug, Clone, Serialize)]
pub struct RawSpec {
    /// Sender → receiver pairs.
    pub viewers: usize,
    /// Each sender's rate, kbit/s.
    pub kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// Flowing before measuring.
    pub warmup_secs: f64,
    /// Measured window.
    pub secs: f64,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    /// The spec.
    pub spec: RawSpec,
    /// RTP payload at the receivers, Gbit/s.
    pub gbps: f64,
    /// The least a receiver got, share of the nominal rate.
    pub min_viewer_share: f64,
    /// Sender thread's CPU seconds per Gbit.
    pub sender_cpu_s_per_gbit: f64,
    /// Receiver thread's CPU seconds per Gbit.
    pub receiver_cpu_s_per_gbit: f64,
    /// 1 / the sender's CPU per Gbit.
    pub sender_gbps_per_core: f64,
    /// The whole bench process's CPU seconds per Gbit: near the sum of the
    /// two threads' unless webrtc-rs ran work on threads of its own.
    pub process_cpu_s_per_gbit: f64,
}

type OfferReply = (String, oneshot::Sender<Result<String, String>>);

struct Gathered(watch::Sender<bool>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.0.send_replace(true);
        }
    }
}

/// A sending peer connection answering `offer`, with its track.
async fn answer(offer: String) -> Result<(Arc<dyn PeerConnection>, Arc<TrackLocalStaticRTP>, u32, String)> {
    let h264 = RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![],
    };
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters { rtp_codec: h264.clone(), payload_type: H264_PAYLOAD_TYPE },
        RtpCodecKind::Video,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let (gathered_tx, mut gathered) = watch::channel(false);
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Gathered(gathered_tx)))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?,
    );
    let ssrc = rand_ssrc();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "bench".to_owned(),
        "raw".to_owned(),
        "raw".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: h264,
            ..Default::default()
        }],
    )));
    pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await?;
    pc.set_remote_description(RTCSessionDescription::offer(offer)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|g| *g)).await;
    let sdp = pc.local_description().await.context("no local description")?.sdp;
    Ok((pc, track, ssrc, sdp))
}

/// A distinct SSRC per sender, without a random number crate.
fn rand_ssrc() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x5eed_0001);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One access unit of `bytes`: a single non-IDR slice NAL in Annex B.
fn frame(bytes: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(bytes.max(8));
    b.put_slice(&[0, 0, 0, 1, 0x41]);
    b.put_bytes(0x5a, bytes.saturating_sub(5).max(1));
    b.freeze()
}

/// Runs the senders: answers every offer, then paces frames until `stop`.
async fn senders(mut offers: mpsc::Receiver<OfferReply>, spec: RawSpec, stop: Arc<AtomicBool>) {
    let mut tracks = Vec::new();
    while let Some((offer, reply)) = offers.recv().await {
        match answer(offer).await {
            Ok((pc, track, ssrc, sdp)) => {
                tracks.push((pc, track, ssrc, H264Payloader::default(), 0u16));
                let _ = reply.send(Ok(sdp));
            }
            Err(e) => {
                let _ = reply.send(Err(format!("{e:#}")));
            }
        }
    }
    let au = frame((u64::from(spec.kbps) * 125 / u64::from(spec.fps.max(1))) as usize);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(spec.fps.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut timestamp = 0u32;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        timestamp = timestamp.wrapping_add(90_000 / spec.fps.max(1));
        for (_, track, ssrc, payloader, sequence) in &mut tracks {
            let Ok(payloads) = payloader.payload(DEFAULT_MTU - HEADER_LEN, &au) else { continue };
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.into_iter().enumerate() {
                *sequence = sequence.wrapping_add(1);
                let packet = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        marker: i == last,
                        payload_type: H264_PAYLOAD_TYPE,
                        sequence_number: *sequence,
                        timestamp,
                        ssrc: *ssrc,
                        ..Default::default()
                    },
                    payload,
                };
                let _ = track.write_rtp(packet).await;
            }
        }
    }
    for (pc, ..) in &tracks {
        let _ = pc.close().await;
    }
}

/// Runs the receivers: offers to the senders, then counts until `stop`.
async fn receivers(
    viewers: usize,
    offers: mpsc::Sender<OfferReply>,
    ready: oneshot::Sender<Result<Vec<Arc<crate::whep_viewer::Meter>>, String>>,
    stop: Arc<AtomicBool>,
) {
    let mut all = Vec::new();
    let connect = async {
        for i in 0..viewers {
            let mut v = WhepViewer::build().await?;
            let sdp = v.offer().await?;
            let (tx, rx) = oneshot::channel();
            offers.send((sdp, tx)).await.map_err(|_| anyhow!("the sender thread is gone"))?;
            let answer = rx.await.context("the sender thread is gone")?.map_err(anyhow::Error::msg)?;
            // Until every pair is up the senders only answer: let the
            // first packet come after the last offer.
            all.push((v, answer, i));
        }
        anyhow::Ok(())
    };
    let connected = connect.await;
    drop(offers);
    let result = match connected {
        Ok(()) => {
            let mut meters = Vec::new();
            let mut failed = None;
            for (v, answer, i) in &all {
                if let Err(e) = v.answered(answer.clone(), &format!("raw receiver {i}")).await {
                    failed = Some(format!("{e:#}"));
                    break;
                }
                meters.push(v.meter.clone());
            }
            failed.map_or(Ok(meters), Err)
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let _ = ready.send(result);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (v, ..) in &mut all {
        v.close().await;
    }
}

/// Runs the raw senders and receivers and measures them.
pub async fn run(spec: RawSpec) -> Result<RawResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let (offer_tx, offer_rx) = mpsc::channel::<OfferReply>(4);
    let (sender_tid_tx, sender_tid) = oneshot::channel();
    let sender = {
        let (spec, stop) = (spec.clone(), stop.clone());
        spawn_side("webrtc-sender", move || async move {
            let _ = sender_tid_tx.send(thread_id());
            senders(offer_rx, spec, stop).await;
        })?
    };
    let (receiver_tid_tx, receiver_tid) = oneshot::channel();
    let (ready_tx, ready) = oneshot::channel();
    let receiver = {
        let (viewers, stop) = (spec.viewers, stop.clone());
        spawn_side("webrtc-receiver", move || async move {
            let _ = receiver_tid_tx.send(thread_id());
            receivers(viewers, offer_tx, ready_tx, stop).await;
        })?
    };
    let threads = [
        sender_tid.await.context("sender thread died")?,
        receiver_tid.await.context("receiver thread died")?,
    ];
    let measured = async {
        let meters = ready.await.context("receiver thread died")?.map_err(anyhow::Error::msg)?;
        tokio::time::sleep(Duration::from_secs_f64(spec.warmup_secs)).await;
        let read = |m: &Vec<Arc<crate::whep_viewer::Meter>>| -> Vec<u64> {
            m.iter().map(|x| x.bytes.load(Ordering::Relaxed)).collect()
        };
        let before = read(&meters);
        let mut cpu0: Vec<Duration> = threads.iter().map(|&t| thread_cpu(t)).collect::<Result<_>>()?;
        cpu0.push(self_cpu());
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(spec.secs)).await;
        let after = read(&meters);
        let mut cpu1: Vec<Duration> = threads.iter().map(|&t| thread_cpu(t)).collect::<Result<_>>()?;
        cpu1.push(self_cpu());
        let wall = started.elapsed().as_secs_f64();
        anyhow::Ok((before, after, cpu0, cpu1, wall))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in [sender, receiver] {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let (before, after, cpu0, cpu1, wall) = measured?;
    let got: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a.saturating_sub(*b)).collect();
    let gbit = got.iter().sum::<u64>() as f64 * 8.0 / 1e9;
    let nominal = f64::from(spec.kbps) * 1e3 * wall;
    let per_gbit = |d: Duration| if gbit > 0.0 { d.as_secs_f64() / gbit } else { 0.0 };
    let sender_cpu_s_per_gbit = per_gbit(cpu1[0].saturating_sub(cpu0[0]));
    Ok(RawResult {
        gbps: gbit / wall,
        min_viewer_share: got.iter().map(|&b| b as f64 * 8.0 / nominal).fold(f64::INFINITY, f64::min),
        sender_cpu_s_per_gbit,
        receiver_cpu_s_per_gbit: per_gbit(cpu1[1].saturating_sub(cpu0[1])),
        sender_gbps_per_core: if sender_cpu_s_per_gbit > 0.0 { 1.0 / sender_cpu_s_per_gbit } else { 0.0 },
        process_cpu_s_per_gbit: per_gbit(cpu1[2].saturating_sub(cpu0[2])),
        spec,
    })
}
