//! `sluice plan [DIR] --base DIR2 [--format human|json|markdown]`: what
//! deploying DIR over DIR2 would change (`journeys::plan`), printed for a
//! person, as CLI.md's JSON, or as a pull-request comment. Exit 0 when
//! nothing changes, 2 when something does, 1 on an error (an invalid
//! config on either side, a journey whose version was not bumped).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use journeys::plan::{self, Action, Change, Plan, Side, Which};
use journeys::Diagnostics;

/// The first line of the markdown output: CI finds its previous comment by it.
pub const MARKER: &str = "<!-- sluice-plan -->";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum PlanFormat {
    #[default]
    Human,
    Json,
    /// A pull-request comment (GitHub Markdown with Mermaid).
    Markdown,
}

#[derive(clap::Args)]
pub struct Args {
    /// The config repository to deploy (the head).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Compare with this checkout instead of the deployed state.
    #[arg(long, value_name = "DIR2")]
    pub base: Option<PathBuf>,
    /// Compare with the deployed state in this store (default: the
    /// Project's store, or the running engine holding it).
    #[arg(long, value_name = "PATH", conflicts_with = "base")]
    pub store: Option<PathBuf>,
    /// Compare with the deployed state of a running engine (or
    /// `SLUICE_SERVER`).
    #[arg(long, value_name = "URL", conflicts_with_all = ["base", "store"])]
    pub server: Option<String>,
    /// The admin token for `--server` (default: `SLUICE_TOKEN`, else the
    /// Project's admin token variable, else `.sluice/credentials`).
    #[arg(long, requires = "server")]
    pub token: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: PlanFormat,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    // Against a checkout, or against the deployed state (a store or a
    // server: then with in-flight counts).
    let mut live: Option<crate::deploy::Live> = None;
    let mut rerolled: Vec<crate::deploy::Rerollout> = Vec::new();
    // The deployed files' temporary directory lives as long as the plan.
    let mut keep: Option<tempfile::TempDir> = None;
    #[allow(unused_assignments)]
    let sides = match args.base.clone() {
        Some(base_dir) => Side::load(&base_dir, Which::Base)
            .and_then(|base| Side::load(&args.dir, Which::Head).map(|head| (base, head))),
        None => match Side::load(&args.dir, Which::Head) {
            Ok(head) => {
                let place = crate::deploy::Place {
                    store: args.store.clone(),
                    server: args.server.clone(),
                    token: args.token.clone(),
                };
                let mut target = crate::deploy::Target::open(&args.dir, &place)?;
                let d = crate::deploy::deployed(&mut target)?;
                rerolled = d.rerollouts(&head);
                live = Some(d.live);
                keep = Some(d.dir);
                Ok((d.side, head))
            }
            Err(e) => Err(e),
        },
    };
    let (base, head) = match sides {
        Ok(s) => s,
        Err(plan::Error::Invalid {
            which,
            dir,
            diagnostics,
        }) => {
            let title = format!("the {which} config `{}` is invalid", dir.display());
            report_errors(args.format, &title, &diagnostics);
            return Ok(ExitCode::from(1));
        }
    };
    let _deployed_files = keep;
    let in_flight = live.as_ref().map(|d| d as &dyn plan::InFlight);
    let plan = plan::plan(&base, &head, in_flight);
    if plan.diagnostics.has_errors() {
        report_errors(
            args.format,
            blocked_title(&plan.diagnostics),
            &plan.diagnostics,
        );
        return Ok(ExitCode::from(1));
    }
    let text = match args.format {
        PlanFormat::Json if !rerolled.is_empty() => {
            let mut doc = plan.to_json();
            doc["rollouts"] = serde_json::json!(rerolled);
            format!("{doc}\n")
        }
        PlanFormat::Json => format!("{}\n", plan.to_json()),
        PlanFormat::Human if !rerolled.is_empty() => {
            human_against_deployed_with(&plan, &base, &head, &rerolled)
        }
        PlanFormat::Markdown if !rerolled.is_empty() => {
            let list: String = rerolled
                .iter()
                .map(|r| {
                    format!(
                        "- `~` roll out Journey `{}` v{} again (new entries run v{} since a rollback)\n",
                        r.journey, r.version, r.running
                    )
                })
                .collect();
            if plan.is_empty() {
                format!(
                    "{MARKER}\n### sluice plan: {} to roll out again\n\n{list}",
                    rerolled.len()
                )
            } else {
                format!("{}\n{list}", markdown(&plan, &base, &head))
            }
        }
        PlanFormat::Human if args.base.is_none() => human_against_deployed(&plan, &base, &head),
        PlanFormat::Human => human(&plan, &base, &head),
        PlanFormat::Markdown => markdown(&plan, &base, &head),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(if plan.is_empty() && rerolled.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Diagnostics on stderr as validate prints them; with `json` the
/// validate document on stdout, with `markdown` a comment saying why.
fn report_errors(format: PlanFormat, title: &str, diags: &Diagnostics) {
    let mut err = std::io::stderr().lock();
    for d in diags.iter() {
        if writeln!(err, "{:?}", d.to_report()).is_err() {
            break;
        }
    }
    let n = diags.errors().count();
    let _ = writeln!(err, "{title}: {n} error{}", if n == 1 { "" } else { "s" });
    let mut out = std::io::stdout().lock();
    let _ = match format {
        PlanFormat::Human => Ok(()),
        PlanFormat::Json => writeln!(out, "{}", diags.to_json()),
        PlanFormat::Markdown => {
            let mut s = format!("{MARKER}\n### sluice plan: failed\n\n{title}:\n\n");
            for d in diags.errors() {
                let _ = writeln!(
                    s,
                    "- `{}:{}:{}` **{}**: {}",
                    d.file_name(),
                    d.span.line,
                    d.span.column,
                    d.code.as_str(),
                    md_escape(&d.message)
                );
            }
            write!(out, "{s}")
        }
    };
}

fn summary(plan: &Plan) -> String {
    format!(
        "{} to create, {} to update, {} to delete",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Delete)
    )
}

fn sign(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Delete => "-",
    }
}

/// What a step does, from whichever side still has it.
fn step_text(side: &Side, journey: &str, step: &str) -> String {
    side.config
        .journey(journey)
        .and_then(|j| j.states.iter().find(|s| s.id == step))
        .map(|s| journeys::graph::describe(&s.action))
        .unwrap_or_default()
}

fn versions(c: &Change) -> String {
    match c.journey.as_ref().map(|j| (j.from_version, j.to_version)) {
        Some((Some(a), Some(b))) => format!("v{a} → v{b}"),
        Some((None, Some(b))) => format!("v{b}"),
        Some((Some(a), None)) => format!("v{a}"),
        _ => String::new(),
    }
}

/// [`human`] for a plan against the deployed state (a store or a server),
/// where there is no "base" checkout to speak of.
pub fn human_against_deployed(plan: &Plan, base: &Side, head: &Side) -> String {
    if plan.is_empty() {
        return "No changes: the config deploys exactly what is deployed.\n".to_owned();
    }
    human(plan, base, head)
}

/// [`human_against_deployed`] with the journeys the apply rolls out again
/// (after a rollback) listed first.
pub fn human_against_deployed_with(
    plan: &Plan,
    base: &Side,
    head: &Side,
    rerolled: &[crate::deploy::Rerollout],
) -> String {
    if rerolled.is_empty() {
        return human_against_deployed(plan, base, head);
    }
    format!(
        "{}{}",
        crate::deploy::rerollout_lines(rerolled),
        if plan.is_empty() {
            // Not "No changes": plan exits 2 and apply does something.
            format!(
                "\nPlan: {}; {} to roll out again.\n",
                summary(plan),
                rerolled.len()
            )
        } else {
            human(plan, base, head)
        }
    )
}

pub fn human(plan: &Plan, base: &Side, head: &Side) -> String {
    if plan.is_empty() {
        return "No changes: the head config deploys exactly what the base has.\n".to_owned();
    }
    let mut s = String::new();
    for c in &plan.changes {
        let v = versions(c);
        let _ = write!(
            s,
            "{} {} {} {}",
            sign(c.action),
            c.action.as_str(),
            c.kind,
            c.id
        );
        if !v.is_empty() {
            let _ = write!(s, " ({v})");
        }
        s.push('\n');
        if !c.fields.is_empty() {
            let _ = writeln!(s, "    fields: {}", c.fields.join(", "));
        }
        let Some(j) = &c.journey else { continue };
        if c.action == Action::Update {
            for id in &j.steps.added {
                let _ = writeln!(s, "    + step {id}: {}", step_text(head, &c.id, id));
            }
            for id in &j.steps.removed {
                let _ = writeln!(s, "    - step {id}: {}", step_text(base, &c.id, id));
            }
            for (id, parts) in &j.steps.changed {
                let _ = writeln!(
                    s,
                    "    ~ step {id}: {} [{}]",
                    step_text(head, &c.id, id),
                    parts.join(", ")
                );
            }
        }
        if let Some(m) = &j.migration {
            let _ = writeln!(
                s,
                "    migrate live v{} instances (unmapped steps: {}):",
                m.from,
                plan::on_unmapped_str(m.on_unmapped)
            );
            for (rule, instances) in rules_with_instances(m, j.in_flight.as_ref()) {
                let _ = write!(
                    s,
                    "      {} → {}: timer {}",
                    rule.from_step,
                    rule.to_name(),
                    rule.timer.as_str()
                );
                if let Some(n) = instances {
                    let _ = write!(s, ", {n} live");
                }
                s.push('\n');
            }
        }
        if let Some(f) = &j.in_flight {
            let _ = writeln!(
                s,
                "    in flight: {} live, {} at removed steps, {} migrated, {} exited",
                f.live, f.at_removed_steps, f.migrated, f.exited
            );
        }
    }
    let _ = writeln!(s, "\nPlan: {}.", summary(plan));
    s
}

/// The first line of the errors a plan itself finds.
pub fn blocked_title(diags: &Diagnostics) -> &'static str {
    let not_bumped = diags
        .errors()
        .any(|d| d.code == journeys::diagnostic::Code::VersionNotBumped);
    let other = diags
        .errors()
        .any(|d| d.code != journeys::diagnostic::Code::VersionNotBumped);
    match (not_bumped, other) {
        (true, false) => "a changed journey keeps its version",
        (false, _) => "a journey's `migrate` block does not fit the deployed version",
        (true, true) => "the plan found errors in changed journeys",
    }
}

