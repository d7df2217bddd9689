//! `cargo bench -p journeys --bench validate`: generates a repository of
//! 1,000 journeys (20 steps each), 200 segments and 300 templates, then
//! times `journeys::check` over it (best and median of several warm runs).

use std::time::Instant;

mod repo;

use repo::generate;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let dir = std::env::temp_dir().join(format!("sluice-bench-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    generate(&dir);
    let mut times = Vec::new();
    for run in 0..6 {
        let start = Instant::now();
        let (config, diags) = journeys::check(&dir);
        let elapsed = start.elapsed();
        let config = match config {
            Some(c) => c,
            None => {
                for d in diags.iter().take(5) {
                    eprintln!("{}:{} {}", d.file_name(), d.span.line, d.message);
                }
                panic!("generated repository must be valid");
            }
        };
        if run == 0 {
            println!(
                "repository: {} journeys ({} states), {} segments, {} templates",
                config.journeys.len(),
                config
                    .journeys
                    .iter()
                    .map(|j| j.states.len())
                    .sum::<usize>(),
                config.segments.len(),
                config.templates.len()
            );
        } else {
            times.push(elapsed);
        }
    }
    times.sort();
    println!(
        "validate (warm): best {:.0} ms, median {:.0} ms over {} runs",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
