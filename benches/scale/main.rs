//! Scale benchmark: N electors, each on its own group, in one process, on the memory provider
//! and on live Redis, PostgreSQL and ZooKeeper servers; then the server-side request rate of
//! 100 idle followers, polling every retry interval ("before") and as a safety net only
//! ("after", the default). Prints start time, threads, RSS, CPU over a steady window, CPU per
//! renew (and the client's own cost of one renew, measured in a plain loop), spurious losses
//! and the smallest slack any leader had before its deadline, against the targets.
//!
//! ```text
//! cargo bench --bench scale --all-features                 # the full run (≈ 10 minutes)
//! cargo bench --bench scale --all-features -- --quick      # CI smoke: small N, short windows
//! cargo bench --bench scale --all-features -- redis:10000  # one scenario
//! cargo bench --bench scale --all-features -- idle:redis   # one idle-follower scenario
//! ```
//!
//! Every scenario runs in a child process of its own (this binary again), so threads and
//! memory are its own. Servers: `LE_REDIS_URL`, `LE_POSTGRES_URL`, `LE_ZOOKEEPER_HOSTS`
//! (defaults: the service script's, on 127.0.0.1). Each lease TTL is 10 s, heartbeat 3 s.

mod idle;
mod probe;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leader_election::{Elector, LeadershipChange, Provider};
use probe::Probe;

const TTL: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_secs(2);

/// The connection URL of `backend`.
pub fn url(backend: &str) -> String {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    match backend {
        "memory" => "memory:".into(),
        "redis" => env("LE_REDIS_URL", "redis://127.0.0.1:6379/"),
        "postgres" => env(
            "LE_POSTGRES_URL",
            "postgres://leader:leader-secret@127.0.0.1:5432/leader_election?sslmode=disable",
        ),
        "zookeeper" => format!(
            "zookeeper://{}/le-bench-scale",
            env("LE_ZOOKEEPER_HOSTS", "127.0.0.1:2181")
        ),
        other => panic!("unknown backend {other}"),
    }
}

pub fn provider(backend: &str) -> Arc<dyn Provider> {
    match leader_election::connect(&url(backend)) {
        Ok(p) => Arc::from(p),
        Err(e) => panic!("{backend}: {}", e.report()),
    }
}

