//! Graph checks: segment cycles, unreachable steps and loops that can run
//! without passing a wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::compiled::Next;
use crate::diagnostic::{Code, Diagnostic, Diagnostics, SourceFile};
use crate::span::{Span, Spanned};

/// Segment id → (segments it references, its file, its id's span).
pub(crate) type SegmentRefs = BTreeMap<String, (Vec<Spanned<String>>, Arc<SourceFile>, Span)>;

/// A topological order of segments (referenced ones first); reports each
/// cycle once, at the reference that closes it. Iterative: a chain of any
/// length is fine.
pub(crate) fn segment_order(refs: &SegmentRefs, diags: &mut Diagnostics) -> HashMap<String, usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut order = HashMap::new();
    let mut reported = std::collections::HashSet::new();

    for root in refs.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        // The current path: (segment, index of its next reference).
        let mut stack: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        marks.insert(root.as_str(), Mark::Visiting);
        while let Some(top) = stack.last_mut() {
            let id = top.0;
            let next = top.1;
            top.1 += 1;
            let Some((targets, file, _)) = refs.get(id) else {
                stack.pop();
                continue;
            };
            let Some(t) = targets.get(next) else {
                marks.insert(id, Mark::Done);
                let n = order.len();
                order.insert(id.to_owned(), n);
                stack.pop();
                continue;
            };
            match marks.get(t.value.as_str()) {
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|(s, _)| *s == t.value).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|(s, _)| s.to_string()).collect();
                    let mut key = cycle.clone();
                    key.sort();
                    if reported.insert(key) {
                        cycle.push(t.value.clone());
                        diags.push(
                            Diagnostic::error(
                                Code::SegmentCycle,
                                format!(
                                    "segments reference each other in a cycle: {}",
                                    cycle.join(" → ")
                                ),
                            )
                            .at(file, t.span),
                        );
                    }
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some((key, _)) = refs.get_key_value(&t.value) {
                        marks.insert(key.as_str(), Mark::Visiting);
                        stack.push((key.as_str(), 0));
                    }
                }
            }
        }
    }
    order
}

/// The states reachable from state 0.
pub(crate) fn reachable(edges: &[Vec<Next>]) -> Vec<bool> {
    let mut seen = vec![false; edges.len()];
    let mut todo = vec![0usize];
    while let Some(i) = todo.pop() {
        if i >= edges.len() || seen[i] {
            continue;
        }
        seen[i] = true;
        for n in &edges[i] {
            if let Next::State(j) = n {
                todo.push(*j);
            }
        }
    }
    seen
}

/// Cycles among states that do not wait: each as the list of its states,
/// starting at the one that comes first in the journey. Iterative: a
/// journey of any length is fine.
pub(crate) fn wait_free_cycles(edges: &[Vec<Next>], waits: &[bool]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut colour = vec![0u8; n]; // 0 new, 1 on the path, 2 done
    let mut cycles = Vec::new();
    let mut seen_cycles = std::collections::HashSet::new();

    for root in 0..n {
        if waits[root] || colour[root] != 0 {
            continue;
        }
        // The current path: (state, index of its next edge).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = 1;
        while let Some(top) = path.last_mut() {
            let i = top.0;
            let next = top.1;
            top.1 += 1;
            let Some(edge) = edges[i].get(next) else {
                colour[i] = 2;
                path.pop();
                continue;
            };
            let Next::State(j) = *edge else { continue };
            if j >= n || waits[j] {
                continue;
            }
            match colour[j] {
                0 => {
                    colour[j] = 1;
                    path.push((j, 0));
                }
                1 => {
                    let start = path.iter().position(|(s, _)| *s == j).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[start..].iter().map(|(s, _)| *s).collect();
                    let min_pos = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| **s)
                        .map(|(p, _)| p)
                        .unwrap_or(0);
                    cycle.rotate_left(min_pos);
                    if seen_cycles.insert(cycle.clone()) {
                        cycles.push(cycle);
                    }
                }
                _ => {}
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wait_free_cycles() {
        // 0 -> 1 -> 2 -> 0, with 1 a wait: fine. 3 -> 4 -> 3: a loop.
        let edges = vec![
            vec![Next::State(1)],
            vec![Next::State(2)],
            vec![Next::State(0), Next::State(3)],
            vec![Next::State(4)],
            vec![Next::State(3), Next::End],
        ];
        let waits = vec![false, true, false, false, false];
        assert_eq!(wait_free_cycles(&edges, &waits), vec![vec![3, 4]]);
        assert!(reachable(&edges).iter().all(|r| *r));
    }
}
