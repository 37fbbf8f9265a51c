//! Headless Chromium driven over the Chrome DevTools Protocol: a small client
//! on tokio-tungstenite (one browser websocket, flattened page sessions).

use crate::procs::Proc;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Where Debian's `chromium` package installs the browser.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Timeout of one CDP command unless the caller gives one.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start and print its DevTools URL.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a navigation may take to fire `load`.
const NAVIGATE_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>;

/// The browser-level websocket, shared by every page session.
struct Conn {
    out: mpsc::UnboundedSender<Message>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    events: broadcast::Sender<Value>,
    /// Console and exception lines, by session id.
    console: Arc<Mutex<HashMap<String, Vec<String>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Conn {
    async fn connect(ws_url: &str) -> Result<Conn> {
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| anyhow!("connecting to {ws_url} timed out"))?
            .with_context(|| format!("connecting to DevTools at {ws_url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let pending: Arc<Pending> = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let console: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();

        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reader = {
            let pending = pending.clone();
            let events = events.clone();
            let console = console.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        let tx = lock(&pending).remove(&id);
                        if let Some(tx) = tx {
                            let res = match v.get("error") {
                                Some(e) => Err(e.to_string()),
                                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                            };
                            let _ = tx.send(res);
                        }
                    } else {
                        if let Some(line) = console_line(&v) {
                            let session =
                                v.get("sessionId").and_then(Value::as_str).unwrap_or_default().to_string();
                            eprintln!("[chromium console] {line}");
                            lock(&console).entry(session).or_default().push(line);
                        }
                        let _ = events.send(v);
                    }
                }
                // Connection gone: fail every waiting call at once.
                lock(&pending).clear();
            })
        };
        Ok(Conn { out, pending, next_id: AtomicU64::new(1), events, console, tasks: vec![writer, reader] })
    }

    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if self.out.send(Message::text(msg.to_string())).is_err() {
            lock(&self.pending).remove(&id);
            bail!("CDP {method}: connection to Chromium is closed");
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => bail!("CDP {method} failed: {e}"),
            Ok(Err(_)) => bail!("CDP {method}: connection to Chromium closed"),
            Err(_) => {
                lock(&self.pending).remove(&id);
                bail!("CDP {method}: no answer within {timeout:?}")
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A human-readable line for console, exception and log events.
fn console_line(ev: &Value) -> Option<String> {
    let params = ev.get("params")?;
    match ev.get("method")?.as_str()? {
        "Runtime.consoleAPICalled" => {
            let kind = params.get("type").and_then(Value::as_str).unwrap_or("log");
            let args: Vec<String> = params
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(remote_object_text).collect())
                .unwrap_or_default();
            Some(format!("{kind}: {}", args.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            Some(format!("uncaught exception: {}", exception_text(params.get("exceptionDetails")?)))
        }
        "Log.entryAdded" => {
            let entry = params.get("entry")?;
            Some(format!(
                "{} {}: {} {}",
                entry.get("source").and_then(Value::as_str).unwrap_or(""),
                entry.get("level").and_then(Value::as_str).unwrap_or(""),
                entry.get("text").and_then(Value::as_str).unwrap_or(""),
                entry.get("url").and_then(Value::as_str).unwrap_or("")
            ))
        }
        _ => None,
    }
}

fn remote_object_text(o: &Value) -> String {
    if let Some(v) = o.get("value") {
        return match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    o.get("description")
        .or_else(|| o.get("unserializableValue"))
        .or_else(|| o.get("type"))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_default()
}

fn exception_text(details: &Value) -> String {
    details
        .get("exception")
        .and_then(|e| e.get("description").or_else(|| e.get("value")))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .or_else(|| details.get("text").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| details.to_string())
}

/// One page (tab) attached with a flattened CDP session.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    target: String,
}

impl Page {
    async fn open(conn: Arc<Conn>) -> Result<Page> {
        let created =
            conn.call(None, "Target.createTarget", json!({"url": "about:blank"}), CALL_TIMEOUT).await?;
        let target =
            created["targetId"].as_str().context("Target.createTarget returned no targetId")?.to_string();
        let attached = conn
            .call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true}), CALL_TIMEOUT)
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget returned no sessionId")?
            .to_string();
        let page = Page { conn, session, target };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        Ok(page)
    }

    /// Send a raw CDP command to this page's session.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.conn.call(Some(&self.session), method, params, CALL_TIMEOUT).await
    }

    /// Navigate to `url` and wait (up to 30 s) for its `load` event.
    pub async fn navigate(&self, url: &str) -> Result<()> {
        let mut events = self.conn.events.subscribe();
        let nav = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            if !err.is_empty() {
                bail!("navigating to {url}: {err}");
            }
        }
        let loaded = async {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        if ev["method"] == "Page.loadEventFired"
                            && ev["sessionId"].as_str() == Some(self.session.as_str())
                        {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        bail!("connection to Chromium closed")
                    }
                }
            }
        };
        tokio::time::timeout(NAVIGATE_TIMEOUT, loaded)
            .await
            .map_err(|_| anyhow!("{url} did not fire `load` within {NAVIGATE_TIMEOUT:?}"))?
    }

    /// Evaluate `js` in the page (promises awaited, result returned by
    /// value; `undefined` becomes `null`). A thrown exception is an error.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        let res = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = res.get("exceptionDetails") {
            bail!("JavaScript threw: {} (evaluating {js:.200})", exception_text(details));
        }
        Ok(res.get("result").and_then(|r| r.get("value")).cloned().unwrap_or(Value::Null))
    }

    /// Save a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let res = self.call("Page.captureScreenshot", json!({"format": "png"})).await?;
        let data = res["data"].as_str().context("Page.captureScreenshot returned no data")?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(data).context("screenshot is not base64")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Console messages, uncaught exceptions and browser log entries of this
    /// page so far.
    pub fn console(&self) -> Vec<String> {
        lock(&self.conn.console).get(&self.session).cloned().unwrap_or_default()
    }

    /// The CDP target id of this page.
    pub fn target_id(&self) -> &str {
        &self.target
    }
}

