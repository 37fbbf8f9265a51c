//! The PullPoint loop of one device: the I/O around `messages` and `lease`.

use super::lease::{Backoff, Lease};
use super::messages::{
    addressing_header, create_body, lens_of, parse_pull, parse_renew, parse_subscription, pull_body,
    renew_body, unsubscribe_body, ACTION_CREATE, ACTION_PULL, ACTION_RENEW, ACTION_UNSUBSCRIBE,
};
use super::{CameraEvent, OnvifError};
use crate::ptz::onvif::soap::{created_now, envelope, security_header};
use crate::ptz::onvif::{exchange, interpret, request_timeout, Endpoint};
use crate::sources::device::{Device, OnvifSettings};
use roxmltree::Node;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::{error::TrySendError, Sender};

/// What CreatePullPointSubscription and Renew ask for.
const SUBSCRIPTION: Duration = Duration::from_secs(60);
/// Longest PullMessages wait: an alarm raised while nobody pulls waits at
/// most this long plus a round trip.
const PULL_TIMEOUT: Duration = Duration::from_secs(1);
/// Shortest PullMessages wait (when a renewal is close).
const MIN_PULL: Duration = Duration::from_millis(100);

/// The events keys of `[device.onvif]`, checked.
pub(super) struct Settings {
    device: String,
    events: Endpoint,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl Settings {
    /// `device_id`'s events service and credentials (those of `[device.onvif]`;
    /// [`EventsClient::new`] falls back to the device's RTSP ones).
    pub(super) fn new(device_id: &str, settings: &OnvifSettings) -> Result<Settings, OnvifError> {
        let config = |reason: String| OnvifError::Config { device: device_id.to_owned(), reason };
        let raw = match &settings.events_url {
            Some(u) => u.clone(),
            None => {
                let mut url = url::Url::parse(&settings.url).map_err(|e| {
                    config(format!(
                        "`device.onvif.url` is not a URL ({e}); set it, or `device.onvif.events_url`"
                    ))
                })?;
                url.set_path("/onvif/events_service");
                url.set_query(None);
                url.to_string()
            }
        };
        let events = Endpoint::parse(&raw, "device.onvif.events_url").map_err(config)?;
        let timeout = request_timeout(settings.timeout_ms).map_err(config)?;
        let credentials = settings
            .username
            .as_ref()
            .map(|u| (u.clone(), settings.password.as_ref().map(|p| p.0.clone()).unwrap_or_default()));
        Ok(Settings { device: device_id.to_owned(), events, credentials, timeout })
    }
}

/// The PullPoint client of one device.
pub(super) struct EventsClient {
    settings: Settings,
    /// Camera id of each lens, lens 1 first.
    cameras: Vec<String>,
    /// Events dropped because the channel was full, since start.
    dropped: u64,
}

/// The receiver of the events is gone: the loop ends.
struct Closed;

impl EventsClient {
    pub(super) fn new(device: &Device, settings: &OnvifSettings) -> Result<EventsClient, OnvifError> {
        let mut checked = Settings::new(&device.id, settings)?;
        if checked.credentials.is_none() {
            // The RTSP password may come from the environment: unreadable means none.
            checked.credentials = device.credentials().ok().flatten();
        }
        let cameras = (1..=device.lens_count().max(1)).map(|lens| device.camera_id(lens)).collect();
        Ok(EventsClient { settings: checked, cameras, dropped: 0 })
    }

