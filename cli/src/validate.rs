//! `sluice validate [DIR]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Format;

#[derive(clap::Args)]
pub struct Args {
    /// The config repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// `human` (miette reports) or `json` (one document).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (config, diags) = journeys::check(&args.dir);
    // Write errors (a closed pipe, `| head`) end the output, not the
    // process: the exit code still tells the result.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut err = std::io::BufWriter::new(std::io::stderr().lock());
    match args.format {
        Format::Json => {
            let _ = writeln!(out, "{}", diags.to_json());
        }
        Format::Human => {
            for d in diags.iter() {
                if writeln!(err, "{:?}", d.to_report()).is_err() {
                    break;
                }
            }
            let errors = diags.errors().count();
            let warnings = diags.warnings().count();
            let _ = match &config {
                Some(c) => writeln!(
                    out,
                    "{} is valid: {}, {}, {}, {}, {}{}",
                    args.dir.display(),
                    count(c.journeys.len(), "journey", "journeys"),
                    count(c.segments.len(), "segment", "segments"),
                    count(c.templates.len(), "template", "templates"),
                    count(
                        c.quiet_hours.len() + c.throttles.len() + c.frequency_caps.len(),
                        "policy",
                        "policies"
                    ),
                    count(c.tests.len(), "test", "tests"),
                    if warnings > 0 {
                        format!(" ({})", count(warnings, "warning", "warnings"))
                    } else {
                        String::new()
                    }
                ),
                None => writeln!(
                    err,
                    "{} is invalid: {errors} error{}",
                    args.dir.display(),
                    if errors == 1 { "" } else { "s" }
                ),
            };
        }
    }
    let _ = out.flush();
    let _ = err.flush();
    Ok(if diags.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `1 journey`, `2 journeys`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(0, "journey", "journeys"), "0 journeys");
        assert_eq!(count(1, "policy", "policies"), "1 policy");
        assert_eq!(count(2, "warning", "warnings"), "2 warnings");
    }
}
