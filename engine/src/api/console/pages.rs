//! The bodies of the console's pages, as escaped HTML: the login form, the
//! journeys list, one journey (its drawing, its steps' counts, its
//! versions and canaries), a user's timeline and the dead-letter queue.
//! Every value from the engine or the request goes through [`Esc`].
//! Knows nothing of HTTP or sessions.

use std::fmt::Write as _;

use serde_json::Value;

use journeys::compiled::{Action, Config, Journey};

use super::html::{Esc, Url};
use super::svg;
use crate::api::StepCount;

/// The login form. `next` is where to go after it (a console path).
pub fn login(message: Option<&str>, next: &str) -> String {
    let mut out = String::new();
    out.push_str("<div class=\"login\"><h1>sluice console</h1>");
    if let Some(m) = message {
        let _ = write!(out, "<p class=\"error\" id=\"login-error\">{}</p>", Esc(m));
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/login\">\
         <label for=\"token\">Admin token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"muted\">The token is the one <code>sluice run</code> reads from the \
         Project's admin token variable. It is checked once; the browser keeps a signed session, \
         not the token.</p></div>",
        Esc(next)
    );
    out
}

fn counts_of<'c>(counts: &'c [StepCount], journey: &str, version: u32) -> Vec<&'c StepCount> {
    counts
        .iter()
        .filter(|c| c.journey == journey && c.version == version)
        .collect()
}

fn total(counts: &[&StepCount], f: impl Fn(&StepCount) -> u64) -> u64 {
    counts.iter().map(|c| f(c)).sum()
}

/// Every deployed journey with its totals.
pub fn journeys(config: &Config, counts: &[StepCount], canaries: &[serde_json::Value]) -> String {
    let mut out = String::from("<h1>Journeys</h1>");
    if config.journeys.is_empty() {
        out.push_str("<p class=\"muted\">No journey is deployed.</p>");
        return out;
    }
    out.push_str(
        "<table id=\"journeys\"><thead><tr><th>Journey</th><th>Name</th><th>Entry</th>\
         <th>Version</th><th>Canaries</th><th>Live</th><th>Sent</th><th>Failed</th></tr></thead><tbody>",
    );
    for j in &config.journeys {
        let all: Vec<&StepCount> = counts.iter().filter(|c| c.journey == j.id).collect();
        let _ = write!(
            out,
            "<tr data-journey=\"{id}\"><td><a href=\"/journeys/{url}\">{id}</a></td><td>{name}</td>\
             <td>{entry}</td><td class=\"n\">{version}</td><td>{canary}</td>\
             <td class=\"n\">{live}</td><td class=\"n\">{sent}</td><td class=\"n\">{failed}</td></tr>",
            id = Esc(&j.id),
            url = Esc(&Url(&j.id).to_string()),
            name = Esc(j.name.as_deref().unwrap_or("")),
            entry = Esc(&journeys::graph::describe_entry(j)),
            version = j.version,
            canary = canary_cell(canaries.iter().find(|c| c["journey"] == j.id.as_str())),
            live = total(&all, |c| c.live),
            sent = total(&all, |c| c.sent),
            failed = total(&all, |c| c.failed),
        );
    }
    out.push_str("</tbody></table><p class=\"muted\">Live counts every instance on any version; open a journey for its steps.</p>");
    out
}

/// The canaries column of the journeys table.
fn canary_cell(c: Option<&serde_json::Value>) -> String {
    let Some(c) = c else {
        return "<span class=\"muted\">none</span>".into();
    };
    if let Some(v) = c["canary_version"].as_u64() {
        let broken = if c["broken"] == true {
            " <strong class=\"error\">guard broken</strong>"
        } else {
            ""
        };
        return format!("v{v} at {}%{broken}", c["share"]);
    }
    if !c["rolled_back"].is_null() {
        return format!(
            "<strong class=\"error\">v{} rolled back</strong>",
            c["rolled_back"]["version"]
        );
    }
    "<span class=\"muted\">none</span>".into()
}

