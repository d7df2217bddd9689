//! `cargo bench -p journeys --bench lsp`: what `sluice lsp` does after one
//! file changes on the benchmark repository (1,000 journeys × 20 steps, 200
//! segments, 300 templates, with a Catalog typing them, a Project, ten
//! journeys on a schedule and two policies): `Workspace::change` re-reads
//! that file and re-validates what it can reach. Prints the initial load
//! and, for each kind of edit (a journey, a template, a segment, a policy,
//! the Catalog, the Project), the best, median and worst of 30 edits, and
//! checks after the first edits that the diagnostics equal a full
//! `journeys::check` of the same files.

use std::path::Path;
use std::time::{Duration, Instant};

use journeys::ide::{Recheck, Workspace};

mod repo;

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{name}: best {:.1} ms, median {:.1} ms, worst {:.1} ms over {} edits",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}

/// The workspace's diagnostics equal `journeys::check` of the files on disk.
fn same_as_validate(ws: &Workspace, dir: &Path) {
    let full: Vec<String> = journeys::check(dir)
        .1
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {} {}",
                d.file_name(),
                d.span.line,
                d.span.column,
                d.code,
                d.message
            )
        })
        .collect();
    let mine: Vec<String> = ws
        .results()
        .values()
        .flatten()
        .map(|d| {
            format!(
                "{}:{}:{} {} {}",
                d.file_name(),
                d.span.line,
                d.span.column,
                d.code,
                d.message
            )
        })
        .collect();
    assert_eq!(mine, full, "incremental diagnostics differ from validate's");
}

