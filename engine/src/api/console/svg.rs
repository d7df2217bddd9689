//! A journey drawn as its state machine, server-side, as inline SVG: the
//! nodes and edges of [`journeys::graph`] (the model `sluice graph` draws),
//! laid out in rows by distance from the first step, each step box showing
//! its live count and, for send steps, its sends by outcome. The numbers
//! carry `data-step`/`data-field` so the console's script can update them
//! in place. Knows nothing of the engine: the counts are given.

use std::collections::VecDeque;
use std::fmt::Write as _;

use journeys::compiled::{Action, Journey, Next};
use journeys::graph;

use super::html::Esc;
use crate::api::StepCount;

const NODE_W: i64 = 280;
const NODE_H: i64 = 92;
const GAP_X: i64 = 48;
const GAP_Y: i64 = 64;
const MARGIN: i64 = 24;
/// Room on the right for edges that go back up.
const SIDE: i64 = 72;
/// Characters of a step's description that fit in a box.
const DESCRIBE_CHARS: usize = 40;

/// Rows by shortest distance from the first step (steps no path reaches
/// get a row after the others).
fn rows(journey: &Journey) -> Vec<usize> {
    let n = journey.states.len();
    let mut row = vec![usize::MAX; n];
    let mut queue = VecDeque::new();
    if n > 0 {
        row[0] = 0;
        queue.push_back(0);
    }
    while let Some(i) = queue.pop_front() {
        for e in graph::edges(&journey.states[i].action) {
            if let Next::State(j) = e.to {
                if j < n && row[j] == usize::MAX {
                    row[j] = row[i] + 1;
                    queue.push_back(j);
                }
            }
        }
    }
    let deepest = row.iter().filter(|r| **r != usize::MAX).max().copied();
    let spare = deepest.map_or(0, |d| d + 1);
    for r in &mut row {
        if *r == usize::MAX {
            *r = spare;
        }
    }
    row
}

fn cut(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(chars - 1).collect();
        out.push('…');
        out
    }
}

/// Where a node sits: its top-left corner.
#[derive(Debug, Clone, Copy)]
struct At {
    x: i64,
    y: i64,
}

impl At {
    fn top(self) -> (i64, i64) {
        (self.x + NODE_W / 2, self.y)
    }
    fn bottom(self) -> (i64, i64) {
        (self.x + NODE_W / 2, self.y + NODE_H)
    }
    fn right(self) -> (i64, i64) {
        (self.x + NODE_W, self.y + NODE_H / 2)
    }
}

/// The journey as an `<svg>` element. `counts` are the counters of the
/// drawn version (steps without any count show zeros).
pub fn journey(journey: &Journey, counts: &[&StepCount]) -> String {
    let row = rows(journey);
    let n = journey.states.len();
    let state_rows = row.iter().max().map_or(0, |r| r + 1);
    // Row 0 is the entry, then the steps, then the end.
    let total_rows = state_rows + 2;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); state_rows];
    for (i, r) in row.iter().enumerate() {
        members[*r].push(i);
    }
    let widest = members.iter().map(Vec::len).max().unwrap_or(1).max(1) as i64;
    let inner = widest * NODE_W + (widest - 1) * GAP_X;
    let width = 2 * MARGIN + inner + SIDE;
    let height = 2 * MARGIN + total_rows as i64 * NODE_H + (total_rows as i64 - 1) * GAP_Y;
    let row_y = |r: usize| MARGIN + r as i64 * (NODE_H + GAP_Y);
    let place = |k: usize, of: usize, r: usize| {
        let used = of as i64 * NODE_W + (of as i64 - 1) * GAP_X;
        At {
            x: MARGIN + (inner - used) / 2 + k as i64 * (NODE_W + GAP_X),
            y: row_y(r),
        }
    };
    let mut at = vec![At { x: 0, y: 0 }; n];
    for (r, m) in members.iter().enumerate() {
        for (k, i) in m.iter().enumerate() {
            at[*i] = place(k, m.len(), r + 1);
        }
    }
    let entry = place(0, 1, 0);
    let end = place(0, 1, state_rows + 1);

    let mut out = String::with_capacity(4096 + n * 1024);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"journey\" role=\"img\" \
         viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         aria-label=\"journey {}\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>",
        Esc(&journey.id)
    );
    // Edges first, so boxes cover their ends.
    if n > 0 {
        line(&mut out, entry.bottom(), at[0].top(), "", 0);
    }
    let mut back = 0;
    for (i, state) in journey.states.iter().enumerate() {
        // Edges of one step to the same target share a line: their labels
        // are stacked.
        let mut seen: Vec<Next> = Vec::new();
        for e in graph::edges(&state.action) {
            let stack = seen.iter().filter(|t| **t == e.to).count() as i64;
            seen.push(e.to);
            let (to, to_row) = match e.to {
                Next::State(j) if j < n => (at[j], row[j] + 1),
                Next::State(_) => continue,
                Next::End => (end, state_rows + 1),
            };
            if to_row > row[i] + 1 {
                line(&mut out, at[i].bottom(), to.top(), &e.label, stack);
            } else {
                back += 1;
                let side = width - SIDE + 12 * back.min(4);
                around(&mut out, at[i].right(), to.right(), side, &e.label, stack);
            }
        }
    }
    // The entry and the end.
    let _ = write!(
        out,
        "<g class=\"entry\"><rect x=\"{}\" y=\"{}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"40\" \
         fill=\"#eef4ff\" stroke=\"#4a6fa5\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"entry-text\">{}</text></g>",
        entry.x,
        entry.y,
        entry.x + NODE_W / 2,
        entry.y + NODE_H / 2 + 5,
        Esc(&cut(&graph::describe_entry(journey), DESCRIBE_CHARS))
    );
    let _ = write!(
        out,
        "<g class=\"end\"><circle cx=\"{}\" cy=\"{}\" r=\"28\" fill=\"#f3f3f3\" stroke=\"#555\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">end</text></g>",
        end.x + NODE_W / 2,
        end.y + NODE_H / 2,
        end.x + NODE_W / 2,
        end.y + NODE_H / 2 + 5
    );
    for (i, state) in journey.states.iter().enumerate() {
        let c = counts.iter().find(|c| c.step == state.id);
        node(&mut out, at[i], &state.id, &state.action, c.copied());
    }
    out.push_str("</svg>");
    out
}

