//! `sluice lsp [DIR]`: a language server over stdio. The protocol only:
//! every answer comes from `journeys::ide` (the repository held in memory,
//! re-validated one file at a time) and is mapped to LSP types here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use journeys::diagnostic::{Diagnostic, Severity};
use journeys::ide::{self, Index, ItemKind, SchemaView, Workspace};
use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types as lsp;
use lsp_types::notification::{self as notif, Notification as _};
use lsp_types::request::{self as req, Request as _};

/// Diagnostics are published once typing pauses this long.
const DEBOUNCE: Duration = Duration::from_millis(120);

#[derive(clap::Args)]
pub struct Args {
    /// The config repository (default: the client's workspace folder or
    /// root, else the current directory).
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (connection, io_threads) = Connection::stdio();
    let code = serve(&connection, args.dir);
    drop(connection);
    // The reader thread ends when the client closes our stdin.
    let _ = io_threads.join();
    code
}

fn capabilities() -> lsp::ServerCapabilities {
    lsp::ServerCapabilities {
        text_document_sync: Some(lsp::TextDocumentSyncCapability::Kind(
            lsp::TextDocumentSyncKind::FULL,
        )),
        definition_provider: Some(lsp::OneOf::Left(true)),
        references_provider: Some(lsp::OneOf::Left(true)),
        hover_provider: Some(lsp::HoverProviderCapability::Simple(true)),
        completion_provider: Some(lsp::CompletionOptions {
            trigger_characters: Some(vec![" ".into(), ".".into(), "{".into(), ":".into()]),
            ..Default::default()
        }),
        code_action_provider: Some(lsp::CodeActionProviderCapability::Simple(true)),
        ..Default::default()
    }
}

