//! Editor queries over a config repository, for `sluice lsp`: a
//! [`Workspace`] that keeps every file parsed and re-validates after one
//! file changes by re-reading only that file, and pure position queries
//! (definition, references, completion, hover) over it. Positions are byte
//! offsets into a file's text; [`utf16_position`] and [`offset_of`] convert
//! to and from the protocol's lines and UTF-16 columns.
//!
//! Nothing here knows the protocol: the CLI maps these answers to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::compile::{Ctx, TypeCheck, TypeEnv};
use crate::compiled;
use crate::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use crate::load::{self, Loaded};
use crate::model::{Document, Journey, Step, Template};
use crate::span::{self, LineIndex, Node, Span, Spanned};

// ---------------------------------------------------------------------------
// Positions.

/// The 0-based line and UTF-16 column of a byte offset.
pub fn utf16_position(text: &str, offset: usize) -> (u32, u32) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column: usize = text[line_start..offset].chars().map(char::len_utf16).sum();
    (line as u32, column as u32)
}

/// The byte offset of a 0-based line and UTF-16 column (clamped to the
/// line's end and the text's end).
pub fn offset_of(text: &str, line: u32, column: u32) -> usize {
    let mut start = 0;
    for _ in 0..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let mut units = 0u32;
    for (i, c) in text[start..end].char_indices() {
        if units >= column {
            return start + i;
        }
        units += c.len_utf16() as u32;
    }
    end
}

/// The byte offset just after the last char of `s` matching `pred`.
fn after_last(s: &str, pred: impl Fn(char) -> bool) -> Option<usize> {
    s.char_indices()
        .rev()
        .find(|&(_, c)| pred(c))
        .map(|(i, c)| i + c.len_utf8())
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------
// The workspace.

/// One file of the repository as the editor or the disk last gave it.
#[derive(Debug)]
struct FileState {
    file: Arc<SourceFile>,
    /// The documents compiled: the last ones that parsed, if the current
    /// text does not.
    docs: Vec<Loaded>,
    /// What loading this file reported (syntax and shape problems).
    diags: Diagnostics,
    /// The current text is not valid YAML: `docs` are from an older text,
    /// so what compilation says about this file is not shown.
    broken: bool,
    /// What the other files' checks see of each of `docs` when this file
    /// is not re-checked ([`stub`]), made once here rather than on every
    /// check.
    stubs: Vec<Option<Document>>,
}

/// A config repository held in memory: every YAML file parsed once, one
/// file re-read on each change, all documents compiled together.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    /// By path components, so the order is `load::discover`'s.
    files: BTreeMap<Vec<String>, FileState>,
    /// The diagnostics of the last check, by file name (`""` for those
    /// without a file).
    results: BTreeMap<String, Vec<Diagnostic>>,
    /// What `results` are made of, by file name: the diagnostics in the
    /// order they were found, with the checks against the Catalog that
    /// reported some of them, so that a Catalog edit runs those checks
    /// again and keeps the rest ([`Workspace::retype`]).
    found: HashMap<String, Vec<Piece>>,
    /// The ids of the journeys that compiled in the last checks: what
    /// JourneyTests are checked against.
    compiled: BTreeSet<String>,
}

/// Part of what a check found in one file.
#[derive(Debug)]
enum Piece {
    /// A diagnostic that does not depend on the Catalog.
    Fixed(Diagnostic),
    /// A check against the Catalog and what it reported.
    Typed {
        check: TypeCheck,
        file: Arc<SourceFile>,
        /// It decides whether its journey compiles (a sent template's `entry.*` variables).
        gates: bool,
        found: Vec<Diagnostic>,
    },
}

/// A file's diagnostics, as a check sorts them.
fn settle(pieces: &[Piece]) -> Vec<Diagnostic> {
    let mut out = Diagnostics::default();
    for p in pieces {
        match p {
            Piece::Fixed(d) => out.push(d.clone()),
            Piece::Typed { found, .. } => found.iter().for_each(|d| out.push(d.clone())),
        }
    }
    out.sort();
    out.into_iter().collect()
}

/// Compiles `docs`: the diagnostics found in the files `keep` names, in
/// the order they were found, with the checks against the Catalog that
/// found some of them, by file; and the ids of the journeys that compile.
fn compile_pieces(
    root: &Path,
    docs: Vec<Loaded>,
    keep: &dyn Fn(&str) -> bool,
) -> (HashMap<String, Vec<Piece>>, BTreeSet<String>) {
    let mut compiled = Diagnostics::default();
    let (log, journeys) = crate::compile::compile_recording(root, docs, &mut compiled, keep);
    let mut out: HashMap<String, Vec<Piece>> = HashMap::new();
    let fixed = |out: &mut HashMap<String, Vec<Piece>>, d: Diagnostic| {
        if keep(d.file_name()) {
            out.entry(d.file_name().to_owned())
                .or_default()
                .push(Piece::Fixed(d));
        }
    };
    let mut diags = compiled.into_iter().enumerate().peekable();
    for r in log {
        while let Some((_, d)) = diags.next_if(|(i, _)| *i < r.found.start) {
            fixed(&mut out, d);
        }
        let mut found = Vec::new();
        while let Some((_, d)) = diags.next_if(|(i, _)| r.found.contains(i)) {
            found.push(d);
        }
        out.entry(r.file.name.clone())
            .or_default()
            .push(Piece::Typed {
                check: r.check,
                file: r.file,
                gates: r.gates,
                found,
            });
    }
    for (_, d) in diags {
        fixed(&mut out, d);
    }
    (out, journeys)
}

/// The user attributes whose type differs between two Catalogs, and the
/// events that differ (declared in one only, or any property's type).
fn catalog_delta(
    a: &Option<compiled::Catalog>,
    b: &Option<compiled::Catalog>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    fn differing<V: PartialEq>(
        a: Option<&BTreeMap<String, V>>,
        b: Option<&BTreeMap<String, V>>,
    ) -> BTreeSet<String> {
        let none = BTreeMap::new();
        let (a, b) = (a.unwrap_or(&none), b.unwrap_or(&none));
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }
    (
        differing(a.as_ref().map(|c| &c.user), b.as_ref().map(|c| &c.user)),
        differing(a.as_ref().map(|c| &c.events), b.as_ref().map(|c| &c.events)),
    )
}

/// Whether two lists of diagnostics say the same, at the same places.
fn same_diagnostics(a: &[Diagnostic], b: &[Diagnostic]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.code, x.severity, &x.message, &x.help, x.span)
                == (y.code, y.severity, &y.message, &y.help, y.span)
                && x.file_name() == y.file_name()
        })
}

/// How a change was re-validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Only the changed file, against the rest of the repository.
    File,
    /// Everything (the change may affect other files).
    All,
}

