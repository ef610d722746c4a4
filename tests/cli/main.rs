//! The `leader-election` binary, run for real: three `run` tools per backend (file, Redis,
//! PostgreSQL) whose commands never overlap and whose tokens rise; failover after SIGKILL of
//! the leading tool; a leader cut off from Redis by a proxy that stops forwarding, whose
//! command (deaf to SIGTERM) is SIGKILLed before the deadline; signals, exit statuses,
//! `--restart`; `status` and `watch`, in text and JSON; errors that name the flag, never the
//! password.
//!
//! The commands are this test binary re-invoked in a child role (`child_role`): it appends
//! `START token pid ppid t` when it starts and, if it honours SIGTERM, `END token pid t` as its
//! last act; `t` is CLOCK_MONOTONIC, which every process on the machine shares. A command
//! killed by SIGKILL writes no END: a watcher thread polls `/proc` every millisecond and takes
//! the moment it first saw the process gone (or a zombie) as its end — an upper bound.
//! Each test runs alone (a lock), to keep the timing of the others' deadlines honest on a
//! small machine, and uses its own group.
#![cfg(all(target_os = "linux", feature = "cli"))]

mod lives;
mod proxy;
mod tools;

use le_test_support as common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{postgres_url, redis_url, unique};
use lives::{Life, Lives};
use proxy::Proxy;
use rustix::process::Signal;
use tools::{Tool, child_command, invoke, logs};

const BIN: &str = env!("CARGO_BIN_EXE_leader-election");
const TTL: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(200);
const MARGIN: Duration = Duration::from_millis(300);
/// The timing flags of every `run` in these tests.
const TIMING: &[&str] = &[
    "--ttl",
    "3s",
    "--heartbeat",
    "500ms",
    "--retry",
    "200ms",
    "--safety-margin",
    "300ms",
    "--grace",
    "500ms",
];

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn group(name: &str) -> String {
    unique(name).replace('_', "-")
}

// ---------------------------------------------------------------------------------------------
// The command's role.

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("lives file");
    f.write_all(line.as_bytes()).expect("append");
}

