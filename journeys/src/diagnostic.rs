//! Diagnostics: one per problem, each with a stable code, the file, the
//! exact span and (where one is close) a "did you mean" suggestion.
//!
//! The library collects them in [`Diagnostics`]; the CLI renders them with
//! miette (each [`Diagnostic`] is a `miette::Diagnostic` with its source
//! snippet) or as the JSON of CLI.md.

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, MietteError, MietteSpanContents, SourceSpan, SpanContents};
use serde::Serialize;

use crate::span::{LineIndex, Span};

/// The stable error codes of CLI.md, plus a few of our own (documented in
/// `docs/diagnostics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    YamlSyntax,
    UnknownKind,
    UnknownApiVersion,
    UnknownField,
    MissingField,
    ConflictingFields,
    InvalidValue,
    InvalidId,
    DuplicateId,
    UnknownReference,
    UnreachableStep,
    WaitFreeLoop,
    InvalidDuration,
    InvalidPercentage,
    InvalidCron,
    InvalidTimezone,
    InvalidTimeOfDay,
    InvalidRate,
    InvalidCondition,
    SegmentCycle,
    TypeMismatch,
    TemplateSyntax,
    UnknownVariable,
    ChannelMismatch,
    FileNotFound,
    VersionNotBumped,
    HoldoutWithoutGoal,
    NestingTooDeep,
    AliasLimit,
    FileTooLarge,
    TooManyDocuments,
    PathOutsideRepository,
    PartialCycle,
    TimeOutOfRange,
    HorizonTooLong,
    QuietHoursAllDay,
}

impl Code {
    pub fn as_str(&self) -> &'static str {
        match self {
            Code::YamlSyntax => "yaml_syntax",
            Code::UnknownKind => "unknown_kind",
            Code::UnknownApiVersion => "unknown_api_version",
            Code::UnknownField => "unknown_field",
            Code::MissingField => "missing_field",
            Code::ConflictingFields => "conflicting_fields",
            Code::InvalidValue => "invalid_value",
            Code::InvalidId => "invalid_id",
            Code::DuplicateId => "duplicate_id",
            Code::UnknownReference => "unknown_reference",
            Code::UnreachableStep => "unreachable_step",
            Code::WaitFreeLoop => "wait_free_loop",
            Code::InvalidDuration => "invalid_duration",
            Code::InvalidPercentage => "invalid_percentage",
            Code::InvalidCron => "invalid_cron",
            Code::InvalidTimezone => "invalid_timezone",
            Code::InvalidTimeOfDay => "invalid_time_of_day",
            Code::InvalidRate => "invalid_rate",
            Code::InvalidCondition => "invalid_condition",
            Code::SegmentCycle => "segment_cycle",
            Code::TypeMismatch => "type_mismatch",
            Code::TemplateSyntax => "template_syntax",
            Code::UnknownVariable => "unknown_variable",
            Code::ChannelMismatch => "channel_mismatch",
            Code::FileNotFound => "file_not_found",
            Code::VersionNotBumped => "version_not_bumped",
            Code::HoldoutWithoutGoal => "holdout_without_goal",
            Code::NestingTooDeep => "nesting_too_deep",
            Code::AliasLimit => "alias_limit",
            Code::FileTooLarge => "file_too_large",
            Code::TooManyDocuments => "too_many_documents",
            Code::PathOutsideRepository => "path_outside_repository",
            Code::PartialCycle => "partial_cycle",
            Code::TimeOutOfRange => "time_out_of_range",
            Code::HorizonTooLong => "horizon_too_long",
            Code::QuietHoursAllDay => "quiet_hours_all_day",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A source file of the repository, shared by every diagnostic in it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path relative to the repository root, with `/` separators.
    pub name: String,
    pub text: String,
    /// Its lines, so that a snippet is found without scanning the file.
    pub index: LineIndex,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let name = name.into();
        let text = text.into();
        let index = LineIndex::new(&text);
        SourceFile { name, text, index }
    }
}

