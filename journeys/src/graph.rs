//! Drawing a compiled journey: every step a node labelled with its id and
//! what it does, an edge for every way out of it (`next`, branch arms,
//! split arms, `wait_for` outcomes, the end). `sluice graph` prints these;
//! `sluice plan --format markdown` draws changed journeys with the same
//! code, marking added and changed steps.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::compiled::{Action, Journey, Next, Trigger, UpdateValue};
use crate::condition::{Condition, Operand};
use crate::scalar::Zone;

/// Where an edge leads, with what makes it taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Empty for an unconditional `next`.
    pub label: String,
    pub to: Next,
}

/// Steps to highlight in a drawing (by step id).
#[derive(Debug, Default, Clone)]
pub struct Marks {
    pub added: BTreeSet<String>,
    pub changed: BTreeSet<String>,
}

/// The longest condition text put on an edge; longer ones are cut with `…`.
const MAX_LABEL: usize = 48;

/// What a step does, in a few words: `wait 1h`, `send email cart-reminder`.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Wait { duration, .. } => format!("wait {duration}"),
        Action::WaitUntil {
            time, zone, days, ..
        } => {
            let mut s = format!("wait until {time}");
            if let Zone::Fixed(tz) = zone {
                let _ = write!(s, " {}", tz.name());
            }
            if !days.is_empty() {
                let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
                let _ = write!(s, " on {}", days.join(","));
            }
            s
        }
        Action::WaitFor { event, timeout, .. } => format!("wait for {event} (timeout {timeout})"),
        Action::Branch { .. } => "branch".to_owned(),
        Action::Split { .. } => "split".to_owned(),
        Action::Send {
            channel, template, ..
        } => format!("send {channel} {template}"),
        Action::Update { sets, .. } => {
            let keys: Vec<String> = sets
                .iter()
                .map(|(k, v)| match v {
                    UpdateValue::Value(v) => format!("{k} = {v}"),
                    UpdateValue::Template(t) => format!("{k} = {}", t.source),
                })
                .collect();
            cut(&format!("update {}", keys.join(", ")))
        }
        Action::Exit => "exit".to_owned(),
    }
}

/// Every way out of a step, in the order written.
pub fn edges(action: &Action) -> Vec<Edge> {
    let plain = |to: Next| Edge {
        label: String::new(),
        to,
    };
    match action {
        Action::Wait { next, .. }
        | Action::WaitUntil { next, .. }
        | Action::Send { next, .. }
        | Action::Update { next, .. } => vec![plain(*next)],
        Action::WaitFor {
            on_event,
            on_timeout,
            event,
            ..
        } => vec![
            Edge {
                label: event.clone(),
                to: *on_event,
            },
            Edge {
                label: "timeout".to_owned(),
                to: *on_timeout,
            },
        ],
        Action::Branch { arms, otherwise } => {
            let mut out: Vec<Edge> = arms
                .iter()
                .map(|(when, to)| Edge {
                    label: match when {
                        Some(c) => cut(&condition_label(c)),
                        None => "else".to_owned(),
                    },
                    to: *to,
                })
                .collect();
            // An arm without a condition always holds: `otherwise` is never
            // reached after one.
            if arms.iter().all(|(when, _)| when.is_some()) {
                out.push(Edge {
                    label: "no match".to_owned(),
                    to: *otherwise,
                });
            }
            out
        }
        Action::Split { arms } => {
            let mut lower = 0;
            arms.iter()
                .map(|(upper, to)| {
                    let share = upper - lower;
                    lower = *upper;
                    Edge {
                        label: percent(share),
                        to: *to,
                    }
                })
                .collect()
        }
        Action::Exit => vec![plain(Next::End)],
    }
}

/// Basis points as a percentage: `50%`, `33.33%`.
fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        let s = format!("{}.{:02}", bp / 100, bp % 100);
        format!("{}%", s.trim_end_matches('0'))
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_LABEL - 1).collect();
        out.push('…');
        out
    }
}