fn label(out: &mut String, x: i64, y: i64, text: &str) {
    if text.is_empty() {
        return;
    }
    let w = text.chars().count() as i64 * 7 + 8;
    let _ = write!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{w}\" height=\"16\" fill=\"#fff\" opacity=\"0.9\"/>\
         <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" class=\"edge-label\">{}</text>",
        x - w / 2,
        y - 11,
        y + 1,
        Esc(text)
    );
}

fn line(out: &mut String, (x1, y1): (i64, i64), (x2, y2): (i64, i64), text: &str, stack: i64) {
    let _ = write!(
        out,
        "<path d=\"M {x1} {y1} L {x2} {y2}\" stroke=\"#555\" fill=\"none\" marker-end=\"url(#arrow)\"/>"
    );
    label(out, (x1 + x2) / 2, (y1 + y2) / 2 + 18 * stack, text);
}

/// An edge to a step in the same row or above: out of the right side,
/// around, and into the target's right side.
fn around(
    out: &mut String,
    (x1, y1): (i64, i64),
    (x2, y2): (i64, i64),
    side: i64,
    text: &str,
    stack: i64,
) {
    let _ = write!(
        out,
        "<path d=\"M {x1} {y1} C {side} {y1}, {side} {y2}, {x2} {y2}\" stroke=\"#555\" \
         stroke-dasharray=\"4 3\" fill=\"none\" marker-end=\"url(#arrow)\"/>"
    );
    label(out, side - 20, (y1 + y2) / 2 + 18 * stack, text);
}

fn node(out: &mut String, at: At, step: &str, action: &Action, c: Option<&StepCount>) {
    let (fill, stroke) = match action {
        Action::Send { .. } => ("#fff8e6", "#b7791f"),
        Action::Branch { .. } | Action::Split { .. } => ("#f4f0ff", "#6b46c1"),
        Action::Exit => ("#fdecec", "#c53030"),
        _ => ("#ffffff", "#4a5568"),
    };
    let num = |field: &str, v: u64| {
        format!(
            "<tspan data-step=\"{}\" data-field=\"{field}\">{v}</tspan>",
            Esc(step)
        )
    };
    let c = c.cloned().unwrap_or_default();
    let cx = at.x + NODE_W / 2;
    let _ = write!(
        out,
        "<g class=\"step\" data-node=\"{}\"><rect x=\"{}\" y=\"{}\" width=\"{NODE_W}\" height=\"{NODE_H}\" \
         rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\"/>\
         <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" class=\"step-id\">{}</text>\
         <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" class=\"step-do\">{}</text>\
         <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" class=\"step-live\">{} live</text>",
        Esc(step),
        at.x,
        at.y,
        at.y + 20,
        Esc(step),
        at.y + 40,
        Esc(&cut(&graph::describe(action), DESCRIBE_CHARS)),
        at.y + 62,
        num("live", c.live),
    );
    if matches!(action, Action::Send { .. }) {
        let _ = write!(
            out,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" class=\"step-sends\">{} sent · {} deferred · {} suppressed · {} failed</text>",
            at.y + 82,
            num("sent", c.sent),
            num("deferred", c.deferred),
            num("suppressed", c.suppressed),
            num("failed", c.failed),
        );
    }
    out.push_str("</g>");
}