fn serve(connection: &Connection, dir: Option<PathBuf>) -> miette::Result<ExitCode> {
    let caps = serde_json::to_value(capabilities()).map_err(|e| miette::miette!("{e}"))?;
    let params = match connection.initialize(caps) {
        Ok(p) => p,
        // The client went away before initializing: nothing to serve.
        Err(_) => return Ok(ExitCode::SUCCESS),
    };
    let params: lsp::InitializeParams = serde_json::from_value(params).unwrap_or_default();
    let root = dir
        .or_else(|| client_root(&params))
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let root = root.canonicalize().unwrap_or(root);
    let mut server = Server {
        connection,
        ws: Workspace::load(&root),
        schema: SchemaView::default(),
        uris: HashMap::new(),
        published: BTreeMap::new(),
        pending: BTreeMap::new(),
    };
    server.ws.recheck_all();
    server.publish();

    let mut deadline: Option<Instant> = None;
    loop {
        let message = match deadline {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                match connection.receiver.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        server.flush();
                        deadline = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match connection.receiver.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        match message {
            Message::Request(request) => {
                match connection.handle_shutdown(&request) {
                    Ok(true) | Err(_) => break,
                    Ok(false) => {}
                }
                server.flush();
                deadline = None;
                let response = server.request(request);
                if connection.sender.send(Message::Response(response)).is_err() {
                    break;
                }
            }
            Message::Notification(n) => {
                if n.method == notif::Exit::METHOD {
                    break;
                }
                if server.notification(n) {
                    deadline = Some(Instant::now() + DEBOUNCE);
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The client's first workspace folder, else its root (`rootUri`, then
/// `rootPath`): clients that know no workspace folders send only those.
fn client_root(params: &lsp::InitializeParams) -> Option<PathBuf> {
    let folder = params.workspace_folders.as_ref().and_then(|f| f.first());
    if let Some(folder) = folder {
        return uri_to_path(&folder.uri);
    }
    #[allow(deprecated)]
    let (root_uri, root_path) = (&params.root_uri, &params.root_path);
    match root_uri {
        Some(uri) => uri_to_path(uri),
        None => root_path.as_ref().map(PathBuf::from),
    }
}

// ---------------------------------------------------------------------------
// URIs.

fn uri_to_path(uri: &lsp::Uri) -> Option<PathBuf> {
    let rest = uri.as_str().strip_prefix("file://")?;
    // `file:///path` or `file://localhost/path`.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(String::from_utf8(out).ok()?))
}

fn path_to_uri(path: &Path) -> Option<lsp::Uri> {
    let mut s = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------
// The server.

struct Server<'a> {
    connection: &'a Connection,
    ws: Workspace,
    schema: SchemaView,
    /// The URI the client uses for each file it opened, by file name.
    uris: HashMap<String, lsp::Uri>,
    /// What was last published, by file name.
    published: BTreeMap<String, Vec<lsp::Diagnostic>>,
    /// Texts received and not yet validated, by file name.
    pending: BTreeMap<String, String>,
}

impl Server<'_> {
    fn name(&self, uri: &lsp::Uri) -> Option<String> {
        self.ws.name_of(&uri_to_path(uri)?)
    }

    fn uri(&self, name: &str) -> Option<lsp::Uri> {
        self.uris
            .get(name)
            .cloned()
            .or_else(|| path_to_uri(&self.ws.root().join(name)))
    }

    /// Handles a notification; true when a text changed (validate soon).
    fn notification(&mut self, n: Notification) -> bool {
        match n.method.as_str() {
            notif::DidOpenTextDocument::METHOD => {
                let Ok(p) =
                    n.extract::<lsp::DidOpenTextDocumentParams>(notif::DidOpenTextDocument::METHOD)
                else {
                    return false;
                };
                self.edit(p.text_document.uri, p.text_document.text)
            }
            notif::DidChangeTextDocument::METHOD => {
                let Ok(p) = n.extract::<lsp::DidChangeTextDocumentParams>(
                    notif::DidChangeTextDocument::METHOD,
                ) else {
                    return false;
                };
                // Full sync: the last change holds the whole text.
                match p.content_changes.into_iter().last() {
                    Some(change) => self.edit(p.text_document.uri, change.text),
                    None => false,
                }
            }
            notif::DidCloseTextDocument::METHOD => {
                let Ok(p) = n.extract::<lsp::DidCloseTextDocumentParams>(
                    notif::DidCloseTextDocument::METHOD,
                ) else {
                    return false;
                };
                // Back to what is on disk.
                let Some(path) = uri_to_path(&p.text_document.uri) else {
                    return false;
                };
                match std::fs::read_to_string(&path) {
                    Ok(text) => self.edit(p.text_document.uri, text),
                    Err(_) => match self.name(&p.text_document.uri) {
                        Some(name) => {
                            self.pending.remove(&name);
                            self.ws.remove(&name);
                            self.ws.recheck_all();
                            self.publish();
                            false
                        }
                        None => false,
                    },
                }
            }
            _ => false,
        }
    }

    /// A new text for a file of the repository (anything else is ignored).
    fn edit(&mut self, uri: lsp::Uri, text: String) -> bool {
        let Some(name) = self.name(&uri) else {
            return false;
        };
        self.uris.insert(name.clone(), uri);
        self.pending.insert(name, text);
        true
    }

    /// Validates the pending texts and publishes what changed.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for (name, text) in std::mem::take(&mut self.pending) {
            self.ws.change(&name, text);
        }
        self.publish();
    }

    fn publish(&mut self) {
        let mut now: BTreeMap<String, Vec<lsp::Diagnostic>> = BTreeMap::new();
        for (name, diags) in self.ws.results() {
            // A file we hold is positioned in its current text; any other
            // (a template's `html_file` or `text_file`) in the text its
            // diagnostics were found in.
            let held = self.ws.text(name);
            let diags = diags
                .iter()
                .filter_map(|d| {
                    let text = held.or_else(|| d.file.as_deref().map(|f| f.text.as_str()))?;
                    Some(to_lsp_diagnostic(text, d))
                })
                .collect();
            now.insert(name.clone(), diags);
        }
        let names: Vec<String> = now.keys().chain(self.published.keys()).cloned().collect();
        for name in names {
            let new = now.get(&name).cloned().unwrap_or_default();
            if self.published.get(&name).cloned().unwrap_or_default() == new {
                continue;
            }
            let Some(uri) = self.uri(&name) else {
                continue;
            };
            let params = lsp::PublishDiagnosticsParams {
                uri,
                diagnostics: new.clone(),
                version: None,
            };
            let n = Notification::new(notif::PublishDiagnostics::METHOD.into(), params);
            let _ = self.connection.sender.send(Message::Notification(n));
            if new.is_empty() {
                self.published.remove(&name);
            } else {
                self.published.insert(name, new);
            }
        }
    }

    fn request(&mut self, r: Request) -> Response {
        let id = r.id.clone();
        let result = match r.method.as_str() {
            req::GotoDefinition::METHOD => self.with(r, |s, p: lsp::GotoDefinitionParams| {
                s.definition(p.text_document_position_params)
            }),
            req::References::METHOD => self.with(r, |s, p: lsp::ReferenceParams| s.references(p)),
            req::HoverRequest::METHOD => self.with(r, |s, p: lsp::HoverParams| {
                s.hover(p.text_document_position_params)
            }),
            req::Completion::METHOD => self.with(r, |s, p: lsp::CompletionParams| {
                s.completion(p.text_document_position)
            }),
            req::CodeActionRequest::METHOD => {
                self.with(r, |s, p: lsp::CodeActionParams| s.code_actions(p))
            }
            _ => Err((
                lsp_server::ErrorCode::MethodNotFound as i32,
                format!("unsupported request `{}`", r.method),
            )),
        };
        match result {
            Ok(value) => Response::new_ok(id, value),
            Err((code, message)) => Response::new_err(id, code, message),
        }
    }

    fn with<P: serde::de::DeserializeOwned, R: serde::Serialize>(
        &mut self,
        r: Request,
        f: impl FnOnce(&mut Self, P) -> R,
    ) -> Result<serde_json::Value, (i32, String)> {
        let params: P = serde_json::from_value(r.params).map_err(|e| {
            (
                lsp_server::ErrorCode::InvalidParams as i32,
                format!("invalid params: {e}"),
            )
        })?;
        serde_json::to_value(f(self, params))
            .map_err(|e| (lsp_server::ErrorCode::InternalError as i32, e.to_string()))
    }

    /// The file name and byte offset of a position, for files we hold.
    fn locate(&self, p: &lsp::TextDocumentPositionParams) -> Option<(String, usize)> {
        let name = self.name(&p.text_document.uri)?;
        let text = self.ws.text(&name)?;
        let offset = ide::offset_of(text, p.position.line, p.position.character);
        Some((name, offset))
    }

    fn location(&self, site: &ide::Site) -> Option<lsp::Location> {
        let text = self.ws.text(&site.file)?;
        Some(lsp::Location {
            uri: self.uri(&site.file)?,
            range: range(text, site.span.start, site.span.end),
        })
    }

    fn definition(&self, p: lsp::TextDocumentPositionParams) -> Option<lsp::Location> {
        let (name, offset) = self.locate(&p)?;
        let index = Index::build(&self.ws);
        let target = index.target_at(&name, offset)?;
        self.location(index.definitions.get(&target)?)
    }

    fn references(&self, p: lsp::ReferenceParams) -> Option<Vec<lsp::Location>> {
        let (name, offset) = self.locate(&p.text_document_position)?;
        let index = Index::build(&self.ws);
        let target = index.target_at(&name, offset)?;
        let mut sites = Vec::new();
        if p.context.include_declaration {
            sites.extend(index.definitions.get(&target).cloned());
        }
        sites.extend(index.references_to(&target));
        Some(sites.iter().filter_map(|s| self.location(s)).collect())
    }

    fn hover(&self, p: lsp::TextDocumentPositionParams) -> Option<lsp::Hover> {
        let (name, offset) = self.locate(&p)?;
        let index = Index::build(&self.ws);
        let (markdown, span) = ide::hover(&self.ws, &index, &self.schema, &name, offset)?;
        let text = self.ws.text(&name)?;
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value: markdown,
            }),
            range: Some(range(text, span.start, span.end)),
        })
    }

    fn completion(&self, p: lsp::TextDocumentPositionParams) -> Option<lsp::CompletionResponse> {
        let (name, offset) = self.locate(&p)?;
        let text = self.ws.text(&name)?;
        let (start, items) = ide::completions(&self.ws, &self.schema, &name, offset);
        let replace = range(text, start, offset);
        let items = items
            .into_iter()
            .map(|i| {
                let (kind, insert) = match i.kind {
                    ItemKind::Key => (lsp::CompletionItemKind::PROPERTY, format!("{}: ", i.label)),
                    ItemKind::Value => (lsp::CompletionItemKind::ENUM_MEMBER, i.label.clone()),
                    ItemKind::Reference => (lsp::CompletionItemKind::REFERENCE, i.label.clone()),
                    ItemKind::Variable => (lsp::CompletionItemKind::VARIABLE, i.label.clone()),
                };
                lsp::CompletionItem {
                    label: i.label,
                    kind: Some(kind),
                    detail: (!i.detail.is_empty()).then_some(i.detail),
                    text_edit: Some(lsp::CompletionTextEdit::Edit(lsp::TextEdit {
                        range: replace,
                        new_text: insert,
                    })),
                    ..Default::default()
                }
            })
            .collect();
        Some(lsp::CompletionResponse::Array(items))
    }

    /// "Did you mean" fixes for our diagnostics in the requested range.
    // `WorkspaceEdit::changes` is keyed by `Uri`, which clippy sees as
    // mutable (a lazily parsed cache inside); its hash never changes.
    #[allow(clippy::mutable_key_type)]
    fn code_actions(&self, p: lsp::CodeActionParams) -> Option<Vec<lsp::CodeAction>> {
        let name = self.name(&p.text_document.uri)?;
        let text = self.ws.text(&name)?;
        let diags = self.ws.results().get(&name)?;
        let mut out = Vec::new();
        for d in diags {
            let Some(fix) = ide::suggestion(d) else {
                continue;
            };
            let r = range(text, d.span.start, d.span.end);
            if r.end < p.range.start || r.start > p.range.end {
                continue;
            }
            let edit = lsp::TextEdit {
                range: r,
                new_text: fix.to_owned(),
            };
            let changes = HashMap::from([(p.text_document.uri.clone(), vec![edit])]);
            out.push(lsp::CodeAction {
                title: format!("Replace with `{fix}`"),
                kind: Some(lsp::CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![to_lsp_diagnostic(text, d)]),
                edit: Some(lsp::WorkspaceEdit {
                    changes: Some(changes),
                    ..Default::default()
                }),
                is_preferred: Some(true),
                ..Default::default()
            });
        }
        Some(out)
    }
}

fn range(text: &str, start: usize, end: usize) -> lsp::Range {
    let (l1, c1) = ide::utf16_position(text, start);
    let (l2, c2) = ide::utf16_position(text, end.max(start));
    lsp::Range {
        start: lsp::Position {
            line: l1,
            character: c1,
        },
        end: lsp::Position {
            line: l2,
            character: c2,
        },
    }
}

fn to_lsp_diagnostic(text: &str, d: &Diagnostic) -> lsp::Diagnostic {
    lsp::Diagnostic {
        range: range(text, d.span.start, d.span.end),
        severity: Some(match d.severity {
            Severity::Error => lsp::DiagnosticSeverity::ERROR,
            Severity::Warning => lsp::DiagnosticSeverity::WARNING,
        }),
        code: Some(lsp::NumberOrString::String(d.code.as_str().to_owned())),
        source: Some("sluice".into()),
        message: match &d.help {
            Some(help) => format!("{}\nhelp: {help}", d.message),
            None => d.message.clone(),
        },
        ..Default::default()
    }
}
