//! The signals the tool handles (SIGINT, SIGTERM, SIGHUP), delivered as numbers on a channel
//! by a thread of signal-hook's, so the main loops can `select!` on them with everything else.

use crossbeam_channel::Receiver;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The stopping signals, from now on caught instead of ending the process.
pub fn stopping() -> std::io::Result<Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// A signal's name, for messages.
pub fn name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("signal {sig}"))
}
