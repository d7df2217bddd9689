//! `sluice lsp` end to end: the binary started on a small repository,
//! spoken to in JSON-RPC over its stdio as an editor would, its answers
//! snapshotted (URIs made relative to the repository).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const JOURNEY: &str = "apiVersion: sluice/v1
kind: Journey
id: cart
version: 1
priority: 5
entry: { event: cart_updated }
steps:
  - id: pause
    wait: 1h
  - id: remind
    send: { channel: email, template: hello }
    next: end
";

const TEMPLATES: &str = "apiVersion: sluice/v1
kind: Template
id: hello
channel: email
subject: \"Hi {{user.first_name}}\"
text: \"Your cart is waiting.\"
---
apiVersion: sluice/v1
kind: Template
id: ping
channel: push
title: Hi
";

const CATALOG: &str = "apiVersion: sluice/v1
kind: Catalog
id: shop
user:
  first_name: string
events:
  cart_updated: { cart_id: string, cart_value: number }
";

/// How the server learns its repository.
enum Root {
    /// `sluice lsp DIR`, and a workspace folder.
    Argument,
    /// `sluice lsp` in another directory, and only `rootUri` (as clients
    /// without workspace folders send).
    RootUriOnly,
}

struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: Receiver<Value>,
    root: tempfile::TempDir,
    /// The server's current directory when it gets no DIR.
    _elsewhere: tempfile::TempDir,
    next_id: i64,
}

impl Client {
    fn start() -> Client {
        Client::start_with(&[])
    }

    /// Started on the small repository plus `extra` files (name, text).
    fn start_with(extra: &[(&str, &str)]) -> Client {
        Client::launch(extra, Root::Argument)
    }

    fn launch(extra: &[(&str, &str)], how: Root) -> Client {
        let root = tempfile::tempdir().expect("tempdir");
        let files = [
            ("journeys/cart.yaml", JOURNEY),
            ("templates/t.yaml", TEMPLATES),
            ("catalog.yaml", CATALOG),
        ];
        for &(name, text) in files.iter().chain(extra) {
            let path = root.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("lsp");
        // Elsewhere than the repository, so that falling back to the
        // current directory shows.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        match how {
            Root::Argument => command.arg(root.path()),
            Root::RootUriOnly => command.current_dir(elsewhere.path()),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sluice lsp");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let value: Value = serde_json::from_slice(&body).expect("JSON-RPC body");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut client = Client {
            child,
            stdin,
            messages,
            root,
            _elsewhere: elsewhere,
            next_id: 0,
        };
        let root_uri = client.uri("");
        let params = match how {
            Root::Argument => json!({
                "processId": null,
                "capabilities": {},
                "workspaceFolders": [{ "uri": root_uri, "name": "repo" }],
            }),
            Root::RootUriOnly => json!({
                "processId": null,
                "capabilities": {},
                "rootUri": root_uri,
                "workspaceFolders": null,
            }),
        };
        let init = client.request("initialize", params);
        assert!(init["capabilities"]["definitionProvider"]
            .as_bool()
            .unwrap_or(false));
        client.notify("initialized", json!({}));
        client
    }

    fn uri(&self, name: &str) -> String {
        let root = self.root.path().canonicalize().expect("root");
        format!("file://{}/{name}", root.display())
            .trim_end_matches('/')
            .to_owned()
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        let stdin = self.stdin.as_mut().expect("stdin open");
        write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let response = self.wait_for(|m| m["id"] == id);
        assert!(response.get("error").is_none(), "{response}");
        self.relative(response["result"].clone())
    }

    /// The next message matching `f` (others are skipped), within 20 s.
    fn wait_for(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .messages
                .recv_timeout(left)
                .expect("the server answers in time");
            if f(&m) {
                return m;
            }
        }
    }

    /// The next diagnostics published for a file.
    fn diagnostics(&mut self, name: &str) -> Value {
        let uri = self.uri(name);
        let m = self.wait_for(|m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri
        });
        self.relative(m["params"]["diagnostics"].clone())
    }

    /// URIs inside the repository written relative to it.
    fn relative(&self, value: Value) -> Value {
        let prefix = format!("{}/", self.uri(""));
        let text = value.to_string().replace(&prefix, "");
        serde_json::from_str(&text).expect("json")
    }

    fn open(&mut self, name: &str, text: &str) {
        let uri = self.uri(name);
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "yaml", "version": 1, "text": text } }),
        );
    }

    fn change(&mut self, name: &str, version: i64, text: &str) {
        let uri = self.uri(name);
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "text": text }] }),
        );
    }

    fn at(&self, name: &str, line: u32, character: u32) -> Value {
        json!({ "textDocument": { "uri": self.uri(name) }, "position": { "line": line, "character": character } })
    }

    /// Shuts down as a client does; the server must exit 0.
    fn shutdown(mut self) {
        let result = self.request("shutdown", Value::Null);
        assert_eq!(result, Value::Null);
        self.notify("exit", Value::Null);
        assert_exits_cleanly(&mut self.child);
    }
}

