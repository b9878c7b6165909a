//! A real headless Chromium for the page tests, driven over the DevTools protocol.
//!
//! Why not `chromium --dump-dom`: it dumps once, at load or when virtual time runs out,
//! and virtual time stands still while a fetch is pending, which an open event stream
//! always is; so it either hangs or dumps before the stream delivered anything. Over the
//! protocol a test opens the page once and reads the live DOM as often as it likes.
//!
//! The transport is `--remote-debugging-pipe`: JSON messages separated by NUL bytes,
//! written to the browser's fd 3 and read from its fd 4. `sh` maps those two onto the
//! child's stdin and stdout, so no WebSocket client and no unsafe fd juggling is needed.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The browser binary: `$CHROMIUM` if set (and a file), else the first of `chromium`,
/// `chromium-browser`, `google-chrome` on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The browser for `test`, or `None` after saying that the test is skipped. With
/// `REQUIRE_CHROMIUM=1` (CI, which installs it) a missing browser fails the test instead:
/// a skip there would hide that the page is not tested.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        let hint =
            "set CHROMIUM or install it: apt-get install -y --no-install-recommends chromium";
        assert!(
            std::env::var("REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "{test}: no Chromium but REQUIRE_CHROMIUM=1 ({hint})"
        );
        eprintln!("{test}: SKIPPED, no Chromium ({hint})");
    }
    found
}

/// One browser with one page (tab).
pub struct Browser {
    child: Child,
    input: ChildStdin,
    replies: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts `chromium` headless with a fresh profile and a `width` × `height` window,
    /// and opens one blank page.
    pub fn launch(chromium: &Path, width: u32, height: u32) -> Result<Browser, BoxError> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(chromium)
            .args([
                "--headless",
                // CI runs as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let output = child.stdout.take().ok_or("no stdout")?;
        let (tx, replies) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                // Events (no `id`) are not needed: tests poll the DOM.
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && value.get("id").is_some()
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut browser = Browser {
            child,
            input,
            replies,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_owned();
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and waits for its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, BoxError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.input.write_all(&bytes)?;
        self.input.flush()?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = match self.replies.recv_timeout(left) {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer in {CALL_TIMEOUT:?}").into());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: the browser exited").into());
                }
            };
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}").into());
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` in the page.
    pub fn navigate(&mut self, url: &str) -> Result<(), BoxError> {
        let result = self.call("Page.navigate", json!({ "url": url }))?;
        match result.get("errorText") {
            Some(error) => Err(format!("navigate to {url}: {error}").into()),
            None => Ok(()),
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON.
    pub fn evaluate(&mut self, expression: &str) -> Result<Value, BoxError> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}").into());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `read` (every 100 ms) until `done` holds for its value or `timeout`
    /// passes; returns the last value either way, and whether `done` held.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut Browser) -> Result<T, BoxError>,
        mut done: impl FnMut(&T) -> bool,
    ) -> Result<(T, bool), BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = read(self)?;
            if done(&value) {
                return Ok((value, true));
            }
            if Instant::now() > deadline {
                return Ok((value, false));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page as it is rendered now.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), BoxError> {
        let result = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = result["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session.clear();
        let _ = self
            .input
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The inventory page.
// ---------------------------------------------------------------------------------------

/// One row of the page's stock table, as text: SKU, on hand, reserved, available, version.
pub type PageRow = [String; 5];

/// What the page shows: its stock table, the epoch it says it reflects, its connection
/// state and its order rows (order id, status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageState {
    pub stock: Vec<PageRow>,
    pub epoch: String,
    pub connection: String,
    pub orders: Vec<(String, String)>,
}

/// Reads the page's tables from the live DOM (the text a person sees in each cell).
pub fn read_page(browser: &mut Browser) -> Result<PageState, BoxError> {
    let value = browser.evaluate(
        r#"(() => {
            const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)]
                .map((tr) => [...tr.cells].map((td) => td.textContent));
            return {
                stock: rows('inventory'),
                orders: rows('orders'),
                epoch: document.getElementById('epoch')?.textContent ?? '',
                connection: document.getElementById('connection')?.textContent ?? '',
            };
        })()"#,
    )?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let rows = |v: &Value| -> Vec<Vec<String>> {
        v.as_array()
            .map(|a| a.iter().map(strings).collect())
            .unwrap_or_default()
    };
    let mut stock = Vec::new();
    for row in rows(&value["stock"]) {
        let row: PageRow = row
            .try_into()
            .map_err(|r| format!("a stock row of the page has not 5 cells: {r:?}"))?;
        stock.push(row);
    }
    let orders = rows(&value["orders"])
        .into_iter()
        .map(|r| {
            (
                r.first().cloned().unwrap_or_default(),
                r.get(1).cloned().unwrap_or_default(),
            )
        })
        .collect();
    Ok(PageState {
        stock,
        epoch: value["epoch"].as_str().unwrap_or("").to_owned(),
        connection: value["connection"].as_str().unwrap_or("").to_owned(),
        orders,
    })
}

/// `GET /v1/inventory` in the page's shape: rows by SKU and the `as_of_epoch`.
pub fn expected_rows(inventory: &Value) -> (Vec<PageRow>, String) {
    let mut rows: Vec<PageRow> = inventory["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    [
                        i["sku"].as_str().unwrap_or("").to_owned(),
                        i["on_hand"].to_string(),
                        i["reserved"].to_string(),
                        i["available"].to_string(),
                        i["version"].to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    (rows, inventory["as_of_epoch"].to_string())
}

/// Whether the page shows exactly `inventory` (every row and number, and its epoch).
pub fn page_matches(page: &PageState, inventory: &Value) -> bool {
    let (rows, epoch) = expected_rows(inventory);
    page.stock == rows && page.epoch == epoch
}