/// Each rule of a migration with the live instances it moves, when the
/// plan counted them.
fn rules_with_instances<'p>(
    m: &'p plan::MigrationPlan,
    in_flight: Option<&'p plan::InFlightCounts>,
) -> Vec<(&'p plan::MigrationRule, Option<u64>)> {
    m.rules
        .iter()
        .map(|rule| {
            let n = in_flight.map(|f| {
                f.migration
                    .iter()
                    .find(|r| r.rule.from_step == rule.from_step)
                    .map_or(0, |r| r.instances)
            });
            (rule, n)
        })
        .collect()
}

/// A journey's migration as a markdown table: old step, new step, timer
/// and, with in-flight counts, the instances each rule moves.
fn migration_table(
    s: &mut String,
    m: &plan::MigrationPlan,
    in_flight: Option<&plan::InFlightCounts>,
) {
    let _ = writeln!(
        s,
        "Migration of live v{} instances (unmapped steps: **{}**):\n",
        m.from,
        plan::on_unmapped_str(m.on_unmapped)
    );
    let counted = in_flight.is_some();
    s.push_str(if counted {
        "| from step | to step | timer | instances |\n|---|---|---|---|\n"
    } else {
        "| from step | to step | timer |\n|---|---|---|\n"
    });
    for (rule, instances) in rules_with_instances(m, in_flight) {
        let _ = write!(
            s,
            "| `{}` | `{}` | {} |",
            rule.from_step,
            rule.to_name(),
            rule.timer.as_str()
        );
        if let Some(n) = instances {
            let _ = write!(s, " {n} |");
        }
        s.push('\n');
    }
    s.push_str(
        "\n_kept_: keeps its due time · _restarted_: the new step starts at apply time · \
         _none_: the new step does not wait (`end` completes the instance)",
    );
    if m.rules.iter().any(|r| r.timer == plan::Timer::Unknown) {
        s.push_str(" · _unknown_: this plan does not have the old version's steps");
    }
    s.push_str("\n\n");
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn markdown(plan: &Plan, base: &Side, head: &Side) -> String {
    let mut s = format!("{MARKER}\n");
    if plan.is_empty() {
        s.push_str("### sluice plan: no changes\n");
        return s;
    }
    let _ = writeln!(s, "### sluice plan: {}\n", summary(plan));
    s.push_str("| | kind | id | change |\n|---|---|---|---|\n");
    for c in &plan.changes {
        let mut what = c.action.as_str().to_owned();
        let v = versions(c);
        if !v.is_empty() {
            let _ = write!(what, " {v}");
        }
        if !c.fields.is_empty() {
            let _ = write!(what, ": {}", c.fields.join(", "));
        }
        let _ = writeln!(
            s,
            "| `{}` | {} | `{}` | {} |",
            sign(c.action),
            c.kind,
            c.id,
            md_escape(&what)
        );
    }
    for c in &plan.changes {
        let Some(j) = &c.journey else { continue };
        if c.action == Action::Delete {
            continue;
        }
        let _ = writeln!(s, "\n#### Journey `{}` ({})\n", c.id, versions(c));
        if c.action == Action::Update && !j.steps.is_empty() {
            s.push_str("| step | change | does |\n|---|---|---|\n");
            for id in &j.steps.added {
                let _ = writeln!(
                    s,
                    "| `{id}` | added | {} |",
                    md_escape(&step_text(head, &c.id, id))
                );
            }
            for id in &j.steps.removed {
                let _ = writeln!(
                    s,
                    "| `{id}` | removed | {} |",
                    md_escape(&step_text(base, &c.id, id))
                );
            }
            for (id, parts) in &j.steps.changed {
                let _ = writeln!(
                    s,
                    "| `{id}` | changed: {} | {} |",
                    parts.join(", "),
                    md_escape(&step_text(head, &c.id, id))
                );
            }
            s.push('\n');
        } else if c.action == Action::Update {
            s.push_str("No step changed.\n\n");
        }
        if let Some(m) = &j.migration {
            migration_table(&mut s, m, j.in_flight.as_ref());
        }
        if let Some(f) = &j.in_flight {
            let _ = writeln!(
                s,
                "In flight: **{}** live, **{}** at removed steps, **{}** migrated, **{}** exited.\n",
                f.live, f.at_removed_steps, f.migrated, f.exited
            );
        }
        if let Some(journey) = head.config.journey(&c.id) {
            let marks = journeys::graph::Marks {
                added: j.steps.added.iter().cloned().collect(),
                changed: j.steps.changed.iter().map(|(id, _)| id.clone()).collect(),
            };
            let _ = write!(
                s,
                "```mermaid\n{}```\n",
                journeys::graph::mermaid(journey, &marks)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn sides(case: &str) -> (Side, Side) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/plan")
            .join(case);
        let load = |sub: &str, which| match Side::load(&dir.join(sub), which) {
            Ok(side) => side,
            Err(e) => panic!("{case}/{sub}: {e}"),
        };
        (load("base", Which::Base), load("head", Which::Head))
    }

    /// Live instances as a store would count them for the migrate fixture.
    fn live(journey: &str, version: u32) -> BTreeMap<String, u64> {
        let steps: &[(&str, u64)] = match (journey, version) {
            ("cart-abandonment", 3) => &[
                ("wait-1h", 5),
                ("reminder", 1),
                ("wait-morning", 4),
                ("nudge", 2),
                ("wait-purchase", 3),
            ],
            ("win-back", 2) => &[("wait-week", 6)],
            ("win-back", 1) => &[("wait-week", 2), ("offer", 1)],
            _ => &[],
        };
        steps.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    #[test]
    fn migration_impact_in_human_and_markdown() {
        let (base, head) = sides("migrate");
        let plan = plan::plan(&base, &head, Some(&live));
        let human = human(&plan, &base, &head);
        assert!(
            human.contains("      wait-1h → wait-2h: timer kept, 5 live\n"),
            "{human}"
        );
        assert!(
            human.contains("    in flight: 15 live, 11 at removed steps, 14 migrated, 1 exited\n"),
            "{human}"
        );
        insta::assert_snapshot!("plan_migrate_human_in_flight", human);
        let markdown = markdown(&plan, &base, &head);
        assert!(markdown.starts_with(MARKER));
        assert!(
            markdown.contains("| `wait-morning` | `wait-purchase` | restarted | 4 |"),
            "{markdown}"
        );
        insta::assert_snapshot!("plan_migrate_markdown_in_flight", markdown);
    }

    #[test]
    fn the_error_title_names_what_the_plan_found() {
        let (base, head) = sides("migrate-errors");
        let plan = plan::plan(&base, &head, None);
        assert_eq!(
            blocked_title(&plan.diagnostics),
            "a journey's `migrate` block does not fit the deployed version"
        );
        let (base, head) = sides("not-bumped");
        let plan = plan::plan(&base, &head, None);
        assert_eq!(
            blocked_title(&plan.diagnostics),
            "a changed journey keeps its version"
        );
    }
}