/// A condition in one line: `segment vip`, `user.cart_open eq true`.
pub fn condition_label(c: &Condition) -> String {
    fn operand(o: &Operand) -> String {
        match o {
            Operand::Value(v) => v.to_string(),
            Operand::Path(p) => format!("{{{{{}}}}}", p.dotted()),
            Operand::Template(t) => format!("{:?}", t.source),
            Operand::List(items) => {
                let items: Vec<String> = items.iter().map(operand).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
    fn join(items: &[Condition], sep: &str) -> String {
        let parts: Vec<String> = items
            .iter()
            .map(|c| match c {
                Condition::All(_) | Condition::Any(_) => format!("({})", condition_label(c)),
                _ => condition_label(c),
            })
            .collect();
        parts.join(sep)
    }
    match c {
        Condition::All(items) => join(items, " and "),
        Condition::Any(items) => join(items, " or "),
        Condition::Not(inner) => format!("not {}", condition_label(inner)),
        Condition::Compare(cmp) => format!(
            "{} {} {}",
            cmp.path.dotted(),
            cmp.op.as_str(),
            operand(&cmp.operand)
        ),
        Condition::Segment(s) => format!("segment {}", s.value),
        Condition::History(h) => format!("history {}", h.event.value),
    }
}

/// How users enter, in a few words.
pub fn describe_entry(journey: &Journey) -> String {
    match &journey.entry.trigger {
        Trigger::Event(e) => format!("entry: event {e}"),
        Trigger::Segment(s) => format!("entry: segment {s}"),
        Trigger::Schedule {
            source, segment, ..
        } => match segment {
            Some(s) => format!("entry: schedule {source} ({s})"),
            None => format!("entry: schedule {source}"),
        },
    }
}

fn mermaid_text(s: &str) -> String {
    // Inside a quoted Mermaid label only `"` needs an entity; `<`, `>` are
    // escaped so GitHub does not read them as HTML.
    s.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// A Mermaid `flowchart` of the journey. Node ids are `s0`, `s1`, … (step
/// ids such as `end` would clash with Mermaid keywords); labels carry the
/// step id and what it does. Marked steps get the classes `added` and
/// `changed`.
pub fn mermaid(journey: &Journey, marks: &Marks) -> String {
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(
        out,
        "  entry([\"{}\"])",
        mermaid_text(&describe_entry(journey))
    );
    for (i, state) in journey.states.iter().enumerate() {
        let label = format!(
            "{}<br/>{}",
            state.id,
            mermaid_text(&describe(&state.action))
        );
        let shape = match state.action {
            Action::Branch { .. } | Action::Split { .. } => ("{\"", "\"}"),
            _ => ("[\"", "\"]"),
        };
        let _ = writeln!(out, "  s{i}{}{label}{}", shape.0, shape.1);
    }
    let ends = journey
        .states
        .iter()
        .any(|s| edges(&s.action).iter().any(|e| e.to == Next::End));
    if ends {
        out.push_str("  done((\"end\"))\n");
    }
    if !journey.states.is_empty() {
        out.push_str("  entry --> s0\n");
    }
    let node = |n: Next| match n {
        Next::State(j) => format!("s{j}"),
        Next::End => "done".to_owned(),
    };
    for (i, state) in journey.states.iter().enumerate() {
        for e in edges(&state.action) {
            if e.label.is_empty() {
                let _ = writeln!(out, "  s{i} --> {}", node(e.to));
            } else {
                let _ = writeln!(
                    out,
                    "  s{i} -->|\"{}\"| {}",
                    mermaid_text(&e.label),
                    node(e.to)
                );
            }
        }
    }
    let class_of = |set: &BTreeSet<String>| -> Vec<String> {
        journey
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| set.contains(&s.id))
            .map(|(i, _)| format!("s{i}"))
            .collect()
    };
    let added = class_of(&marks.added);
    let changed = class_of(&marks.changed);
    if !added.is_empty() {
        out.push_str("  classDef added fill:#d4f8d4,stroke:#1a7f37,stroke-width:2px\n");
        let _ = writeln!(out, "  class {} added", added.join(","));
    }
    if !changed.is_empty() {
        out.push_str("  classDef changed fill:#fff1c2,stroke:#9a6700,stroke-width:2px\n");
        let _ = writeln!(out, "  class {} changed", changed.join(","));
    }
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A Graphviz `digraph` of the journey, the same nodes and edges as
/// [`mermaid`].
pub fn dot(journey: &Journey) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_text(&journey.id));
    out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    let _ = writeln!(
        out,
        "  entry [shape=oval, label=\"{}\"];",
        dot_text(&describe_entry(journey))
    );
    for (i, state) in journey.states.iter().enumerate() {
        let shape = match state.action {
            Action::Branch { .. } | Action::Split { .. } => ", shape=diamond",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  s{i} [label=\"{}\\n{}\"{shape}];",
            dot_text(&state.id),
            dot_text(&describe(&state.action))
        );
    }
    let ends = journey
        .states
        .iter()
        .any(|s| edges(&s.action).iter().any(|e| e.to == Next::End));
    if ends {
        out.push_str("  done [shape=doublecircle, label=\"end\"];\n");
    }
    if !journey.states.is_empty() {
        out.push_str("  entry -> s0;\n");
    }
    for (i, state) in journey.states.iter().enumerate() {
        for e in edges(&state.action) {
            let to = match e.to {
                Next::State(j) => format!("s{j}"),
                Next::End => "done".to_owned(),
            };
            if e.label.is_empty() {
                let _ = writeln!(out, "  s{i} -> {to};");
            } else {
                let _ = writeln!(out, "  s{i} -> {to} [label=\"{}\"];", dot_text(&e.label));
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_are_printed_as_percentages() {
        assert_eq!(percent(5000), "50%");
        assert_eq!(percent(3333), "33.33%");
        assert_eq!(percent(1050), "10.5%");
    }

    #[test]
    fn long_labels_are_cut() {
        let long = "x".repeat(100);
        let c = cut(&long);
        assert_eq!(c.chars().count(), MAX_LABEL);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn mermaid_labels_cannot_close_their_quotes() {
        assert_eq!(mermaid_text(r#"a "b" <c>"#), "a #quot;b#quot; #lt;c#gt;");
    }
}
