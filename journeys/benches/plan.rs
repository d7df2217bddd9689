//! `cargo bench -p journeys --bench plan`: two checkouts of the 1,000-journey
//! benchmark repository (20 steps each, 200 segments, 300 templates), the
//! head with 100 journeys changed (a step's wait, a new step, the version
//! bumped, a `migrate` block of three rules), one deleted and one added; times what `sluice plan --base`
//! does: load, validate and compile both sides, then diff them (best and
//! median of several warm runs).

use std::time::Instant;

mod repo;

use journeys::plan::{self, Side, Which};
use repo::generate;

fn edit_head(head: &std::path::Path) {
    for j in (0..1000).step_by(10) {
        let path = head.join(format!("journeys/journey-{j}.yaml"));
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text
            .replacen("version: 1", "version: 2", 1)
            .replacen("wait: 1h", "wait: 2h", 1)
            + "  - id: extra\n    wait: 5m\n"
            + "migrate:\n  from: 1\n  steps: { s0: s0, s4: s4, s2: end }\n  on_unmapped: exit\n";
        std::fs::write(&path, text).expect("write");
    }
    std::fs::remove_file(head.join("journeys/journey-999.yaml")).expect("delete");
    let added = std::fs::read_to_string(head.join("journeys/journey-1.yaml"))
        .expect("read")
        .replacen("id: journey-1\n", "id: journey-new\n", 1);
    std::fs::write(head.join("journeys/journey-new.yaml"), added).expect("write");
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("sluice-bench-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (base_dir, head_dir) = (tmp.join("base"), tmp.join("head"));
    generate(&base_dir);
    generate(&head_dir);
    edit_head(&head_dir);
    let mut times = Vec::new();
    for run in 0..6 {
        let start = Instant::now();
        let base = Side::load(&base_dir, Which::Base).expect("base must be valid");
        let head = Side::load(&head_dir, Which::Head).expect("head must be valid");
        let plan = plan::plan(&base, &head, None);
        let json = plan.to_json();
        let elapsed = start.elapsed();
        assert!(plan.diagnostics.is_empty(), "{:?}", plan.diagnostics);
        assert_eq!(json["changes"][0]["migrate"]["steps"][0]["timer"], "kept");
        if run == 0 {
            println!(
                "plan: {} changes ({} to create, {} to update, {} to delete), {} bytes of JSON",
                plan.changes.len(),
                json["summary"]["create"],
                json["summary"]["update"],
                json["summary"]["delete"],
                json.to_string().len()
            );
        } else {
            times.push(elapsed);
        }
    }
    times.sort();
    println!(
        "plan --base, two 1,000-journey checkouts (warm): best {:.0} ms, median {:.0} ms over {} runs",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
