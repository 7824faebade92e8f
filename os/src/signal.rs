//! The signals the daemons react to.

use std::io;
use tokio::signal::unix::{Signal as TokioSignal, SignalKind, signal};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop cleanly.
    Terminate,
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP as a stream of [`Signal`]s.
#[derive(Debug)]
pub struct Signals {
    term: TokioSignal,
    int: TokioSignal,
    hup: TokioSignal,
}

impl Signals {
    /// Installs the handlers. Must be called inside a tokio runtime; from then on these
    /// signals no longer kill the process.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
