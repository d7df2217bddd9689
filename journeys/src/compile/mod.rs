//! Validation and compilation in one pass over the raw model: every check
//! of FORMAT.md runs and reports into one [`Diagnostics`], and whatever is
//! valid is compiled. The result is returned only when nothing is wrong.
//!
//! Passes, in order: ids, project, catalog, templates, segments (with
//! cycles), policies, journeys (references, graph, types), tests.

mod catalog;
mod graph;
mod journey;
mod message;
mod partials;
mod test;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compiled::{self, Channel, Config, PolicyScope};
use crate::condition::{self, Allowed, Condition};
use crate::diagnostic::{with_suggestion, Code, Diagnostic, Diagnostics, SourceFile};
use crate::load::Loaded;
use crate::model::{self, Document};
use crate::scalar;
use crate::span::{Node, Span, Spanned};
use crate::template::{Renderer, Text};

pub(crate) use catalog::{Recorded, TypeCheck, TypeEnv};

/// Reports into the diagnostics of one file.
pub(crate) struct Ctx<'a> {
    pub file: &'a Arc<SourceFile>,
    pub diags: &'a mut Diagnostics,
}

impl Ctx<'_> {
    pub fn error(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(code, message).at(self.file, span));
    }

    pub fn problems(&mut self, problems: Vec<condition::Problem>) {
        for p in problems {
            self.error(p.code, p.span, p.message);
        }
    }

    /// Parses a spanned scalar with `parse`, reporting `code` on failure.
    pub fn scalar<T>(
        &mut self,
        value: &Spanned<String>,
        code: Code,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(&value.value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(code, value.span, e);
                None
            }
        }
    }

    /// Where `needle` is written inside the value at `span` (its first
    /// occurrence), or `span` itself when it is not written there as is.
    pub fn locate(&self, span: Span, needle: &str) -> Span {
        let text = &self.file.text;
        let Some(raw) = text.get(span.start..span.end) else {
            return span;
        };
        match raw.find(needle) {
            Some(i) if !needle.is_empty() => {
                let start = span.start + i;
                let (line, column) = self.file.index.line_col(text, start);
                Span {
                    start,
                    end: start + needle.len(),
                    line,
                    column,
                }
            }
            _ => span,
        }
    }

    pub fn channel(&mut self, value: &Spanned<String>) -> Option<Channel> {
        let c = Channel::parse(&value.value);
        if c.is_none() {
            let message = with_suggestion(
                format!("unknown channel `{}`", value.value),
                &value.value,
                ["email", "push", "webhook"],
            );
            self.error(Code::UnknownReference, value.span, message);
        }
        c
    }

    pub fn condition(
        &mut self,
        node: &Spanned<Node>,
        name: &str,
        allowed: Allowed,
    ) -> Option<(Condition, Vec<Text>)> {
        let mut p = condition::Parser::new(name, allowed);
        let c = p.parse(node);
        let problems = std::mem::take(&mut p.problems);
        let ok = problems.is_empty();
        self.problems(problems);
        c.filter(|_| ok).map(|c| (c, p.templates))
    }
}

/// Ids by kind, with where each was defined.
#[derive(Default)]
pub(crate) struct Ids {
    pub journeys: BTreeMap<String, Span>,
    pub segments: BTreeMap<String, Span>,
    pub templates: BTreeMap<String, Channel>,
    /// Ids declared by documents that could not be read whole (a file with
    /// a YAML error, a document without its kind, a template with an
    /// unknown channel): their problem is reported where it is, so a
    /// reference to one of them is not also reported as undefined.
    pub unread: BTreeSet<String>,
}

impl Ids {
    /// Whether `id` is declared but could not be read (see `unread`).
    pub fn is_unread(&self, id: &str) -> bool {
        self.unread.contains(id)
    }
}

