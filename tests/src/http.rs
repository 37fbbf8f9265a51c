//! A tiny HTTP/1.1 client (one request per connection) for probing the
//! relay's page and APIs; `https://` URLs are checked against the CAs given
//! to [`trust_ca`] only (the deployment's, as an operator's browser would).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Timeout of one [`http_get`].
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted.
const MAX_RESPONSE: usize = 64 << 20;

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {:.300}", self.text()))
    }

    /// Error unless the status is 2xx.
    pub fn ensure_success(self) -> Result<HttpResponse> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            bail!("HTTP {}: {:.500}", self.status, self.text())
        }
    }
}

/// `GET url` with a 10 s timeout. Any status is returned as a response.
pub async fn http_get(url: &str) -> Result<HttpResponse> {
    http_request("GET", url, &[], &[], GET_TIMEOUT).await
}

/// One request: `method url` with extra `headers` and `body`, all of it
/// (connect, send, receive) bounded by `timeout`. `url` is `http://host:port/path`.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    tokio::time::timeout(timeout, request(method, url, headers, body))
        .await
        .map_err(|_| anyhow!("{method} {url}: no complete response within {timeout:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// The CA `https://` requests trust (none until [`trust_ca`]).
static TRUSTED: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

/// Trusts the CA certificate(s) in the PEM file `path` for `https://` URLs.
pub fn trust_ca(path: impl AsRef<std::path::Path>) -> Result<()> {
    ponte_proto::tls::https::load_client_ca(path.as_ref())?;
    *TRUSTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.as_ref().to_owned());
    Ok(())
}

/// TCP, or TLS against the trusted CA only, as the status CLI connects.
async fn connect(tls: bool, authority: &str) -> Result<Box<dyn ponte_proto::mgmt::Io>> {
    let default_port = if tls { 443 } else { 80 };
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
    let addr = if has_port { authority.to_string() } else { format!("{authority}:{default_port}") };
    let ca = TRUSTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ponte_proto::mgmt::ClientTls { ca, ..Default::default() }
        .connect(tls, &addr)
        .await
        .map_err(anyhow::Error::msg)
}

async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<HttpResponse> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => bail!("only http:// and https:// URLs are supported, got {url}"),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = connect(tls, authority).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            bail!("response larger than {MAX_RESPONSE} bytes");
        }
        // Stop as soon as a length-delimited response is complete, in case
        // the server keeps the connection open despite `Connection: close`.
        if let Some(resp) = parse_response(&raw, false)? {
            return Ok(resp);
        }
    }
    parse_response(&raw, true)?.context("connection closed before the response headers ended")
}

/// Parse a response from `raw`; `None` while incomplete. With `eof`, a body
/// without length runs to the end of `raw`.
fn parse_response(raw: &[u8], eof: bool) -> Result<Option<HttpResponse>> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match decode_chunked(rest)? {
            Some(body) => body,
            None if eof => bail!("connection closed inside a chunked body"),
            None => return Ok(None),
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        if rest.len() < len {
            if eof {
                bail!("connection closed after {} of {len} body bytes", rest.len());
            }
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(HttpResponse { status, headers, body }))
}

/// Decode a complete chunked body; `None` while incomplete.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&data[..line_end]).context("bad chunk size line")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Poll `GET url` until it answers 2xx; returns that response.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> Result<HttpResponse> {
    crate::wait_until(&format!("GET {url} to answer 2xx"), timeout, Duration::from_millis(100), || async {
        let resp = http_get(url).await?;
        if (200..300).contains(&resp.status) {
            Ok(Some(resp))
        } else {
            bail!("HTTP {}: {:.200}", resp.status, resp.text())
        }
    })
    .await
}

/// Poll `<base_url>/api/catalog` until it lists at least `cameras` cameras
/// (the agent's session to the relay is up); returns the catalog JSON.
pub async fn wait_catalog(base_url: &str, cameras: usize, timeout: Duration) -> Result<Value> {
    wait_catalog_as(base_url, cameras, timeout, None).await
}

/// [`wait_catalog`] sending `Authorization: Bearer <token>` when given.
pub async fn wait_catalog_as(
    base_url: &str,
    cameras: usize,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Value> {
    let url = format!("{}/api/catalog", base_url.trim_end_matches('/'));
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    crate::wait_until(
        &format!("{url} to list {cameras} cameras"),
        timeout,
        Duration::from_millis(100),
        || async {
            let catalog =
                http_request("GET", &url, &headers, &[], GET_TIMEOUT).await?.ensure_success()?.json()?;
            let listed = catalog_camera_ids(&catalog)?.len();
            if listed >= cameras {
                Ok(Some(catalog))
            } else {
                bail!("{listed} cameras listed: {catalog}")
            }
        },
    )
    .await
}

/// The camera ids of a `/api/catalog` document.
pub fn catalog_camera_ids(catalog: &Value) -> Result<Vec<String>> {
    catalog
        .get("cameras")
        .and_then(Value::as_array)
        .with_context(|| format!("catalog has no `cameras` array: {catalog}"))?
        .iter()
        .map(|c| {
            c.get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("catalog camera without a string `id`: {c}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serve each canned response once per connection, after reading the request head.
    async fn serve(responses: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for resp in responses {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(resp).await.unwrap();
                // Keep the connection open: the client must not need EOF.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(s);
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_without_waiting_for_eof() {
        let base = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nwait",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 27\r\n\r\n{\"site\":\"x\",\"cameras\":[{}]}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              1b\r\n{\"site\":\"x\",\"cameras\":[{\"id\r\n\
              d\r\n\":\"a\"},{\"id\":\r\n\
              7\r\n\"b\"}]}\n\r\n0\r\n\r\n",
        ])
        .await;
        let catalog = wait_catalog(&base, 2, Duration::from_secs(5)).await.unwrap();
        assert_eq!(catalog_camera_ids(&catalog).unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn wait_http_ok_times_out_with_the_last_status() {
        let base = serve(vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope"; 50]).await;
        let err = wait_http_ok(&base, Duration::from_millis(500)).await.unwrap_err().to_string();
        assert!(err.contains("HTTP 404: nope"), "{err}");
    }
}