/// One scenario in this process: `n` leaders on `backend`, measured over `window`.
fn run_scale(backend: &str, n: usize, window: Duration) -> String {
    let inner = provider(backend);
    let probe = Probe::new(inner.clone(), TTL - TTL / 10);
    let stats = probe.stats.clone();
    let tag = format!("scale-{}-{backend}", std::process::id());
    let started = Instant::now();
    let mut electors = Vec::with_capacity(n);
    let mut changes = Vec::with_capacity(n);
    for i in 0..n {
        let e = Elector::builder(probe.clone())
            .group(format!("{tag}-{i}"))
            .participant_id("p")
            .lease_ttl(TTL)
            .heartbeat_interval(HEARTBEAT)
            .retry_interval(RETRY)
            .start()
            .unwrap_or_else(|e| panic!("start #{i}: {}", e.report()));
        changes.push(e.subscribe());
        electors.push(e);
    }
    let start_s = started.elapsed().as_secs_f64();
    let end = Instant::now() + Duration::from_secs(120);
    while electors.iter().any(|e| !e.is_leader()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let leading = electors.iter().filter(|e| e.is_leader()).count();
    let all_leading_s = started.elapsed().as_secs_f64();
    // One heartbeat to settle, then the steady window.
    std::thread::sleep(HEARTBEAT);
    for c in &changes {
        c.try_iter().for_each(drop);
    }
    stats.measure(true);
    let renews0 = stats.renews.load(std::sync::atomic::Ordering::SeqCst);
    let switches0 = probe::context_switches();
    let cpu0 = probe::process_cpu();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = probe::process_cpu() - cpu0;
    let switches = probe::context_switches() - switches0;
    let elapsed = t0.elapsed();
    let renews = stats.renews.load(std::sync::atomic::Ordering::SeqCst) - renews0;
    let min_slack = stats.min_slack();
    stats.measure(false);
    let losses: usize = changes
        .iter()
        .map(|c| {
            c.try_iter()
                .filter(|ch| matches!(ch, LeadershipChange::Lost { .. }))
                .count()
        })
        .sum();
    let threads = probe::status_field("Threads");
    let rss_mb = probe::status_field("VmRSS") as f64 / 1024.0;
    let hwm_mb = probe::status_field("VmHWM") as f64 / 1024.0;
    // The client's own cost of one renew, on this thread, while the electors run.
    let calls = if backend == "memory" { 20_000 } else { 2_000 };
    let (raw_cpu, raw_wall) = probe::raw_renew_cost(&*inner, &format!("{tag}-raw"), calls);
    let shutdown = Instant::now();
    let shut: Vec<_> = electors.into_iter().map(|e| e.shutdown()).collect();
    let failed = shut.iter().filter(|r| r.is_err()).count();
    let cpu_per_renew = if renews > 0 { cpu / renews as u32 } else { cpu };
    format!(
        "RESULT backend={backend} n={n} leading={leading} start_s={start_s:.2} \
         all_leading_s={all_leading_s:.2} threads={threads} rss_mb={rss_mb:.1} hwm_mb={hwm_mb:.1} \
         cpu_pct={:.1} renews={renews} cpu_per_renew_us={:.1} raw_cpu_us={:.1} raw_wall_us={:.1} \
         losses={losses} renew_errors={} min_slack_ms={} shutdown_s={:.2} shutdown_errors={failed} \
         switches_per_renew={:.2}",
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        cpu_per_renew.as_secs_f64() * 1e6,
        raw_cpu.as_secs_f64() * 1e6,
        raw_wall.as_secs_f64() * 1e6,
        stats.renew_errors.load(std::sync::atomic::Ordering::SeqCst),
        min_slack.map_or("none".into(), |s| s.as_millis().to_string()),
        shutdown.elapsed().as_secs_f64(),
        switches as f64 / renews.max(1) as f64,
    )
}

/// A `key=value` field of a result line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("?")
}

fn num(line: &str, key: &str) -> f64 {
    field(line, key).parse().unwrap_or(f64::NAN)
}