/// The top-level `id:` values written in every file that already has a
/// loading problem: what its unreadable documents may declare.
fn unread_ids(diags: &Diagnostics) -> BTreeSet<String> {
    let mut files: BTreeMap<&str, &SourceFile> = BTreeMap::new();
    for d in diags.errors() {
        if let Some(f) = &d.file {
            files.entry(f.name.as_str()).or_insert(f);
        }
    }
    let mut out = BTreeSet::new();
    for file in files.values() {
        for line in file.text.lines() {
            let Some(rest) = line.strip_prefix("id:") else {
                continue;
            };
            let value = rest.split(" #").next().unwrap_or_default().trim();
            let value = value.trim_matches(['"', '\'']);
            if !value.is_empty() {
                out.insert(value.to_owned());
            }
        }
    }
    out
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Validates and compiles loaded documents.
pub fn compile(root: &Path, docs: Vec<Loaded>, diags: &mut Diagnostics) -> Option<Config> {
    let (config, _, _) = compile_with(root, docs, diags, None);
    diags.sort();
    config
}

/// [`compile`], keeping every check against the Catalog that it runs in
/// the files `files` names; with the ids of the journeys that compile
/// (JourneyTests see those only). The diagnostics are left in the order
/// they were found, which the records' indices refer to.
pub(crate) fn compile_recording(
    root: &Path,
    docs: Vec<Loaded>,
    diags: &mut Diagnostics,
    files: &dyn Fn(&str) -> bool,
) -> (Vec<Recorded>, BTreeSet<String>) {
    let (_, log, journeys) = compile_with(root, docs, diags, Some(files));
    (log, journeys)
}

fn compile_with(
    root: &Path,
    docs: Vec<Loaded>,
    diags: &mut Diagnostics,
    record: Option<&dyn Fn(&str) -> bool>,
) -> (Option<Config>, Vec<Recorded>, BTreeSet<String>) {
    // Ids: format and uniqueness per kind.
    let mut seen: HashMap<(&'static str, String), ()> = HashMap::new();
    let mut projects = 0;
    for d in &docs {
        let id = d.document.id();
        let mut ctx = Ctx {
            file: &d.file,
            diags,
        };
        if !valid_id(&id.value) {
            ctx.error(
                Code::InvalidId,
                id.span,
                format!("invalid id `{}`: ids match [a-z0-9][a-z0-9_-]*", id.value),
            );
        }
        if matches!(d.document, Document::Project(_)) {
            projects += 1;
            if projects > 1 {
                ctx.error(
                    Code::DuplicateId,
                    id.span,
                    "a repository has at most one Project",
                );
            }
            continue;
        }
        if seen
            .insert((d.document.kind(), id.value.clone()), ())
            .is_some()
        {
            ctx.error(
                Code::DuplicateId,
                id.span,
                format!("duplicate {} id `{}`", d.document.kind(), id.value),
            );
        }
    }

    let project = project_settings(&docs, diags);
    let catalog = merged_catalog(&docs, diags);
    let types = match record {
        Some(files) => TypeEnv::record(catalog.as_ref(), files),
        None => TypeEnv::new(catalog.as_ref()),
    };

    // Every diagnostic so far is from loading the files.
    let mut ids = Ids {
        unread: unread_ids(diags),
        ..Ids::default()
    };
    for d in &docs {
        match &d.document {
            Document::Journey(j) => {
                ids.journeys.entry(j.id.value.clone()).or_insert(j.id.span);
            }
            Document::Segment(s) => {
                ids.segments.entry(s.id.value.clone()).or_insert(s.id.span);
            }
            Document::Template(t) => match Channel::parse(&t.channel.value) {
                Some(c) => {
                    ids.templates.entry(t.id.value.clone()).or_insert(c);
                }
                None => {
                    ids.unread.insert(t.id.value.clone());
                }
            },
            _ => {}
        }
    }

    let mut renderer = Renderer::default();
    let mut templates = BTreeMap::new();
    let mut partial_sites = Vec::new();
    for d in &docs {
        if let Document::Template(t) = &d.document {
            let mut ctx = Ctx {
                file: &d.file,
                diags,
            };
            if let Some((tpl, texts)) = message::compile(root, t, &mut ctx, &types) {
                for (text, span) in texts {
                    renderer.register(&text);
                    partial_sites.push(partials::Site {
                        text,
                        span,
                        file: d.file.clone(),
                    });
                }
                templates.entry(tpl.id.clone()).or_insert(tpl);
            }
        }
    }

    // Segments.
    let mut segments = Vec::new();
    let mut segment_refs: graph::SegmentRefs = BTreeMap::new();
    for d in &docs {
        if let Document::Segment(s) = &d.document {
            let mut ctx = Ctx {
                file: &d.file,
                diags,
            };
            let name = format!("segment/{}", s.id.value);
            let allowed = Allowed {
                event: false,
                entry: false,
            };
            if let Some((when, texts)) = ctx.condition(&s.when, &name, allowed) {
                texts.iter().for_each(|t| renderer.register(t));
                let refs = references(&when, &ids, &mut ctx);
                types.check_condition(&when, None, None, &mut ctx);
                segment_refs.insert(s.id.value.clone(), (refs, d.file.clone(), s.id.span));
                segments.push(compiled::Segment {
                    id: s.id.value.clone(),
                    when,
                });
            } else {
                // Its condition is reported wrong; the segments it names
                // still count, so that a cycle through it is found too.
                let mut refs = Vec::new();
                written_segments(&s.when, &mut refs);
                refs.retain(|r| ids.segments.contains_key(&r.value));
                segment_refs.insert(s.id.value.clone(), (refs, d.file.clone(), s.id.span));
            }
        }
    }
    let order = graph::segment_order(&segment_refs, diags);
    segments.sort_by_key(|s| order.get(&s.id).copied().unwrap_or(usize::MAX));

    // Policies.
    let mut quiet_hours = Vec::new();
    let mut quiet_sites = Vec::new();
    let mut throttles = Vec::new();
    let mut frequency_caps = Vec::new();
    for d in &docs {
        let mut ctx = Ctx {
            file: &d.file,
            diags,
        };
        match &d.document {
            Document::QuietHours(q) => {
                let scope = policy_scope(q.channels.as_deref(), q.categories.as_deref(), &mut ctx);
                let start = ctx.scalar(&q.start, Code::InvalidTimeOfDay, scalar::parse_time_of_day);
                let end = ctx.scalar(&q.end, Code::InvalidTimeOfDay, scalar::parse_time_of_day);
                let zone = match &q.timezone {
                    Some(z) => ctx.scalar(z, Code::InvalidTimezone, scalar::parse_zone),
                    None => Some(scalar::Zone::User),
                };
                if let (Some(scope), Some(start), Some(end), Some(zone)) = (scope, start, end, zone)
                {
                    quiet_sites.push((d.file.clone(), q.id.span));
                    quiet_hours.push(compiled::QuietHours {
                        id: q.id.value.clone(),
                        scope,
                        start,
                        end,
                        zone,
                        action: q
                            .action
                            .as_ref()
                            .map(|a| a.value)
                            .unwrap_or(model::PolicyAction::Delay),
                    });
                }
            }
            Document::Throttle(t) => {
                let channel = ctx.channel(&t.channel);
                let rate = ctx.scalar(&t.rate, Code::InvalidRate, scalar::parse_rate);
                for j in &t.journeys {
                    if !ids.journeys.contains_key(&j.value) && !ids.is_unread(&j.value) {
                        let message = with_suggestion(
                            format!("journey `{}` is not defined", j.value),
                            &j.value,
                            ids.journeys.keys().map(String::as_str),
                        );
                        ctx.error(Code::UnknownReference, j.span, message);
                    }
                }
                if let (Some(channel), Some(rate)) = (channel, rate) {
                    throttles.push(compiled::Throttle {
                        id: t.id.value.clone(),
                        channel,
                        rate,
                        journeys: t.journeys.iter().map(|j| j.value.clone()).collect(),
                    });
                }
            }
            Document::FrequencyCap(c) => {
                let scope = policy_scope(c.channels.as_deref(), c.categories.as_deref(), &mut ctx);
                let per = ctx.scalar(&c.per, Code::InvalidDuration, scalar::parse_duration);
                if c.limit.value == 0 {
                    ctx.error(
                        Code::InvalidValue,
                        c.limit.span,
                        "`limit` must be at least 1",
                    );
                }
                if let (Some(scope), Some(per)) = (scope, per) {
                    if per.0 == 0 {
                        ctx.error(
                            Code::InvalidDuration,
                            c.per.span,
                            "`per` must be longer than 0s",
                        );
                    }
                    frequency_caps.push(compiled::FrequencyCap {
                        id: c.id.value.clone(),
                        scope,
                        limit: c.limit.value,
                        per,
                        action: c
                            .action
                            .as_ref()
                            .map(|a| a.value)
                            .unwrap_or(model::PolicyAction::Drop),
                    });
                }
            }
            _ => {}
        }
    }

    quiet_hours_all_day(&quiet_hours, &quiet_sites, diags);

    // Journeys.
    let mut journeys = Vec::new();
    for d in &docs {
        if let Document::Journey(j) = &d.document {
            let mut ctx = Ctx {
                file: &d.file,
                diags,
            };
            let env = journey::Env {
                ids: &ids,
                types: &types,
                templates: &templates,
                default_zone: project.default_timezone,
            };
            if let Some((journey, texts)) = journey::compile(j, &env, &mut ctx) {
                for text in texts {
                    renderer.register(&text);
                    if !text.partials.is_empty() {
                        partial_sites.push(partials::Site {
                            text,
                            span: j.id.span,
                            file: d.file.clone(),
                        });
                    }
                }
                journeys.push(Arc::new(journey));
            }
        }
    }
    partials::check(&partial_sites, diags);
    journeys.sort_by(|a, b| a.id.cmp(&b.id));
    journeys.dedup_by(|a, b| a.id == b.id);

    // Tests.
    let mut tests = Vec::new();
    for d in &docs {
        if let Document::JourneyTest(t) = &d.document {
            let mut ctx = Ctx {
                file: &d.file,
                diags,
            };
            if let Some(t) = test::compile(t, &journeys, &ids, &mut ctx) {
                tests.push(t);
            }
        }
    }

    let log = types.into_log();
    let compiled = match record {
        Some(_) => journeys.iter().map(|j| j.id.clone()).collect(),
        None => BTreeSet::new(),
    };
    if diags.has_errors() {
        return (None, log, compiled);
    }
    let config = Config {
        root: root.to_path_buf(),
        project,
        journeys,
        segments,
        templates,
        quiet_hours,
        throttles,
        frequency_caps,
        catalog,
        tests,
        renderer: Arc::new(renderer),
    };
    (Some(config), log, compiled)
}

/// The repository's Project settings: the first Project compiled (its
/// problems reported), or the defaults without one.
pub(crate) fn project_settings(docs: &[Loaded], diags: &mut Diagnostics) -> compiled::Project {
    docs.iter()
        .find_map(|d| match &d.document {
            Document::Project(p) => Some((d, p)),
            _ => None,
        })
        .map(|(d, p)| {
            project(
                p,
                &mut Ctx {
                    file: &d.file,
                    diags,
                },
            )
        })
        .unwrap_or_else(default_project)
}

/// Every Catalog document merged into one (later entries win), their
/// problems reported; `None` without a Catalog: nothing is type-checked.
pub(crate) fn merged_catalog(
    docs: &[Loaded],
    diags: &mut Diagnostics,
) -> Option<compiled::Catalog> {
    let mut catalog: Option<compiled::Catalog> = None;
    for d in docs {
        if let Document::Catalog(c) = &d.document {
            let parsed = catalog::parse(
                c,
                &mut Ctx {
                    file: &d.file,
                    diags,
                },
            );
            match &mut catalog {
                None => catalog = Some(parsed),
                Some(existing) => {
                    existing.user.extend(parsed.user);
                    for (k, v) in parsed.events {
                        existing.events.entry(k).or_default().extend(v);
                    }
                }
            }
        }
    }
    catalog
}

/// Warns when delaying quiet-hour windows that can apply to the same
/// message (same zone, overlapping channels and categories) cover the
/// whole day together: such a message would be held forever.
fn quiet_hours_all_day(
    quiet: &[compiled::QuietHours],
    sites: &[(Arc<SourceFile>, Span)],
    diags: &mut Diagnostics,
) {
    fn overlap<T: PartialEq>(a: &Option<Vec<T>>, b: &Option<Vec<T>>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
            _ => true,
        }
    }
    let delays: Vec<usize> = (0..quiet.len())
        .filter(|&i| quiet[i].action == model::PolicyAction::Delay)
        .collect();
    for &i in &delays {
        let q = &quiet[i];
        let mut covered = [false; 24 * 60];
        let mut ids = Vec::new();
        for &j in &delays {
            let p = &quiet[j];
            if p.zone != q.zone
                || !overlap(&p.scope.channels, &q.scope.channels)
                || !overlap(&p.scope.categories, &q.scope.categories)
            {
                continue;
            }
            let (start, end) = (p.start.minutes() as usize, p.end.minutes() as usize);
            if start == end {
                continue; // an empty window
            }
            let mut m = start;
            while m != end {
                covered[m] = true;
                m = (m + 1) % covered.len();
            }
            ids.push(format!("`{}`", p.id));
        }
        if covered.iter().all(|c| *c) {
            let (file, span) = &sites[i];
            diags.push(
                Diagnostic::error(
                    Code::QuietHoursAllDay,
                    format!(
                        "quiet hours {} together cover the whole day: a message they delay is held forever",
                        ids.join(", ")
                    ),
                )
                .warning()
                .at(file, *span)
                .with_help("leave a gap between the windows, or use `action: drop`"),
            );
            return; // once is enough
        }
    }
}

/// Segment ids a condition references; reports unknown ones.
fn references(c: &Condition, ids: &Ids, ctx: &mut Ctx<'_>) -> Vec<Spanned<String>> {
    let mut out = Vec::new();
    c.walk(&mut |c| {
        if let Condition::Segment(s) = c {
            out.push(s.clone());
        }
    });
    for s in &out {
        if !ids.segments.contains_key(&s.value) && !ids.is_unread(&s.value) {
            let message = with_suggestion(
                format!("segment `{}` is not defined", s.value),
                &s.value,
                ids.segments.keys().map(String::as_str),
            );
            ctx.error(Code::UnknownReference, s.span, message);
        }
    }
    out
}

/// The `segment: <id>` references written in a condition, followed
/// through `all`, `any` and `not` as written, whatever else is wrong in it.
fn written_segments(node: &Spanned<Node>, out: &mut Vec<Spanned<String>>) {
    match &node.value {
        Node::Map(entries) => {
            for (k, v) in entries {
                match (k.value.as_str(), &v.value) {
                    ("segment", Node::Scalar(s)) => out.push(Spanned::new(s.text.clone(), v.span)),
                    ("all" | "any" | "not", _) => written_segments(v, out),
                    _ => {}
                }
            }
        }
        Node::Seq(items) => items.iter().for_each(|i| written_segments(i, out)),
        Node::Scalar(_) => {}
    }
}

fn policy_scope(
    channels: Option<&[Spanned<String>]>,
    categories: Option<&[Spanned<String>]>,
    ctx: &mut Ctx<'_>,
) -> Option<PolicyScope> {
    let channels = match channels {
        None => None,
        Some(cs) => {
            let parsed: Vec<Option<Channel>> = cs.iter().map(|c| ctx.channel(c)).collect();
            Some(parsed.into_iter().collect::<Option<Vec<_>>>()?)
        }
    };
    Some(PolicyScope {
        channels,
        categories: categories.map(|cs| cs.iter().map(|c| c.value.clone()).collect()),
    })
}

fn default_project() -> compiled::Project {
    compiled::Project {
        id: "default".into(),
        default_timezone: chrono_tz::UTC,
        store: PathBuf::from(".sluice/store"),
        email: compiled::EmailSettings {
            provider: model::EmailProvider::Maildir,
            url: None,
            from: "sluice <sluice@localhost>".into(),
            username_env: None,
            password_env: None,
            path: PathBuf::from(".sluice/outbox/maildir"),
            dkim: None,
            pool: 8,
            timeout: scalar::Duration(30),
            ca_file: None,
        },
        push: compiled::PushSettings {
            provider: model::PushProvider::File,
            project_id: None,
            credentials_env: None,
            endpoint: None,
            topic: None,
            key_id: None,
            team_id: None,
            path: PathBuf::from(".sluice/outbox/push.jsonl"),
        },
        webhook: compiled::WebhookSettings {
            signing_secret_env: None,
            timeout: scalar::Duration(5),
        },
        retry: compiled::RetryPolicy {
            max_attempts: 8,
            initial: scalar::Duration(1),
            max: scalar::Duration(600),
        },
        history_retention: scalar::Duration(90 * 86_400),
        history_limit: 500,
        api: compiled::ApiSettings {
            listen: "127.0.0.1:7878".into(),
            public_url: None,
            segment_secret_env: None,
            ingest_token_env: "SLUICE_INGEST_TOKEN".into(),
            admin_token_env: "SLUICE_ADMIN_TOKEN".into(),
            feedback: compiled::FeedbackSettings::default(),
        },
    }
}

/// The most SMTP connections one channel may keep open.
const MAX_SMTP_POOL: u32 = 256;

/// The email channel's DKIM, SMTP pool, timeout and CA file.
fn email_extensions(e: &model::EmailChannel, out: &mut compiled::EmailSettings, ctx: &mut Ctx<'_>) {
    if let Some(url) = &e.url {
        let scheme = url.value.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("smtp" | "smtps")) {
            ctx.error(
                Code::InvalidValue,
                url.span,
                format!(
                    "`url` {:?} is not an SMTP URL: use smtp://host:port, smtp://host:port?tls=required (STARTTLS) or smtps://host:port",
                    url.value
                ),
            );
        }
    }
    if let Some(d) = &e.dkim {
        out.dkim = Some(compiled::DkimSettings {
            domain: d.domain.value.clone(),
            selector: d.selector.value.clone(),
            private_key_env: d.private_key_env.value.clone(),
        });
    }
    if let Some(p) = &e.pool {
        if p.value == 0 || p.value > MAX_SMTP_POOL {
            ctx.error(
                Code::InvalidValue,
                p.span,
                format!(
                    "`pool` must be between 1 and {MAX_SMTP_POOL}, not {}",
                    p.value
                ),
            );
        } else {
            out.pool = p.value;
        }
    }
    if let Some(t) = &e.timeout {
        if let Some(d) = ctx.scalar(t, Code::InvalidDuration, scalar::parse_duration) {
            out.timeout = d;
        }
    }
    if let Some(f) = &e.ca_file {
        out.ca_file = Some(PathBuf::from(&f.value));
    }
}

