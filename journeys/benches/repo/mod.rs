//! The benchmark repository: 1,000 journeys (20 steps each), 200 segments
//! and 300 templates, shared by the `validate` and `lsp` benches.

use std::fmt::Write as _;
use std::path::Path;

pub fn generate(root: &Path) {
    std::fs::create_dir_all(root.join("journeys")).expect("dir");
    std::fs::create_dir_all(root.join("segments")).expect("dir");
    std::fs::create_dir_all(root.join("templates")).expect("dir");
    for s in 0..200 {
        let extra = if s > 0 {
            format!("\n    - segment: seg-{}", s - 1)
        } else {
            String::new()
        };
        let text = format!(
            "apiVersion: sluice/v1\nkind: Segment\nid: seg-{s}\nwhen:\n  any:\n    - user.score: {{ gte: {s} }}\n    - history: {{ event: order_completed, within: 30d, count: {{ gte: 2 }} }}{extra}\n"
        );
        std::fs::write(root.join(format!("segments/seg-{s}.yaml")), text).expect("write");
    }
    for t in 0..300 {
        let text = if t % 3 == 0 {
            format!("apiVersion: sluice/v1\nkind: Template\nid: tpl-{t}\nchannel: push\ntitle: \"Hi {{{{user.first_name}}}}\"\nbody: \"Offer {t} for {{{{user.first_name}}}}\"\n")
        } else {
            format!("apiVersion: sluice/v1\nkind: Template\nid: tpl-{t}\nchannel: email\nsubject: \"Hello {{{{user.first_name}}}} ({t})\"\ntext: |\n  Hi {{{{user.first_name}}}},\n  {{{{#if user.vip}}}}VIP offer{{{{else}}}}offer{{{{/if}}}} number {t}.\n  {{{{message.unsubscribe_url}}}}\n")
        };
        std::fs::write(root.join(format!("templates/tpl-{t}.yaml")), text).expect("write");
    }
    for j in 0..1000 {
        let mut text = format!(
            "apiVersion: sluice/v1\nkind: Journey\nid: journey-{j}\nversion: 1\npriority: {}\nentry:\n  event: cart_updated\n  when: {{ event.cart_value: {{ gte: 20 }} }}\n  dedupe_key: \"{{{{event.cart_id}}}}\"\n  reentry: after 7d\nholdout: 10%\nexit:\n  - event: order_completed\ngoal: {{ event: order_completed, within: 7d }}\nsteps:\n",
            j % 100
        );
        for s in 0..20 {
            let id = format!("s{s}");
            match s % 5 {
                0 => writeln!(text, "  - id: {id}\n    wait: {}h", s + 1),
                1 => writeln!(
                    text,
                    "  - id: {id}\n    branch:\n      - when: {{ segment: seg-{} }}\n        next: s{}\n      - next: s{}",
                    (j + s) % 200,
                    s + 1,
                    s + 1
                ),
                2 => {
                    let t = (j * 7 + s) % 300;
                    let channel = if t % 3 == 0 { "push" } else { "email" };
                    writeln!(text, "  - id: {id}\n    send: {{ channel: {channel}, template: tpl-{t} }}")
                }
                3 => writeln!(text, "  - id: {id}\n    update: {{ user.step_{s}: \"{{{{journey.id}}}}\" }}"),
                _ => writeln!(
                    text,
                    "  - id: {id}\n    wait_for:\n      event: order_completed\n      where: {{ event.cart_id: \"{{{{entry.cart_id}}}}\" }}\n      timeout: 1d\n      on_event: end"
                ),
            }
            .expect("fmt");
        }
        std::fs::write(root.join(format!("journeys/journey-{j}.yaml")), text).expect("write");
    }
}