/// What other files may depend on in a file: for a file of journeys, each
/// journey's id and step ids; for a file of templates, each template's id
/// and channel; for a file of segments, their ids. Files of any other
/// kind, or of several kinds, are [`Interface::Other`]: a change to them
/// re-validates everything.
///
/// What a Catalog's or the Project's entries mean to other files (the
/// types, the default timezone) is compared separately, across every
/// Catalog or Project of the repository: here only their ids and count.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interface {
    Journeys(Vec<(String, Vec<String>)>),
    Templates(Vec<(String, String)>),
    Segments(Vec<String>),
    /// Quiet hours, throttles and frequency caps: (kind, id).
    Policies(Vec<(&'static str, String)>),
    /// Catalogs, by id (duplicate ids are reported on the later one).
    Catalogs(Vec<String>),
    /// Project documents, counted (a second one is an error).
    Project(usize),
    Other,
}

fn interface(docs: &[Loaded]) -> Interface {
    let journeys: Option<Vec<_>> = docs
        .iter()
        .map(|d| match &d.document {
            Document::Journey(j) => Some((
                j.id.value.clone(),
                j.steps
                    .value
                    .iter()
                    .map(|s| s.value.id.value.clone())
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    if let Some(js) = journeys {
        return Interface::Journeys(js);
    }
    let templates: Option<Vec<_>> = docs
        .iter()
        .map(|d| match &d.document {
            Document::Template(t) => Some((t.id.value.clone(), t.channel.value.clone())),
            _ => None,
        })
        .collect();
    if let Some(ts) = templates.filter(|ts| !ts.is_empty()) {
        return Interface::Templates(ts);
    }
    let segments: Option<Vec<_>> = docs
        .iter()
        .map(|d| match &d.document {
            Document::Segment(s) => Some(s.id.value.clone()),
            _ => None,
        })
        .collect();
    if let Some(ss) = segments.filter(|ss| !ss.is_empty()) {
        return Interface::Segments(ss);
    }
    let policies: Option<Vec<_>> = docs
        .iter()
        .map(|d| match &d.document {
            Document::QuietHours(_) | Document::Throttle(_) | Document::FrequencyCap(_) => {
                Some((d.document.kind(), d.document.id().value.clone()))
            }
            _ => None,
        })
        .collect();
    if let Some(ps) = policies.filter(|ps| !ps.is_empty()) {
        return Interface::Policies(ps);
    }
    let catalogs: Option<Vec<_>> = docs
        .iter()
        .map(|d| match &d.document {
            Document::Catalog(c) => Some(c.id.value.clone()),
            _ => None,
        })
        .collect();
    if let Some(cs) = catalogs.filter(|cs| !cs.is_empty()) {
        return Interface::Catalogs(cs);
    }
    if docs
        .iter()
        .all(|d| matches!(d.document, Document::Project(_)))
    {
        return Interface::Project(docs.len());
    }
    Interface::Other
}

fn is_policy(d: &Document) -> bool {
    matches!(
        d,
        Document::QuietHours(_) | Document::Throttle(_) | Document::FrequencyCap(_)
    )
}

fn sort_key(name: &str) -> Vec<String> {
    name.split('/').map(str::to_owned).collect()
}

impl Workspace {
    /// Reads every YAML file below `root`.
    pub fn load(root: &Path) -> Workspace {
        let mut ws = Workspace {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
            results: BTreeMap::new(),
            found: HashMap::new(),
            compiled: BTreeSet::new(),
        };
        for path in load::discover(root).unwrap_or_default() {
            let name = load::relative_name(root, &path);
            if let Ok(text) = std::fs::read_to_string(&path) {
                ws.set_text(&name, text);
            }
        }
        ws
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name (relative, `/`-separated) of a path inside the repository
    /// that `sluice validate` would read; `None` for anything else.
    pub fn name_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let is_yaml = rel.extension().is_some_and(|x| x == "yaml" || x == "yml");
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        (is_yaml && !hidden).then(|| load::relative_name(&self.root, path))
    }

    /// Replaces one file's text and re-reads its documents. A text that is
    /// not valid YAML keeps the file's last documents for the other files'
    /// sake (a half-typed template must not make every send that uses it
    /// an unknown reference).
    pub fn set_text(&mut self, name: &str, text: String) {
        let file = Arc::new(SourceFile::new(name, text));
        let mut diags = Diagnostics::default();
        let mut docs = Vec::new();
        let parsed = span::parse_documents(&file.text, &LineIndex::new(&file.text));
        let parses = parsed.is_ok();
        load::load_text(&file, &mut diags, &mut docs);
        let key = sort_key(name);
        let state = match (parses, self.files.remove(&key)) {
            (false, Some(old)) => FileState {
                file,
                docs: old.docs,
                diags,
                broken: true,
                stubs: old.stubs,
            },
            _ => FileState {
                file,
                diags,
                broken: !parses,
                stubs: docs.iter().map(|d| stub(&d.document)).collect(),
                docs,
            },
        };
        self.files.insert(key, state);
    }

    /// Forgets a file (deleted on disk).
    pub fn remove(&mut self, name: &str) {
        self.files.remove(&sort_key(name));
        self.found.remove(name);
    }

    /// Replaces one file's text and re-validates what it can reach, so
    /// that the diagnostics are the same as a full check's:
    ///
    /// - a text that is not valid YAML: its syntax problems alone (the
    ///   other files keep seeing its last documents);
    /// - a file of journeys whose ids and step ids stay the same: that
    ///   file alone;
    /// - a file of templates whose ids and channels stay the same, in a
    ///   repository without partials (`{{> name}}` ties template texts
    ///   together): that file and the files of the journeys that send
    ///   its templates;
    /// - a file of segments whose ids stay the same: every file of segments
    ///   (a segment's condition matters to the segments that name it, and
    ///   to none of the journeys: they see segment ids only);
    /// - a file of policies (quiet hours, throttles, frequency caps) whose
    ///   kinds and ids stay the same: every file of policies (quiet hours
    ///   are checked against each other; journeys never see policies);
    /// - a file of Catalogs whose ids stay the same: that file, and when
    ///   the types the repository is checked against changed, no other
    ///   file is compiled: the checks against the Catalog that the last
    ///   checks recorded in each file are run again (those that found
    ///   something, and those reading a changed attribute or event), and
    ///   each file keeps the rest of its diagnostics (`retype`);
    /// - the Project, still one: that file, and when the default timezone
    ///   changed, the journeys whose schedule has no timezone of its own;
    /// - anything else (a new id or step, a Catalog appearing or going
    ///   away): everything.
    ///
    /// With JourneyTests (checked against the journeys that compile),
    /// everything too when the journeys of the re-checked files that
    /// compile are others than before, or when a Catalog edit changes the
    /// verdict of a check that decides whether a journey compiles (a sent
    /// template's `entry.*` variables; with partials as well, which are
    /// checked in compiled journeys' texts).
    pub fn change(&mut self, name: &str, text: String) -> Recheck {
        let key = sort_key(name);
        let before = self.files.get(&key).map(|f| interface(&f.docs));
        let catalog_before =
            matches!(before, Some(Interface::Catalogs(_))).then(|| self.catalog_view());
        let zone_before =
            matches!(before, Some(Interface::Project(_))).then(|| self.default_zone());
        self.set_text(name, text);
        let Some(state) = self.files.get(&key) else {
            return self.recheck_all();
        };
        if state.broken {
            // Its documents are the last ones that parsed (none for a new
            // file): nothing the other files see changed, and a full check
            // shows its syntax problems only.
            let pieces = state.diags.iter().cloned().map(Piece::Fixed).collect();
            self.keep(name.to_owned(), pieces);
            return Recheck::File;
        }
        let after = interface(&state.docs);
        if before.as_ref() != Some(&after) {
            return self.recheck_all();
        }
        let mut names = BTreeSet::from([name.to_owned()]);
        match &after {
            Interface::Journeys(_) => {}
            Interface::Templates(ts) => {
                if self.uses_partials() {
                    return self.recheck_all();
                }
                let ids: std::collections::HashSet<&str> =
                    ts.iter().map(|(id, _)| id.as_str()).collect();
                names.extend(self.senders_of(&ids));
            }
            Interface::Segments(_) => names.extend(self.segment_files()),
            Interface::Policies(_) => names.extend(
                self.files
                    .values()
                    .filter(|f| f.docs.iter().any(|d| is_policy(&d.document)))
                    .map(|f| f.file.name.clone()),
            ),
            Interface::Catalogs(_) => {
                let catalog_after = self.catalog_view();
                if let Some(before) = catalog_before.filter(|b| *b != catalog_after) {
                    // A Catalog appeared or went away (every condition and
                    // text is checked differently), or the types changed in
                    // a way that may change which journeys compile.
                    if before.is_some() != catalog_after.is_some()
                        || !self.retype(&before, &catalog_after, name)
                    {
                        return self.recheck_all();
                    }
                }
            }
            Interface::Project(_) => {
                if zone_before != Some(self.default_zone()) {
                    names.extend(self.default_zone_readers());
                }
            }
            Interface::Other => return self.recheck_all(),
        }
        let (mut found, compiled) = self.check_files(&names);
        for n in &names {
            self.keep(n.clone(), found.remove(n).unwrap_or_default());
        }
        // JourneyTests are checked against the journeys that compile (and
        // their step ids, which stay the same here): when the re-checked
        // files' journeys that compile are others, so may be the tests'
        // diagnostics.
        let journeys: BTreeSet<String> = names
            .iter()
            .flat_map(|n| self.documents_of(n))
            .filter_map(|d| match &d.document {
                Document::Journey(j) => Some(j.id.value.clone()),
                _ => None,
            })
            .collect();
        let before: BTreeSet<&String> = self.compiled.intersection(&journeys).collect();
        let now: BTreeSet<&String> = compiled.intersection(&journeys).collect();
        let changed = before != now;
        for id in &journeys {
            self.compiled.remove(id);
        }
        self.compiled
            .extend(compiled.intersection(&journeys).cloned());
        if changed && self.tested() {
            return self.recheck_all();
        }
        Recheck::File
    }

    /// The types every Catalog declares together, as compilation sees
    /// them (entries of an invalid type left out).
    fn catalog_view(&self) -> Option<compiled::Catalog> {
        let catalogs: Vec<Loaded> = self
            .documents()
            .filter(|d| matches!(d.document, Document::Catalog(_)))
            .cloned()
            .collect();
        // Their problems are reported by the check of their files.
        crate::compile::merged_catalog(&catalogs, &mut Diagnostics::default())
    }

    /// The Project's default timezone, as compilation sees it.
    fn default_zone(&self) -> chrono_tz::Tz {
        let projects: Vec<Loaded> = self
            .documents()
            .filter(|d| matches!(d.document, Document::Project(_)))
            .cloned()
            .collect();
        // Their problems are reported by the check of their files.
        crate::compile::project_settings(&projects, &mut Diagnostics::default()).default_timezone
    }

    /// The files of journeys entered on a schedule without a timezone of
    /// its own: the only readers of the Project's default timezone.
    fn default_zone_readers(&self) -> Vec<String> {
        self.files
            .values()
            .filter(|f| {
                f.docs.iter().any(|d| match &d.document {
                    Document::Journey(j) => {
                        j.entry.value.schedule.is_some() && j.entry.value.timezone.is_none()
                    }
                    _ => false,
                })
            })
            .map(|f| f.file.name.clone())
            .collect()
    }

    /// Every file holding a segment.
    fn segment_files(&self) -> Vec<String> {
        self.files
            .values()
            .filter(|f| {
                f.docs
                    .iter()
                    .any(|d| matches!(d.document, Document::Segment(_)))
            })
            .map(|f| f.file.name.clone())
            .collect()
    }

    /// Runs every check against the Catalog that the last checks ran
    /// again, against `catalog`, in every file but `edited` (checked whole
    /// afterwards): a file whose checks now find something else gets its
    /// diagnostics anew, with the rest of what was found in it kept. The
    /// other diagnostics of a file of journeys, templates or segments do
    /// not depend on the Catalog, with one exception: whether a journey
    /// compiles depends on the `entry.*` variables of the templates it
    /// sends, and JourneyTests and partials see compiled journeys only.
    /// `false` when such a check's verdict changed in a repository with
    /// JourneyTests or partials: then everything must be checked again.
    fn retype(
        &mut self,
        before: &Option<compiled::Catalog>,
        catalog: &Option<compiled::Catalog>,
        edited: &str,
    ) -> bool {
        let (user, events) = catalog_delta(before, catalog);
        let types = TypeEnv::new(catalog.as_ref());
        let mut gates_changed = false;
        let mut changed = Vec::new();
        for (name, pieces) in &mut self.found {
            if name == edited {
                continue;
            }
            let mut differs = false;
            for piece in pieces.iter_mut() {
                let Piece::Typed {
                    check,
                    file,
                    gates,
                    found,
                } = piece
                else {
                    continue;
                };
                if found.is_empty() && !check.reads(&user, &events) {
                    continue;
                }
                let mut diags = Diagnostics::default();
                types.run(
                    check,
                    &mut Ctx {
                        file,
                        diags: &mut diags,
                    },
                );
                let now: Vec<Diagnostic> = diags.into_iter().collect();
                if !same_diagnostics(&now, found) {
                    gates_changed |= *gates && now.is_empty() != found.is_empty();
                    *found = now;
                    differs = true;
                }
            }
            if differs {
                changed.push(name.clone());
            }
        }
        for name in changed {
            if let Some(pieces) = self.found.get(&name) {
                self.results.insert(name, settle(pieces));
            }
        }
        !(gates_changed && (self.tested() || self.uses_partials()))
    }

    /// Whether the repository has JourneyTests.
    fn tested(&self) -> bool {
        self.documents()
            .any(|d| matches!(d.document, Document::JourneyTest(_)))
    }

    /// Keeps what a check found in one file, and the diagnostics it makes.
    fn keep(&mut self, name: String, pieces: Vec<Piece>) {
        self.results.insert(name.clone(), settle(&pieces));
        self.found.insert(name, pieces);
    }

    /// The files of the journeys that send one of `templates`.
    fn senders_of(&self, templates: &std::collections::HashSet<&str>) -> Vec<String> {
        self.files
            .values()
            .filter(|f| {
                f.docs.iter().any(|d| match &d.document {
                    Document::Journey(j) => j.steps.value.iter().any(|s| {
                        s.value.send.as_ref().is_some_and(|send| {
                            templates.contains(send.value.template.value.as_str())
                        })
                    }),
                    _ => false,
                })
            })
            .map(|f| f.file.name.clone())
            .collect()
    }

    /// Whether any text of the repository includes a partial: then a
    /// template's text may matter to other templates, and a change to it
    /// is checked with everything. Looks at the YAML texts and at the
    /// files templates name (`text_file`, `html_file`).
    fn uses_partials(&self) -> bool {
        const INCLUDE: &str = "{{>";
        self.files.values().any(|f| {
            f.file.text.contains(INCLUDE)
                || f.docs.iter().any(|d| match &d.document {
                    Document::Template(t) => [&t.text_file, &t.html_file]
                        .into_iter()
                        .flatten()
                        .any(|rel| {
                            let dir = Path::new(&f.file.name)
                                .parent()
                                .map(Path::to_path_buf)
                                .unwrap_or_default();
                            std::fs::read_to_string(self.root.join(dir).join(&rel.value))
                                .map_or(true, |text| text.contains(INCLUDE))
                        }),
                    _ => false,
                })
        })
    }

    /// Re-validates everything (after a change of an unknown reach).
    pub fn recheck_all(&mut self) -> Recheck {
        let docs: Vec<Loaded> = self.documents().cloned().collect();
        let (mut by_file, compiled) = compile_pieces(&self.root, docs, &|_| true);
        self.compiled = compiled;
        self.results.clear();
        self.found.clear();
        let mut kept = Vec::new();
        for f in self.files.values() {
            let mut pieces: Vec<Piece> = f.diags.iter().cloned().map(Piece::Fixed).collect();
            let compiled = by_file.remove(&f.file.name).unwrap_or_default();
            // As in `check`: what compilation says about a file whose text
            // is not valid YAML (its last documents) is not shown.
            if !f.broken {
                pieces.extend(compiled);
            }
            kept.push((f.file.name.clone(), pieces));
        }
        kept.extend(by_file);
        for (name, pieces) in kept {
            let diags = settle(&pieces);
            if !diags.is_empty() {
                self.results.insert(name.clone(), diags);
            }
            self.found.insert(name, pieces);
        }
        Recheck::All
    }

    /// The diagnostics of the last check, by file name.
    pub fn results(&self) -> &BTreeMap<String, Vec<Diagnostic>> {
        &self.results
    }

    /// Some files' diagnostics, compiled with only what they can see of
    /// the others: the Project and Catalogs whole, the templates their
    /// journeys send whole, every other template and segment reduced to
    /// its id (for references and suggestions), other journeys of the same
    /// ids (for duplicates).
    fn check_files(
        &self,
        names: &BTreeSet<String>,
    ) -> (BTreeMap<String, Vec<Piece>>, BTreeSet<String>) {
        let keys: std::collections::HashSet<Vec<String>> =
            names.iter().map(|n| sort_key(n)).collect();
        let mut sent = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for key in &keys {
            let Some(state) = self.files.get(key) else {
                continue;
            };
            for d in &state.docs {
                if let Document::Journey(j) = &d.document {
                    ids.insert(j.id.value.as_str());
                    for s in &j.steps.value {
                        if let Some(send) = &s.value.send {
                            sent.insert(send.value.template.value.as_str());
                        }
                    }
                }
            }
        }
        // Throttles name journeys: then every journey counts, as its id.
        let throttles = keys.iter().any(|k| {
            self.files.get(k).is_some_and(|f| {
                f.docs
                    .iter()
                    .any(|d| matches!(d.document, Document::Throttle(_)))
            })
        });
        let mut docs = Vec::new();
        for (k, f) in &self.files {
            if keys.contains(k) {
                docs.extend(f.docs.iter().cloned());
                continue;
            }
            for (d, stub) in f.docs.iter().zip(&f.stubs) {
                let document = match (&d.document, stub) {
                    (Document::Project(_) | Document::Catalog(_), _) => d.document.clone(),
                    (Document::Template(t), _) if sent.contains(t.id.value.as_str()) => {
                        d.document.clone()
                    }
                    (Document::Template(_) | Document::Segment(_), Some(stub)) => stub.clone(),
                    (Document::Journey(j), Some(stub))
                        if throttles || ids.contains(j.id.value.as_str()) =>
                    {
                        stub.clone()
                    }
                    _ => continue,
                };
                docs.push(Loaded {
                    file: d.file.clone(),
                    document,
                    span: d.span,
                });
            }
        }
        let (mut by_file, compiled) =
            compile_pieces(&self.root, docs, &|name| names.contains(name));
        let mut out = BTreeMap::new();
        for key in &keys {
            if let Some(state) = self.files.get(key) {
                let mut pieces: Vec<Piece> =
                    state.diags.iter().cloned().map(Piece::Fixed).collect();
                // As in `check`: what compilation says about a file whose
                // text is not valid YAML (its last documents) is not shown.
                if !state.broken {
                    pieces.extend(by_file.remove(&state.file.name).unwrap_or_default());
                }
                out.insert(state.file.name.clone(), pieces);
            }
        }
        (out, compiled)
    }

    /// The current text of a file.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.files
            .get(&sort_key(name))
            .map(|f| f.file.text.as_str())
    }

    /// The names of every file held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.values().map(|f| f.file.name.as_str())
    }

    /// Validates and compiles everything held: the diagnostics of
    /// `sluice validate` for the same texts, sorted by file and line.
    pub fn check(&self) -> Diagnostics {
        let docs: Vec<Loaded> = self
            .files
            .values()
            .flat_map(|f| f.docs.iter().cloned())
            .collect();
        let mut compiled = Diagnostics::default();
        crate::compile::compile(&self.root, docs, &mut compiled);
        let mut out = Diagnostics::default();
        for f in self.files.values() {
            out.extend(f.diags.clone());
        }
        for d in compiled {
            let broken = d
                .file
                .as_ref()
                .and_then(|f| self.files.get(&sort_key(&f.name)))
                .is_some_and(|f| f.broken);
            if !broken {
                out.push(d);
            }
        }
        out.sort();
        out
    }

    fn documents(&self) -> impl Iterator<Item = &Loaded> {
        self.files.values().flat_map(|f| f.docs.iter())
    }

    fn documents_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Loaded> {
        self.files
            .get(&sort_key(name))
            .into_iter()
            .flat_map(|f| f.docs.iter())
    }
}

/// What a check of other files sees of a document not re-checked: a
/// template reduced to its id and channel, a segment to its id (for
/// references and suggestions), a journey to its id and entry (for
/// duplicates and throttles). Other kinds are seen whole or not at all.
fn stub(d: &Document) -> Option<Document> {
    Some(match d {
        Document::Template(t) => Document::Template(template_stub(t)),
        Document::Segment(s) => {
            let mut s = s.clone();
            s.when = Spanned::new(Node::Map(Vec::new()), s.when.span);
            Document::Segment(s)
        }
        Document::Journey(j) => {
            let mut j = j.clone();
            j.steps.value.clear();
            Document::Journey(j)
        }
        _ => return None,
    })
}

/// A template with its channel and id only: it counts as defined, and
/// compiling it costs nothing (it fails, in a file not reported).
fn template_stub(t: &Template) -> Template {
    let mut t = t.clone();
    t.subject = None;
    t.text = None;
    t.text_file = None;
    t.html = None;
    t.html_file = None;
    t.title = None;
    t.body = None;
    t.data = None;
    t.url = None;
    t.headers = None;
    t
}

// ---------------------------------------------------------------------------
// Definitions and references.

/// Something with an id that other documents refer to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A document: its kind and id.
    Document { kind: &'static str, id: String },
    /// A step of a journey.
    Step { journey: String, step: String },
}

impl Target {
    fn doc(kind: &'static str, id: &str) -> Target {
        Target::Document {
            kind,
            id: id.to_owned(),
        }
    }

    /// Markdown naming the target, for hovers.
    pub fn describe(&self) -> String {
        match self {
            Target::Document { kind, id } => format!("{kind} `{id}`"),
            Target::Step { journey, step } => format!("step `{step}` of journey `{journey}`"),
        }
    }
}

/// A place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub file: String,
    pub span: Span,
}

/// Every definition and reference of the repository.
#[derive(Debug, Default)]
pub struct Index {
    pub definitions: HashMap<Target, Site>,
    /// What a definition is, in a few words (`email template`, `send step`).
    pub summaries: HashMap<Target, String>,
    pub references: Vec<(Target, Site)>,
}

const POLICY_PREFIXES: &[(&str, &str)] = &[
    ("quiet_hours:", "QuietHours"),
    ("frequency_cap:", "FrequencyCap"),
    ("throttle:", "Throttle"),
];

impl Index {
    pub fn build(ws: &Workspace) -> Index {
        let mut index = Index::default();
        for d in ws.documents() {
            index.add(&d.file.name, &d.document);
        }
        index
    }

    fn define(&mut self, target: Target, file: &str, span: Span, summary: String) {
        self.summaries.entry(target.clone()).or_insert(summary);
        self.definitions.entry(target).or_insert(Site {
            file: file.to_owned(),
            span,
        });
    }

    fn refer(&mut self, target: Target, file: &str, span: Span) {
        self.references.push((
            target,
            Site {
                file: file.to_owned(),
                span,
            },
        ));
    }

    fn add(&mut self, file: &str, doc: &Document) {
        let id = doc.id();
        let summary = match doc {
            Document::Template(t) => format!("{} template", t.channel.value),
            Document::Journey(j) => format!("journey, version {}", j.version.value),
            other => other.kind().to_owned(),
        };
        self.define(Target::doc(doc.kind(), &id.value), file, id.span, summary);
        match doc {
            Document::Journey(j) => self.add_journey(file, j),
            Document::Segment(s) => self.add_condition(file, &s.when),
            Document::Throttle(t) => {
                for j in &t.journeys {
                    self.refer(Target::doc("Journey", &j.value), file, j.span);
                }
            }
            Document::JourneyTest(t) => {
                for e in t.expect.iter().chain(&t.expect_none) {
                    let e = &e.value;
                    if let Some(j) = &e.journey {
                        self.refer(Target::doc("Journey", &j.value), file, j.span);
                        if let Some(s) = &e.step {
                            let target = Target::Step {
                                journey: j.value.clone(),
                                step: s.value.clone(),
                            };
                            self.refer(target, file, s.span);
                        }
                    }
                    if let Some(t) = &e.template {
                        self.refer(Target::doc("Template", &t.value), file, t.span);
                    }
                    if let Some(r) = &e.reason {
                        self.add_policy_reason(file, r);
                    }
                }
            }
            _ => {}
        }
    }

    fn add_policy_reason(&mut self, file: &str, reason: &Spanned<String>) {
        for (prefix, kind) in POLICY_PREFIXES {
            if let Some(id) = reason.value.strip_prefix(prefix) {
                // A quoted scalar's span starts at its quote.
                let quote = usize::from(reason.span.len() > reason.value.len());
                let start = reason.span.start + quote + prefix.len();
                let span = Span {
                    start,
                    end: start + id.len(),
                    line: reason.span.line,
                    column: reason.span.column + quote + prefix.chars().count(),
                };
                self.refer(Target::doc(kind, id), file, span);
            }
        }
    }

    fn add_journey(&mut self, file: &str, j: &Journey) {
        let journey = j.id.value.clone();
        if let Some(s) = &j.entry.value.segment {
            self.refer(Target::doc("Segment", &s.value), file, s.span);
        }
        let conditions = j
            .entry
            .value
            .when
            .iter()
            .chain(j.exit.iter().filter_map(|e| e.value.when.as_ref()))
            .chain(j.goal.iter().filter_map(|g| g.value.when.as_ref()));
        let conditions: Vec<&Spanned<Node>> = conditions.collect();
        for c in conditions {
            self.add_condition(file, c);
        }
        let step_target = |s: &Spanned<String>| Target::Step {
            journey: journey.clone(),
            step: s.value.clone(),
        };
        for step in &j.steps.value {
            let step = &step.value;
            self.define(
                step_target(&step.id),
                file,
                step.id.span,
                format!("{} step", step_type(step)),
            );
            let mut nexts: Vec<&Spanned<String>> = step.next.iter().collect();
            if let Some(arms) = &step.branch {
                for arm in &arms.value {
                    nexts.push(&arm.value.next);
                    if let Some(w) = &arm.value.when {
                        self.add_condition(file, w);
                    }
                }
            }
            if let Some(arms) = &step.split {
                nexts.extend(arms.value.iter().map(|a| &a.value.next));
            }
            if let Some(w) = &step.wait_for {
                nexts.extend(w.value.on_event.iter().chain(&w.value.on_timeout));
                if let Some(c) = &w.value.where_ {
                    self.add_condition(file, c);
                }
            }
            for n in nexts {
                if n.value != "end" {
                    self.refer(step_target(n), file, n.span);
                }
            }
            if let Some(send) = &step.send {
                let t = &send.value.template;
                self.refer(Target::doc("Template", &t.value), file, t.span);
            }
        }
        if let Some(m) = &j.migrate {
            for to in m.value.steps.values() {
                if to.value != "end" {
                    self.refer(step_target(to), file, to.span);
                }
            }
        }
    }

    /// `segment: <id>` anywhere in a condition.
    fn add_condition(&mut self, file: &str, node: &Spanned<Node>) {
        match &node.value {
            Node::Map(entries) => {
                for (k, v) in entries {
                    match (&v.value, k.value.as_str()) {
                        (Node::Scalar(s), "segment") => {
                            self.refer(Target::doc("Segment", &s.text), file, v.span)
                        }
                        _ => self.add_condition(file, v),
                    }
                }
            }
            Node::Seq(items) => items.iter().for_each(|i| self.add_condition(file, i)),
            Node::Scalar(_) => {}
        }
    }

    /// The target at a byte offset of a file: a reference or a definition.
    pub fn target_at(&self, file: &str, offset: usize) -> Option<Target> {
        let inside = |s: &Site| s.file == file && s.span.start <= offset && offset <= s.span.end;
        self.references
            .iter()
            .find(|(_, s)| inside(s))
            .map(|(t, _)| t.clone())
            .or_else(|| {
                self.definitions
                    .iter()
                    .filter(|(_, s)| inside(s))
                    .min_by_key(|(_, s)| s.span.len())
                    .map(|(t, _)| t.clone())
            })
    }

    /// Every reference to a target, in file order.
    pub fn references_to(&self, target: &Target) -> Vec<Site> {
        let mut out: Vec<Site> = self
            .references
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, s)| s.clone())
            .collect();
        out.sort_by(|a, b| (&a.file, a.span.start).cmp(&(&b.file, b.span.start)));
        out
    }
}

