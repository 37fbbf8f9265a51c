//! The QUIC session both ends speak: a control stream carrying `Control`
//! messages, and one unidirectional stream per GOP carrying media.

use crate::hub::HubItem;
use crate::media::{Frame, Quality};
use crate::wire::{encode_frame_header, Control, GopHeader, MediaDecoder, MediaEvent, WireError};
use bytes::BytesMut;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer sent bytes that are not ponte.
    #[error("protocol violation: {0}")]
    Wire(#[from] WireError),
    /// The QUIC connection was lost or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream write failed.
    #[error("write: {0}")]
    Write(quinn::WriteError),
    /// A stream read failed.
    #[error("read: {0}")]
    Read(quinn::ReadError),
    /// The peer broke the session's rules (e.g. wrong first message).
    #[error("{0}")]
    Protocol(String),
    /// The control stream ended.
    #[error("control stream closed by peer")]
    Closed,
}

// A stream that failed because the connection went is reported as the
// connection's error: that one carries the peer's close reason ("closed by
// peer: relay removed from the agent's config"), which quinn's stream
// errors print only as "connection lost".
impl From<quinn::ReadError> for SessionError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(c) => SessionError::Connection(c),
            e => SessionError::Read(e),
        }
    }
}

impl From<quinn::WriteError> for SessionError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => SessionError::Connection(c),
            e => SessionError::Write(e),
        }
    }
}

/// Stream credit a receiver of GOP streams grants its peer when a
/// connection starts (QUIC `max_streams` for unidirectional streams).
pub const INITIAL_UNI_STREAMS: u32 = 256;
/// The most stream credit a receiver ever grants one connection.
pub const MAX_UNI_STREAMS: u32 = 4096;

/// The unidirectional stream credit a receiver of GOP streams grants its
/// peer, grown with the subscriptions on the connection.
///
/// Each subscription has at most two GOP streams open at the sender (the
/// current one and a superseded one draining), and a stream's credit comes
/// back once the receiver has read it to its end or its reset. The credit
/// has a memory cost that stays: quinn 0.11 keeps one receive state per
/// credited stream slot and reuses it for the stream that takes the slot
/// next (quinn-rs/quinn#2600), so a receiver that granted 4096 streams holds
/// 4096 states once 4096 GOPs went by. Granting what the subscriptions need
/// keeps that proportional to the subscriptions a link ever carried. The
/// credit never shrinks: quinn cannot hand the states back.
#[derive(Debug, Clone)]
pub struct UniStreamWindow {
    granted: u32,
}

impl Default for UniStreamWindow {
    fn default() -> Self {
        Self { granted: INITIAL_UNI_STREAMS }
    }
}

impl UniStreamWindow {
    /// The credit `subscriptions` need: four streams each, with room for
    /// stragglers, in powers of two so it is announced rarely.
    pub fn needed(subscriptions: usize) -> u32 {
        let want = (subscriptions.saturating_mul(4)).saturating_add(64);
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        want.checked_next_power_of_two()
            .unwrap_or(MAX_UNI_STREAMS)
            .clamp(INITIAL_UNI_STREAMS, MAX_UNI_STREAMS)
    }

    /// The new credit to announce when `subscriptions` need more than is
    /// granted, else `None`.
    pub fn fit(&mut self, subscriptions: usize) -> Option<u32> {
        let needed = Self::needed(subscriptions);
        (needed > self.granted).then(|| {
            self.granted = needed;
            needed
        })
    }

    /// Grows `conn`'s credit when `subscriptions` need more.
    pub fn fit_connection(&mut self, conn: &quinn::Connection, subscriptions: usize) {
        if let Some(n) = self.fit(subscriptions) {
            conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(n));
            tracing::debug!(streams = n, subscriptions, "granted the peer more GOP streams");
        }
    }

    /// The credit granted so far.
    pub fn granted(&self) -> u32 {
        self.granted
    }
}

