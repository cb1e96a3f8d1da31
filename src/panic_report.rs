//! What the user sees if the program ever panics: one line saying it is an internal error, where
//! it happened and where to report it, instead of Rust's message and backtrace hint; and an exit
//! code of its own, so that scripts and Pachyderm can tell a bug from a refused input.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::{self, AssertUnwindSafe, Location};
use std::process::ExitCode;

/// `EX_SOFTWARE` of sysexits.h: an internal software error.
pub const EXIT_CODE: u8 = 70;

const REPORT_TO: &str = "the mnist issue tracker (README.md, \"Reporting a bug\")";

/// Replaces Rust's panic message with ours. `RUST_BACKTRACE=1` still adds the backtrace.
pub fn install() {
    panic::set_hook(Box::new(|info| {
        eprintln!("{}", message(info.payload(), info.location()));
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            eprintln!("{backtrace}");
        }
    }));
}

/// Runs `command`; a panic in it (already reported by the hook) ends in [`EXIT_CODE`].
pub fn exit_code_of(command: impl FnOnce() -> ExitCode) -> ExitCode {
    panic::catch_unwind(AssertUnwindSafe(command)).unwrap_or(ExitCode::from(EXIT_CODE))
}

fn message(payload: &dyn Any, location: Option<&Location>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let place = location.map_or(String::new(), |at| {
        format!(" at {}:{}", at.file(), at.line())
    });
    format!(
        "error: internal error in mnist {} (a bug, not a problem with your input): {what}{place}; \
         please report it, with the command you ran, to {REPORT_TO}",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the copy of this test binary that `a_panic_is_one_line_and_its_own_exit_code`
    /// starts, where a panic may end the process.
    const CHILD: &str = "MNIST_PANIC_REPORT_CHILD";

    #[test]
    fn the_message_names_the_panic_its_place_and_where_to_report() {
        let at = Location::caller();
        let owned: Box<dyn Any> = Box::new(format!("index {} out of bounds", 7));
        let line = message(owned.as_ref(), Some(at));
        assert!(
            line.starts_with("error: internal error in mnist "),
            "{line}"
        );
        assert!(
            line.contains(": index 7 out of bounds at src/panic_report.rs:"),
            "{line}"
        );
        assert!(line.contains(REPORT_TO), "{line}");
        assert!(message(&"static", None).contains(": static; please report"));
        assert!(message(&42_u8, None).contains(": no message; please report"));
    }

    #[test]
    fn a_panic_is_one_line_and_its_own_exit_code() {
        if std::env::var_os(CHILD).is_some() {
            install();
            let code = exit_code_of(|| panic!("the child panics"));
            let panicked = code == ExitCode::from(EXIT_CODE);
            std::process::exit(if panicked { EXIT_CODE.into() } else { 0 });
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic_report::tests::a_panic_is_one_line_and_its_own_exit_code",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(i32::from(EXIT_CODE)), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("internal error") && lines[0].contains("the child panics"));
        assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    }
}