fn step_type(step: &Step) -> &'static str {
    [
        (step.wait.is_some(), "wait"),
        (step.wait_until.is_some(), "wait_until"),
        (step.wait_for.is_some(), "wait_for"),
        (step.branch.is_some(), "branch"),
        (step.split.is_some(), "split"),
        (step.send.is_some(), "send"),
        (step.update.is_some(), "update"),
        (step.exit.is_some(), "exit"),
    ]
    .iter()
    .find(|(present, _)| *present)
    .map_or("empty", |(_, name)| name)
}

// ---------------------------------------------------------------------------
// Where the cursor is, read from the text (it may not parse while typed).

/// The cursor's place in a document: the keys from the document's root
/// down to the key being written (list levels are implicit), and whether
/// the cursor is on that key or in its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The document's `kind`, if written.
    pub kind: Option<String>,
    /// Keys from the root to the mapping the cursor is in.
    pub parents: Vec<String>,
    /// The key whose value the cursor is in (`None`: writing a key).
    pub key: Option<String>,
    /// What has been typed of the current word.
    pub prefix: String,
    /// The byte offset where `prefix` starts.
    pub prefix_start: usize,
    /// The cursor is inside an unclosed `{{` (a template expression).
    pub in_template: bool,
}

fn indent_of(line: &str) -> (usize, &str) {
    // The column of the first key, past spaces and `- ` list markers.
    let mut rest = line;
    let mut col = 0;
    loop {
        let trimmed = rest.trim_start_matches(' ');
        col += rest.len() - trimmed.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix("- ") {
            col += 2;
            rest = after;
        } else if rest == "-" {
            col += 1;
            rest = "";
        } else {
            return (col, rest);
        }
    }
}