    /// Subscribes, pulls and renews until the receiver is dropped; logs one
    /// line when an outage starts and one when it ends.
    pub(super) async fn run(mut self, tx: Sender<CameraEvent>) {
        let mut backoff = Backoff::new();
        let mut outage = false;
        loop {
            let ended = self.session(&tx, &mut backoff, &mut outage).await;
            let error = match ended {
                Ok(Closed) => return,
                Err(e) => e,
            };
            let wait = backoff.failed();
            if outage {
                tracing::debug!(camera = %self.settings.device, error = %error, "ONVIF events still failing");
            } else {
                outage = true;
                tracing::warn!(
                    camera = %self.settings.device,
                    error = %error,
                    retry_in_ms = wait.as_millis() as u64,
                    "ONVIF events lost: no camera alarms until the subscription is back"
                );
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One subscription, from CreatePullPointSubscription to its first failure.
    async fn session(
        &mut self,
        tx: &Sender<CameraEvent>,
        backoff: &mut Backoff,
        outage: &mut bool,
    ) -> Result<Closed, OnvifError> {
        let events = self.settings.events.clone();
        let body = create_body(SUBSCRIPTION);
        let subscription = self
            .call(
                &events,
                "CreatePullPointSubscription",
                ACTION_CREATE,
                &body,
                Duration::ZERO,
                parse_subscription,
            )
            .await?;
        let pullpoint =
            Endpoint::parse(&subscription.address, "device.onvif.events_url").map_err(|reason| {
                OnvifError::Parse {
                    device: self.settings.device.clone(),
                    operation: "CreatePullPointSubscription",
                    url: events.url.clone(),
                    reason: format!("the subscription address: {reason}"),
                }
            })?;
        let timeout = self.settings.timeout;
        let mut lease =
            Lease::new(Instant::now(), subscription.current, subscription.termination, SUBSCRIPTION, timeout);
        backoff.succeeded();
        if std::mem::take(outage) {
            tracing::info!(camera = %self.settings.device, pullpoint = %pullpoint.url, "ONVIF events back");
        } else {
            tracing::info!(camera = %self.settings.device, pullpoint = %pullpoint.url, "ONVIF events subscribed");
        }
        loop {
            if lease.renew_due(Instant::now()) {
                let body = renew_body(SUBSCRIPTION);
                let (termination, current) =
                    self.call(&pullpoint, "Renew", ACTION_RENEW, &body, Duration::ZERO, parse_renew).await?;
                lease = Lease::new(Instant::now(), current, termination, SUBSCRIPTION, timeout);
            }
            let wait = lease.pull_timeout(Instant::now(), MIN_PULL, PULL_TIMEOUT);
            let pulled = self
                .call(&pullpoint, "PullMessages", ACTION_PULL, &pull_body(wait), wait, parse_pull)
                .await?;
            lease.restated(Instant::now(), pulled.current, pulled.termination);
            for n in pulled.notifications {
                let lens = lens_of(n.source.as_deref(), self.cameras.len().try_into().unwrap_or(u8::MAX));
                let camera = self.cameras.get(usize::from(lens) - 1).or(self.cameras.first()).cloned();
                let event = CameraEvent {
                    device: self.settings.device.clone(),
                    camera: camera.unwrap_or_else(|| self.settings.device.clone()),
                    kind: n.kind,
                    active: n.active,
                    at: n.at.unwrap_or_else(SystemTime::now),
                };
                match tx.try_send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.dropped += 1;
                        // Powers of two: a few lines for a long overload.
                        if self.dropped.is_power_of_two() {
                            tracing::warn!(
                                camera = %self.settings.device,
                                dropped = self.dropped,
                                "camera alarms dropped: the alarm service is not keeping up"
                            );
                        }
                    }
                    Err(TrySendError::Closed(_)) => {
                        let body = unsubscribe_body();
                        let _ = self
                            .call(
                                &pullpoint,
                                "Unsubscribe",
                                ACTION_UNSUBSCRIBE,
                                &body,
                                Duration::ZERO,
                                |_| Ok(()),
                            )
                            .await;
                        return Ok(Closed);
                    }
                }
            }
        }
    }

    /// One SOAP exchange with `endpoint`, bounded by the device's timeout
    /// plus `extra` (the PullMessages wait).
    async fn call<T>(
        &self,
        endpoint: &Endpoint,
        operation: &'static str,
        action: &str,
        body: &str,
        extra: Duration,
        extract: impl FnOnce(Node) -> Result<T, String>,
    ) -> Result<T, OnvifError> {
        let device = &self.settings.device;
        let mut header = addressing_header(action, &endpoint.url);
        if let Some((user, password)) = &self.settings.credentials {
            let nonce: [u8; 16] = rand::random();
            header.push_str(&security_header(user, password, &nonce, &created_now()));
        }
        let request = envelope(Some(&header), body);
        let limit = self.settings.timeout + extra;
        match tokio::time::timeout(limit, exchange(endpoint, action, request)).await {
            Err(_) => Err(OnvifError::Timeout {
                device: device.clone(),
                operation,
                url: endpoint.url.clone(),
                setting: endpoint.setting,
                after: limit,
            }),
            Ok(Err(reason)) => Err(OnvifError::Unreachable {
                device: device.clone(),
                operation,
                url: endpoint.url.clone(),
                setting: endpoint.setting,
                reason,
            }),
            Ok(Ok(answer)) => interpret(device, operation, endpoint, &answer, extract),
        }
    }
}