/// miette reads a snippet by scanning the text from its start; with many
/// diagnostics in one large file that is quadratic. This starts the scan
/// at the first line of the snippet instead, with the same result.
impl miette::SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        if span.offset() > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let first = self
            .index
            .line_of(span.offset())
            .saturating_sub(context_lines_before);
        let base = self.index.line_start(first);
        let local = SourceSpan::new((span.offset() - base).into(), span.len());
        let rest = self.text.get(base..).ok_or(MietteError::OutOfBounds)?;
        let c = rest.read_span(&local, context_lines_before, context_lines_after)?;
        let data = c.data();
        Ok(Box::new(
            MietteSpanContents::new_named(
                self.name.clone(),
                data,
                SourceSpan::new((c.span().offset() + base).into(), c.span().len()),
                c.line() + first,
                c.column(),
                c.line_count() + first,
            )
            .with_language("yaml"),
        ))
    }
}

/// One problem, at one place.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    pub file: Option<Arc<SourceFile>>,
    pub span: Span,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            help: None,
            file: None,
            span: Span::default(),
        }
    }

    pub fn at(mut self, file: &Arc<SourceFile>, span: Span) -> Self {
        self.file = Some(file.clone());
        self.span = span;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn file_name(&self) -> &str {
        self.file.as_ref().map(|f| f.name.as_str()).unwrap_or("")
    }

    /// The CLI.md JSON shape of one diagnostic, exactly: `code`,
    /// `message`, `file`, `line`, `column` (the help text is for humans).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "file": self.file_name(),
            "line": self.span.line,
            "column": self.span.column,
        })
    }

    fn sort_key(&self) -> (String, usize, usize, Code) {
        (
            self.file_name().to_owned(),
            self.span.line,
            self.span.column,
            self.code,
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.file.as_ref().map(|f| &**f as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.file.as_ref()?;
        let span = SourceSpan::new(self.span.start.into(), self.span.len());
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(short_label(self.code).to_owned()),
            span,
        ))))
    }
}

fn short_label(code: Code) -> &'static str {
    match code {
        Code::YamlSyntax => "here",
        Code::UnknownField => "unknown field",
        Code::MissingField => "missing here",
        Code::UnknownReference => "not defined",
        Code::DuplicateId => "defined again here",
        Code::UnreachableStep => "never reached",
        Code::WaitFreeLoop => "loops without a wait",
        Code::TypeMismatch => "wrong type",
        _ => "here",
    }
}

impl Diagnostic {
    /// A miette report (for rendering).
    pub fn to_report(&self) -> miette::Report {
        miette::Report::new(self.clone())
    }
}

/// Everything found wrong with a repository.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds a diagnostic. One about a placeholder the loader put in for a
    /// missing field (a span past the end of its file) is dropped: the
    /// missing field itself was reported.
    pub fn push(&mut self, d: Diagnostic) {
        if d.file.as_ref().is_some_and(|f| d.span.end > f.text.len()) {
            return;
        }
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sorts by file, then line and column; drops exact duplicates (also
    /// when other diagnostics share their place).
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| d.sort_key());
        let mut seen = std::collections::HashSet::new();
        self.items
            .retain(|d| seen.insert((d.sort_key(), d.message.clone())));
    }

    /// The `validate --format json` document of CLI.md.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "valid": !self.has_errors(),
            "errors": self.errors().map(Diagnostic::to_json).collect::<Vec<_>>(),
            "warnings": self.warnings().map(Diagnostic::to_json).collect::<Vec<_>>(),
        })
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Why a file could not be read, in words, without the OS's
/// `(os error N)`: `cannot read x: no such file`.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

/// The closest candidate to `word`, if one is close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `"message, did you mean `x`?"` when a candidate is close.
pub fn with_suggestion<'a>(
    message: String,
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    match did_you_mean(word, candidates) {
        Some(s) => format!("{message}, did you mean `{s}`?"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_drops_a_duplicate_even_with_others_at_its_place() {
        let file = Arc::new(SourceFile::new("j.yaml", "steps: x\n"));
        let at = Span {
            start: 7,
            end: 8,
            line: 1,
            column: 8,
        };
        let mut diags = Diagnostics::default();
        for m in [
            "`entry.b` is empty",
            "`entry.a` is empty",
            "`entry.b` is empty",
        ] {
            diags.push(Diagnostic::error(Code::UnknownVariable, m).at(&file, at));
        }
        diags.sort();
        let got: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        // Stable: the first of each, in the order they were found.
        assert_eq!(got, ["`entry.b` is empty", "`entry.a` is empty"]);
    }

    #[test]
    fn io_reasons_are_words_without_os_error_numbers() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(io_reason(&missing), "no such file");
        let raw = std::io::Error::from_raw_os_error(21);
        assert!(!io_reason(&raw).contains("os error"), "{}", io_reason(&raw));
    }
}
