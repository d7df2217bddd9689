//! `sluice validate [DIR]`.

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
    match args.format {
        Format::Json => {
            println!("{}", diags.to_json());
        }
        Format::Human => {
            for d in diags.iter() {
                eprintln!("{:?}", d.to_report());
            }
            let errors = diags.errors().count();
            let warnings = diags.warnings().count();
            match &config {
                Some(c) => {
                    println!(
                    "{} is valid: {} journeys, {} segments, {} templates, {} policies, {} tests{}",
                    args.dir.display(),
                    c.journeys.len(),
                    c.segments.len(),
                    c.templates.len(),
                    c.quiet_hours.len() + c.throttles.len() + c.frequency_caps.len(),
                    c.tests.len(),
                    if warnings > 0 { format!(" ({warnings} warnings)") } else { String::new() }
                )
                }
                None => eprintln!(
                    "{} is invalid: {errors} error{}",
                    args.dir.display(),
                    if errors == 1 { "" } else { "s" }
                ),
            }
        }
    }
    Ok(if diags.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