/// A headless Chromium with one page open. Dropping it kills the browser
/// and removes its temporary profile.
pub struct Chromium {
    page: Page,
    conn: Arc<Conn>,
    // Field order matters: the process dies before its profile is removed.
    proc: Proc,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// The browser binary: `$PONTE_CHROMIUM`, else `/usr/bin/chromium`.
    pub fn binary() -> PathBuf {
        std::env::var_os("PONTE_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CHROMIUM))
    }

    /// True if the browser binary is installed.
    pub fn available() -> bool {
        crate::is_executable(&Self::binary())
    }

    /// Launch Chromium, or return `None` after printing why when it is not
    /// installed outside CI. Under `CI=true` a missing browser panics.
    pub async fn launch_or_skip() -> Result<Option<Chromium>> {
        if !crate::require_program(Self::binary(), "chromium") {
            return Ok(None);
        }
        Chromium::launch().await.map(Some)
    }

    /// Launch headless Chromium and open a blank page.
    pub async fn launch() -> Result<Chromium> {
        Chromium::launch_with(&[]).await
    }

    /// [`Chromium::launch`] with extra command-line switches (e.g.
    /// `--ignore-certificate-errors-spki-list=HASH` to trust a deployment CA).
    pub async fn launch_with(extra: &[String]) -> Result<Chromium> {
        let profile = tempfile::Builder::new()
            .prefix("ponte-chromium-")
            .tempdir()
            .context("creating a Chromium profile directory")?;
        let bin = Self::binary();
        let mut cmd = std::process::Command::new(&bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=1280,800",
            "--autoplay-policy=no-user-gesture-required",
            // Tests serve WebRTC on 127.0.0.1: let ICE use loopback and
            // announce plain IPs instead of mDNS names.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter",
            "--remote-debugging-port=0",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank");
        let mut proc = Proc::spawn_command("chromium", cmd)?;
        let line = proc
            .wait_for_line("DevTools listening on", LAUNCH_TIMEOUT)
            .await
            .with_context(|| format!("starting {}", bin.display()))?;
        let ws_url = line
            .find("ws://")
            .map(|i| line[i..].trim().to_string())
            .with_context(|| format!("no ws:// URL in {line:?}"))?;
        let conn = Arc::new(Conn::connect(&ws_url).await?);
        let page = Page::open(conn.clone()).await?;
        Ok(Chromium { page, conn, proc, _profile: profile })
    }

    /// The page opened at launch.
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// Open another page (tab) in the same browser.
    pub async fn new_page(&self) -> Result<Page> {
        Page::open(self.conn.clone()).await
    }

    /// [`Page::navigate`] on the launch page.
    pub async fn navigate(&self, url: &str) -> Result<()> {
        self.page.navigate(url).await
    }

    /// [`Page::eval`] on the launch page.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        self.page.eval(js).await
    }

    /// [`Page::screenshot`] of the launch page.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        self.page.screenshot(path).await
    }

