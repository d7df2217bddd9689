//! Finding and reading a config repository: every `*.yaml`/`*.yml` below
//! the root (dot-directories skipped), every document in each file, each
//! deserialised into its kind's raw model with problems reported at their
//! node. Deserialisation keeps going past unknown fields (each is reported
//! and removed, then the document is read again), so one typo never hides
//! the next.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::diagnostic::{with_suggestion, Code, Diagnostic, Diagnostics, SourceFile};
use crate::model::{self, Document, API_VERSION, KINDS};
use crate::span::{self, DeError, DeErrorKind, LineIndex, Node, Spanned};

/// A document and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: Arc<SourceFile>,
    pub document: Document,
    /// The span of the whole document node.
    pub span: span::Span,
}

/// The YAML files of a repository, sorted by path.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{}` is not a directory", root.display()),
        ));
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(std::io::Error::other)?;
        let is_yaml = entry
            .path()
            .extension()
            .is_some_and(|x| x == "yaml" || x == "yml");
        if entry.file_type().is_file() && is_yaml {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// The name of a file relative to the root, with `/` separators.
pub fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads every document of a repository.
pub fn load_documents(root: &Path, diags: &mut Diagnostics) -> Vec<Loaded> {
    let files = match discover(root) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::error(
                Code::FileNotFound,
                format!("cannot read `{}`: {e}", root.display()),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for path in files {
        let name = relative_name(root, &path);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        let file = Arc::new(SourceFile::new(name, String::new()));
                        diags.push(
                            Diagnostic::error(
                                Code::YamlSyntax,
                                format!("file is not valid UTF-8: {e}"),
                            )
                            .at(
                                &file,
                                span::Span {
                                    line: 1,
                                    column: 1,
                                    ..Default::default()
                                },
                            ),
                        );
                        continue;
                    }
                };
                let file = Arc::new(SourceFile::new(name, text));
                load_text(&file, diags, &mut out);
            }
            Err(e) => diags.push(Diagnostic::error(
                Code::FileNotFound,
                format!("cannot read `{name}`: {e}"),
            )),
        }
    }
    out
}

/// Reads every document of one source text.
pub fn load_text(file: &Arc<SourceFile>, diags: &mut Diagnostics, out: &mut Vec<Loaded>) {
    let index = LineIndex::new(&file.text);
    let docs = match span::parse_documents(&file.text, &index) {
        Ok(d) => d,
        Err(e) => {
            diags.push(
                Diagnostic::error(Code::YamlSyntax, format!("invalid YAML: {}", e.message))
                    .at(file, e.span),
            );
            return;
        }
    };
    for doc in docs {
        if doc.value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        if let Some(document) = read_document(file, doc.clone(), diags) {
            out.push(Loaded {
                file: file.clone(),
                document,
                span: doc.span,
            });
        }
    }
}

fn read_document(
    file: &Arc<SourceFile>,
    doc: Spanned<Node>,
    diags: &mut Diagnostics,
) -> Option<Document> {
    if doc.value.as_map().is_none() {
        diags.push(
            Diagnostic::error(
                Code::InvalidValue,
                format!(
                    "a document must be a mapping with `apiVersion`, `kind` and `id`, found {}",
                    doc.value.type_name()
                ),
            )
            .at(file, doc.span),
        );
        return None;
    }
    let mut ok = true;
    match doc.value.get("apiVersion") {
        None => {
            diags.push(
                Diagnostic::error(
                    Code::MissingField,
                    "missing field `apiVersion` (expected `sluice/v1`)",
                )
                .at(file, doc.span),
            );
            ok = false;
        }
        Some(v) if v.value.as_str() != Some(API_VERSION) => {
            diags.push(
                Diagnostic::error(
                    Code::UnknownApiVersion,
                    format!(
                        "unknown apiVersion `{}`, expected `{API_VERSION}`",
                        v.value.as_str().unwrap_or_default()
                    ),
                )
                .at(file, v.span),
            );
            ok = false;
        }
        Some(_) => {}
    }
    let kind = match doc.value.get("kind") {
        None => {
            diags.push(
                Diagnostic::error(
                    Code::MissingField,
                    format!("missing field `kind` (one of {})", KINDS.join(", ")),
                )
                .at(file, doc.span),
            );
            return None;
        }
        Some(k) => k,
    };
    let kind_name = kind.value.as_str().unwrap_or_default();
    if !KINDS.contains(&kind_name) {
        let message = with_suggestion(
            format!("unknown kind `{kind_name}`"),
            kind_name,
            KINDS.iter().copied(),
        );
        diags.push(
            Diagnostic::error(Code::UnknownKind, message)
                .at(file, kind.span)
                .with_help(format!("a document's kind is one of {}", KINDS.join(", "))),
        );
        return None;
    }
    let document = match kind_name {
        "Project" => typed::<model::Project>(file, doc, diags).map(Document::Project),
        "Journey" => typed::<model::Journey>(file, doc, diags).map(Document::Journey),
        "Segment" => typed::<model::Segment>(file, doc, diags).map(Document::Segment),
        "Template" => typed::<model::Template>(file, doc, diags).map(Document::Template),
        "QuietHours" => typed::<model::QuietHours>(file, doc, diags).map(Document::QuietHours),
        "Throttle" => typed::<model::Throttle>(file, doc, diags).map(Document::Throttle),
        "FrequencyCap" => {
            typed::<model::FrequencyCap>(file, doc, diags).map(Document::FrequencyCap)
        }
        "Catalog" => typed::<model::Catalog>(file, doc, diags).map(Document::Catalog),
        _ => typed::<model::JourneyTest>(file, doc, diags).map(Document::JourneyTest),
    };
    if ok {
        document
    } else {
        None
    }
}

