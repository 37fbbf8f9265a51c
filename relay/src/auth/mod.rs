//! Relay-local viewers: accounts (user + argon2id password hash) and bearer
//! tokens from the relay config, each with an optional narrower camera set;
//! browser sessions behind an HttpOnly cookie; a per-client brake on failed
//! logins; and the HTTP pieces (`POST /login`, `POST /logout`, the
//! [`require_viewer`] layer in front of the catalog, WHEP and status).
//!
//! A viewer can only narrow what the site may see: its selectors filter the
//! catalog the agent sent (the ceiling set by the site's policy), never add to
//! it. With no `[[viewer]]` and no `[[token]]` in the config the relay is open
//! and every request is the [`Viewer::anonymous`] one.
//!
//! Entry points for other egress (RTSP): [`Auth::check_basic`] (argon2id, or a
//! token name and token as user and password), [`Auth::digest_ha1`] with
//! [`Auth::login_failed`] / [`Auth::login_ok`] for RTSP Digest, and
//! [`Viewer::may_see`] / [`Viewer::check`] / [`Viewer::narrow`].
//!
//! One concern per file: [`config`] (the tables as written), [`viewer`]
//! (who and what they may see), [`accounts`] (checked credentials),
//! [`sessions`], [`throttle`] and [`cache`] (sans-IO tables, time passed
//! in), [`service`] ([`Auth`], the handle every egress shares), [`http`]
//! (login, logout, the layers), [`cli`] (`passwd`, `token`), and the relay
//! pair of a site: [`pair_token`] (the tokens a page presents at the other
//! relay when its own stops answering) and [`pair_key`] (their key file).

mod accounts;
mod cache;
mod cli;
mod config;
/// Locks one of the auth tables; each stays consistent even if a holder
/// panicked.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod fixtures;
mod http;
mod pair_key;
pub mod pair_token;
mod service;
pub mod session_store;
mod sessions;
mod throttle;
mod viewer;

pub use accounts::Accounts;
#[cfg(test)]
pub use accounts::{digest_ha1, hash_password, new_token};
pub use cli::{passwd_cli, token_cli};
pub use config::{TokenConfig, ViewerConfig};
pub use http::{require_viewer, require_whole_site, router};
pub use pair_key::{load as load_pair_key, pair_key_cli};
pub use service::{Auth, AuthSettings, IssuedPairToken, LiveStream, PairSettings, Refusal};
use sessions::SessionTable;
use throttle::LoginThrottle;
pub use viewer::{ScopeRefusal, Viewer, ViewerKind};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "ponte_session";
/// Realm of RTSP Digest authentication: `rtsp_digest_ha1` is
/// MD5(`user:ponte:password`).
pub const RTSP_REALM: &str = "ponte";