/// The command the tools run: run only when a test starts it through a tool.
#[test]
#[ignore = "the command of the cli tests, which run it"]
fn child_role() {
    let log = std::env::var("LE_CLI_LIVES").expect("LE_CLI_LIVES");
    let token = std::env::var("LEADER_ELECTION_FENCING_TOKEN").expect("the token variable");
    assert!(std::env::var("LEADER_ELECTION_GROUP").is_ok());
    assert!(std::env::var("LEADER_ELECTION_PARTICIPANT").is_ok());
    assert!(
        std::env::var("LEADER_ELECTION_URL").is_err(),
        "the URL must not reach the command"
    );
    let pid = std::process::id();
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    let term = Arc::new(AtomicBool::new(false));
    if std::env::var("LE_CLI_IGNORE_TERM").is_err() {
        signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone()).unwrap();
    }
    append(&log, &format!("START {token} {pid} {ppid} {}\n", mono_ns()));
    let exit_after = std::env::var("LE_CLI_EXIT_AFTER_MS")
        .ok()
        .map(|ms| Instant::now() + Duration::from_millis(ms.parse().unwrap()));
    loop {
        if term.load(Ordering::SeqCst) || exit_after.is_some_and(|t| Instant::now() >= t) {
            append(&log, &format!("END {token} {pid} {}\n", mono_ns()));
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ms(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

// ---------------------------------------------------------------------------------------------
// Three tools per backend.

/// Three tools compete; the leading tool is SIGKILLed (its guard kills the orphaned command,
/// another tool's command starts within TTL + retry), the next leader gets SIGTERM (its
/// command ends, it releases, it exits 0, the third takes over), then the third is stopped.
/// At no instant do two commands run; tokens rise.
fn three_tools(url: &str, label: &str) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lives = Lives::new(dir);
    let g = group(&format!("cli-{label}"));
    let mut tools: Vec<Tool> = (0..3)
        .map(|i| Tool::run(dir, &format!("{label}{i}"), url, &g, &lives, false))
        .collect();
    let leader_of = |tools: &[Tool], life: &Life| {
        tools
            .iter()
            .position(|t| t.pid() == life.ppid)
            .unwrap_or_else(|| panic!("no tool ran {life:?}\n{}", logs(tools)))
    };
    let first = lives.wait_start(0, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500)); // the others campaign

    // SIGKILL of the leading tool.
    let i = leader_of(&tools, &first);
    let killed_at = mono_ns();
    tools[i].signal(Signal::KILL);
    tools[i].wait(Duration::from_secs(10));
    let orphan = lives.wait_gone(first.pid, Duration::from_secs(5));
    let second = lives.wait_start(first.token, TTL + RETRY + Duration::from_secs(15));
    let failover = ms(second.start - killed_at);
    assert!(
        failover < TTL + RETRY + Duration::from_secs(5),
        "failover took {failover:?}\n{}",
        logs(&tools)
    );
    let orphan_killed = ms(orphan.gone_seen.unwrap().saturating_sub(killed_at));

    // SIGTERM of the next leader: forwarded, the command ends, the lease is released.
    std::thread::sleep(Duration::from_millis(500));
    let j = leader_of(&tools, &second);
    tools[j].signal(Signal::TERM);
    let status = tools[j].wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", tools[j].log());
    let third = lives.wait_start(second.token, Duration::from_secs(15));
    let k = leader_of(&tools, &third);
    std::thread::sleep(Duration::from_millis(300));
    tools[k].signal(Signal::TERM);
    assert_eq!(tools[k].wait(Duration::from_secs(15)).code(), Some(0));
    lives.wait_gone(third.pid, Duration::from_secs(5));

    let gaps = lives.assert_no_overlap();
    let all = lives.all();
    assert_eq!(all.len(), 3, "{all:#?}\n{}", logs(&tools));
    assert!(tools[i].log().contains("started"), "{}", tools[i].log());
    eprintln!(
        "{label}: SIGKILL → orphaned command killed by the guard after {orphan_killed:?}, next \
         command started after {failover:?}; gaps between commands: {gaps:?}"
    );
}

#[test]
fn three_tools_on_the_file_backend() {
    let locks = tempfile::tempdir().unwrap();
    three_tools(&format!("file://{}", locks.path().display()), "file");
}

#[test]
fn three_tools_on_redis() {
    three_tools(&redis_url(), "redis");
}

#[test]
fn three_tools_on_postgres() {
    three_tools(&postgres_url(), "pg");
}

// ---------------------------------------------------------------------------------------------
// A leader cut off from Redis.

/// The leader reaches Redis through the proxy; its command ignores SIGTERM. Once the proxy
/// stops forwarding, no renew is confirmed, so the term's deadline is at most
/// cut + TTL − margin: the command must be dead (SIGKILLed) by then, and the other tool's
/// command must start only after it.

#[test]
fn a_leader_cut_off_from_redis_kills_its_command_before_the_deadline() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lives = Lives::new(dir);
    let g = group("cli-cut");
    let upstream = url::Url::parse(&redis_url()).unwrap();
    let proxy = Proxy::start(format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(6379)
    ));
    let mut via_proxy = upstream.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    via_proxy.set_query(Some("command_timeout=1s&connect_timeout=1s"));
    let cut_off = Tool::run(dir, "cut", via_proxy.as_str(), &g, &lives, true);
    let first = lives.wait_start(0, Duration::from_secs(30));
    assert_eq!(first.ppid, cut_off.pid());
    let direct = Tool::run(dir, "direct", &redis_url(), &g, &lives, false);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lives.all().len(),
        1,
        "the cut-off tool's command still runs alone"
    );

    let cut_at = mono_ns();
    proxy.cut();
    let bound = cut_at + (TTL - MARGIN).as_nanos() as u64;
    let ended = lives.wait_gone(first.pid, TTL + Duration::from_secs(10));
    let gone = ended.gone_seen.unwrap();
    let tools = [cut_off, direct];
    assert!(
        ended.end_reported.is_none(),
        "the command ignores SIGTERM, yet wrote END: {ended:?}"
    );
    assert!(
        gone <= bound,
        "the cut-off command was seen gone {:?} after the deadline bound\n{}",
        ms(gone - bound),
        logs(&tools)
    );
    let next = lives.wait_start(first.token, Duration::from_secs(20));
    assert_eq!(next.ppid, tools[1].pid(), "{}", logs(&tools));
    lives.assert_no_overlap();
    let log = tools[0].log();
    assert!(log.contains("SIGTERM") && log.contains("SIGKILL"), "{log}");
    eprintln!(
        "cut off: command killed {:?} after the cut, {:?} before the latest possible deadline; \
         the direct tool's command started {:?} after it died",
        ms(gone - cut_at),
        ms(bound - gone),
        ms(next.start - gone)
    );
}

