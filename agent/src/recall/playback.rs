//! Playback: a private hub track fed from the store at the pace of the
//! recorded time, so the session's pump sends it like a live camera.

use ponte_proto::hub::{self, TrackKey, TrackReader, TrackWriter};
use ponte_proto::recall::store::{Cursor, Store};
use ponte_proto::wire::Playback;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A gap in the recording longer than this is skipped, not waited through.
const GAP_MS: u64 = 2_000;
/// How often a playback that reached the newest GOP looks for the next one.
const TAIL_POLL: Duration = Duration::from_millis(200);

/// Starts playing `key` back from `p.from_ms`; None when nothing is
/// recorded at or after it.
pub(super) fn start(store: Arc<Store>, key: TrackKey, p: Playback) -> Option<TrackReader> {
    let cursor = store.cursor(&key, p.from_ms)?;
    let writer = hub::track(key);
    let reader = writer.subscribe();
    tokio::spawn(feed(writer, cursor, p));
    Some(reader)
}

/// Pushes the recorded frames at their recorded pace until `p.to_ms`, the
/// end of the store, or nobody reads the track any more.
async fn feed(writer: TrackWriter, mut cursor: Cursor, p: Playback) {
    let mut readers = writer.subscribers();
    // (instant, recorded ms) the pace is measured from.
    let mut clock: Option<(Instant, u64)> = None;
    let mut last_end = 0u64;
    loop {
        if *readers.borrow() == 0 {
            return;
        }
        let (back, next) = match tokio::task::spawn_blocking(move || {
            let next = cursor.next();
            (cursor, next)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(track = %writer.key(), error = %e, "playback: the store reader failed");
                return;
            }
        };
        cursor = back;
        let gop = match next {
            Ok(Some(gop)) => gop,
            Ok(None) => {
                // At the newest recorded GOP: follow the recording as it grows.
                tokio::select! {
                    _ = tokio::time::sleep(TAIL_POLL) => {}
                    _ = readers.changed() => {}
                }
                continue;
            }
            Err(e) => {
                warn!(track = %writer.key(), error = %e, "playback: cannot read the recording");
                return;
            }
        };
        if p.to_ms.is_some_and(|to| gop.wall_ms >= to) {
            debug!(track = %writer.key(), "playback: end of the interval");
            return;
        }
        if writer.config().as_deref() != Some(&*gop.config) {
            writer.set_config(gop.config.clone());
        }
        let rebase = match clock {
            None => true,
            Some(_) => {
                gop.wall_ms > last_end.saturating_add(GAP_MS) || gop.wall_ms.saturating_add(GAP_MS) < last_end
            }
        };
        if rebase {
            clock = Some((Instant::now(), gop.wall_ms));
        }
        let Some((t0, w0)) = clock else { continue };
        for frame in &gop.frames {
            let w = gop.frame_wall_ms(frame);
            if p.to_ms.is_some_and(|to| w >= to) {
                return;
            }
            let at = t0 + Duration::from_millis(w.saturating_sub(w0));
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = readers.wait_for(|n| *n == 0) => return,
            }
            writer.push(frame.clone());
        }
        last_end = gop.end_wall_ms();
    }
}