    /// [`Page::console`] of the launch page.
    pub fn console(&self) -> Vec<String> {
        self.page.console()
    }

    /// The browser process (its captured stderr, pid).
    pub fn process(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Waits for the relay page's login form (viewer page or console: the
    /// same ids), fills it in and submits it; whether the login worked is
    /// the caller's to check.
    pub async fn submit_login(&self, user: &str, password: &str) -> Result<()> {
        crate::wait_until("the login form", Duration::from_secs(15), Duration::from_millis(50), || async {
            let shown = self.eval("!document.getElementById('login').hidden").await?;
            Ok((shown == true).then_some(()))
        })
        .await?;
        let submit = format!(
            "(() => {{ document.getElementById('login-user').value = {}; \
               document.getElementById('login-password').value = {}; \
               document.getElementById('login-form').requestSubmit(); return true; }})()",
            serde_json::to_string(user)?,
            serde_json::to_string(password)?
        );
        self.eval(&submit).await?;
        Ok(())
    }

    /// Opens the relay's console at `url` and waits until its test
    /// interface (`window.ponteConsole`) says it is ready.
    pub async fn open_console(&self, url: &str) -> Result<()> {
        self.navigate(url).await?;
        crate::wait_until(
            "the console to be ready",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let ready = self.eval("!!(window.ponteConsole && window.ponteConsole.ready)").await?;
                Ok((ready == true).then_some(()))
            },
        )
        .await
        .with_context(|| format!("console at {url}; browser console:\n{}", self.console().join("\n")))
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // A browser asked to quit reaps its own helpers; killing it outright
        // would orphan them. The process group is SIGKILLed afterwards anyway.
        if self.proc.signal(libc::SIGTERM).is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while self.proc.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evaluates_navigates_and_captures_the_console() {
        let Some(browser) = Chromium::launch_or_skip().await.unwrap() else {
            return;
        };
        assert_eq!(browser.eval("1+1").await.unwrap(), json!(2));
        assert_eq!(browser.eval("undefined").await.unwrap(), Value::Null);
        assert_eq!(
            browser.eval("new Promise(r => setTimeout(() => r({a: [1, 'x']}), 50))").await.unwrap(),
            json!({"a": [1, "x"]})
        );
        let err = browser.eval("(async () => { throw new Error('boom') })()").await.unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");

        browser
            .navigate("data:text/html,<title>ponte</title><script>console.log('hello', 42)</script>")
            .await
            .unwrap();
        assert_eq!(browser.eval("document.title").await.unwrap(), json!("ponte"));
        assert!(browser.console().iter().any(|l| l == "log: hello 42"), "{:?}", browser.console());
        let png = std::env::temp_dir().join(format!("ponte-cdp-{}.png", std::process::id()));
        browser.screenshot(&png).await.unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "screenshot is a PNG");
        let _ = std::fs::remove_file(&png);

        let second = browser.new_page().await.unwrap();
        assert_eq!(second.eval("document.title").await.unwrap(), json!(""));
        assert!(browser.navigate("http://127.0.0.1:1/").await.is_err());
    }

    #[tokio::test]
    async fn drop_kills_the_browser_and_removes_the_profile() {
        let Some(mut browser) = Chromium::launch_or_skip().await.unwrap() else {
            return;
        };
        let pid = browser.process().pid();
        let profile = browser._profile.path().to_path_buf();
        assert!(profile.is_dir());
        drop(browser);
        // SAFETY: signal 0 only checks existence.
        assert!(unsafe { libc::kill(pid as libc::pid_t, 0) } != 0, "browser killed");
        assert!(!profile.exists(), "profile removed");
    }
}
