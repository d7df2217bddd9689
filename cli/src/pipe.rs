//! Printing for a pipeline: what a command prints goes to stdout through
//! [`out!`] and [`outln!`], and a reader that went away (`sluice dlq list |
//! head`) ends the command quietly with exit 0, as Unix tools stop, instead
//! of `println!`'s panic ("failed printing to stdout", exit 101). Any other
//! write error is one sentence and exit 1.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// `print!`, stopping quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::pipe::write(format_args!($($arg)*), false)
    };
}

/// `println!`, stopping quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::pipe::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::pipe::write(format_args!($($arg)*), true)
    };
}

pub fn write(args: Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| match newline {
        true => out.write_all(b"\n"),
        false => Ok(()),
    });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}
