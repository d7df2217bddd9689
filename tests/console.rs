//! The web console end to end: `sluice run` on `tests/fixtures/console/service`
//! gets a known workload over its HTTP API, then a real headless Chromium
//! (Debian's `chromium`, installed by `.ci/install/console.sh`), driven over
//! the DevTools protocol, logs in through the form, opens a journey and
//! reads the per-step counts it shows (and checks they equal the store's,
//! as `GET /v1/users/{id}` reports every user), watches them change without
//! a reload, looks up a user whose id is markup, and reads the dead-letter
//! queue. A screenshot of every page is kept in
//! `target/console-screenshots/` (a CI artifact).
//!
//! Also, with a plain HTTP client: no session (or a forged one) gets the
//! login page and no data, and the headers keep the page to itself.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use support::events::{identify, track};
use support::fixture::workspace;
use support::http::{request as http, Response as Resp};
use support::server::SluiceRun;

const INGEST: &str = "ingest-token-for-console-tests";
const ADMIN: &str = "admin-token-for-console-tests";
const EVIL: &str = "<script>alert(1)</script>";

// ---------------------------------------------------------------- helpers

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    support::wait::poll_for(limit, Duration::from_millis(50), what, f)
}

// ---------------------------------------------------------- sluice run

/// `sluice run` on a copy of the fixture; killed when dropped.
struct Service {
    run: SluiceRun,
    port: u16,
    _root: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        let (root, repo) = support::fixture::temp_copy("console/service", &[]);
        let run = SluiceRun::new(&repo)
            .args(&["--drain", "2"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .env("SLUICE_LOG", "warn")
            .start();
        Service {
            port: run.port(),
            run,
            _root: root,
        }
    }

    fn url(&self, path: &str) -> String {
        self.run.url(path)
    }

    fn events(&self, events: &[Value]) {
        let r = self.run.post_events(INGEST, events);
        assert_eq!(r.status, 202, "{}", r.text);
    }

    fn admin(&self, path: &str) -> Resp {
        self.run.request("GET", path, Some(ADMIN), b"")
    }
}

fn signup(user: &str, traits: Value) -> Vec<Value> {
    vec![
        identify(user, &format!("{user}-identify"), traits),
        track(user, &format!("{user}-signup"), "signed_up", json!({})),
    ]
}

/// The per-step counts the store holds, as the admin API reports every
/// user: live instances by (journey, step), sends by (journey, step,
/// outcome).
fn store_counts(service: &Service, users: &[&str]) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for u in users {
        let path = format!("/v1/users/{}", percent(u));
        let r = service.admin(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let v = r.json();
        for i in v["instances"].as_array().expect("instances") {
            let key = (
                i["journey"].as_str().expect("journey").to_owned(),
                i["step"].as_str().expect("step").to_owned(),
                "live".to_owned(),
            );
            *out.entry(key).or_default() += 1;
        }
        for m in v["messages"].as_array().expect("messages") {
            let key = (
                m["journey"].as_str().expect("journey").to_owned(),
                m["step"].as_str().expect("step").to_owned(),
                m["outcome"].as_str().expect("outcome").to_owned(),
            );
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ------------------------------------------------------- headless Chromium

/// A headless Chromium and one page of it, driven over the DevTools
/// protocol (JSON over a WebSocket). Killed when dropped.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    fn launch() -> Browser {
        let version = Command::new("chromium").arg("--version").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "Debian's `chromium` is needed for the console test: run `.ci/install/console.sh` (as root) first ({version:?})"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium says where DevTools listen on stderr; the rest of its
        // stderr is drained so it never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open DevTools within 30 s");
        let port: u16 = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("DevTools port");
        // The page Chromium opened (about:blank).
        let page_ws = wait_for(Duration::from_secs(10), "a page target", || {
            let list = http(port, "GET", "/json/list", &[], b"");
            let v: Value = serde_json::from_str(&list.text).ok()?;
            v.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(str::to_owned)
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let (ws, _) = tungstenite::client::client(page_ws.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket handshake: {e}"));
        let shots = workspace().join("target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let mut b = Browser {
            child,
            ws,
            next: 0,
            _profile: profile,
            shots,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Sends a command and returns its result (events in between are
    /// skipped); `Err` with the protocol's error.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("send to DevTools");
        loop {
            let m = self.ws.read().expect("read from DevTools");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Evaluates `expr` in the page; `None` if it threw or the page was
    /// between documents.
    fn eval(&mut self, expr: &str) -> Option<Value> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .ok()?;
        if r.get("exceptionDetails").is_some() {
            return None;
        }
        Some(r["result"]["value"].clone())
    }

    /// Waits until `expr` is `true` in the page.
    fn wait_true(&mut self, expr: &str, what: &str) {
        wait_for(Duration::from_secs(15), what, || {
            (self.eval(expr) == Some(Value::Bool(true))).then_some(())
        });
    }

    /// Navigates and waits for the document at `path` to be loaded.
    fn open(&mut self, url: &str, path: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.loaded(path);
    }

    fn loaded(&mut self, path: &str) {
        let expr = format!(
            "document.readyState === 'complete' && location.pathname === {}",
            json!(path)
        );
        self.wait_true(&expr, &format!("the page {path}"));
    }

    fn text(&mut self, selector: &str) -> Option<String> {
        let expr = format!(
            "(function(){{var e=document.querySelector({});return e?e.textContent:null;}})()",
            json!(selector)
        );
        self.eval(&expr)?.as_str().map(str::to_owned)
    }

    fn screenshot(&mut self, name: &str) {
        // The whole page, not only the window (at most 4,000 px high).
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1280.0),
            size["height"].as_f64().unwrap_or(900.0).min(4000.0),
        );
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers a journey page shows in its steps table, by (step, field).
fn shown_counts(b: &mut Browser) -> BTreeMap<(String, String), u64> {
    let v = b
        .eval(
            "Array.from(document.querySelectorAll('#steps [data-step][data-field]'))\
             .map(function(e){return [e.getAttribute('data-step'), e.getAttribute('data-field'), e.textContent];})",
        )
        .expect("the steps table");
    v.as_array()
        .expect("array")
        .iter()
        .map(|row| {
            let step = row[0].as_str().expect("step").to_owned();
            let field = row[1].as_str().expect("field").to_owned();
            let n = row[2]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a number: {row}"));
            ((step, field), n)
        })
        .collect()
}

/// The store's counts for one journey in the page's shape (zeros included).
fn expected_counts(
    store: &BTreeMap<(String, String, String), u64>,
    journey: &str,
    shown: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    shown
        .keys()
        .map(|(step, field)| {
            let n = store
                .get(&(journey.to_owned(), step.clone(), field.clone()))
                .copied()
                .unwrap_or(0);
            ((step.clone(), field.clone()), n)
        })
        .collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn without_a_session_every_page_is_the_login_page() {
    let s = Service::start();
    s.events(&signup(
        "u1",
        json!({"email": "u1@example.com", "first_name": "Ana"}),
    ));
    for path in ["/", "/journeys/onboarding", "/users?id=u1", "/dlq"] {
        let r = http(s.port, "GET", path, &[], b"");
        assert_eq!(r.status, 401, "{path}");
        assert!(r.text.contains("name=\"token\""), "{path}: a login form");
        assert!(!r.text.contains("welcome"), "{path}: no data");
        assert!(!r.text.contains("u1@example.com"), "{path}: no data");
        let csp = r.header("content-security-policy").expect("CSP");
        assert!(csp.contains("default-src 'self'"), "{csp}");
    }
    // A forged or altered session, or the admin token as a cookie.
    for cookie in [
        "sluice_console=1.2.3".to_owned(),
        format!("sluice_console={ADMIN}"),
        "sluice_console=99999999999999.00.0000".to_owned(),
    ] {
        let r = http(
            s.port,
            "GET",
            "/journeys/onboarding",
            &[("Cookie", &cookie)],
            b"",
        );
        assert_eq!(r.status, 401, "{cookie}");
    }
    let r = http(s.port, "GET", "/counts?journey=onboarding", &[], b"");
    assert_eq!(r.status, 401);
    // The admin token as a bearer does not open the console either: it is
    // a browser's page, with a session.
    let auth = format!("Bearer {ADMIN}");
    let r = http(s.port, "GET", "/dlq", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 401);

    // A wrong token at the form: the login page again, no cookie.
    let r = http(
        s.port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=wrong&next=%2F",
    );
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    // Posted from another site's page: refused.
    let body = format!("token={ADMIN}&next=%2F");
    let r = http(
        s.port,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://evil.example"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // The right one: a session cookie (not the token) and back to `next`,
    // never to another site.
    let body = format!("token={ADMIN}&next=%2F%2Fevil.example%2F");
    let r = http(
        s.port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN), "the token is not in the cookie");
    let session = cookie.split(';').next().expect("pair").to_owned();
    let r = http(
        s.port,
        "GET",
        "/journeys/onboarding",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.text.contains("welcome"));
    let r = http(
        s.port,
        "GET",
        "/counts?journey=onboarding",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["steps"]["first-order"]["live"], 1);
}

#[test]
fn chromium_logs_in_reads_live_counts_looks_up_a_user_and_sees_the_dlq() {
    let s = Service::start();
    let mut users: Vec<&str> = Vec::new();
    let mut evs = Vec::new();
    for u in ["ana", "ben", "cem", "dee"] {
        evs.extend(signup(
            u,
            json!({"email": format!("{u}@example.com"), "first_name": u}),
        ));
        users.push(u);
    }
    // A VIP who orders at once: welcome, then thanks; and a receipt.
    evs.extend(signup(
        "eva",
        json!({"email": "eva@example.com", "first_name": "Eva", "plan": "vip"}),
    ));
    users.push("eva");
    // No first name: the welcome cannot render (failed, a dead letter).
    evs.extend(signup("fox", json!({"email": "fox@example.com"})));
    users.push("fox");
    // Unsubscribed from marketing: suppressed.
    evs.extend(signup(
        "gil",
        json!({"email": "gil@example.com", "first_name": "Gil", "subscriptions": {"marketing": false}}),
    ));
    users.push("gil");
    // An id that is markup.
    evs.extend(signup(
        EVIL,
        json!({"email": "evil@example.com", "first_name": "<b>bold</b>"}),
    ));
    evs.push(track(
        EVIL,
        "evil-view",
        "page_viewed",
        json!({"path": "/<i>x</i>"}),
    ));
    users.push(EVIL);
    s.events(&evs);
    // Eva's order, once her welcome went out and she waits for it.
    wait_for(Duration::from_secs(10), "eva on first-order", || {
        let v = s.admin("/v1/users/eva").json();
        (v["instances"][0]["step"] == "first-order").then_some(())
    });
    s.events(&[track(
        "eva",
        "eva-order",
        "order_completed",
        json!({"order_id": "o-1"}),
    )]);

    // The DLQ holds fox's welcome once the writer committed it.
    let dlq = wait_for(Duration::from_secs(10), "a dead letter", || {
        let v = s.admin("/v1/dlq").json();
        let a = v.as_array().expect("array").clone();
        (!a.is_empty()).then_some(a)
    });
    let store = store_counts(&s, &users);
    assert_eq!(
        store.get(&("onboarding".into(), "first-order".into(), "live".into())),
        Some(&7),
        "{store:?}"
    );

    let mut b = Browser::launch();
    // Not signed in: the login page, no data.
    b.open(&s.url("/journeys/onboarding"), "/journeys/onboarding");
    assert!(b.text("#token").is_some(), "a login form");
    assert_eq!(b.text("#steps"), None, "no data before the login");
    b.screenshot("login");

    // Log in through the form: back to the page asked for.
    let fill = format!(
        "document.getElementById('token').value = {}; document.getElementById('login').click(); true",
        json!(ADMIN)
    );
    assert_eq!(b.eval(&fill), Some(Value::Bool(true)));
    b.wait_true(
        "location.pathname === '/journeys/onboarding' && document.readyState === 'complete' && !!document.getElementById('steps')",
        "the journey page after the login",
    );

    // The counts shown are the store's.
    let shown = shown_counts(&mut b);
    assert!(shown.len() >= 6, "{shown:?}");
    assert_eq!(shown, expected_counts(&store, "onboarding", &shown));
    assert_eq!(shown[&("welcome".to_owned(), "sent".to_owned())], 6);
    assert_eq!(shown[&("welcome".to_owned(), "failed".to_owned())], 1);
    assert_eq!(shown[&("welcome".to_owned(), "suppressed".to_owned())], 1);
    assert_eq!(shown[&("thank".to_owned(), "sent".to_owned())], 1);
    // The drawing shows them too, and the versions section.
    let drawn = b
        .eval("document.querySelector('svg.journey [data-step=\"first-order\"][data-field=\"live\"]').textContent")
        .expect("the drawing");
    assert_eq!(drawn, json!("7"));
    assert_eq!(b.text("#canaries").as_deref(), Some("Canaries: none."));
    b.screenshot("journey");

    // New sign-ups: the numbers change in place, without a reload.
    b.eval("window.__sameDocument = true; true");
    s.events(&signup(
        "hal",
        json!({"email": "hal@example.com", "first_name": "Hal"}),
    ));
    s.events(&signup(
        "ivy",
        json!({"email": "ivy@example.com", "first_name": "Ivy"}),
    ));
    users.extend(["hal", "ivy"]);
    b.wait_true(
        "(function(){var e=document.querySelector('#steps [data-step=\"first-order\"][data-field=\"live\"]');return !!e && e.textContent === '9';})()",
        "the live count to reach 9",
    );
    assert_eq!(
        b.eval("window.__sameDocument === true"),
        Some(Value::Bool(true))
    );
    b.wait_true(
        "document.querySelector('#versions [data-total=\"live\"]').textContent === '9'",
        "the version's live total to reach 9",
    );
    let store = store_counts(&s, &users);
    let shown = shown_counts(&mut b);
    assert_eq!(shown, expected_counts(&store, "onboarding", &shown));
    b.screenshot("journey-live");

    // The journeys list.
    b.open(&s.url("/"), "/");
    let listed = b
        .eval("Array.from(document.querySelectorAll('#journeys tr[data-journey]')).map(function(r){return r.getAttribute('data-journey');})")
        .expect("journeys");
    assert_eq!(listed, json!(["onboarding", "receipt"]));
    b.screenshot("journeys");

    // A user whose id is markup: shown as text, never run.
    b.open(&s.url("/users"), "/users");
    let look = format!(
        "document.getElementById('user-id').value = {}; document.getElementById('lookup').click(); true",
        json!(EVIL)
    );
    b.eval(&look);
    b.wait_true(
        "location.search.indexOf('id=') >= 0 && document.readyState === 'complete' && !!document.getElementById('timeline')",
        "the user's timeline",
    );
    assert_eq!(b.text("#user").as_deref(), Some(EVIL));
    assert_eq!(
        b.eval("document.querySelectorAll('script').length"),
        Some(json!(1)),
        "only the console's own script"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('main b').length"),
        Some(json!(0))
    );
    let kinds = b
        .eval("Array.from(document.querySelectorAll('#timeline tr[data-kind]')).map(function(r){return r.getAttribute('data-kind');})")
        .expect("timeline");
    let kinds: Vec<&str> = kinds
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for k in ["event", "entered", "on step", "message"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    b.screenshot("user");

    // fox's timeline names the failure and its reason.
    b.open(&s.url("/users?id=fox"), "/users");
    let failed = b
        .text("#timeline tr.outcome-failed")
        .expect("a failed message in fox's timeline");
    assert!(failed.contains("missing_variable"), "{failed}");

    // The dead-letter queue: what `GET /v1/dlq` holds.
    b.open(&s.url("/dlq"), "/dlq");
    let rows = b
        .eval("document.querySelectorAll('#dlq tbody tr').length")
        .expect("rows");
    assert_eq!(rows, json!(dlq.len()));
    let reason = b.text("#dlq td.reason").expect("a reason");
    assert_eq!(Some(reason.as_str()), dlq[0]["reason"].as_str());
    b.screenshot("dlq");

    // Log out: the login page again.
    b.eval("document.querySelector('form.logout button').click(); true");
    b.loaded("/");
    b.wait_true(
        "!!document.getElementById('token')",
        "the login page after logout",
    );
    b.open(&s.url("/dlq"), "/dlq");
    assert_eq!(b.text("#dlq"), None, "no data after logout");
}