/// QUIC application error codes used when closing.
pub mod close_code {
    /// Normal shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer violated the protocol.
    pub const PROTOCOL: u32 = 1;
    /// The peer's identity is not allowed here.
    pub const FORBIDDEN: u32 = 2;
    /// Stream reset because a newer GOP superseded it.
    pub const SUPERSEDED: u32 = 3;
    /// Subscription ended.
    pub const UNSUBSCRIBED: u32 = 4;
}

/// Writing half of the control stream.
pub struct ControlSender {
    send: quinn::SendStream,
    buf: BytesMut,
}

impl ControlSender {
    /// Wraps the send half of the control stream, which goes before any
    /// media (a few small messages; a pause notice must not wait for video).
    pub fn new(send: quinn::SendStream) -> Self {
        let _ = send.set_priority(i32::MAX);
        Self { send, buf: BytesMut::with_capacity(1024) }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Control) -> Result<(), SessionError> {
        self.buf.clear();
        msg.encode(&mut self.buf)?;
        self.send.write_all(&self.buf).await?;
        Ok(())
    }
}

/// Reading half of the control stream.
pub struct ControlReceiver {
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl ControlReceiver {
    /// Wraps the receive half of the control stream.
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self { recv, buf: BytesMut::with_capacity(4096) }
    }

    /// Receives the next message; an error for bad bytes or a closed stream.
    pub async fn recv(&mut self) -> Result<Control, SessionError> {
        loop {
            if let Some(msg) = Control::decode(&mut self.buf)? {
                return Ok(msg);
            }
            match self.recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None => return Err(SessionError::Closed),
            }
        }
    }
}

/// Opens the control stream (dialling side) and exchanges `Hello`.
pub async fn open_control(
    conn: &quinn::Connection,
    hello: &Control,
) -> Result<(ControlSender, ControlReceiver, Control), SessionError> {
    let (send, recv) = conn.open_bi().await?;
    let mut tx = ControlSender::new(send);
    let mut rx = ControlReceiver::new(recv);
    tx.send(hello).await?;
    let peer = expect_hello(rx.recv().await?)?;
    Ok((tx, rx, peer))
}

/// Accepts the control stream (listening side) and exchanges `Hello`.
pub async fn accept_control(
    conn: &quinn::Connection,
    hello: &Control,
) -> Result<(ControlSender, ControlReceiver, Control), SessionError> {
    let (send, recv) = conn.accept_bi().await?;
    let mut tx = ControlSender::new(send);
    let mut rx = ControlReceiver::new(recv);
    let peer = expect_hello(rx.recv().await?)?;
    tx.send(hello).await?;
    Ok((tx, rx, peer))
}

fn expect_hello(msg: Control) -> Result<Control, SessionError> {
    match msg {
        Control::Hello { version, .. } if version != crate::wire::PROTOCOL_VERSION => {
            Err(SessionError::Protocol(format!(
                "peer speaks protocol version {version}, this node speaks {}",
                crate::wire::PROTOCOL_VERSION
            )))
        }
        hello @ Control::Hello { .. } => Ok(hello),
        other => Err(SessionError::Protocol(format!("expected Hello first, got {}", kind(&other)))),
    }
}

/// Short name of a message, for logs.
pub fn kind(msg: &Control) -> &'static str {
    match msg {
        Control::Hello { .. } => "hello",
        Control::Policy { .. } => "policy",
        Control::BudgetShare { .. } => "budget_share",
        Control::Catalog { .. } => "catalog",
        Control::Subscribe { .. } => "subscribe",
        Control::Unsubscribe { .. } => "unsubscribe",
        Control::SubscribeOk { .. } => "subscribe_ok",
        Control::SubscribeError { .. } => "subscribe_error",
        Control::Stats(_) => "stats",
        Control::Paused { .. } => "paused",
        Control::Resumed { .. } => "resumed",
        Control::Ptz { .. } => "ptz",
        Control::PtzResult { .. } => "ptz_result",
        Control::PtzLock { .. } => "ptz_lock",
        Control::Viewers { .. } => "viewers",
        Control::AuditHead { .. } => "audit_head",
        Control::Recordings { .. } => "recordings",
        Control::RecordingsInfo { .. } => "recordings_info",
        Control::Export { .. } => "export",
        Control::ExportResult { .. } => "export_result",
        Control::Incident { .. } => "incident",
        Control::IncidentAction { .. } => "incident_action",
        Control::Grants { .. } => "grants",
    }
}