/// Deserialises one document, reporting each problem and reading on:
/// an unknown field is removed, a missing field gets a placeholder, so that
/// the next problem of the same document is found too. Placeholders carry
/// a span past the end of the file, and [`Diagnostics`] drops anything
/// later reported about them.
fn typed<T: DeserializeOwned>(
    file: &Arc<SourceFile>,
    mut doc: Spanned<Node>,
    diags: &mut Diagnostics,
) -> Option<T> {
    let mut placeholders: Vec<(span::Span, u8)> = Vec::new();
    for _ in 0..64 {
        let result: Result<T, DeError> = span::from_node(&doc).map(|v: T| v);
        let e = match result {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let at = e.span.unwrap_or(doc.span);
        // A placeholder of the wrong shape: try the next shape.
        if let Some(p) = placeholders.iter_mut().find(|(s, _)| *s == at) {
            p.1 += 1;
            let node = match p.1 {
                1 => Node::Map(Vec::new()),
                2 => Node::Seq(Vec::new()),
                _ => return None,
            };
            match doc.value.node_at_mut(at) {
                Some(n) => n.value = node,
                None => return None,
            }
            continue;
        }
        let mut report_at = at;
        if at == doc.span {
            // A field missing at the top: point at the document's id (or
            // kind), never at the document start.
            if let Some(anchor) = doc.value.get("id").or_else(|| doc.value.get("kind")) {
                report_at = anchor.span;
            }
        }
        diags.push(de_diagnostic(file, &e, report_at));
        match &e.kind {
            DeErrorKind::UnknownField { .. } => {
                if !doc.value.remove_key_at(at.start) {
                    return None;
                }
            }
            DeErrorKind::MissingField(field) => {
                let placeholder = span::Span {
                    end: usize::MAX / 2 + placeholders.len(),
                    ..at
                };
                let target = if at == doc.span {
                    Some(&mut doc)
                } else {
                    doc.value.node_at_mut(at)
                };
                let Some(Spanned {
                    value: Node::Map(entries),
                    ..
                }) = target
                else {
                    return None;
                };
                entries.push((
                    Spanned::new((*field).to_owned(), placeholder),
                    Spanned::new(
                        Node::Scalar(span::Scalar {
                            text: "0".into(),
                            plain: true,
                        }),
                        placeholder,
                    ),
                ));
                placeholders.push((placeholder, 0));
            }
            _ => return None,
        }
    }
    None
}

fn de_diagnostic(file: &Arc<SourceFile>, e: &DeError, span: span::Span) -> Diagnostic {
    match &e.kind {
        DeErrorKind::UnknownField { field, expected } => {
            let message = with_suggestion(
                format!("unknown field `{field}`"),
                field,
                expected.iter().copied(),
            );
            let mut d = Diagnostic::error(Code::UnknownField, message).at(file, span);
            if !expected.is_empty() {
                d = d.with_help(format!(
                    "expected one of {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            d
        }
        DeErrorKind::MissingField(field) => {
            Diagnostic::error(Code::MissingField, format!("missing field `{field}`")).at(file, span)
        }
        DeErrorKind::UnknownVariant { variant, expected } => {
            let message = with_suggestion(e.to_string(), variant, expected.iter().copied());
            Diagnostic::error(Code::InvalidValue, message).at(file, span)
        }
        DeErrorKind::InvalidType(_) | DeErrorKind::Custom(_) => {
            Diagnostic::error(Code::InvalidValue, e.to_string()).at(file, span)
        }
    }
}
