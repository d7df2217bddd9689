//! examples/ci/.github/workflows/sluice.yml, the GitHub Actions workflow a
//! config repository copies: its triggers and jobs as docs/ci.md describes
//! them, and its pull-request job run for real: every `run` step after the
//! install (validate, test, plan, the exit-code gate) executed by bash on two
//! checkouts of examples/shop made here, with the `${{ }}` expressions
//! substituted as GitHub would, and this build's `sluice` on PATH.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const MARKER: &str = "<!-- sluice-plan -->";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

fn workflow() -> Value {
    let path = root().join("examples/ci/.github/workflows/sluice.yml");
    let text = std::fs::read_to_string(&path).expect("read the workflow");
    serde_yaml::from_str(&text).expect("the workflow is YAML")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn steps<'w>(wf: &'w Value, job: &str) -> &'w Vec<Value> {
    wf["jobs"][job]["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("job `{job}` has steps"))
}

/// Every `run` script of the workflow.
fn scripts(wf: &Value) -> Vec<String> {
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    jobs.values()
        .flat_map(|job| job["steps"].as_sequence().into_iter().flatten())
        .filter_map(|s| s["run"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn triggers_and_jobs() {
    let wf = workflow();
    let on = &wf["on"];
    assert!(on.get("pull_request").is_some(), "runs on pull requests");
    let branches: Vec<&str> = on["push"]["branches"]
        .as_sequence()
        .expect("push branches")
        .iter()
        .map(text)
        .collect();
    assert_eq!(branches, vec!["main"]);

    let plan = &wf["jobs"]["plan"];
    assert!(text(&plan["if"]).contains("github.event_name == 'pull_request'"));
    assert_eq!(text(&plan["permissions"]["pull-requests"]), "write");
    let steps_of = |job| steps(&wf, job);
    let checkouts: Vec<&Value> = steps_of("plan")
        .iter()
        .filter(|s| text(&s["uses"]).starts_with("actions/checkout@"))
        .collect();
    assert_eq!(checkouts.len(), 2, "the head and its base");
    assert_eq!(text(&checkouts[0]["with"]["path"]), "head");
    assert_eq!(text(&checkouts[1]["with"]["path"]), "base");
    assert_eq!(
        text(&checkouts[1]["with"]["ref"]),
        "${{ github.event.pull_request.base.sha }}"
    );
    for job in ["plan", "apply"] {
        let steps = steps_of(job);
        let cache = steps
            .iter()
            .position(|s| text(&s["uses"]).starts_with("actions/cache@"))
            .unwrap_or_else(|| panic!("{job}: sluice is cached"));
        assert_eq!(text(&steps[cache]["with"]["path"]), "~/.cargo/bin/sluice");
        let install = steps
            .iter()
            .position(|s| text(&s["run"]).contains("cargo install"))
            .unwrap_or_else(|| panic!("{job}: sluice is installed"));
        assert!(cache < install, "{job}: the cache is restored first");
        assert!(text(&steps[install]["run"]).contains("command -v sluice"));
    }
    let comment = steps_of("plan")
        .iter()
        .find(|s| text(&s["uses"]).starts_with("actions/github-script@"))
        .expect("the plan is posted as a comment");
    let script = text(&comment["with"]["script"]);
    for needle in [
        MARKER,
        "body.startsWith(marker)",
        "updateComment",
        "createComment",
        "github.paginate",
    ] {
        assert!(script.contains(needle), "the comment script uses {needle}");
    }

    let apply = &wf["jobs"]["apply"];
    assert!(text(&apply["if"]).contains("github.event_name == 'push'"));
    assert!(text(&apply["if"]).contains("refs/heads/main"));
    assert_eq!(
        text(&apply["env"]["SLUICE_TOKEN"]),
        "${{ secrets.SLUICE_TOKEN }}"
    );
    let runs: Vec<&str> = steps_of("apply").iter().map(|s| text(&s["run"])).collect();
    let all = runs.join("\n");
    for needle in [
        "sluice validate .",
        "sluice apply . --server \"$SLUICE_SERVER\" --actor \"${{ github.actor }}\"",
        "--canary \"$CANARY\"",
        "--guard \"$GUARD\"",
        "--min-sends \"$MIN_SENDS\"",
        "sluice canary status --server \"$SLUICE_SERVER\"",
    ] {
        assert!(all.contains(needle), "the apply job runs {needle}");
    }
    let apply_step = steps_of("apply")
        .iter()
        .find(|s| text(&s["run"]).contains("sluice apply"))
        .expect("apply step");
    for (var, from) in [
        ("CANARY", "vars.SLUICE_CANARY"),
        ("GUARD", "vars.SLUICE_GUARD"),
        ("MIN_SENDS", "vars.SLUICE_MIN_SENDS"),
    ] {
        assert_eq!(text(&apply_step["env"][var]), format!("${{{{ {from} }}}}"));
    }
}

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subcommands `sluice help` lists.
fn subcommands() -> Vec<String> {
    let (code, help, _) = sluice(&["help"]);
    assert_eq!(code, 0);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Each `sluice …` command line of a script: its words before the first
/// flag or argument (`canary status`) and the flags it passes, counting
/// those a script collects in `args+=(…)` for `"${args[@]}"`.
fn commands(script: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let collected: Vec<String> = script
        .lines()
        .filter(|l| l.contains("args+=("))
        .flat_map(|l| l.split_whitespace().map(str::to_owned))
        .filter_map(|w| w.split("args+=(").nth(1).map(str::to_owned))
        .filter(|w| w.starts_with("--"))
        .collect();
    let mut out = Vec::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "sluice" {
                continue;
            }
            let rest: Vec<&str> = words[i + 1..]
                .iter()
                .copied()
                .take_while(|w| !matches!(*w, ">" | "|" | ";" | "&&" | "||" | ")"))
                .collect();
            let names: Vec<String> = rest
                .iter()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .take_while(|w| !w.starts_with('-'))
                .map(|w| (*w).to_owned())
                .collect();
            let mut flags: Vec<String> = rest
                .iter()
                .filter(|w| w.starts_with("--"))
                .map(|w| w.split('=').next().unwrap_or(w).to_owned())
                .collect();
            if rest.contains(&"\"${args[@]}\"") {
                flags.extend(collected.iter().cloned());
            }
            if !names.is_empty() || !flags.is_empty() {
                out.push((names, flags));
            }
        }
    }
    out
}

#[test]
fn every_sluice_command_in_the_workflow_exists_with_its_flags() {
    let known = subcommands();
    assert!(known.iter().any(|c| c == "plan"), "{known:?}");
    let mut seen = 0;
    for script in scripts(&workflow()) {
        for (names, flags) in commands(&script) {
            seen += 1;
            let Some(first) = names.first() else {
                // `sluice --version`
                let (_, help, _) = sluice(&["--help"]);
                for f in &flags {
                    assert!(help.contains(f.as_str()), "`sluice {f}` is not an option");
                }
                continue;
            };
            assert!(
                known.contains(first),
                "`sluice {first}` in the workflow is not a subcommand of {known:?}"
            );
            let mut args: Vec<&str> = names.iter().map(String::as_str).collect();
            args.push("--help");
            let (code, help, stderr) = sluice(&args);
            assert_eq!(code, 0, "sluice {}: {stderr}", args.join(" "));
            for f in &flags {
                assert!(
                    help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")),
                    "`sluice {}` has no option {f}:\n{help}",
                    names.join(" ")
                );
            }
        }
    }
    assert!(seen >= 6, "found only {seen} sluice commands");
}

/// A copy of `from` at `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A workspace as the pull-request job sees it: `head/` and `base/`, two
/// checkouts of examples/shop, the head's win-back sending its offer an
/// hour later, with its version bumped or not.
fn checkouts(bump: bool) -> tempfile::TempDir {
    let ws = tempfile::tempdir().expect("tempdir");
    let shop = root().join("examples/shop");
    copy_dir(&shop, &ws.path().join("base"));
    copy_dir(&shop, &ws.path().join("head"));
    let journey = ws.path().join("head/journeys/win-back.yaml");
    let yaml = std::fs::read_to_string(&journey).expect("win-back");
    assert!(yaml.contains("\nversion: 1\n") && yaml.contains("time: \"10:00\""));
    let mut yaml = yaml.replace("time: \"10:00\"", "time: \"11:00\"");
    if bump {
        yaml = yaml.replace("\nversion: 1\n", "\nversion: 2\n");
    }
    std::fs::write(&journey, yaml).expect("write win-back");
    ws
}

/// The value GitHub would give `expr` in this run: `a || 'literal'`,
/// `!cancelled()`, the step outputs written so far and a pull-request
/// event's fields. An expression this test does not know fails it: the
/// workflow changed, and so must this test.
fn evaluate(expr: &str, outputs: &BTreeMap<String, String>) -> String {
    let expr = expr.trim();
    if let Some((a, b)) = expr.split_once("||") {
        let a = evaluate(a, outputs);
        return if a.is_empty() {
            evaluate(b, outputs)
        } else {
            a
        };
    }
    if let Some(lit) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
        return lit.to_owned();
    }
    if let Some(key) = expr.strip_prefix("steps.") {
        return outputs.get(key).cloned().unwrap_or_default();
    }
    match expr {
        "!cancelled()" => "true".into(),
        "github.actor" => "octocat".into(),
        "github.event.pull_request.number" => "7".into(),
        "runner.os" => "Linux".into(),
        e if e.starts_with("vars.") || e.starts_with("secrets.") => String::new(),
        other => panic!("the test does not know the expression `{other}`"),
    }
}

fn substitute(s: &str, outputs: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed expression") + start;
        out.push_str(&evaluate(&rest[start + 3..end], outputs));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// What one executed step did.
struct Ran {
    name: String,
    code: i32,
    log: String,
}

/// Runs the plan job's `run` steps after `Install sluice` in `ws` as the
/// runner would (`bash -e`, the step's `working-directory`, its `env`,
/// `GITHUB_OUTPUT`), with this build's `sluice` first on PATH. Stops at
/// the first failing step (a step's `if: !cancelled()` still runs after a
/// failure: the plan, its comment and the gate do).
fn run_plan_job(ws: &Path) -> (Vec<Ran>, BTreeMap<String, String>) {
    let wf = workflow();
    let steps = steps(&wf, "plan");
    let install = steps
        .iter()
        .position(|s| text(&s["name"]) == "Install sluice")
        .expect("an install step");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = BTreeMap::new();
    let mut ran: Vec<Ran> = Vec::new();
    let mut failed = false;
    for step in &steps[install + 1..] {
        let Some(script) = step["run"].as_str() else {
            continue;
        };
        let condition = text(&step["if"]);
        let runs_after_failure = condition.contains("!cancelled()");
        if failed && !runs_after_failure {
            continue;
        }
        let output_file = ws.join("github_output");
        std::fs::write(&output_file, "").expect("GITHUB_OUTPUT");
        let dir = match step["working-directory"].as_str() {
            Some(d) => ws.join(d),
            None => ws.to_path_buf(),
        };
        let mut cmd = Command::new("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(substitute(script, &outputs))
            .current_dir(dir)
            .env("PATH", &path)
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_WORKSPACE", ws)
            .env("CI", "true");
        if let Some(env) = step["env"].as_mapping() {
            for (k, v) in env {
                cmd.env(text(k), substitute(text(v), &outputs));
            }
        }
        let out = cmd.output().expect("bash");
        let code = out.status.code().unwrap_or(-1);
        if let Some(id) = step["id"].as_str() {
            let written = std::fs::read_to_string(&output_file).expect("outputs");
            for line in written.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    outputs.insert(format!("{id}.outputs.{k}"), v.to_owned());
                }
            }
        }
        failed |= code != 0;
        ran.push(Ran {
            name: text(&step["name"]).to_owned(),
            code,
            log: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    (ran, outputs)
}

fn outcome(ran: &[Ran]) -> Vec<(&str, i32)> {
    ran.iter().map(|r| (r.name.as_str(), r.code)).collect()
}

#[test]
fn a_pull_request_with_a_new_journey_version_gets_its_plan_and_passes() {
    let ws = checkouts(true);
    let (ran, outputs) = run_plan_job(ws.path());
    let logs: Vec<&str> = ran.iter().map(|r| r.log.as_str()).collect();
    assert_eq!(
        outcome(&ran),
        vec![
            ("Validate", 0),
            ("Test", 0),
            ("Plan", 0),
            ("Fail on a plan error", 0)
        ],
        "{logs:#?}"
    );
    assert_eq!(
        outputs.get("plan.outputs.exit").map(String::as_str),
        Some("2")
    );
    let comment = std::fs::read_to_string(ws.path().join("plan.md")).expect("plan.md");
    assert!(comment.starts_with(MARKER), "{comment}");
    assert!(
        comment.contains("| `~` | Journey | `win-back` | update v1 → v2: steps |"),
        "{comment}"
    );
    assert!(comment.contains("```mermaid"), "{comment}");
    // The plan step prints the comment into the job log too.
    assert!(ran[2].log.contains(MARKER));
}

#[test]
fn a_journey_changed_without_a_new_version_fails_the_job_after_the_comment() {
    let ws = checkouts(false);
    let (ran, outputs) = run_plan_job(ws.path());
    let logs: Vec<&str> = ran.iter().map(|r| r.log.as_str()).collect();
    assert_eq!(
        outcome(&ran),
        vec![
            ("Validate", 0),
            ("Test", 0),
            ("Plan", 0),
            ("Fail on a plan error", 1)
        ],
        "{logs:#?}"
    );
    assert_eq!(
        outputs.get("plan.outputs.exit").map(String::as_str),
        Some("1")
    );
    let comment = std::fs::read_to_string(ws.path().join("plan.md")).expect("plan.md");
    assert!(
        comment.starts_with(&format!("{MARKER}\n### sluice plan: failed")),
        "{comment}"
    );
    assert!(comment.contains("version_not_bumped"), "{comment}");
    assert!(
        ran[3].log.contains("sluice plan failed (exit 1)"),
        "{}",
        ran[3].log
    );
    // The comment step's condition holds: the failure is posted.
    let wf = workflow();
    let comment_step = steps(&wf, "plan")
        .iter()
        .find(|s| text(&s["uses"]).starts_with("actions/github-script@"))
        .expect("comment step");
    assert!(text(&comment_step["if"]).contains("steps.plan.outputs.exit != ''"));
}

#[test]
fn an_unchanged_pull_request_plans_no_changes() {
    let ws = tempfile::tempdir().expect("tempdir");
    let shop = root().join("examples/shop");
    copy_dir(&shop, &ws.path().join("base"));
    copy_dir(&shop, &ws.path().join("head"));
    let (ran, outputs) = run_plan_job(ws.path());
    assert!(ran.iter().all(|r| r.code == 0), "{:?}", outcome(&ran));
    assert_eq!(
        outputs.get("plan.outputs.exit").map(String::as_str),
        Some("0")
    );
    let comment = std::fs::read_to_string(ws.path().join("plan.md")).expect("plan.md");
    assert_eq!(comment, format!("{MARKER}\n### sluice plan: no changes\n"));
}
