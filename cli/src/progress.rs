//! Progress bars on stderr for long commands (`simulate`, `report`),
//! drawn only when stderr is a terminal: piped or redirected, a command
//! prints nothing but its results and diagnostics.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units with `template` (indicatif's syntax), or `None`
/// when stderr is not a terminal.
pub fn bar(len: u64, template: &str) -> Option<ProgressBar> {
    styled(ProgressBar::new(len), template)
}

/// A spinner (the total is unknown), or `None` off a terminal.
pub fn spinner(template: &str) -> Option<ProgressBar> {
    styled(ProgressBar::new_spinner(), template)
}

fn styled(bar: ProgressBar, template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}