/// Stream priorities of one session: each new GOP stream outranks all older
/// ones, whatever camera it belongs to, so fresh video goes first.
#[derive(Debug, Default)]
pub struct PriorityClock(AtomicI32);

impl PriorityClock {
    fn next(&self) -> i32 {
        // Wraps after 2^31 GOPs (years); ordering is only briefly wrong then.
        self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }
}

/// Stream priority of a GOP once the next one of its subscription started.
pub const SUPERSEDED_PRIORITY: i32 = i32::MIN;

/// Counters of what a GOP sender did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendCounters {
    /// Payload bytes written.
    pub bytes: u64,
    /// Frames written.
    pub frames: u64,
    /// GOP streams opened.
    pub gops: u64,
    /// Older GOP streams reset because they were still queued.
    pub gops_reset: u64,
}

/// Sends one subscription's media: a new unidirectional stream per GOP. A
/// GOP that is older than the newest complete one and still not fully
/// received when the next GOP starts is reset (the receiver keeps its
/// decodable prefix): stale video never holds up fresh video.
///
/// The GOP header's sequence number counts the subscription's GOPs, whatever
/// track they come from, so the receiver can order GOPs across a switch
/// between main and substream.
pub struct GopSender {
    conn: quinn::Connection,
    subscription: u64,
    priorities: Arc<PriorityClock>,
    /// Stream priority of current GOPs, when set (else newest first).
    class: Option<i32>,
    /// (track GOP, quality, stream) of the GOP being sent.
    current: Option<(u64, Quality, quinn::SendStream)>,
    draining: Option<oneshot::Sender<()>>,
    next_seq: u64,
    resets: Arc<AtomicU64>,
    counters: SendCounters,
}

impl GopSender {
    /// A sender for `subscription` on `conn`.
    pub fn new(conn: quinn::Connection, subscription: u64, priorities: Arc<PriorityClock>) -> Self {
        Self {
            conn,
            subscription,
            priorities,
            class: None,
            current: None,
            draining: None,
            next_seq: 1,
            resets: Arc::new(AtomicU64::new(0)),
            counters: SendCounters::default(),
        }
    }

    /// Gives this subscription's current GOPs a fixed stream priority (e.g.
    /// its shaping class): current GOPs of equal class share the link, a
    /// higher class goes first, and every superseded GOP waits behind all
    /// current ones. Without it, each new GOP outranks all older streams.
    pub fn set_class(&mut self, class: i32) {
        self.class = Some(class);
        if let Some((_, _, stream)) = self.current.as_mut() {
            let _ = stream.set_priority(class);
        }
    }

    /// What was sent so far.
    pub fn counters(&self) -> SendCounters {
        SendCounters { gops_reset: self.resets.load(Ordering::Relaxed), ..self.counters }
    }

    /// True when `item` would continue the GOP being sent (same track GOP).
    pub fn continues(&self, item: &HubItem, quality: Quality) -> bool {
        matches!(&self.current, Some((seq, q, _)) if *seq == item.gop_seq && *q == quality)
    }

    /// Sends one hub item of the track of `quality`, opening a new GOP
    /// stream when its GOP starts (or the track changes at a keyframe).
    pub async fn send(&mut self, item: &HubItem, quality: Quality) -> Result<(), SessionError> {
        if !self.continues(item, quality) {
            if !item.frame.keyframe {
                // Joined mid-GOP after a skip: wait for the next keyframe.
                return Ok(());
            }
            self.end_gop();
            let mut stream = self.conn.open_uni().await?;
            let _ = stream.set_priority(self.class.unwrap_or_else(|| self.priorities.next()));
            let mut hdr = BytesMut::with_capacity(64);
            let seq = self.next_seq;
            self.next_seq += 1;
            GopHeader { subscription: self.subscription, quality, seq, config: (*item.config).clone() }
                .encode(&mut hdr);
            stream.write_all(&hdr).await?;
            self.counters.gops += 1;
            self.current = Some((item.gop_seq, quality, stream));
        }
        if let Some((_, _, stream)) = self.current.as_mut() {
            write_frame(stream, &item.frame).await?;
            self.counters.frames += 1;
            self.counters.bytes += item.frame.payload.len() as u64;
        }
        Ok(())
    }

