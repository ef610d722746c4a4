//! The command line, as clap parses it: the global `--log-level`, the three subcommands with
//! their flags and examples, and the hidden `__guard` role the tool starts itself in (see
//! `guard.rs`). Durations are humantime's (`500ms`, `10s`, `1m`).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Leader election for any program: run a command only while this process leads a group, see
/// who leads, follow the changes.
#[derive(Parser, Debug)]
#[command(name = "leader-election", version, about, long_about = None)]
#[command(
    after_help = "Backends: memory:, file:///dir, and those built in with their cargo \
features: postgres://…, redis://…, rediss://…, zookeeper://…. Put the URL in LEADER_ELECTION_URL \
instead of the command line to keep a password out of `ps`."
)]
pub struct Cli {
    /// Log level of the messages on stderr: error, warn, info, debug, trace, off (default:
    /// RUST_LOG if set, else info).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Campaign for leadership and run COMMAND while leading; stop it (SIGTERM, then SIGKILL)
    /// before leadership can end, then campaign again.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Show who leads a group now. Exit status: 0 someone leads, 1 nobody leads, 2 error.
    #[command(
        after_help = "Example:\n  leader-election status redis://127.0.0.1/ --group \
nightly-report --json"
    )]
    Status(QueryArgs),
    /// Follow a group's leadership changes without campaigning (one line per change).
    #[command(
        after_help = "Example:\n  leader-election watch postgres://app@db/app --group \
nightly-report --json\n\nRuns until SIGINT or SIGTERM (exit status 0); exit status 2 on an \
error at start."
    )]
    Watch(WatchArgs),
    /// The watchdog the tool starts itself as (internal).
    #[command(name = "__guard", hide = true)]
    Guard,
}

const RUN_HELP: &str = "\
Example:
  leader-election run redis://127.0.0.1:6379/ --group nightly-report --ttl 15s --grace 3s \\
      -- /usr/local/bin/report --all

COMMAND runs in its own process group with LEADER_ELECTION_GROUP, LEADER_ELECTION_PARTICIPANT and
LEADER_ELECTION_FENCING_TOKEN set. While renews succeed it runs undisturbed. When the term's
deadline (last confirmed renew + ttl − safety margin) comes within grace + 500 ms, or the term is
lost, its group gets SIGTERM, and SIGKILL 500 ms before the deadline; then the term is released
and the tool campaigns again. If COMMAND exits on its own, the tool releases the lease and exits
with its status (with --restart: runs it again while still leading). SIGINT, SIGTERM and SIGHUP
are forwarded to COMMAND's group (SIGKILL after grace; a second signal kills at once), then the
tool releases the lease and exits with COMMAND's status.

Exit status: COMMAND's status (128 + N if it died of signal N); 128 + N if the tool got signal N
while no command ran; 125 the tool failed (bad URL, backend, options); 126 COMMAND could not be
executed; 127 COMMAND was not found; 2 bad usage.";

/// Where and which group: shared by every subcommand.
#[derive(Args, Debug)]
pub struct Target {
    /// Backend URL (memory:, file:///dir, redis://…, postgres://…, zookeeper://…).
    #[arg(
        env = "LEADER_ELECTION_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub url: String,

    /// Election group: 1–128 characters from [A-Za-z0-9._-].
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub group: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,

    /// This participant's id (default: hostname-pid-random).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// Lease TTL: how long a lease lasts without a renew.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub ttl: Duration,

    /// How often the leader renews (at most half of ttl − safety margin).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub heartbeat: Duration,

    /// How often a follower campaigns (with jitter).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub retry: Duration,

    /// How much earlier than the lease's end the term ends locally (default: ttl / 10).
    #[arg(long, value_parser = duration)]
    pub safety_margin: Option<Duration>,

    /// How long COMMAND gets between SIGTERM and SIGKILL. Must be below
    /// ttl − safety margin − heartbeat − 500 ms, so a healthy leader's renews keep it running.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub grace: Duration,

    /// Run COMMAND again when it exits, as long as this process still leads (at most once a
    /// second).
    #[arg(long)]
    pub restart: bool,

    /// Metadata stored with the leader record (KEY=VALUE; repeatable), shown by `status`.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,

    /// The command to run while leading, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub target: Target,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// How long reading the leader may take.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub query: QueryArgs,

    /// How often the leader is read (backends that push changes report releases sooner).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub poll: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 500ms, 10s, 1m)"))
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