/// `key` of a block line `key: …` (or `key:`), after its indent.
fn block_key(rest: &str) -> Option<&str> {
    let colon = rest.find(':')?;
    let key = &rest[..colon];
    let after = &rest[colon + 1..];
    let ok = !key.is_empty()
        && !key.starts_with(['#', '{', '[', '"', '\''])
        && key.chars().all(|c| !c.is_whitespace())
        && (after.is_empty() || after.starts_with([' ', '\t']));
    ok.then_some(key)
}

/// Reads the cursor's place at `offset` of `text`.
pub fn cursor_at(text: &str, offset: usize) -> Cursor {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let doc_start = document_start(text, line_start);
    let doc_end = text[offset..]
        .find("\n---")
        .map_or(text.len(), |i| offset + i);
    let kind = text[doc_start..doc_end].lines().find_map(|l| {
        l.strip_prefix("kind:")
            .map(|k| k.trim().trim_matches(['"', '\'']).to_owned())
    });

    let line = &text[line_start..offset];
    let (indent, rest) = indent_of(line);

    // Block parents: lines above with a key at a smaller indent.
    let mut parents = Vec::new();
    let mut level = indent;
    for above in text[doc_start..line_start].lines().rev() {
        if level == 0 {
            break;
        }
        let (col, r) = indent_of(above);
        if r.trim().is_empty() || r.starts_with('#') {
            continue;
        }
        if col < level {
            if let Some(k) = block_key(r) {
                parents.push(k.to_owned());
            }
            level = col;
        }
    }
    parents.reverse();

    // The current line: `key: value`, flow mappings `{ k: v, … }`, lists.
    let mut key: Option<String> = None;
    let mut stack: Vec<(char, Option<String>)> = Vec::new();
    let mut token_start = line_start + (line.len() - rest.len());
    let mut quote: Option<char> = None;
    let bytes: Vec<(usize, char)> = rest.char_indices().collect();
    let base = token_start;
    for (n, &(i, c)) in bytes.iter().enumerate() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        let next = bytes.get(n + 1).map(|&(_, c)| c);
        match c {
            '"' | '\'' if base + i == token_start => {
                quote = Some(c);
                token_start = base + i + 1;
            }
            ':' if next.is_none_or(|c| c == ' ') => {
                let k = text[token_start..base + i].trim();
                key = Some(k.to_owned());
                token_start = base + i + 1;
            }
            '{' | '[' => {
                stack.push((c, key.take()));
                if c == '[' {
                    key = stack.last().and_then(|(_, k)| k.clone());
                }
                token_start = base + i + 1;
            }
            '}' | ']' => {
                key = stack.pop().and_then(|(_, k)| k);
                token_start = base + i + 1;
            }
            ',' => {
                if matches!(stack.last(), Some(('{', _))) {
                    key = None;
                }
                token_start = base + i + 1;
            }
            ' ' if base + i == token_start => token_start += 1,
            _ => {}
        }
    }
    for (c, k) in &stack {
        if let ('{', Some(k)) = (c, k) {
            parents.push(k.clone());
        }
    }
    let token_start = token_start.min(offset);
    // Inside `{{ … ` (in any scalar, quoted, plain or a block's line), the
    // word being typed starts after the braces, a space or a `(`.
    let open = line.rfind("{{").filter(|&i| !line[i..].contains("}}"));
    let in_template = open.is_some();
    let prefix_start = match open {
        Some(i) => {
            let inner = &line[i + 2..];
            let word = after_last(inner, |c| c.is_whitespace() || c == '(').unwrap_or(0);
            line_start + i + 2 + word
        }
        None => token_start,
    };
    Cursor {
        kind,
        parents,
        key,
        prefix: text[prefix_start..offset].to_owned(),
        prefix_start,
        in_template,
    }
}

