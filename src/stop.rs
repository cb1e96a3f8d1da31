//! Stopping when asked to: SIGTERM (Kubernetes stopping a Pachyderm worker, a pipeline updated,
//! a node preempted) and SIGINT (Ctrl-C). The first signal only raises a flag, which the stages
//! that run long check between steps, so that they save where they are, deliver what they hold
//! and end with 128 + the signal's number; a second signal ends the process at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// The signal that asked for the stop, if one did.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// A signal that asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: Kubernetes, `kill`.
    Terminate,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Self::Interrupt => SIGINT,
            Self::Terminate => SIGTERM,
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal ended.
    pub fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    /// Sends this signal to the process `pid` (a child that should stop as this process does).
    pub fn send_to(self, pid: u32) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) with a pid of our own child and a valid signal number touches no
            // memory of this process.
            unsafe { libc::kill(pid, self.number()) };
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// Makes SIGINT and SIGTERM ask for a stop; a second one exits at once with 128 + its number.
pub fn install() -> std::io::Result<()> {
    let asked = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered before the flag, so that the first signal finds it unset and goes on.
        flag::register_conditional_shutdown(signal, 128 + signal, asked.clone())?;
        flag::register(signal, asked.clone())?;
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                RECEIVED.store(signal as usize, Ordering::SeqCst);
            })?;
        }
    }
    Ok(())
}

/// The signal that asked for a stop, once one has.
pub fn requested() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) as i32 {
        SIGINT => Some(Signal::Interrupt),
        SIGTERM => Some(Signal::Terminate),
        _ => None,
    }
}

/// A stage that stopped because a signal asked it to: the process ends with the signal's exit
/// code.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
pub struct Interrupted {
    pub signal: Signal,
    /// What was kept and how to go on.
    pub detail: String,
}

impl Interrupted {
    /// An error if a stop was asked for: `detail` says what was kept.
    pub fn check(detail: impl FnOnce() -> String) -> Result<(), Self> {
        match requested() {
            Some(signal) => Err(Self {
                signal,
                detail: detail(),
            }),
            None => Ok(()),
        }
    }
}
