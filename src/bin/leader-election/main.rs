//! `leader-election`: the crate's command-line tool (feature `cli`), for programs in any
//! language. `run` campaigns and runs a command only while leading (`run.rs`, with the child
//! process in `child.rs` and the watchdog that outlives a killed tool in `guard.rs`); `status`
//! and `watch` read who leads (`query.rs`). This file sets up logging, dispatches, and turns
//! the library's errors into messages that name the flag at fault — never the URL, which may
//! hold a password.
#![forbid(unsafe_code)]

mod args;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod child;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod guard;
mod query;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod run;
mod signals;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use leader_election::Error;

use args::{Cli, Command};

/// Exit status of `run` when the tool itself fails.
pub const EXIT_TOOL_FAILED: u8 = 125;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level);
    let code = match cli.command {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Command::Run(a) => run::run(a),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Command::Guard => guard::run(),
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Command::Run(_) | Command::Guard => {
            log::error!("`run` is supported on Linux only");
            EXIT_TOOL_FAILED
        }
        Command::Status(a) => query::status(&a),
        Command::Watch(a) => query::watch(&a),
    };
    ExitCode::from(code)
}

/// Messages on stderr: `time leader-election[pid] LEVEL message`. `--log-level` wins over
/// `RUST_LOG`, which wins over the default, info.
fn init_logging(level: Option<log::LevelFilter>) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if let Some(level) = level {
        builder.filter_level(level);
    }
    let pid = std::process::id();
    builder.format(move |buf, record| {
        writeln!(
            buf,
            "{} leader-election[{pid}] {}: {}",
            buf.timestamp_millis(),
            record.level(),
            record.args()
        )
    });
    builder.target(env_logger::Target::Stderr);
    let _ = builder.try_init();
}

/// An error for the user: the library's error with its causes, an option's name turned into
/// the flag that sets it. Library errors never hold a URL or a password.
pub fn explain(e: &Error) -> String {
    match e {
        Error::InvalidConfig { field, rule } => {
            format!("invalid {}: {rule}", flag_of(field))
        }
        other => other.report(),
    }
}

/// The flag (or argument) that sets a library option.
fn flag_of(field: &str) -> String {
    let flag = match field {
        "url" => "URL",
        "group" => "--group",
        "participant_id" => "--id",
        "lease_ttl" => "--ttl",
        "heartbeat_interval" => "--heartbeat",
        "retry_interval" => "--retry",
        "safety_margin" => "--safety-margin",
        "poll_interval" => "--poll",
        "call_timeout" => "--timeout",
        f if f.starts_with("metadata") => "--metadata",
        // A URL parameter (`?table=…`) or another option: say what the library said.
        other => return format!("{other} (in the URL)"),
    };
    flag.to_owned()
}
