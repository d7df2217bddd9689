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
/// cycle once, at the reference that closes it.
pub(crate) fn segment_order(refs: &SegmentRefs, diags: &mut Diagnostics) -> HashMap<String, usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut order = HashMap::new();
    let mut reported = std::collections::HashSet::new();

    fn visit<'a>(
        id: &'a str,
        refs: &'a SegmentRefs,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        order: &mut HashMap<String, usize>,
        diags: &mut Diagnostics,
        reported: &mut std::collections::HashSet<Vec<String>>,
    ) {
        match marks.get(id) {
            Some(Mark::Done) => return,
            Some(Mark::Visiting) => return,
            None => {}
        }
        marks.insert(id, Mark::Visiting);
        stack.push(id);
        if let Some((targets, file, _)) = refs.get(id) {
            for t in targets {
                match marks.get(t.value.as_str()) {
                    Some(Mark::Visiting) => {
                        let start = stack.iter().position(|s| *s == t.value).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|s| s.to_string()).collect();
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
                        if refs.contains_key(&t.value) {
                            visit(&t.value, refs, marks, stack, order, diags, reported);
                        }
                    }
                }
            }
        }
        stack.pop();
        marks.insert(id, Mark::Done);
        let n = order.len();
        order.insert(id.to_owned(), n);
    }

    for id in refs.keys() {
        let mut stack = Vec::new();
        visit(
            id,
            refs,
            &mut marks,
            &mut stack,
            &mut order,
            diags,
            &mut reported,
        );
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
/// starting at the one that comes first in the journey.
pub(crate) fn wait_free_cycles(edges: &[Vec<Next>], waits: &[bool]) -> Vec<Vec<usize>> {
    // Tarjan-free approach: DFS with colours over non-waiting states only.
    let n = edges.len();
    let mut colour = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut cycles = Vec::new();
    let mut stack = Vec::new();

    fn dfs(
        i: usize,
        edges: &[Vec<Next>],
        waits: &[bool],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        colour[i] = 1;
        stack.push(i);
        for next in &edges[i] {
            let Next::State(j) = *next else { continue };
            if j >= edges.len() || waits[j] {
                continue;
            }
            match colour[j] {
                0 => dfs(j, edges, waits, colour, stack, cycles),
                1 => {
                    let start = stack.iter().position(|s| *s == j).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    let min_pos = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| **s)
                        .map(|(p, _)| p)
                        .unwrap_or(0);
                    cycle.rotate_left(min_pos);
                    if !cycles.contains(&cycle) {
                        cycles.push(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        colour[i] = 2;
    }

    for i in 0..n {
        if !waits[i] && colour[i] == 0 {
            dfs(i, edges, waits, &mut colour, &mut stack, &mut cycles);
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
