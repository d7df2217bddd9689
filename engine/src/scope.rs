//! Evaluating conditions for one user: the [`Scope`] the `journeys`
//! condition grammar asks for, over the user's profile and history, the
//! event in scope, the instance's entry event and the clock.

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::{Map, Value};

use journeys::compiled::Config;
use journeys::condition::{History, Path, Root, Scope};
use journeys::template::Text;

use crate::clock::Millis;
use crate::index::Index;
use crate::store::attrs::Val;
use crate::store::history::{self, HistEntry};

/// One user's view at one instant.
pub struct UserScope<'a> {
    pub config: &'a Config,
    pub index: &'a Index,
    pub user: &'a Val,
    pub history: &'a [HistEntry],
    pub event: Option<&'a Val>,
    pub entry: Option<&'a Val>,
    pub now: Millis,
    memo: RefCell<Vec<(usize, bool)>>,
}

impl<'a> UserScope<'a> {
    pub fn new(
        config: &'a Config,
        index: &'a Index,
        user: &'a Val,
        history: &'a [HistEntry],
        now: Millis,
    ) -> Self {
        UserScope {
            config,
            index,
            user,
            history,
            event: None,
            entry: None,
            now,
            memo: RefCell::new(Vec::new()),
        }
    }

    pub fn with_event(mut self, event: Option<&'a Val>) -> Self {
        self.event = event;
        self
    }

    pub fn with_entry(mut self, entry: Option<&'a Val>) -> Self {
        self.entry = entry;
        self
    }

    /// The JSON context templates see (without `journey` and `message`).
    pub fn context(&self) -> Value {
        let mut m = Map::new();
        m.insert("user".into(), self.user.to_json());
        if let Some(e) = self.entry {
            m.insert("entry".into(), e.to_json());
        }
        if let Some(e) = self.event {
            m.insert("event".into(), e.to_json());
        }
        Value::Object(m)
    }

    /// Renders a template; a text that is one `{{path}}` is looked up
    /// directly (the common dedupe key), without Handlebars.
    pub fn render_text(&self, text: &Text) -> Result<String, journeys::template::RenderError> {
        if let Some(path) = &text.sole {
            match self.value(path) {
                Some(Val::Str(s)) => return Ok(s.as_ref().to_owned()),
                Some(v @ (Val::Num(_) | Val::Bool(_))) => return Ok(v.to_json().to_string()),
                None | Some(Val::Null) => {
                    return Err(journeys::template::RenderError::MissingVariable(
                        path.dotted(),
                    ))
                }
                Some(_) => {}
            }
        }
        self.config.renderer.render(text, &self.context())
    }

    /// Whether the user is in `segment` now.
    pub fn segment(&self, segment: &str) -> bool {
        let Some(&i) = self.index.segments.get(segment) else {
            return false;
        };
        if let Some((_, m)) = self.memo.borrow().iter().find(|(s, _)| *s == i) {
            return *m;
        }
        let inner = UserScope::new(self.config, self.index, self.user, self.history, self.now);
        let member = self.config.segments[i].when.eval(&inner);
        self.memo.borrow_mut().push((i, member));
        member
    }
}

impl UserScope<'_> {
    /// The value at `path`, in place.
    fn value(&self, path: &Path) -> Option<&Val> {
        let root = match path.root {
            Root::User => Some(self.user),
            Root::Event => self.event,
            Root::Entry => self.entry,
        };
        root.and_then(|r| r.lookup(&path.keys))
    }
}

impl Scope for UserScope<'_> {
    fn lookup(&self, path: &Path) -> Option<Cow<'_, Value>> {
        self.value(path).map(|v| Cow::Owned(v.to_json()))
    }

    fn in_segment(&self, segment: &str) -> bool {
        self.segment(segment)
    }

    fn history_count(&self, h: &History) -> u64 {
        let entries = history::window(
            self.history,
            &h.event.value,
            self.now,
            h.within.map(|d| d.millis()),
        );
        match &h.where_ {
            None => entries.count() as u64,
            Some(cond) => entries
                .filter(|e| {
                    let s =
                        UserScope::new(self.config, self.index, self.user, self.history, self.now)
                            .with_event(Some(&e.props))
                            .with_entry(self.entry);
                    cond.eval(&s)
                })
                .count() as u64,
        }
    }

    fn render(&self, text: &Text) -> Option<String> {
        self.render_text(text).ok()
    }
}