fn document_start(text: &str, before: usize) -> usize {
    let mut start = 0;
    let mut pos = 0;
    for line in text[..before].split_inclusive('\n') {
        pos += line.len();
        if line.trim_end() == "---" || line.starts_with("--- ") {
            start = pos;
        }
    }
    start
}

// ---------------------------------------------------------------------------
// The schema, for keys, enum values and descriptions.

/// The JSON Schema bundle, resolved along key paths.
pub struct SchemaView {
    bundle: Value,
}

impl Default for SchemaView {
    fn default() -> Self {
        SchemaView {
            bundle: crate::schema::any_kind(),
        }
    }
}

impl SchemaView {
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => match r
                    .strip_prefix("#/definitions/")
                    .and_then(|n| self.bundle["definitions"].get(n))
                {
                    Some(next) => s = next,
                    None => return s,
                },
                None => return s,
            }
        }
        s
    }

    /// The alternatives a schema stands for: itself, its `anyOf`/`oneOf`/
    /// `allOf` branches and its list items, resolved.
    fn alternatives<'a>(&'a self, s: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
        if depth > 8 {
            return;
        }
        let s = self.resolve(s);
        out.push(s);
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(items) = s.get(key).and_then(Value::as_array) {
                for i in items {
                    self.alternatives(i, out, depth + 1);
                }
            }
        }
        if let Some(items) = s.get("items") {
            self.alternatives(items, out, depth + 1);
        }
    }

    /// The schema of a kind's document.
    fn kind(&self, kind: &str) -> Option<&Value> {
        self.bundle["definitions"].get(kind)
    }

    /// The schemas at a key path below a kind.
    fn at(&self, kind: &str, path: &[String]) -> Vec<&Value> {
        let Some(root) = self.kind(kind) else {
            return Vec::new();
        };
        let mut here = vec![root];
        for key in path {
            let mut next = Vec::new();
            for s in here {
                let mut alts = Vec::new();
                self.alternatives(s, &mut alts, 0);
                for a in alts {
                    if let Some(p) = a.get("properties").and_then(|p| p.get(key)) {
                        next.push(p);
                    }
                }
            }
            here = next;
        }
        here
    }

    /// The keys of the mapping at a path, with their descriptions.
    pub fn keys(&self, kind: &str, path: &[String]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for s in self.at(kind, path) {
            let mut alts = Vec::new();
            self.alternatives(s, &mut alts, 0);
            for a in alts {
                if let Some(props) = a.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        if !out.iter().any(|(o, _)| o == k) {
                            out.push((k.clone(), description(self.resolve(v))));
                        }
                    }
                }
            }
        }
        out
    }

    /// The enum values (and `true`/`false`) a key's value may take.
    pub fn values(&self, kind: &str, path: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.at(kind, path) {
            let mut alts = Vec::new();
            self.alternatives(s, &mut alts, 0);
            for a in alts {
                let mut add = |v: &Value| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        _ => return,
                    };
                    if !out.contains(&text) {
                        out.push(text);
                    }
                };
                if let Some(values) = a.get("enum").and_then(Value::as_array) {
                    values.iter().for_each(&mut add);
                }
                if let Some(c) = a.get("const") {
                    add(c);
                }
                if a.get("type").and_then(Value::as_str) == Some("boolean") {
                    add(&Value::Bool(true));
                    add(&Value::Bool(false));
                }
            }
        }
        out
    }

    /// The description of the key at the end of a path.
    pub fn description(&self, kind: &str, path: &[String]) -> Option<String> {
        self.at(kind, path)
            .into_iter()
            .map(|s| description(self.resolve(s)))
            .find(|d| !d.is_empty())
    }
}

