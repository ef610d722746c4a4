//! Log capture for tests that check what the library logs (no secrets, warnings about hung
//! calls): the first call installs a logger that keeps every line of this test process, at
//! every level, formatted with its arguments.

use std::sync::{Mutex, OnceLock};

/// Every log line so far, as `LEVEL target: message`.
pub static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

/// Everything at every level — except TRACE of the HTTP client (`ureq`, `ureq_proto`), which at
/// that level logs whole requests, credentials included, by design (see the README): the
/// library cannot prevent that, and users are told to keep those targets below TRACE.
impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() < log::Level::Trace || !metadata.target().starts_with("ureq")
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        if let Ok(mut lines) = LINES.lock() {
            lines.push(line);
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger once per process (panics if another logger was installed).
pub fn capture() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Whether any captured line satisfies `f`.
pub fn any(f: impl Fn(&str) -> bool) -> bool {
    LINES
        .lock()
        .map(|l| l.iter().any(|s| f(s)))
        .unwrap_or(false)
}
