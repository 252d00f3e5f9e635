//! A small W3C WebDriver client over reqwest, driving headless Chromium
//! through Debian's `chromedriver`: the few commands the UI tests need and no
//! extra dependency. Missing Chromium or chromedriver fails the test loudly.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// axe-core, vendored (tests/it/vendor/README.md).
const AXE: &str = include_str!("vendor/axe.min.js");

fn chromium_binary() -> String {
    for candidate in ["/usr/lib/chromium/chromium", "/usr/bin/chromium"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!(
        "Chromium is missing (no /usr/lib/chromium/chromium): install the Debian packages chromium and chromium-driver (./scripts/test does)"
    );
}

#[derive(Clone, Debug)]
pub struct Element(String);

/// WebDriver's codes for the keys the keyboard tests press.
pub mod keys {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const ARROW_DOWN: &str = "\u{E015}";
}

pub struct Browser {
    http: reqwest::Client,
    driver: Child,
    port: u16,
    session: String,
    /// Where this test's screenshots go.
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Headless Chromium through a chromedriver of its own. `test` names the
    /// folder of its screenshots under `target/ui-screenshots/`.
    pub async fn start(test: &str) -> Self {
        let binary = chromium_binary();
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver could not start ({e}): install the Debian package chromium-driver (./scripts/test does)")
            });
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            })
            .unwrap_or_else(|| panic!("chromedriver did not say which port it listens on"));
        // Keep reading what it prints, so it never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--window-size=1400,1000",
                            format!("--user-data-dir={}", profile.path().display()),
                        ]
                    }
                }
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let mut answer = Value::Null;
        for _ in 0..50 {
            match http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                Ok(resp) => {
                    answer = resp.json().await.unwrap();
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver could not start Chromium: {answer}"))
            .to_owned();
        let root = std::env::var_os("KEYHOLD_UI_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .parent()
                    .unwrap()
                    .join("ui-screenshots")
            });
        let shots = root.join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            http,
            driver,
            port,
            session,
            shots,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.port, self.session
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    async fn try_call(&self, path: &str, body: Value) -> Result<Value, String> {
        self.try_request(reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find_now(&self, css: &str) -> Option<Element> {
        self.try_call("/element", json!({ "using": "css selector", "value": css }))
            .await
            .ok()
            .map(|v| Element(v[ELEMENT].as_str().unwrap().to_owned()))
    }

    /// Waits (up to 15 s) for an element matching `css`.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(element) = self.find_now(css).await {
                return element;
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.find_now(css).await.is_some()
    }

    /// Clicks the element matching `css`, looking it up again if the page
    /// replaced it meanwhile.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let element = self.find(css).await;
            match self
                .try_call(&format!("/element/{}/click", element.0), json!({}))
                .await
            {
                Ok(_) => return,
                Err(e) if e.starts_with("stale element reference") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// Types into a field (after clearing it); for a file input, `text` is the path.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let kind = self.attribute(css, "type").await;
        if kind.as_deref() != Some("file") {
            self.call(
                reqwest::Method::POST,
                &format!("/element/{}/clear", element.0),
                Some(json!({})),
            )
            .await;
        }
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(ToOwned::to_owned)
    }

    pub async fn is_selected(&self, css: &str) -> bool {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/selected", element.0),
            None,
        )
        .await
        .as_bool()
        .unwrap()
    }

    /// Right-clicks an element (opens the context menu).
    pub async fn right_click(&self, css: &str) {
        let element = self.find(css).await;
        let origin = json!({ ELEMENT: element.0 });
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({
                "actions": [{
                    "type": "pointer",
                    "id": "mouse",
                    "parameters": { "pointerType": "mouse" },
                    "actions": [
                        { "type": "pointerMove", "origin": origin, "x": 0, "y": 0 },
                        { "type": "pointerDown", "button": 2 },
                        { "type": "pointerUp", "button": 2 }
                    ]
                }]
            })),
        )
        .await;
        self.call(reqwest::Method::DELETE, "/actions", None).await;
    }

    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (up to `seconds`) until the text of `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            // The element may be replaced between finding and reading it
            // (the Jobs page rebuilds its rows): then it is looked up again.
            let text = match self.find_now(css).await {
                Some(element) => self
                    .try_request(
                        reqwest::Method::GET,
                        &format!("/element/{}/text", element.0),
                        None,
                    )
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(ToOwned::to_owned)),
                None => None,
            };
            if let Some(text) = &text
                && text.contains(needle)
            {
                return text.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{css} never contained {needle:?}; it reads {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of the viewport as `target/ui-screenshots/<test>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs axe-core on the page with every WCAG 2.0, 2.1 and 2.2 A and AA
    /// rule and its best practices, and fails on any violation axe rates
    /// serious or critical.
    pub async fn assert_accessible(&self, page: &str) {
        let loaded = self
            .execute(&format!("{AXE}\n;return typeof window.axe;"), json!([]))
            .await;
        assert_eq!(loaded, "object", "axe-core did not load on {page}");
        let result = self
            .execute_async(
                r#"
                const done = arguments[arguments.length - 1];
                window.axe.run(document, {
                    runOnly: { type: 'tag', values: [
                        'wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'
                    ] }
                }).then(r => done({
                    passes: r.passes.length,
                    violations: r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => ({
                            id: v.id,
                            impact: v.impact,
                            help: v.help,
                            nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary)
                        }))
                })).catch(e => done({ error: String(e) }));
                "#,
                json!([]),
            )
            .await;
        assert!(result["error"].is_null(), "axe failed on {page}: {result}");
        let violations = result["violations"].as_array().unwrap();
        assert!(
            violations.is_empty(),
            "serious or critical accessibility violations on {page}:\n{}",
            serde_json::to_string_pretty(violations).unwrap()
        );
        assert!(result["passes"].as_u64().unwrap() > 0, "{result}");
    }

    /// Sets the browser window's outer size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Presses one key (a WebDriver key code such as [`keys::TAB`]) where the
    /// focus is, as a keyboard would.
    pub async fn press(&self, key: &str) {
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({
                "actions": [{
                    "type": "key",
                    "id": "keyboard",
                    "actions": [
                        { "type": "keyDown", "value": key },
                        { "type": "keyUp", "value": key }
                    ]
                }]
            })),
        )
        .await;
        self.call(reqwest::Method::DELETE, "/actions", None).await;
    }

    /// The focused element as `tag#id` (or `tag.class`, or `tag`), and
    /// whether it lies inside the element matching `within`.
    pub async fn focus(&self, within: &str) -> (String, bool) {
        let answer = self
            .execute(
                r#"
                const a = document.activeElement;
                const name = !a ? 'none' : a.tagName.toLowerCase()
                    + (a.id ? '#' + a.id : a.className ? '.' + String(a.className).split(' ')[0] : '');
                const box = document.querySelector(arguments[0]);
                return [name, !!(a && box && box.contains(a) && a !== document.body)];
                "#,
                json!([within]),
            )
            .await;
        (
            answer[0].as_str().unwrap_or_default().to_owned(),
            answer[1].as_bool().unwrap_or(false),
        )
    }

    pub async fn quit(mut self) {
        self.call(reqwest::Method::DELETE, "", None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a failed assertion: end Chromium through its driver (a plain
        // socket, no runtime needed), then the driver.
        if !self.session.is_empty()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stream, &mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