/// The push channel's settings that its provider cannot do without: fcm
/// needs `project_id` and `credentials_env`; apns needs `credentials_env`,
/// `key_id`, `team_id` and `topic` (docs/delivery.md).
fn push_needs(push: &model::PushChannel, provider: model::PushProvider, ctx: &mut Ctx<'_>) {
    let needed: &[(&str, bool)] = match provider {
        model::PushProvider::File => &[],
        model::PushProvider::Fcm => &[
            ("project_id", push.project_id.is_some()),
            ("credentials_env", push.credentials_env.is_some()),
        ],
        model::PushProvider::Apns => &[
            ("credentials_env", push.credentials_env.is_some()),
            ("key_id", push.key_id.is_some()),
            ("team_id", push.team_id.is_some()),
            ("topic", push.topic.is_some()),
        ],
    };
    let name = match provider {
        model::PushProvider::Fcm => "fcm",
        model::PushProvider::Apns => "apns",
        model::PushProvider::File => "file",
    };
    let span = push.provider.as_ref().map(|p| p.span).unwrap_or_default();
    for (field, present) in needed {
        if !present {
            let what = match *field {
                "project_id" => "the Firebase project id",
                "credentials_env" if provider == model::PushProvider::Fcm => {
                    "the env var holding the service account JSON"
                }
                "credentials_env" => "the env var holding the .p8 signing key (PEM)",
                "key_id" => "the signing key's Key ID",
                "team_id" => "the Apple developer team id",
                _ => "the app's bundle id, sent as `apns-topic`",
            };
            ctx.error(
                Code::MissingField,
                span,
                format!("the {name} push provider needs `{field}`: {what}"),
            );
        }
    }
}