fn main() {
    let dir = std::env::temp_dir().join(format!("sluice-bench-lsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    repo::generate(&dir);
    // Policies, so that a policy edit can be timed too.
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("policies/limits.yaml"),
        "apiVersion: sluice/v1\nkind: Throttle\nid: crm\nchannel: webhook\nrate: 50 per second\njourneys: [journey-1, journey-2, journey-3]\n---\napiVersion: sluice/v1\nkind: QuietHours\nid: nights\nchannels: [push]\nstart: \"21:00\"\nend: \"08:00\"\n",
    )
    .expect("policies");
    // A Catalog declaring what the generated files read, and a Project.
    std::fs::write(dir.join("catalog.yaml"), CATALOG).expect("catalog");
    std::fs::write(dir.join("sluice.yaml"), PROJECT).expect("project");
    // Journeys on a schedule without a timezone: they read the Project's.
    for k in 0..10 {
        std::fs::write(
            dir.join(format!("journeys/digest-{k}.yaml")),
            format!("apiVersion: sluice/v1\nkind: Journey\nid: digest-{k}\nversion: 1\nentry:\n  schedule: \"0 0 9 * * Mon *\"\n  segment: seg-{k}\nsteps:\n  - id: send\n    send: {{ channel: email, template: tpl-1 }}\n"),
        )
        .expect("digest");
    }

    let start = Instant::now();
    let mut ws = Workspace::load(&dir);
    ws.recheck_all();
    println!(
        "initial load and check: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    same_as_validate(&ws, &dir);

    // A journey edited: a wait changes, then a send names an unknown
    // template (an error in this file only), then it is fixed.
    let name = "journeys/journey-500.yaml";
    let original = std::fs::read_to_string(dir.join(name)).expect("journey");
    let send = original
        .lines()
        .find(|l| l.contains("template: tpl-"))
        .expect("a send")
        .to_owned();
    let broken_send = send.replace("template: tpl-", "template: tlp-");
    timed_edits(
        &mut ws,
        &dir,
        name,
        "one journey edited",
        3,
        |original, i| match i % 3 {
            0 => original.replace("wait: 1h", &format!("wait: {}h", i + 2)),
            1 => original.replace(&send, &broken_send),
            _ => original.to_owned(),
        },
    );

    // A template's text edited: it and the journeys that send it.
    let name = "templates/tpl-7.yaml";
    let original = std::fs::read_to_string(dir.join(name)).expect("template");
    assert!(original.contains("Hello"), "the generated template changed");
    timed_edits(
        &mut ws,
        &dir,
        name,
        "one template edited",
        2,
        |original, i| original.replace("Hello", &format!("Hello {i}")),
    );

    // A segment edited: every file of segments.
    timed_edits(
        &mut ws,
        &dir,
        "segments/seg-3.yaml",
        "one segment edited",
        2,
        |original, i| format!("{original}\n# edit {i}\n"),
    );

    // A policy edited: every file of policies.
    timed_edits(
        &mut ws,
        &dir,
        "policies/limits.yaml",
        "one policy edited",
        2,
        |original, i| original.replace("50 per second", &format!("{} per second", 50 + i)),
    );

    // The Catalog edited without changing what other files read: a
    // comment, an attribute nobody reads.
    timed_edits(
        &mut ws,
        &dir,
        "catalog.yaml",
        "one Catalog edited (nothing others read)",
        2,
        |original, i| match i % 2 {
            0 => original.replace("# The types", &format!("# ({i}) The types")),
            _ => original.replace("user:\n", &format!("user:\n  unused_{i}: number\n")),
        },
    );
    // A type changed that every segment compares (`user.score`): the
    // Catalog and the 200 segments; then back.
    timed_edits(
        &mut ws,
        &dir,
        "catalog.yaml",
        "one Catalog type changed (200 segments read it)",
        2,
        |original, i| match i % 2 {
            0 => original.replace("score: number", "score: string"),
            _ => original.to_owned(),
        },
    );
    // A property of the event every journey is entered by: every journey.
    timed_edits(
        &mut ws,
        &dir,
        "catalog.yaml",
        "one Catalog type changed (every journey reads it)",
        2,
        |original, i| match i % 2 {
            0 => original.replace("cart_value: number", "cart_value: string"),
            _ => original.to_owned(),
        },
    );

    // The Project edited: a setting no other file reads, then the default
    // timezone (the ten scheduled journeys read it).
    timed_edits(
        &mut ws,
        &dir,
        "sluice.yaml",
        "one Project edited (nothing others read)",
        2,
        |original, i| {
            original.replace("history_limit: 500", &format!("history_limit: {}", 501 + i))
        },
    );
    timed_edits(
        &mut ws,
        &dir,
        "sluice.yaml",
        "one Project's default timezone changed",
        2,
        |original, i| match i % 2 {
            0 => original.replace("Europe/Berlin", "Asia/Tokyo"),
            _ => original.replace("Europe/Berlin", "America/New_York"),
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const CATALOG: &str = "# The types the generated repository reads.
apiVersion: sluice/v1
kind: Catalog
id: bench
user:
  score: number
  first_name: string
  vip: boolean
  step_3: string
  step_8: string
  step_13: string
  step_18: string
events:
  cart_updated: { cart_value: number, cart_id: string }
  order_completed: { cart_id: string }
";

const PROJECT: &str = "apiVersion: sluice/v1
kind: Project
id: bench
default_timezone: Europe/Berlin
history_limit: 500
channels:
  email: { provider: maildir, from: \"Shop <hello@shop.example>\" }
";

/// Times 30 edits of one file made by `edit(original, i)`: each must
/// re-validate that file's reach only, and the first `checked` must give
/// `validate`'s diagnostics. The file is put back afterwards.
fn timed_edits(
    ws: &mut Workspace,
    dir: &Path,
    name: &str,
    label: &str,
    checked: usize,
    edit: impl Fn(&str, usize) -> String,
) {
    let original = std::fs::read_to_string(dir.join(name)).expect("read");
    let mut times = Vec::new();
    for i in 0..30 {
        let text = edit(&original, i);
        let start = Instant::now();
        let how = ws.change(name, text.clone());
        times.push(start.elapsed());
        assert_eq!(how, Recheck::File, "edit {i} re-validated everything");
        if i < checked {
            std::fs::write(dir.join(name), &text).expect("write");
            same_as_validate(ws, dir);
        }
    }
    std::fs::write(dir.join(name), &original).expect("write");
    ws.change(name, original);
    summary(label, times);
}
