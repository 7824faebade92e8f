//! Signal handling: each signal maps to what it asks of the daemon.

use linkpool_os::signal::{Signal, Signals};
use nix::sys::signal::{Signal as Sig, raise};
use std::time::Duration;

#[test]
fn term_int_and_hup_are_delivered_as_requests() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut signals = Signals::new().unwrap();
            for (sig, want) in [
                (Sig::SIGHUP, Signal::Reload),
                (Sig::SIGTERM, Signal::Terminate),
                (Sig::SIGINT, Signal::Terminate),
            ] {
                raise(sig).unwrap();
                let got = tokio::time::timeout(Duration::from_secs(5), signals.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{sig} not delivered"));
                assert_eq!(got, want, "{sig}");
            }
        });
}