fn rate(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// One journey: versions and canaries, the drawing with live counts, and
/// the counts as a table.
pub fn journey(j: &Journey, counts: &[StepCount], canary: Option<&serde_json::Value>) -> String {
    let mine = counts_of(counts, &j.id, j.version);
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>Journey <span id=\"journey-id\">{}</span></h1>",
        Esc(&j.id)
    );
    if let Some(name) = &j.name {
        let _ = write!(out, "<p>{}</p>", Esc(name));
    }
    let _ = write!(
        out,
        "<div data-counts-url=\"/counts?journey={}\"><p class=\"muted\" id=\"updated\">as of the last commit</p></div>",
        Esc(&Url(&j.id).to_string())
    );
    out.push_str("<h2>Versions and canaries</h2><table id=\"versions\"><thead><tr><th>Version</th><th>Role</th><th>Traffic</th><th>Guard rates</th><th>Live</th></tr></thead><tbody>");
    let share = canary
        .filter(|c| !c["canary_version"].is_null())
        .and_then(|c| c["share"].as_f64());
    let _ = write!(
        out,
        "<tr><td class=\"n\">{}</td><td>stable</td><td class=\"n\">{}%</td><td class=\"muted\">—</td><td class=\"n\" data-total=\"live\">{}</td></tr>",
        j.version,
        100.0 - share.unwrap_or(0.0),
        total(&mine, |c| c.live)
    );
    let mut note = "Canaries: none.".to_owned();
    if let (Some(c), Some(share)) = (canary, share) {
        let v = c["canary_version"].as_u64().unwrap_or(0);
        let live: u64 = counts
            .iter()
            .filter(|s| s.journey == j.id && u64::from(s.version) == v)
            .map(|s| s.live)
            .sum();
        let guards: Vec<String> = c["guards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                format!(
                    "{} ({}: canary {}, stable {})",
                    Esc(g["guard"].as_str().unwrap_or("")),
                    Esc(g["state"].as_str().unwrap_or("")),
                    rate(&g["canary_rate"]),
                    rate(&g["stable_rate"])
                )
            })
            .collect();
        let _ = write!(
            out,
            "<tr data-canary=\"{v}\"><td class=\"n\">{v}</td><td>canary</td><td class=\"n\">{share}%</td><td>{}</td><td class=\"n\">{live}</td></tr>",
            if guards.is_empty() { "no guards".to_owned() } else { guards.join("<br>") }
        );
        note = format!(
            "Canary: version {v} takes {share}% of new entries{}.",
            if c["broken"] == true {
                "; a guard is broken"
            } else {
                ""
            }
        );
    } else if let Some(rb) = canary.map(|c| &c["rolled_back"]).filter(|r| !r.is_null()) {
        note = format!(
            "Canaries: none. Version {} was rolled back at {}: {}.",
            rb["version"],
            Esc(rb["at"].as_str().unwrap_or("")),
            Esc(rb["reason"].as_str().unwrap_or(""))
        );
    }
    let _ = write!(out, "</tbody></table><p id=\"canaries\">{note}</p>");
    out.push_str("<h2>State machine</h2>");
    out.push_str(&svg::journey(j, &mine));
    let _ = write!(
        out,
        "<h2>Steps of version {}</h2><table id=\"steps\"><thead><tr><th>Step</th><th>Does</th>\
         <th>Live</th><th>Sent</th><th>Deferred</th><th>Suppressed</th><th>Failed</th></tr></thead><tbody>",
        j.version
    );
    for s in &j.states {
        let c = mine
            .iter()
            .find(|c| c.step == s.id)
            .copied()
            .cloned()
            .unwrap_or_default();
        let sends = matches!(s.action, Action::Send { .. });
        let cell = |field: &str, v: u64| {
            format!(
                "<td class=\"n\" data-step=\"{}\" data-field=\"{field}\">{v}</td>",
                Esc(&s.id)
            )
        };
        let _ = write!(
            out,
            "<tr data-row=\"{}\"><td>{}</td><td>{}</td>{}",
            Esc(&s.id),
            Esc(&s.id),
            Esc(&journeys::graph::describe(&s.action)),
            cell("live", c.live)
        );
        if sends {
            for (f, v) in [
                ("sent", c.sent),
                ("deferred", c.deferred),
                ("suppressed", c.suppressed),
                ("failed", c.failed),
            ] {
                out.push_str(&cell(f, v));
            }
        } else {
            out.push_str("<td colspan=\"4\" class=\"muted\">—</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    // Instances still on other versions (before a redeploy).
    let others: Vec<&StepCount> = counts
        .iter()
        .filter(|c| c.journey == j.id && c.version != j.version)
        .collect();
    if !others.is_empty() {
        out.push_str("<h2>Other versions</h2><table id=\"other-versions\"><thead><tr><th>Version</th><th>Step</th><th>Live</th><th>Sent</th><th>Deferred</th><th>Suppressed</th><th>Failed</th></tr></thead><tbody>");
        for c in others {
            let _ = write!(
                out,
                "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                c.version,
                Esc(&c.step),
                c.live,
                c.sent,
                c.deferred,
                c.suppressed,
                c.failed
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

/// The counts of a journey's deployed version, keyed by step (what the
/// page's script polls).
pub fn counts_json(j: &Journey, counts: &[StepCount]) -> Value {
    let mut steps = serde_json::Map::new();
    let mut live = 0;
    for s in &j.states {
        let c = counts
            .iter()
            .find(|c| c.journey == j.id && c.version == j.version && c.step == s.id)
            .cloned()
            .unwrap_or_default();
        live += c.live;
        steps.insert(
            s.id.clone(),
            serde_json::json!({
                "live": c.live, "sent": c.sent, "deferred": c.deferred,
                "suppressed": c.suppressed, "failed": c.failed,
            }),
        );
    }
    serde_json::json!({
        "journey": j.id, "version": j.version, "steps": steps,
        "total": {"live": live},
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The instant an RFC 3339 timestamp names (`None`, sorted first, for one
/// that is not).
fn instant(at: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(at).ok()
}

/// One row of a user's timeline.
struct Row {
    at: String,
    what: &'static str,
    journey: String,
    step: String,
    detail: String,
    class: String,
}

/// The user lookup form, and the user's timeline when found.
pub fn user(query: Option<&str>, found: Option<&Value>) -> String {
    let mut out = String::from("<h1>User lookup</h1>");
    let _ = write!(
        out,
        "<form method=\"get\" action=\"/users\"><input type=\"text\" name=\"id\" id=\"user-id\" \
         placeholder=\"user id\" value=\"{}\" required> <button type=\"submit\" id=\"lookup\">Look up</button></form>",
        Esc(query.unwrap_or(""))
    );
    let Some(id) = query else {
        return out;
    };
    let Some(v) = found else {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"unknown-user\">No user <code>{}</code> in the store.</p>",
            Esc(id)
        );
        return out;
    };
    let _ = write!(out, "<h2>User <code id=\"user\">{}</code></h2>", Esc(id));
    let profile = serde_json::to_string_pretty(&v["profile"]).unwrap_or_else(|e| e.to_string());
    let _ = write!(
        out,
        "<h2>Profile</h2><pre id=\"profile\">{}</pre>",
        Esc(&profile)
    );
    out.push_str("<h2>Live instances</h2>");
    let instances = v["instances"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if instances.is_empty() {
        out.push_str("<p class=\"muted\" id=\"instances\">None.</p>");
    } else {
        out.push_str("<table id=\"instances\"><thead><tr><th>Journey</th><th>Version</th><th>Step</th><th>Entered</th><th>Waiting until</th><th>Holdout</th></tr></thead><tbody>");
        for i in instances {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                Esc(&text(&i["journey"])),
                Esc(&text(&i["version"])),
                Esc(&text(&i["step"])),
                Esc(&text(&i["entered_at"])),
                Esc(&text(&i["waiting_until"])),
                Esc(&text(&i["holdout"]))
            );
        }
        out.push_str("</tbody></table>");
    }
    let mut rows: Vec<Row> = Vec::new();
    for e in v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let props = &e["properties"];
        rows.push(Row {
            at: text(&e["at"]),
            what: "event",
            journey: String::new(),
            step: String::new(),
            detail: format!(
                "{} {}",
                text(&e["event"]),
                if props.as_object().is_some_and(|m| !m.is_empty()) {
                    props.to_string()
                } else {
                    String::new()
                }
            ),
            class: String::new(),
        });
    }
    for b in v["journeys"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if !b["last_entered"].is_null() {
            rows.push(Row {
                at: text(&b["last_entered"]),
                what: "entered",
                journey: text(&b["journey"]),
                step: String::new(),
                detail: format!("entries so far: {}", text(&b["entries"])),
                class: String::new(),
            });
        }
        if !b["last_ended"].is_null() {
            rows.push(Row {
                at: text(&b["last_ended"]),
                what: "ended",
                journey: text(&b["journey"]),
                step: String::new(),
                detail: String::new(),
                class: String::new(),
            });
        }
    }
    for i in instances {
        rows.push(Row {
            at: text(&i["entered_at"]),
            what: "on step",
            journey: text(&i["journey"]),
            step: text(&i["step"]),
            detail: match text(&i["waiting_until"]) {
                w if w.is_empty() => "now".to_owned(),
                w => format!("now, waiting until {w}"),
            },
            class: String::new(),
        });
    }
    // Messages come most recent first; taken oldest first so that those of
    // one instant keep the order they were decided in.
    for m in v["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .rev()
    {
        let outcome = text(&m["outcome"]);
        let reason = text(&m["reason"]);
        rows.push(Row {
            at: text(&m["at"]),
            what: "message",
            journey: text(&m["journey"]),
            step: text(&m["step"]),
            detail: if reason.is_empty() {
                format!("{} {outcome}", text(&m["channel"]))
            } else {
                format!("{} {outcome}: {reason}", text(&m["channel"]))
            },
            class: format!("outcome-{outcome}"),
        });
    }
    // By instant, not as text: `…:34Z` (a whole second prints without a
    // fraction) is earlier than `…:34.951Z`, though it sorts after it.
    rows.sort_by_cached_key(|r| (instant(&r.at), r.at.clone()));
    out.push_str("<h2>Timeline</h2>");
    if rows.is_empty() {
        out.push_str("<p class=\"muted\" id=\"timeline\">Nothing recorded.</p>");
        return out;
    }
    out.push_str("<table id=\"timeline\"><thead><tr><th>At</th><th>What</th><th>Journey</th><th>Step</th><th>Detail</th></tr></thead><tbody>");
    for r in rows {
        let _ = write!(
            out,
            "<tr class=\"{}\" data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(&r.class),
            Esc(r.what),
            Esc(&r.at),
            Esc(r.what),
            Esc(&r.journey),
            Esc(&r.step),
            Esc(r.detail.trim())
        );
    }
    out.push_str("</tbody></table><p class=\"muted\">Events: those the user's record keeps for the config's <code>history</code> conditions (sluice keeps no other event log). Messages: the last 100.</p>");
    out
}

/// The dead-letter queue, oldest first.
pub fn dead_letters(letters: &[Value], limit: usize) -> String {
    let mut out = String::from("<h1>Dead letters</h1>");
    if letters.is_empty() {
        out.push_str("<p class=\"muted\" id=\"dlq-empty\">The dead-letter queue is empty.</p>");
        return out;
    }
    let _ = write!(
        out,
        "<p>{} shown (oldest first, at most {limit}). Replay with <code>sluice dlq replay</code>.</p>",
        letters.len()
    );
    out.push_str("<table id=\"dlq\"><thead><tr><th>Id</th><th>At</th><th>User</th><th>Journey</th><th>Version</th><th>Step</th><th>Channel</th><th>Template</th><th>Attempts</th><th>Reason</th></tr></thead><tbody>");
    for l in letters {
        let user = text(&l["user"]);
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><a href=\"/users?id={}\">{}</a></td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"reason\">{}</td></tr>",
            Esc(&text(&l["id"])),
            Esc(&text(&l["at"])),
            Esc(&Url(&user).to_string()),
            Esc(&user),
            Esc(&text(&l["journey"])),
            Esc(&text(&l["version"])),
            Esc(&text(&l["step"])),
            Esc(&text(&l["channel"])),
            Esc(&text(&l["template"])),
            Esc(&text(&l["attempts"])),
            Esc(&text(&l["reason"]))
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EVIL: &str = "<script>alert(1)</script>";

    #[test]
    fn a_user_id_with_markup_is_escaped_everywhere() {
        let v = json!({
            "user": EVIL,
            "profile": {"id": EVIL, "name": "<img src=x onerror=alert(1)>"},
            "instances": [{"journey": "j", "version": 1, "step": EVIL, "entered_at": "2026-01-01T00:00:00.000Z"}],
            "events": [{"at": "2026-01-01T00:00:00.000Z", "event": EVIL, "properties": {"x": EVIL}}],
            "journeys": [],
            "messages": [{"at": "2026-01-01T00:00:01.000Z", "journey": "j", "step": "s", "channel": "email", "outcome": "failed", "reason": EVIL}],
        });
        for html in [
            user(Some(EVIL), Some(&v)),
            user(Some(EVIL), None),
            login(Some(EVIL), EVIL),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("<img"), "{html}");
        }
        let dlq = dead_letters(&[json!({"id": 1, "user": EVIL, "reason": EVIL})], 10);
        assert!(!dlq.contains("<script>"));
        assert!(dlq.contains("/users?id=%3Cscript%3Ealert%281%29%3C%2Fscript%3E"));
    }

    /// The timeline is in time order although the engine prints a whole
    /// second without a fraction (`…:34Z` sorted after `…:34.951Z` as
    /// text), and messages of one instant stay in the order they were
    /// decided (the view lists them most recent first).
    #[test]
    fn the_timeline_is_in_time_order() {
        let v = json!({
            "user": "u",
            "profile": {"id": "u"},
            "instances": [],
            "events": [{"at": "2026-12-02T04:33:34Z", "event": "order_completed", "properties": {}}],
            "journeys": [],
            "messages": [
                {"at": "2026-12-02T04:33:34.951Z", "journey": "j", "step": "hook", "channel": "webhook", "outcome": "failed", "reason": "r"},
                {"at": "2026-12-02T04:33:34Z", "journey": "j", "step": "second", "channel": "email", "outcome": "sent"},
                {"at": "2026-12-02T04:33:34Z", "journey": "j", "step": "first", "channel": "email", "outcome": "sent"},
                {"at": "2026-12-02T04:33:07.5Z", "journey": "j", "step": "earlier", "channel": "email", "outcome": "sent"},
            ],
        });
        let html = user(Some("u"), Some(&v));
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("`{needle}` not in {html}"))
        };
        let order = [
            at("<td>earlier</td>"),
            at("order_completed"),
            at("<td>first</td>"),
            at("<td>second</td>"),
            at("<td>hook</td>"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {html}");
    }
}