fn description(s: &Value) -> String {
    s.get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Completion and hover.

/// What a completion offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Key,
    Value,
    Reference,
    Variable,
}

/// One completion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub label: String,
    pub kind: ItemKind,
    pub detail: String,
}

/// The user attributes and events (with their properties) a Catalog
/// declares, across every Catalog document.
fn catalog(ws: &Workspace) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut user = Vec::new();
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in ws.documents() {
        if let Document::Catalog(c) = &d.document {
            if let Some(m) = c.user.as_ref().and_then(|u| u.value.as_map()) {
                user.extend(m.iter().map(|(k, _)| k.value.clone()));
            }
            if let Some(m) = c.events.as_ref().and_then(|e| e.value.as_map()) {
                for (name, props) in m {
                    let entry = events.entry(name.value.clone()).or_default();
                    if let Some(p) = props.value.as_map() {
                        entry.extend(p.iter().map(|(k, _)| k.value.clone()));
                    }
                }
            }
        }
    }
    (user, events)
}

/// The journey of a file that holds the offset (the last one starting
/// before it).
fn journey_at<'a>(ws: &'a Workspace, name: &str, offset: usize) -> Option<&'a Journey> {
    ws.documents_of(name)
        .filter(|d| d.span.start <= offset)
        .last()
        .and_then(|d| match &d.document {
            Document::Journey(j) => Some(j),
            _ => None,
        })
}

