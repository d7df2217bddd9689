//! Finding and reading a config repository: every `*.yaml`/`*.yml` below
//! the root (dot-directories skipped), every document in each file, each
//! deserialised into its kind's raw model with problems reported at their
//! node. Deserialisation keeps going past unknown fields (each is reported
//! and removed, then the document is read again), so one typo never hides
//! the next.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::diagnostic::{did_you_mean, with_suggestion, Code, Diagnostic, Diagnostics, SourceFile};
use crate::limits::{MAX_DOCUMENTS, MAX_FILE_BYTES};
use crate::model::{self, Document, API_VERSION, KINDS};
use crate::span::{self, DeError, DeErrorKind, Node, Spanned, SyntaxErrorKind};

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
    let mut problems = Vec::new();
    let files = discover_all(root, &mut problems)?;
    match problems.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(files),
    }
}

/// The YAML files of a repository, sorted by path, and every entry that
/// could not be read (a symlink loop, a broken link, no permission) with
/// its path: one bad entry does not stop the scan.
pub fn discover_all(
    root: &Path,
    problems: &mut Vec<(PathBuf, std::io::Error)>,
) -> Result<Vec<PathBuf>, std::io::Error> {
    if !root.is_dir() {
        let why = if root.exists() {
            "is a file, not a directory: name the config repository (the directory that holds the YAML files)"
        } else {
            "does not exist: no such directory"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{}` {why}", root.display()),
        ));
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                let message = if e.loop_ancestor().is_some() {
                    std::io::Error::other("a symbolic link loops back to a directory above it")
                } else {
                    std::io::Error::other(e.to_string())
                };
                problems.push((path, message));
                continue;
            }
        };
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
    let mut problems = Vec::new();
    let files = match discover_all(root, &mut problems) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::error(
                Code::FileNotFound,
                format!("cannot read `{}`: {e}", root.display()),
            ));
            return Vec::new();
        }
    };
    for (path, e) in problems {
        let file = Arc::new(SourceFile::new(relative_name(root, &path), String::new()));
        diags.push(
            Diagnostic::error(
                Code::FileNotFound,
                format!("cannot read `{}`: {e}", file.name),
            )
            .at(&file, FIRST),
        );
    }
    let root_real = root.canonicalize().ok();
    let mut out = Vec::new();
    for path in files {
        let name = relative_name(root, &path);
        let empty = || Arc::new(SourceFile::new(name.clone(), String::new()));
        // A file reached through a symbolic link must still be inside the
        // repository: its contents could appear in a diagnostic.
        let inside = match (&root_real, path.canonicalize()) {
            (Some(r), Ok(real)) => real.starts_with(r),
            _ => true, // reported when it is read
        };
        if !inside {
            diags.push(
                Diagnostic::error(
                    Code::PathOutsideRepository,
                    format!("`{name}` is a symbolic link to a file outside the repository"),
                )
                .at(&empty(), FIRST),
            );
            continue;
        }
        let bytes = match read_bounded(&path, MAX_FILE_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => {
                diags.push(
                    Diagnostic::error(
                        Code::FileTooLarge,
                        format!(
                            "`{name}` is larger than {} MiB, the limit for one file",
                            MAX_FILE_BYTES >> 20
                        ),
                    )
                    .at(&empty(), FIRST),
                );
                continue;
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        Code::FileNotFound,
                        format!("cannot read `{name}`: {}", crate::diagnostic::io_reason(&e)),
                    )
                    .at(&empty(), FIRST),
                );
                continue;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Point at the bad byte: the text before it is valid.
                let valid = e.utf8_error().valid_up_to();
                let before = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
                let file = Arc::new(SourceFile::new(name, before));
                let (line, column) = file.index.line_col(&file.text, valid);
                diags.push(
                    Diagnostic::error(
                        Code::YamlSyntax,
                        "file is not valid UTF-8 from here on: save it as UTF-8",
                    )
                    .at(
                        &file,
                        span::Span {
                            start: valid,
                            end: valid,
                            line,
                            column,
                        },
                    ),
                );
                continue;
            }
        };
        let file = Arc::new(SourceFile::new(name, lone_cr_to_lf(text)));
        load_text(&file, diags, &mut out);
        if out.len() > MAX_DOCUMENTS {
            diags.push(
                Diagnostic::error(
                    Code::TooManyDocuments,
                    format!(
                        "the repository has more than {MAX_DOCUMENTS} documents; reading stopped here"
                    ),
                )
                .at(&file, FIRST),
            );
            out.truncate(MAX_DOCUMENTS);
            break;
        }
    }
    out
}

/// Old Mac line endings (a lone `\r`) become `\n`: the same length, so
/// every offset stays, and every reader (saphyr, miette) sees the same
/// lines.
fn lone_cr_to_lf(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    let mut bytes = text.into_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
            bytes[i] = b'\n';
        }
    }
    // Only ASCII bytes changed, so the text is still UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// Line 1, column 1 of a file.
const FIRST: span::Span = span::Span {
    start: 0,
    end: 0,
    line: 1,
    column: 1,
};

/// Reads a regular file of at most `limit` bytes (`None` when it is
/// larger), without reading more than `limit + 1` bytes of anything.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    // Before opening: opening a FIFO would block.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > limit {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// Reads every document of one source text.
pub fn load_text(file: &Arc<SourceFile>, diags: &mut Diagnostics, out: &mut Vec<Loaded>) {
    let docs = match span::parse_documents(&file.text, &file.index) {
        Ok(d) => d,
        Err(e) => {
            let (code, message) = match e.kind {
                SyntaxErrorKind::Syntax => {
                    (Code::YamlSyntax, format!("invalid YAML: {}", e.message))
                }
                SyntaxErrorKind::TooDeep => (Code::NestingTooDeep, e.message),
                SyntaxErrorKind::AliasLimit => (Code::AliasLimit, e.message),
            };
            diags.push(Diagnostic::error(code, message).at(file, e.span));
            return;
        }
    };
    for doc in docs {
        if doc.value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let span = doc.span;
        if let Some(document) = read_document(file, doc, diags) {
            out.push(Loaded {
                file: file.clone(),
                document,
                span,
            });
        }
    }
}

fn read_document(
    file: &Arc<SourceFile>,
    mut doc: Spanned<Node>,
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
            // Where `typed` puts a field missing at the top: the id (or kind).
            let anchor = doc
                .value
                .get("id")
                .or_else(|| doc.value.get("kind"))
                .map_or(doc.span, |n| n.span);
            diags.push(
                Diagnostic::error(
                    Code::MissingField,
                    "missing field `apiVersion` (expected `sluice/v1`)",
                )
                .at(file, anchor),
            );
            // Reported once: the kind's own fields do not report it again
            // (a span past the end of the file, as `typed`'s placeholders).
            if let Node::Map(entries) = &mut doc.value {
                let placeholder = span::Span {
                    end: usize::MAX / 2,
                    ..doc.span
                };
                entries.push((
                    Spanned::new("apiVersion".to_owned(), placeholder),
                    Spanned::new(placeholder_scalar(API_VERSION), placeholder),
                ));
            }
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
            // Like any missing top-level field: at the id (or apiVersion).
            let anchor = doc
                .value
                .get("id")
                .or_else(|| doc.value.get("apiVersion"))
                .filter(|n| n.span.end <= file.text.len()) // not a placeholder
                .map_or(doc.span, |n| n.span);
            diags.push(
                Diagnostic::error(
                    Code::MissingField,
                    format!("missing field `kind` (one of {})", KINDS.join(", ")),
                )
                .at(file, anchor),
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
            let node = match (&e.kind, p.1) {
                (DeErrorKind::UnknownVariant { expected, .. }, 1..=4) if !expected.is_empty() => {
                    placeholder_scalar(expected[0])
                }
                (_, 1) => Node::Map(Vec::new()),
                (_, 2) => Node::Seq(Vec::new()),
                (_, 3) => placeholder_scalar("true"),
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
            DeErrorKind::UnknownField { field, expected } => {
                // A close misspelling reads on as the field it suggests.
                let done = match did_you_mean(field, expected.iter().copied()) {
                    Some(to) => doc.value.rename_key_at(at.start, to),
                    None => doc.value.remove_key_at(at.start),
                };
                if !done {
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
                    Spanned::new(placeholder_scalar("0"), placeholder),
                ));
                placeholders.push((placeholder, 0));
            }
            DeErrorKind::InvalidType(_)
            | DeErrorKind::Custom(_)
            | DeErrorKind::UnknownVariant { .. }
                if at != doc.span =>
            {
                // A value of the wrong type or an unknown value: reported;
                // put a placeholder in its place and read on.
                let placeholder = span::Span {
                    end: usize::MAX / 2 + placeholders.len(),
                    ..at
                };
                let node = doc.value.node_at_mut(at)?;
                *node = Spanned::new(placeholder_scalar("0"), placeholder);
                placeholders.push((placeholder, 0));
            }
            _ => return None,
        }
    }
    None
}

fn placeholder_scalar(text: &str) -> Node {
    Node::Scalar(span::Scalar {
        text: text.into(),
        plain: true,
    })
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

/// Every file a config reads, relative to `root` with `/` separators,
/// sorted: its YAML files and the files its Templates (`text_file`,
/// `html_file`, next to their YAML) and Project (`email.ca_file`) name.
/// What a deployment keeps of a repository. Problems reading the YAML are
/// in `diags` (the files read are still listed).
pub fn config_files(root: &Path, diags: &mut Diagnostics) -> Vec<String> {
    let docs = load_documents(root, diags);
    let mut out: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for d in &docs {
        out.insert(d.file.name.clone());
        let yaml_dir = Path::new(&d.file.name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut add = |rel: PathBuf| {
            let name = rel
                .components()
                .fold(PathBuf::new(), |mut acc, c| {
                    match c {
                        std::path::Component::ParentDir => {
                            acc.pop();
                        }
                        std::path::Component::CurDir => {}
                        other => acc.push(other),
                    }
                    acc
                })
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(name);
        };
        match &d.document {
            Document::Template(t) => {
                for f in [&t.text_file, &t.html_file].into_iter().flatten() {
                    add(yaml_dir.join(&f.value));
                }
            }
            Document::Project(p) => {
                let email = p.channels.as_ref().and_then(|c| c.email.as_ref());
                if let Some(f) = email.and_then(|e| e.ca_file.as_ref()) {
                    add(PathBuf::from(&f.value));
                }
            }
            _ => {}
        }
    }
    out.into_iter().collect()
}