/// A failing test never leaves `sluice lsp` behind: SIGKILL and reap (a
/// no-op once it has exited).
impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_exits_cleanly(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(Instant::now() < deadline, "sluice lsp did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn line_col(text: &str, needle: &str) -> (u32, u32) {
    let at = text.find(needle).expect("needle");
    let line = text[..at].matches('\n').count() as u32;
    let col = (at - text[..at].rfind('\n').map_or(0, |i| i + 1)) as u32;
    (line, col)
}

#[test]
fn diagnostics_appear_with_their_range_and_code_and_clear_when_fixed() {
    let mut c = Client::start();
    let broken = JOURNEY.replace("priority: 5", "priorty: 5");
    c.open("journeys/cart.yaml", &broken);
    let diags = c.diagnostics("journeys/cart.yaml");
    insta::assert_json_snapshot!("diagnostics_broken", diags);

    // The "did you mean" is a quick fix.
    let actions = c.request(
        "textDocument/codeAction",
        json!({
            "textDocument": { "uri": c.uri("journeys/cart.yaml") },
            "range": { "start": { "line": 4, "character": 0 }, "end": { "line": 4, "character": 0 } },
            "context": { "diagnostics": [] },
        }),
    );
    insta::assert_json_snapshot!("quick_fix", actions);

    c.change("journeys/cart.yaml", 2, JOURNEY);
    let diags = c.diagnostics("journeys/cart.yaml");
    assert_eq!(diags, json!([]));
    c.shutdown();
}

#[test]
fn definition_of_a_template_lands_on_its_id() {
    let mut c = Client::start();
    c.open("journeys/cart.yaml", JOURNEY);
    let (line, col) = line_col(JOURNEY, "hello");
    let def = c.request(
        "textDocument/definition",
        c.at("journeys/cart.yaml", line, col + 2),
    );
    insta::assert_json_snapshot!("definition_template", def);

    // And back: the template's references.
    let refs = c.request(
        "textDocument/references",
        json!({
            "textDocument": { "uri": c.uri("templates/t.yaml") },
            "position": { "line": 2, "character": 5 },
            "context": { "includeDeclaration": true },
        }),
    );
    insta::assert_json_snapshot!("references_template", refs);

    // A step id in `next` goes to the step.
    let text = JOURNEY.replace("next: end", "next: pause");
    c.change("journeys/cart.yaml", 2, &text);
    let (line, col) = line_col(&text, "next: pause");
    let def = c.request(
        "textDocument/definition",
        c.at("journeys/cart.yaml", line, col + 7),
    );
    insta::assert_json_snapshot!("definition_step", def);
    c.shutdown();
}

fn labels(completion: &Value) -> Vec<String> {
    completion
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["label"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn completion_offers_step_ids_templates_keys_and_variables() {
    let mut c = Client::start();
    // Inside `next:` of a half-typed journey: the journey's step ids.
    let text = JOURNEY.replace("    next: end\n", "    next: \n");
    c.open("journeys/cart.yaml", &text);
    let (line, col) = line_col(&text, "next: ");
    let items = c.request(
        "textDocument/completion",
        c.at("journeys/cart.yaml", line, col + 6),
    );
    insta::assert_json_snapshot!("completion_next", items);

    // Templates of the send's channel.
    let (line, col) = line_col(JOURNEY, "hello");
    c.change("journeys/cart.yaml", 2, JOURNEY);
    let items = c.request(
        "textDocument/completion",
        c.at("journeys/cart.yaml", line, col),
    );
    assert_eq!(labels(&items), vec!["hello"], "{items}");

    // Keys of a step, and enum values.
    let text = format!("{JOURNEY}  - id: more\n    wa");
    c.change("journeys/cart.yaml", 3, &text);
    let last = text.lines().count() as u32 - 1;
    let items = c.request(
        "textDocument/completion",
        c.at("journeys/cart.yaml", last, 6),
    );
    assert_eq!(
        labels(&items),
        vec!["wait", "wait_until", "wait_for"],
        "{items}"
    );

    // Template variables from the Catalog.
    let text = TEMPLATES.replace("\"Hi {{user.first_name}}\"", "\"Hi {{user.");
    c.open("templates/t.yaml", &text);
    let (line, col) = line_col(&text, "{{user.");
    let items = c.request(
        "textDocument/completion",
        c.at("templates/t.yaml", line, col + 7),
    );
    assert_eq!(labels(&items), vec!["user.first_name"], "{items}");
    c.shutdown();
}

#[test]
fn hover_describes_keys_and_ids() {
    let mut c = Client::start();
    c.open("journeys/cart.yaml", JOURNEY);
    let key = c.request("textDocument/hover", c.at("journeys/cart.yaml", 4, 2));
    insta::assert_json_snapshot!("hover_key", key);
    let (line, col) = line_col(JOURNEY, "hello");
    let id = c.request(
        "textDocument/hover",
        c.at("journeys/cart.yaml", line, col + 1),
    );
    insta::assert_json_snapshot!("hover_template", id);
    c.shutdown();
}

#[test]
fn a_half_typed_document_keeps_the_server_and_the_other_files() {
    let mut c = Client::start();
    // A broken template file and a journey with a real error elsewhere.
    let journey = JOURNEY.replace("template: hello", "template: helo");
    c.open("journeys/cart.yaml", &journey);
    let diags = c.diagnostics("journeys/cart.yaml");
    assert_eq!(diags[0]["code"], "unknown_reference", "{diags}");
    let half =
        "apiVersion: sluice/v1\nkind: Template\nid: hello\nchannel: email\nsubject: { \"unclosed\n";
    c.open("templates/t.yaml", half);
    let diags = c.diagnostics("templates/t.yaml");
    assert_eq!(diags[0]["code"], "yaml_syntax", "{diags}");
    // Everything still answers; a file outside the repository is ignored.
    let items = c.request("textDocument/completion", c.at("templates/t.yaml", 5, 0));
    assert!(items.is_array(), "{items}");
    let outside = json!({ "textDocument": { "uri": "file:///tmp/elsewhere.yaml" }, "position": { "line": 0, "character": 0 } });
    assert_eq!(c.request("textDocument/hover", outside), Value::Null);
    c.shutdown();
}

#[test]
fn a_template_file_that_does_not_parse_gets_the_diagnostic_of_validate() {
    let hbs = "<p>Hi</p>\n<p>{{#if user.first_name}}there</p>\n";
    let mut c = Client::start_with(&[
        (
            "templates/card.yaml",
            "apiVersion: sluice/v1\nkind: Template\nid: card\nchannel: email\nsubject: Hi\nhtml_file: card.html.hbs\n",
        ),
        ("templates/card.html.hbs", hbs),
    ]);
    let diags = c.diagnostics("templates/card.html.hbs");
    assert_eq!(diags[0]["code"], "template_syntax", "{diags}");

    // Where `sluice validate` points, 1-based.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "--format", "json"])
        .arg(c.root.path())
        .output()
        .expect("run sluice validate");
    let report: Value = serde_json::from_slice(&out.stdout).expect("validate JSON");
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["file"], "templates/card.html.hbs");
    assert_eq!(diags.as_array().map(Vec::len), Some(1), "{diags}");
    assert_eq!(diags[0]["message"], errors[0]["message"]);
    let start = &diags[0]["range"]["start"];
    assert_eq!(
        start["line"].as_u64().map(|l| l + 1),
        errors[0]["line"].as_u64()
    );
    assert_eq!(
        start["character"].as_u64().map(|c| c + 1),
        errors[0]["column"].as_u64()
    );
    c.shutdown();
}

#[test]
fn without_a_directory_the_repository_is_the_clients_root_uri() {
    let mut c = Client::launch(&[], Root::RootUriOnly);
    let journey = JOURNEY.replace("template: hello", "template: helo");
    c.open("journeys/cart.yaml", &journey);
    let diags = c.diagnostics("journeys/cart.yaml");
    assert_eq!(diags[0]["code"], "unknown_reference", "{diags}");
    c.shutdown();
}

#[test]
fn the_server_exits_when_the_client_goes_away() {
    let mut c = Client::start();
    c.open("journeys/cart.yaml", JOURNEY);
    drop(c.stdin.take());
    assert_exits_cleanly(&mut c.child);
    assert!(Path::new(&c.root.path()).exists());
}