/// Runs `args` in a child process (this binary) and returns its `RESULT` line.
fn child(args: &[String]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe).arg("--child").args(args).output().ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("RESULT"));
    if line.is_none() || !out.status.success() {
        eprintln!(
            "scenario {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    line.map(str::to_owned)
}

fn print_scale(line: &str) {
    let n: f64 = num(line, "n");
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let ttl_ms = TTL.as_millis() as f64;
    let slack = num(line, "min_slack_ms");
    let overhead = num(line, "cpu_per_renew_us") - num(line, "raw_cpu_us");
    println!(
        "{:>9} {:>6} | start {:>6.2} s, all leading {:>6.2} s | threads {:>6} | RSS {:>7.1} MB \
         (peak {:>7.1}) | CPU {:>5.1} % | CPU/renew {:>7.1} µs (client's own {:>6.1} µs, \
         overhead {:>6.1} µs {}, {} wake-ups) | losses {} {} | min slack {} ms of {} {}",
        field(line, "backend"),
        n,
        num(line, "start_s"),
        num(line, "all_leading_s"),
        field(line, "threads"),
        num(line, "rss_mb"),
        num(line, "hwm_mb"),
        num(line, "cpu_pct"),
        num(line, "cpu_per_renew_us"),
        num(line, "raw_cpu_us"),
        overhead,
        verdict(overhead <= 20.0),
        field(line, "switches_per_renew"),
        field(line, "losses"),
        verdict(field(line, "losses") == "0" && num(line, "leading") == n),
        field(line, "min_slack_ms"),
        (ttl_ms * 0.9) as u64,
        verdict(slack >= ttl_ms / 2.0),
    );
    if field(line, "backend") == "redis" && n >= 10_000.0 {
        let rss = num(line, "rss_mb");
        println!(
            "          target: 10,000 electors on Redis in ≤ 200 MB RSS: {rss:.1} MB {}",
            verdict(rss <= 200.0)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        // RUST_LOG=… shows what the library logs in a scenario.
        let _ = env_logger::try_init();
        let line = match args.get(1).map(String::as_str) {
            Some("scale") => run_scale(
                &args[2],
                args[3].parse().unwrap_or(100),
                Duration::from_secs(args[4].parse().unwrap_or(10)),
            ),
            Some("idle") => idle::run(
                &args[2],
                args[3].parse().unwrap_or(100),
                args[4] == "before",
                Duration::from_secs(args[5].parse().unwrap_or(10)),
            ),
            other => panic!("unknown child scenario {other:?}"),
        };
        println!("{line}");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; anything like `backend:N` picks scenarios.
    let picked: Vec<(String, usize)> = args
        .iter()
        .filter_map(|a| {
            let (b, n) = a.split_once(':')?;
            Some((b.to_owned(), n.parse().ok()?)).filter(|_| b != "idle")
        })
        .collect();
    let scenarios_were_picked = args.iter().any(|a| a.contains(':'));
    let (scenarios, window, idle_n, idle_window) = if scenarios_were_picked {
        (picked, 30, 100, 15)
    } else if quick {
        (
            vec![("memory".into(), 200), ("redis".into(), 200)],
            6,
            20,
            4,
        )
    } else {
        let mut s: Vec<(String, usize)> = Vec::new();
        for n in [1_000, 5_000, 10_000] {
            s.push(("memory".into(), n));
            s.push(("redis".into(), n));
        }
        s.push(("postgres".into(), 1_000));
        s.push(("zookeeper".into(), 1_000));
        (s, 30, 100, 15)
    };
    println!(
        "scale: TTL {TTL:?}, heartbeat {HEARTBEAT:?}, retry {RETRY:?}; steady window {window} s; \
         targets: CPU/renew ≤ 20 µs over the client's own cost, no spurious loss, slack ≥ TTL/2"
    );
    let mut missing = 0;
    for (backend, n) in &scenarios {
        let args = [
            "scale".into(),
            backend.clone(),
            n.to_string(),
            window.to_string(),
        ];
        match child(&args) {
            Some(line) => print_scale(&line),
            None => missing += 1,
        }
    }
    let idle_backends: Vec<&str> = if quick {
        vec!["redis"]
    } else if args.iter().any(|a| a == "idle") || scenarios_were_picked {
        args.iter()
            .filter_map(|a| a.strip_prefix("idle:"))
            .collect()
    } else {
        vec!["redis", "postgres", "zookeeper"]
    };
    println!(
        "idle followers: {idle_n} followers + 1 leader on one group, server requests/s over \
         {idle_window} s; before = poll every retry interval, after = the default safety net"
    );
    for backend in idle_backends {
        let mut rates = Vec::new();
        for mode in ["before", "after"] {
            let args = [
                "idle".into(),
                backend.to_owned(),
                idle_n.to_string(),
                mode.to_owned(),
                idle_window.to_string(),
            ];
            match child(&args) {
                Some(line) => rates.push(num(&line, "rate")),
                None => missing += 1,
            }
        }
        if let [before, after] = rates[..] {
            println!(
                "{backend:>9} | before {before:>8.1} req/s | after {after:>8.1} req/s ({:.0}× fewer)",
                before / after.max(0.01)
            );
        }
    }
    if missing > 0 {
        eprintln!("{missing} scenario(s) failed");
        std::process::exit(1);
    }
}