/// Completions at a byte offset of a file, and the offset where the word
/// they replace starts.
pub fn completions(
    ws: &Workspace,
    schema: &SchemaView,
    name: &str,
    offset: usize,
) -> (usize, Vec<Item>) {
    let Some(text) = ws.text(name) else {
        return (offset, Vec::new());
    };
    let c = cursor_at(text, offset);
    let kind = c.kind.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |label: String, kind: ItemKind, detail: String| {
        if !out.iter().any(|i: &Item| i.label == label) {
            out.push(Item {
                label,
                kind,
                detail,
            });
        }
    };
    let index = Index::build(ws);
    let ids_of = |kind: &str| -> Vec<(String, String)> {
        let mut ids: Vec<(String, String)> = index
            .definitions
            .keys()
            .filter_map(|t| match t {
                Target::Document { kind: k, id } if *k == kind => Some((
                    id.clone(),
                    index.summaries.get(t).cloned().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        ids.sort();
        ids
    };

    if c.in_template {
        let (user, events) = catalog(ws);
        for a in user {
            push(
                format!("user.{a}"),
                ItemKind::Variable,
                "user attribute".into(),
            );
        }
        let entry_event = journey_at(ws, name, offset)
            .and_then(|j| j.entry.value.event.as_ref())
            .map(|e| e.value.clone());
        for (event, props) in &events {
            if entry_event.as_ref().is_none_or(|e| e == event) {
                for p in props {
                    push(format!("event.{p}"), ItemKind::Variable, event.clone());
                    push(format!("entry.{p}"), ItemKind::Variable, event.clone());
                }
            }
        }
        for v in [
            "journey.id",
            "journey.version",
            "journey.step",
            "message.key",
            "message.unsubscribe_url",
        ] {
            push(v.into(), ItemKind::Variable, "built in".into());
        }
        out.retain(|i| i.label.starts_with(&c.prefix));
        return (c.prefix_start, out);
    }

    match c.key.as_deref() {
        None => {
            // A condition path being typed as a key.
            if let Some(root) = ["user.", "event.", "entry."]
                .iter()
                .find(|r| c.prefix.starts_with(**r))
            {
                let (user, events) = catalog(ws);
                let names: Vec<String> = if *root == "user." {
                    user
                } else {
                    events.values().flatten().cloned().collect()
                };
                for n in names {
                    push(format!("{root}{n}"), ItemKind::Variable, "Catalog".into());
                }
            }
            for (k, d) in schema.keys(&kind, &c.parents) {
                push(k, ItemKind::Key, d);
            }
        }
        Some(key) => {
            let mut path = c.parents.clone();
            path.push(key.to_owned());
            let in_steps = c.parents.first().map(String::as_str) == Some("steps");
            match key {
                "next" | "on_event" | "on_timeout" if in_steps => {
                    if let Some(j) = journey_at(ws, name, offset) {
                        for s in &j.steps.value {
                            let s = &s.value;
                            push(
                                s.id.value.clone(),
                                ItemKind::Reference,
                                format!("{} step", step_type(s)),
                            );
                        }
                    }
                    push(
                        "end".into(),
                        ItemKind::Value,
                        "complete the instance".into(),
                    );
                }
                "template" if kind == "Journey" || kind == "JourneyTest" => {
                    let channel = sibling_value(text, offset, "channel");
                    for (id, summary) in ids_of("Template") {
                        let fits = channel
                            .as_ref()
                            .is_none_or(|c| summary.starts_with(c.as_str()));
                        if fits {
                            push(id, ItemKind::Reference, summary);
                        }
                    }
                }
                "segment" => {
                    for (id, summary) in ids_of("Segment") {
                        push(id, ItemKind::Reference, summary);
                    }
                }
                "journey" | "journeys" => {
                    for (id, summary) in ids_of("Journey") {
                        push(id, ItemKind::Reference, summary);
                    }
                }
                "event" => {
                    let (_, events) = catalog(ws);
                    for e in events.keys() {
                        push(e.clone(), ItemKind::Reference, "Catalog event".into());
                    }
                }
                _ => {}
            }
            for v in schema.values(&kind, &path) {
                push(v, ItemKind::Value, String::new());
            }
        }
    }
    out.retain(|i| i.label.starts_with(&c.prefix));
    (c.prefix_start, out)
}

/// The value of `key` on the cursor's line (flow mapping) or on a sibling
/// line of the same mapping.
fn sibling_value(text: &str, offset: usize, key: &str) -> Option<String> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let find = |line: &str| -> Option<String> {
        let at = line.find(&format!("{key}:"))?;
        let rest = line[at + key.len() + 1..].trim_start();
        let end = rest.find([',', '}', ' ', '#']).unwrap_or(rest.len());
        let v = rest[..end].trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_owned())
    };
    if let Some(v) = find(&text[line_start..line_end]) {
        return Some(v);
    }
    let (indent, _) = indent_of(&text[line_start..line_end]);
    let mut lines_above = text[..line_start].lines().rev();
    let lines_below = text[line_end..].lines().skip(1);
    for line in lines_above.by_ref().chain(lines_below) {
        let (col, rest) = indent_of(line);
        if rest.trim().is_empty() {
            continue;
        }
        if col != indent {
            continue;
        }
        if let Some(v) = block_key(rest)
            .filter(|k| *k == key)
            .and_then(|_| find(rest))
        {
            return Some(v);
        }
    }
    None
}

/// Markdown for the thing at a byte offset: what an id is and where it is
/// defined, or what a key means.
pub fn hover(
    ws: &Workspace,
    index: &Index,
    schema: &SchemaView,
    name: &str,
    offset: usize,
) -> Option<(String, Span)> {
    if let Some(t) = index.target_at(name, offset) {
        let site = index
            .references
            .iter()
            .map(|(_, s)| s)
            .chain(index.definitions.values())
            .find(|s| s.file == name && s.span.start <= offset && offset <= s.span.end)?
            .clone();
        let text = match (index.definitions.get(&t), index.summaries.get(&t)) {
            (Some(def), Some(summary)) => format!(
                "**{}** — {summary}\n\ndefined in `{}` line {}",
                t.describe(),
                def.file,
                def.span.line
            ),
            _ => format!("**{}** is not defined", t.describe()),
        };
        return Some((text, site.span));
    }
    // A key: the word under the cursor followed by `:`.
    let text = ws.text(name)?;
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let is_key_char = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == '-';
    let start = after_last(&text[..offset], |c| !is_key_char(c)).unwrap_or(0);
    let end = text[offset..]
        .find(|c: char| !is_key_char(c))
        .map_or(text.len(), |i| offset + i);
    if start >= end || !text[end..].starts_with(':') {
        return None;
    }
    let cursor = cursor_at(text, end + 1);
    let kind = cursor.kind?;
    let mut path = cursor.parents;
    path.push(text[start..end].to_owned());
    let d = schema.description(&kind, &path)?;
    let (line, _) = utf16_position(text, start);
    let column = text[text[..start].rfind('\n').map_or(0, |i| i + 1)..start]
        .chars()
        .count();
    Some((
        format!("**{}**\n\n{d}", path.join(".")),
        Span {
            start,
            end,
            line: line as usize + 1,
            column: column + 1,
        },
    ))
}

/// The replacement a diagnostic suggests ("did you mean `x`?"), if any.
pub fn suggestion(d: &Diagnostic) -> Option<&str> {
    let (_, rest) = d.message.rsplit_once("did you mean `")?;
    rest.strip_suffix("`?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "a: é😀x\nb: 1\n";
        let x = text.find('x').expect("x");
        assert_eq!(utf16_position(text, x), (0, 6));
        assert_eq!(offset_of(text, 0, 6), x);
        assert_eq!(offset_of(text, 1, 0), text.find('b').expect("b"));
        assert_eq!(offset_of(text, 9, 9), text.len());
    }

    #[test]
    fn the_cursor_knows_its_key_path() {
        let text =
            "kind: Journey\nsteps:\n  - id: a\n    branch:\n      - when: {}\n        next: ";
        let c = cursor_at(text, text.len());
        assert_eq!(c.kind.as_deref(), Some("Journey"));
        assert_eq!(c.parents, vec!["steps", "branch"]);
        assert_eq!(c.key.as_deref(), Some("next"));
        assert_eq!(c.prefix, "");

        let text = "kind: Journey\nsteps:\n  - id: a\n    send: { channel: email, template: ca";
        let c = cursor_at(text, text.len());
        assert_eq!(c.parents, vec!["steps", "send"]);
        assert_eq!(c.key.as_deref(), Some("template"));
        assert_eq!(c.prefix, "ca");

        let text = "kind: Journey\nentry:\n  ev";
        let c = cursor_at(text, text.len());
        assert_eq!(c.parents, vec!["entry"]);
        assert_eq!(c.key, None);
        assert_eq!(c.prefix, "ev");

        let text = "kind: Template\nsubject: \"Hi {{user.fi";
        let c = cursor_at(text, text.len());
        assert!(c.in_template);
        assert_eq!(c.prefix, "user.fi");
    }

    #[test]
    fn multibyte_text_around_the_cursor_is_fine() {
        let text = "kind: Template\nsubject: \"Hi\u{a0}{{\u{3000}user.fi";
        let c = cursor_at(text, text.len());
        assert!(c.in_template);
        assert_eq!(c.prefix, "user.fi");
        let mut ws = Workspace {
            root: PathBuf::from("."),
            files: BTreeMap::new(),
            results: BTreeMap::new(),
            found: HashMap::new(),
            compiled: BTreeSet::new(),
        };
        let text = "kind: Journey\nname: —é—\n—priority: 5\n";
        ws.set_text("j.yaml", text.to_owned());
        let schema = SchemaView::default();
        let index = Index::build(&ws);
        for offset in 0..=text.len() {
            let _ = hover(&ws, &index, &schema, "j.yaml", offset);
            let _ = completions(&ws, &schema, "j.yaml", offset);
        }
    }

    #[test]
    fn suggestions_come_from_the_message() {
        let d = Diagnostic::error(
            crate::diagnostic::Code::UnknownField,
            "unknown field `priorty`, did you mean `priority`?",
        );
        assert_eq!(suggestion(&d), Some("priority"));
    }
}
