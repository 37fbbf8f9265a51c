//! What the state machine hands back: the [`Action`]s the shell executes,
//! subscriptions and PTZ commands planned for it to send, and the refusals.

use super::LinkId;
use ponte_proto::hub::TrackKey;
use ponte_proto::ptz::PtzReply;
use ponte_proto::wire::{Control, SubscribeErrorCode};
use std::fmt;
use std::time::Instant;

/// Why a viewer could not get a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFailure {
    /// Category, as on the wire.
    pub code: SubscribeErrorCode,
    /// Explanation naming the camera and what to do.
    pub reason: String,
}

impl fmt::Display for SubscribeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.reason)
    }
}

impl std::error::Error for SubscribeFailure {}

/// An upstream sent a message only a subscriber may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolViolation(pub String);

/// What the shell must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An agent's incident notice, for the site's board.
    Incident {
        /// The agent's site.
        peer: String,
        /// What.
        notice: ponte_proto::incident::Notice,
    },
    /// Send `msg` on `link`'s control stream.
    Send {
        /// The link.
        link: LinkId,
        /// The message.
        msg: Control,
    },
    /// Answer the subscriber waiting for `track`.
    Resolve {
        /// The track.
        track: TrackKey,
        /// Its answer.
        result: Result<(), SubscribeFailure>,
    },
    /// The track ends for its readers; a waiting subscriber gets `failure`.
    End {
        /// The track.
        track: TrackKey,
        /// The waiting subscriber's answer, if one is owed.
        failure: Option<SubscribeFailure>,
    },
    /// Access to the track was revoked upstream: its readers are told `why`.
    Revoke {
        /// The track.
        track: TrackKey,
        /// Why, for the viewers.
        why: String,
    },
    /// The track lost its upstream: viewers stay but must wait for fresh video.
    Orphaned {
        /// The track.
        track: TrackKey,
    },
    /// The track is fed by a new subscription, whose GOPs number from 1 again.
    Adopted {
        /// The track.
        track: TrackKey,
    },
    /// A dual-path track lost its feed's path and is fed by its copy on
    /// the other path now: same agent, same frames, GOPs numbered by that
    /// subscription.
    Promoted {
        /// The track.
        track: TrackKey,
        /// The link that feeds it now.
        link: LinkId,
    },
    /// Answer the PTZ command `id` sent on `link`.
    PtzAnswer {
        /// The link it went up.
        link: LinkId,
        /// Its request id.
        id: u64,
        /// The answer.
        reply: PtzReply,
    },
    /// The merged catalog may have changed (the cascade re-sends it).
    CatalogChanged,
    /// Call [`UpstreamState::expire_lost`] at `at`.
    WakeAt {
        /// When.
        at: Instant,
    },
}

/// A subscription the shell may send: commit it with
/// [`UpstreamState::subscribed`] once the message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSubscribe {
    /// The link that carries the camera.
    pub link: LinkId,
    /// Its peer.
    pub peer: String,
    /// The message to send.
    pub msg: Control,
}

/// A PTZ command the shell may send: commit it with
/// [`UpstreamState::ptz_sent`] once the message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPtz {
    /// The link that carries the camera.
    pub link: LinkId,
    /// Its peer.
    pub peer: String,
    /// Its request id.
    pub id: u64,
    /// The message to send.
    pub msg: Control,
}