// ---------------------------------------------------------------------------------------------
// Signals, exit statuses, --restart.

#[test]
fn signals_exit_statuses_and_restart() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lives = Lives::new(dir);
    let url = format!("file://{}", dir.join("locks").display());
    let g = group("cli-signals");

    // SIGTERM to a tool whose command ignores it: SIGKILL after the grace; exit 128 + 9.
    let mut a = Tool::run(dir, "a", &url, &g, &lives, true);
    let first = lives.wait_start(0, Duration::from_secs(30));
    let mut b = Tool::run(dir, "b", &url, &g, &lives, false);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    a.signal(Signal::TERM);
    assert_eq!(
        a.wait(Duration::from_secs(15)).code(),
        Some(137),
        "{}",
        a.log()
    );
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "SIGKILL before the grace: {took:?}"
    );
    let killed = lives.wait_gone(first.pid, Duration::from_secs(5));
    assert!(killed.end_reported.is_none());
    let second = lives.wait_start(first.token, Duration::from_secs(15));
    assert_eq!(second.ppid, b.pid());

    // A follower that gets SIGTERM exits 128 + 15. SIGINT reaches the leader's command, which
    // does not handle it and dies of it: the tool exits with its status, 128 + 2.
    let mut c = Tool::run(dir, "c", &url, &g, &lives, false);
    std::thread::sleep(Duration::from_millis(500));
    c.signal(Signal::TERM);
    assert_eq!(
        c.wait(Duration::from_secs(15)).code(),
        Some(143),
        "{}",
        c.log()
    );
    b.signal(Signal::INT);
    assert_eq!(
        b.wait(Duration::from_secs(15)).code(),
        Some(130),
        "{}",
        b.log()
    );
    lives.assert_no_overlap();

    // A command that exits on its own: the tool exits with its status and releases the lease.
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", url.as_str(), "--group", g.as_str()];
        args.extend(TIMING);
        args.extend(extra);
        args.push("--");
        args.extend(cmd);
        invoke(&args, &[])
    };
    let (code, _, err) = run(&[], &["sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");
    let (code, out, _) = invoke(&["status", &url, "--group", &g], &[]);
    assert_eq!(code, 1, "released: {out}");
    let (code, _, err) = run(&[], &["/nonexistent/command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/nonexistent/command"), "{err}");

    // --restart: runs it again while leading, within the same term.
    let runs = dir.join("runs");
    let script = format!("echo $LEADER_ELECTION_FENCING_TOKEN >> {}", runs.display());
    let mut args: Vec<String> = ["run", &url, "--group", &g, "--restart"]
        .map(String::from)
        .to_vec();
    args.extend(TIMING.iter().map(|s| s.to_string()));
    args.extend(["--", "sh", "-c", &script].map(String::from));
    let mut r = Tool::start(dir, "restart", &args, &[]);
    assert!(
        common::wait_for(Duration::from_secs(15), || {
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
                >= 3
        }),
        "{}",
        r.log()
    );
    r.signal(Signal::TERM);
    assert_eq!(r.wait(Duration::from_secs(15)).code(), Some(143));
    let tokens: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(
        tokens.windows(2).all(|w| w[0] == w[1]),
        "one term: {tokens:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// status and watch.

#[test]
fn status_and_watch_follow_a_leader() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lives = Lives::new(dir);
    let url = format!("file://{}", dir.join("locks").display());
    let g = group("cli-status");
    let status_json = || {
        let (code, out, err) = invoke(&["status", &url, "--group", &g, "--json"], &[]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("status --json printed {out:?} ({e}); stderr {err}");
        });
        (code, v)
    };
    let (code, v) = status_json();
    assert_eq!(code, 1);
    assert_eq!(v["group"], g.as_str());
    assert!(v["leader"].is_null());

    let mut watch = Command::new(BIN)
        .args(["watch", &url, "--group", &g, "--json", "--poll", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(15))
            .expect("a watch line")
    };
    assert!(next()["leader"].is_null());

    let mut args: Vec<String> = [
        "run",
        &url,
        "--group",
        &g,
        "--id",
        "node-a",
        "--metadata",
        "role=test",
    ]
    .map(String::from)
    .to_vec();
    args.extend(TIMING.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(child_command(false));
    let env = [("LE_CLI_LIVES", lives.path.display().to_string())];
    let mut a = Tool::start(dir, "node-a", &args, &env);
    let life = lives.wait_start(0, Duration::from_secs(30));

    let (code, v) = status_json();
    assert_eq!(code, 0, "{v}");
    let leader = &v["leader"];
    assert_eq!(leader["participant_id"], "node-a");
    assert_eq!(leader["fencing_token"], life.token);
    assert_eq!(leader["metadata"]["role"], "test");
    assert!(leader["since"].as_str().unwrap().ends_with('Z'));
    let (code, text, _) = invoke(&["status", &url, "--group", &g], &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains("node-a") && text.contains("role=test"),
        "{text}"
    );

    // While its renews succeed, a leader's command runs undisturbed, for many TTLs.
    std::thread::sleep(TTL * 2 + Duration::from_secs(1));
    let now = lives.all();
    assert!(
        now.len() == 1 && now[0].gone_seen.is_none(),
        "the healthy leader's command was stopped: {now:#?}\n{}",
        a.log()
    );
    assert_eq!(status_json().1["leader"]["fencing_token"], life.token);

    let seen = next();
    assert_eq!(seen["leader"]["participant_id"], "node-a", "{seen}");
    assert_eq!(seen["leader"]["fencing_token"], life.token);
    assert_eq!(seen["group"], g.as_str());
    a.signal(Signal::TERM);
    assert_eq!(a.wait(Duration::from_secs(15)).code(), Some(0));
    assert!(next()["leader"].is_null(), "the release shows");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(watch.id() as i32).unwrap(),
        Signal::TERM,
    )
    .unwrap();
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(status_json().0, 1);
    // The URL may come from the environment instead.
    let (code, out, _) = invoke(&["status", "--group", &g], &[("LEADER_ELECTION_URL", &url)]);
    assert_eq!(code, 1, "{out}");
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn errors_name_the_flag_never_the_password() {
    let secret = "redis://user:hunter2@127.0.0.1:1/";
    let (code, out, err) = invoke(&["status", secret, "--group", "g"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("redis") && !err.contains("hunter2") && !out.contains("hunter2"),
        "{err}"
    );
    let (code, _, err) = invoke(&["run", secret, "--group", "g", "--", "true"], &[]);
    assert_eq!(code, 125);
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = invoke(&["watch", secret, "--group", "g"], &[]);
    assert_eq!(code, 2);
    assert!(!err.contains("hunter2"), "{err}");
    let pg = "postgres://u:hunter2@127.0.0.1:1/db?colour=blue";
    let (code, _, err) = invoke(&["status", pg, "--group", "g"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("colour") && !err.contains("hunter2"), "{err}");

    let (code, _, err) = invoke(
        &[
            "run", "memory:", "--group", "g", "--grace", "20s", "--", "true",
        ],
        &[],
    );
    assert_eq!(code, 125);
    assert!(err.contains("--grace") && err.contains("8s"), "{err}");
    let (code, _, err) = invoke(
        &[
            "run", "memory:", "--group", "g", "--ttl", "abc", "--", "true",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--ttl"), "{err}");
    let (code, _, err) = invoke(
        &[
            "run",
            "memory:",
            "--group",
            "g",
            "--ttl",
            "10s",
            "--heartbeat",
            "6s",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(code, 125);
    assert!(err.contains("--heartbeat"), "{err}");
    let (code, _, err) = invoke(&["status", "memory:", "--group", "a b"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--group"), "{err}");
    let (code, _, err) = invoke(&["status", "nosuch://x", "--group", "g"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("URL") && err.contains("nosuch"), "{err}");

    for sub in ["run", "status", "watch"] {
        let (code, out, _) = invoke(&[sub, "--help"], &[]);
        assert_eq!(code, 0);
        assert!(out.contains("Example"), "{sub} --help: {out}");
    }
}