fn project(p: &model::Project, ctx: &mut Ctx<'_>) -> compiled::Project {
    let mut out = default_project();
    out.id = p.id.value.clone();
    if let Some(tz) = &p.default_timezone {
        if let Some(tz) = ctx.scalar(tz, Code::InvalidTimezone, scalar::parse_timezone) {
            out.default_timezone = tz;
        }
    }
    if let Some(s) = &p.store {
        out.store = PathBuf::from(&s.value);
    }
    let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.value.clone());
    if let Some(ch) = &p.channels {
        if let Some(e) = &ch.email {
            if let Some(provider) = &e.provider {
                out.email.provider = provider.value;
            }
            if out.email.provider == model::EmailProvider::Smtp && e.url.is_none() {
                ctx.error(
                    Code::MissingField,
                    e.provider.as_ref().map(|p| p.span).unwrap_or_default(),
                    "the smtp provider needs a `url` such as `smtp://localhost:2525`",
                );
            }
            out.email.url = s(&e.url);
            if let Some(from) = s(&e.from) {
                out.email.from = from;
            }
            out.email.username_env = s(&e.username_env);
            out.email.password_env = s(&e.password_env);
            if let Some(path) = s(&e.path) {
                out.email.path = PathBuf::from(path);
            }
            email_extensions(e, &mut out.email, ctx);
        }
        if let Some(push) = &ch.push {
            if let Some(provider) = &push.provider {
                out.push.provider = provider.value;
            }
            out.push.project_id = s(&push.project_id);
            out.push.credentials_env = s(&push.credentials_env);
            out.push.endpoint = s(&push.endpoint);
            out.push.topic = s(&push.topic);
            out.push.key_id = s(&push.key_id);
            out.push.team_id = s(&push.team_id);
            push_needs(push, out.push.provider, ctx);
            if let Some(path) = s(&push.path) {
                out.push.path = PathBuf::from(path);
            }
        }
        if let Some(w) = &ch.webhook {
            out.webhook.signing_secret_env = s(&w.signing_secret_env);
            if let Some(t) = &w.timeout {
                if let Some(d) = ctx.scalar(t, Code::InvalidDuration, scalar::parse_duration) {
                    out.webhook.timeout = d;
                }
            }
        }
    }
    if let Some(r) = &p.retry {
        if let Some(m) = &r.max_attempts {
            out.retry.max_attempts = m.value.max(1);
        }
        if let Some(i) = &r.initial {
            if let Some(d) = ctx.scalar(i, Code::InvalidDuration, scalar::parse_duration) {
                out.retry.initial = d;
            }
        }
        if let Some(m) = &r.max {
            if let Some(d) = ctx.scalar(m, Code::InvalidDuration, scalar::parse_duration) {
                out.retry.max = d;
            }
        }
    }
    if let Some(h) = &p.history_retention {
        if let Some(d) = ctx.scalar(h, Code::InvalidDuration, scalar::parse_duration) {
            out.history_retention = d;
        }
    }
    if let Some(l) = &p.history_limit {
        out.history_limit = l.value;
    }
    if let Some(api) = &p.api {
        if let Some(l) = &api.listen {
            // `host:port` (a name, an IPv4 address or a bracketed IPv6
            // one): what `run` binds, so a typo fails here, not at start.
            let port = l.value.trim().rsplit_once(':').map(|(host, port)| {
                (
                    !host.is_empty() && !host.trim_matches(['[', ']']).is_empty(),
                    port.parse::<u16>().is_ok(),
                )
            });
            if port == Some((true, true)) {
                out.api.listen = l.value.trim().to_owned();
            } else {
                ctx.error(
                    Code::InvalidValue,
                    l.span,
                    format!(
                        "invalid `listen` address `{}`: expected `host:port`, e.g. `127.0.0.1:7878`",
                        l.value
                    ),
                );
            }
        }
        if let Some(t) = s(&api.ingest_token_env) {
            out.api.ingest_token_env = t;
        }
        if let Some(t) = s(&api.admin_token_env) {
            out.api.admin_token_env = t;
        }
        if let Some(u) = s(&api.public_url) {
            out.api.public_url = Some(u.trim_end_matches('/').to_owned());
        }
        if let Some(t) = s(&api.segment_secret_env) {
            out.api.segment_secret_env = Some(t);
        }
        if let Some(f) = &api.feedback {
            out.api.feedback.sendgrid_public_key_env = s(&f.sendgrid_public_key_env);
            out.api.feedback.sns_topic_arns = f
                .sns_topic_arns
                .iter()
                .flatten()
                .map(|t| t.value.clone())
                .collect();
        }
    }
    out
}