    /// Ends the GOP being sent (e.g. before a pause): it is finished, and
    /// reset if still not received when the next GOP after it starts.
    pub fn end_gop(&mut self) {
        // Signalling the drain task of the GOP before makes it reset that
        // one if the peer has not acknowledged all of it yet.
        if let Some(tx) = self.draining.take() {
            let _ = tx.send(());
        }
        if let Some((_, _, mut stream)) = self.current.take() {
            // Superseded: whatever is left of it goes after every current GOP.
            let _ = stream.set_priority(SUPERSEDED_PRIORITY);
            let _ = stream.finish();
            let (tx, rx) = oneshot::channel::<()>();
            self.draining = Some(tx);
            let resets = self.resets.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stream.stopped() => {}
                    superseded = rx => {
                        // A newer GOP is complete and this one is still
                        // queued: give up on it. (A dropped sender means the
                        // subscription ended.)
                        let code = if superseded.is_ok() { close_code::SUPERSEDED } else { close_code::UNSUBSCRIBED };
                        if stream.reset(quinn::VarInt::from_u32(code)).is_ok() && superseded.is_ok() {
                            resets.fetch_add(1, Ordering::Relaxed);
                            tracing::trace!("stale GOP stream reset");
                        }
                    }
                }
            });
        }
    }

    /// Gives up on the GOP being sent, now, and on the one before it if it
    /// is still queued: what QUIC holds of them is dropped. For a
    /// subscription stepped down as the path narrows, whose queued frames
    /// would reach the viewer late; the relay sees superseded GOPs and the
    /// next GOP starts at a keyframe.
    pub fn abandon(&mut self) {
        if let Some(tx) = self.draining.take() {
            let _ = tx.send(());
        }
        if let Some((_, _, mut stream)) = self.current.take() {
            if stream.reset(quinn::VarInt::from_u32(close_code::SUPERSEDED)).is_ok() {
                self.resets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends the subscription's media: the current GOP is reset.
    pub fn stop(&mut self) {
        self.draining.take();
        if let Some((_, _, mut stream)) = self.current.take() {
            let _ = stream.reset(quinn::VarInt::from_u32(close_code::UNSUBSCRIBED));
        }
    }
}

impl Drop for GopSender {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn write_frame(stream: &mut quinn::SendStream, frame: &Frame) -> Result<(), SessionError> {
    // One write for header and payload: one lock of the connection and one
    // wake of its driver per frame, not two. The payload goes to quinn as
    // the same `Bytes`: no copy (quinn would copy the header anyway).
    let mut chunks = [bytes::Bytes::copy_from_slice(&encode_frame_header(frame)), frame.payload.clone()];
    stream.write_all_chunks(&mut chunks).await?;
    Ok(())
}

/// Reads one GOP stream, calling `on_event` for the header and each frame.
/// Returns when the stream ends; a reset by the sender is a normal end
/// (superseded GOP) and is reported as `Ok(false)`.
pub async fn read_gop_stream(
    recv: quinn::RecvStream,
    on_event: impl FnMut(MediaEvent) -> bool,
) -> Result<bool, SessionError> {
    read_gop_stream_after(&[], recv, on_event).await
}

/// [`read_gop_stream`] of a stream whose first bytes (`prefix`) were
/// already read, e.g. to tell a GOP stream from an export stream.
pub async fn read_gop_stream_after(
    prefix: &[u8],
    mut recv: quinn::RecvStream,
    mut on_event: impl FnMut(MediaEvent) -> bool,
) -> Result<bool, SessionError> {
    let mut dec = MediaDecoder::new();
    dec.push(prefix);
    while let Some(ev) = dec.poll()? {
        if !on_event(ev) {
            let _ = recv.stop(quinn::VarInt::from_u32(close_code::UNSUBSCRIBED));
            return Ok(false);
        }
    }
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                dec.push(&chunk.bytes);
                while let Some(ev) = dec.poll()? {
                    if !on_event(ev) {
                        let _ = recv.stop(quinn::VarInt::from_u32(close_code::UNSUBSCRIBED));
                        return Ok(false);
                    }
                }
            }
            Ok(None) => {
                dec.finish()?;
                return Ok(true);
            }
            Err(quinn::ReadError::Reset(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a unidirectional stream from an agent carries, told by its first
/// two bytes.
pub enum UniStream {
    /// A GOP stream ([`crate::wire::MEDIA_MAGIC`]); the bytes read so far.
    Gop(bytes::Bytes),
    /// An export stream ([`crate::wire::EXPORT_MAGIC`]); the bytes read so far.
    Export(bytes::Bytes),
}

/// Reads the first bytes of a stream to tell what it carries; None when it
/// ends first.
pub async fn sniff(recv: &mut quinn::RecvStream) -> Result<Option<UniStream>, SessionError> {
    let mut head = BytesMut::new();
    while head.len() < 2 {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk.bytes),
            Ok(None) | Err(quinn::ReadError::Reset(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    let head = head.freeze();
    Ok(Some(if head.starts_with(&crate::wire::EXPORT_MAGIC) {
        UniStream::Export(head)
    } else {
        UniStream::Gop(head)
    }))
}

/// An export stream read whole: its header, the signed manifest, the clip.
pub struct ExportStream {
    /// The header.
    pub header: crate::wire::ExportHeader,
    /// Signed manifest, JSON.
    pub manifest: Vec<u8>,
    /// The MP4.
    pub clip: Vec<u8>,
}

/// Reads an export stream whose first bytes are `prefix`, refusing one
/// longer than its header says or than the limits, and one `accept` turns
/// down once its header is read (nobody asked for it): that one is stopped
/// before its clip is buffered.
pub async fn read_export_stream(
    prefix: &[u8],
    mut recv: quinn::RecvStream,
    accept: impl FnOnce(&crate::wire::ExportHeader) -> bool,
) -> Result<ExportStream, SessionError> {
    let mut accept = Some(accept);
    use crate::wire::{ExportHeader, EXPORT_HEADER_LEN};
    let mut buf = prefix.to_vec();
    let mut header: Option<ExportHeader> = None;
    loop {
        let first: Option<&[u8; EXPORT_HEADER_LEN]> = buf.first_chunk();
        if let (None, Some(h)) = (header, first) {
            let parsed = ExportHeader::decode(h)?;
            if let Some(accept) = accept.take() {
                if !accept(&parsed) {
                    let _ = recv.stop(quinn::VarInt::from_u32(close_code::UNSUBSCRIBED));
                    return Err(SessionError::Protocol(format!(
                        "export stream {} of {} bytes: nobody here asked for it",
                        parsed.export, parsed.clip_len
                    )));
                }
            }
            buf.reserve(
                (parsed.manifest_len as usize).saturating_add(parsed.clip_len as usize).min(64 << 20),
            );
            header = Some(parsed);
        }
        let want = header.map(|h| EXPORT_HEADER_LEN as u64 + u64::from(h.manifest_len) + h.clip_len);
        if want.is_some_and(|w| buf.len() as u64 > w) {
            return Err(SessionError::Protocol("an export stream is longer than its header says".into()));
        }
        match recv.read_chunk(usize::MAX, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => break,
        }
    }
    let h = header.ok_or(WireError::Truncated("export header"))?;
    let m_end = EXPORT_HEADER_LEN + h.manifest_len as usize;
    if (buf.len() as u64) < m_end as u64 + h.clip_len {
        return Err(WireError::Truncated("export clip").into());
    }
    let clip = buf.split_off(m_end);
    let manifest = buf.split_off(EXPORT_HEADER_LEN);
    Ok(ExportStream { header: h, manifest, clip })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_at_the_initial_credit_and_grows_in_powers_of_two() {
        let mut w = UniStreamWindow::default();
        assert_eq!(w.granted(), INITIAL_UNI_STREAMS);
        assert_eq!(w.fit(0), None);
        assert_eq!(w.fit(48), None, "48 subscriptions need 256: already granted");
        assert_eq!(w.fit(49), Some(512));
        assert_eq!(w.fit(10), None, "credit never shrinks");
        assert_eq!(w.granted(), 512);
        assert_eq!(w.fit(512), Some(4096));
        assert_eq!(w.fit(usize::MAX), None, "capped at the maximum");
        assert_eq!(w.granted(), MAX_UNI_STREAMS);
    }

    #[test]
    fn every_subscription_gets_four_streams_until_the_cap() {
        let mut last = 0;
        for subs in 0..2000usize {
            let n = UniStreamWindow::needed(subs);
            assert!(n >= last, "needed() is monotonic");
            assert!(n == MAX_UNI_STREAMS || n as usize >= subs * 4 + 64, "{subs} subscriptions: {n}");
            assert!(n.is_power_of_two());
            last = n;
        }
    }

    /// A CA and one leaf for `name` (server and client auth), as PEM.
    fn identity(name: &str) -> crate::tls::Identity {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![name.to_owned()]).unwrap();
        leaf.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        crate::tls::Identity::from_pem(&ca.pem(), &leaf.pem(), &key.serialize_pem()).unwrap()
    }

    /// Opens streams on `conn` (writing a byte on each so the peer sees it)
    /// until opening one more would wait for credit; returns them.
    async fn open_until_blocked(conn: &quinn::Connection) -> Vec<quinn::SendStream> {
        let mut open = Vec::new();
        loop {
            // Long enough for the credit to cross loopback on a busy machine.
            let next = tokio::time::timeout(std::time::Duration::from_secs(1), conn.open_uni()).await;
            match next {
                Ok(Ok(mut s)) => {
                    s.write_all(b"g").await.unwrap();
                    open.push(s);
                }
                Ok(Err(e)) => panic!("open_uni: {e}"),
                Err(_) => return open,
            }
        }
    }

    #[tokio::test]
    async fn a_receiver_grants_the_streams_its_subscriptions_need_over_real_quic() {
        let id = identity("localhost");
        let opts = crate::tls::TransportOptions::default();
        let server = crate::tls::server_config(&id, &opts).unwrap();
        let receiver = quinn::Endpoint::server(server, ([127, 0, 0, 1], 0).into()).unwrap();
        let addr = receiver.local_addr().unwrap();
        let mut sender = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
        sender.set_default_client_config(crate::tls::client_config(&id, &opts).unwrap());
        let (to_receiver, accepted) =
            tokio::join!(async { sender.connect(addr, "localhost").unwrap().await.unwrap() }, async {
                receiver.accept().await.unwrap().await.unwrap()
            });
        // The receiver holds every stream open, as a slow reader would.
        let held = tokio::spawn({
            let conn = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok(s) = conn.accept_uni().await {
                    held.push(s);
                }
                held.len()
            }
        });
        let first = open_until_blocked(&to_receiver).await;
        assert_eq!(first.len(), INITIAL_UNI_STREAMS as usize, "the initial credit, no more");

        let mut window = UniStreamWindow::default();
        window.fit_connection(&accepted, 10);
        assert_eq!(window.granted(), INITIAL_UNI_STREAMS, "10 subscriptions fit the initial credit");
        window.fit_connection(&accepted, 200);
        assert_eq!(window.granted(), 1024);
        let more = open_until_blocked(&to_receiver).await;
        assert_eq!(first.len() + more.len(), 1024, "the sender may open what was granted, and waits after");

        to_receiver.close(0u32.into(), b"done");
        accepted.closed().await;
        assert_eq!(held.await.unwrap(), 1024);
    }
}
