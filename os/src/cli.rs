//! Output of the two command lines. A write that fails (stdout or stderr is a closed pipe,
//! as in `linkpool status | head -0` or `linkpool frobnicate 2>&1 | true`) must not panic
//! (`println!` does, and the release build aborts with 134): the exit status has to stay
//! the one the command meant (2 for a usage error).

use std::fmt;
use std::io::{self, Write as _};
use std::process::ExitCode;

/// Writes `args` and a line break to stdout. A closed stdout is an error for the caller.
pub fn stdout_line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes `text` to stdout as it is (no line break added).
pub fn stdout_text(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `args` and a line break to stderr; a failure is ignored (there is nowhere left
/// to report it).
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// What a command does when its output cannot be written: says so on stderr (if that is
/// still open) and fails with status 1.
pub fn output_failed(program: &str, e: &io::Error) -> ExitCode {
    stderr_line(format_args!("{program}: cannot write the output: {e}"));
    ExitCode::FAILURE
}
