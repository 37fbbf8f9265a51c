//! Accounts made by the real CLIs (`ponte-relay passwd|token`, `ponte-agent
//! operator passwd|token`), read back from the tables they print into the
//! binaries' own config types.

use anyhow::{Context, Result};
use ponte_agent::operators::OperatorConfig;
use ponte_relay::auth::{TokenConfig, ViewerConfig};
use serde::Deserialize;

/// The `[[viewer]]`, `[[token]]` and `[[operator]]` tables a CLI printed.
#[derive(Deserialize)]
struct Printed {
    #[serde(default)]
    viewer: Vec<ViewerConfig>,
    #[serde(default)]
    token: Vec<TokenConfig>,
    #[serde(default)]
    operator: Vec<OperatorConfig>,
}

fn printed(what: &str, text: &str) -> Result<Printed> {
    toml::from_str(text).with_context(|| format!("{what} printed tables that are not the config's:\n{text}"))
}

/// The one `[[table]]` of `list` that `what` printed in `out`.
fn only<T>(what: &str, out: &str, table: &str, list: Vec<T>) -> Result<T> {
    list.into_iter().next().with_context(|| format!("{what}: no [[{table}]] in {out}"))
}

/// The first line (a bearer token) and the tables after it.
fn token_and_tables(what: &str, out: &str) -> Result<(String, Printed)> {
    let (token, rest) = out.split_once('\n').with_context(|| format!("{what}: no token line in {out:?}"))?;
    Ok((token.trim().to_owned(), printed(what, rest)?))
}

/// A relay `[[viewer]]` `user` with `password`, hashed by `ponte-relay passwd`:
/// every camera of the site, no PTZ.
pub fn relay_viewer(user: &str, password: &str) -> Result<ViewerConfig> {
    let phc = crate::relay_cli(&["passwd"], &format!("{password}\n"))?.trim().to_owned();
    anyhow::ensure!(phc.starts_with("$argon2id$"), "`ponte-relay passwd` printed {phc:?}");
    Ok(ViewerConfig::new(user, phc))
}

/// A relay `[[viewer]]` with an RTSP Digest hash too, made by
/// `ponte-relay passwd --user USER --rtsp-digest`.
pub fn relay_digest_viewer(user: &str, password: &str) -> Result<ViewerConfig> {
    let what = "`ponte-relay passwd --rtsp-digest`";
    let out = crate::relay_cli(&["passwd", "--user", user, "--rtsp-digest"], &format!("{password}\n"))?;
    only(what, &out, "viewer", printed(what, &out)?.viewer)
}

/// A relay `[[token]]` made by `ponte-relay token --name NAME`: the token and
/// the table (every camera of the site, no PTZ).
pub fn relay_token(name: &str) -> Result<(String, TokenConfig)> {
    let what = "`ponte-relay token`";
    let out = crate::relay_cli(&["token", "--name", name], "")?;
    let (token, tables) = token_and_tables(what, &out)?;
    Ok((token, only(what, &out, "token", tables.token)?))
}

/// An agent `[[operator]]` with a bearer token, made by the real
/// `ponte-agent operator token --name NAME`: the token and the table.
pub fn operator_token(name: &str) -> Result<(String, OperatorConfig)> {
    let what = "`ponte-agent operator token`";
    let out = crate::agent_cli(&["operator", "token", "--name", name], "")?;
    let (token, tables) = token_and_tables(what, &out)?;
    Ok((token, only(what, &out, "operator", tables.operator)?))
}

/// An agent `[[operator]]` with a password (HTTP Basic), made by the real
/// `ponte-agent operator passwd --name NAME`.
pub fn operator_password(name: &str, password: &str) -> Result<OperatorConfig> {
    let what = "`ponte-agent operator passwd`";
    let out = crate::agent_cli(&["operator", "passwd", "--name", name], &format!("{password}\n"))?;
    only(what, &out, "operator", printed(what, &out)?.operator)
}
