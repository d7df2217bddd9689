//! Handlebars partials: every `{{> name}}` must name an inline partial of
//! the same text (`{{#*inline "name"}}`) or another template text, and no
//! partial may include itself, directly or through others (rendering it
//! would never end).

use std::collections::HashMap;
use std::sync::Arc;

use super::Ctx;
use crate::diagnostic::{with_suggestion, Code, Diagnostics, SourceFile};
use crate::span::Span;
use crate::template::Text;

/// A template text and where it was written.
pub(crate) struct Site {
    pub text: Text,
    pub span: Span,
    pub file: Arc<SourceFile>,
}

/// A node of the include graph: a text, or one of its inline partials.
type NodeId = (usize, Option<String>);

/// Reports unknown partials and include cycles; true when all is well.
pub(crate) fn check(sites: &[Site], diags: &mut Diagnostics) -> bool {
    let by_name: HashMap<&str, usize> = sites
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.text.name.as_str(), i))
        .collect();
    let mut ok = true;
    // Edges, with the site and name of the reference that makes each.
    let mut edges: HashMap<NodeId, Vec<(NodeId, String)>> = HashMap::new();
    for (i, site) in sites.iter().enumerate() {
        for r in &site.text.partials {
            let to = if site.text.inline.contains(&r.name) {
                (i, Some(r.name.clone()))
            } else if let Some(&j) = by_name.get(r.name.as_str()) {
                (j, None)
            } else {
                let mut ctx = Ctx {
                    file: &site.file,
                    diags,
                };
                let message = with_suggestion(
                    format!("partial `{}` does not exist", r.name),
                    &r.name,
                    site.text
                        .inline
                        .iter()
                        .map(String::as_str)
                        .chain(by_name.keys().copied()),
                );
                let at = ctx.locate(site.span, &r.name);
                ctx.error(Code::UnknownReference, at, message);
                ok = false;
                continue;
            };
            edges
                .entry((i, r.inside.clone()))
                .or_default()
                .push((to, r.name.clone()));
        }
    }

    // Depth-first search without recursion; a reference to a node on the
    // current path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<NodeId, Mark> = HashMap::new();
    let mut starts: Vec<NodeId> = edges.keys().cloned().collect();
    starts.sort();
    for start in starts {
        if marks.contains_key(&start) {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut path: Vec<(NodeId, usize)> = vec![(start.clone(), 0)];
        marks.insert(start, Mark::OnPath);
        while let Some(top) = path.last_mut() {
            let node = top.0.clone();
            let next = top.1;
            top.1 += 1;
            let out = edges.get(&node).map_or(&[][..], Vec::as_slice);
            let Some((to, name)) = out.get(next) else {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            match marks.get(to) {
                None => {
                    marks.insert(to.clone(), Mark::OnPath);
                    path.push((to.clone(), 0));
                }
                Some(Mark::OnPath) => {
                    let from = node.0;
                    let begin = path.iter().position(|(n, _)| n == to).unwrap_or(0);
                    let mut names: Vec<String> =
                        path[begin..].iter().map(|(n, _)| label(sites, n)).collect();
                    names.push(label(sites, to));
                    let site = &sites[from];
                    let mut ctx = Ctx {
                        file: &site.file,
                        diags,
                    };
                    let at = ctx.locate(site.span, &format!("> {name}"));
                    let at = if at == site.span {
                        ctx.locate(site.span, name)
                    } else {
                        at
                    };
                    ctx.error(
                        Code::PartialCycle,
                        at,
                        format!(
                            "partial `{name}` includes itself, so rendering would never end: {}",
                            names.join(" → ")
                        ),
                    );
                    ok = false;
                }
                Some(Mark::Done) => {}
            }
        }
    }
    ok
}

fn label(sites: &[Site], node: &NodeId) -> String {
    match &node.1 {
        Some(inline) => inline.clone(),
        None => sites[node.0].text.name.clone(),
    }
}
