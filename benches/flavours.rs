//! Every flavour under real load, beside the servers a user could write instead (the
//! anchors: a `std::net` thread-per-connection server, a std pool of 16 threads that accept
//! for themselves, a tokio server; for UDP a plain std loop and Python's), in the same run.
//!
//! ```text
//! cargo bench --bench flavours                   # full run: 5 runs x 1.2 s per server, ~8 min
//! BENCH_QUICK=1 cargo bench --bench flavours     # ~1 s per server, 1 run: proves the harness
//! cargo bench --bench flavours -- churn udp      # only scenarios whose id contains a word
//! cargo bench --bench flavours -- idle100000     # the row run only when named (below)
//! ```
//!
//! The `idle100000` row (100 000 idle + 16 active connections) runs only when its id is
//! given whole, in a full run: it takes minutes, and over 100 000 descriptors on each side
//! (`limits` raises what it may and says what it did).
//!
//! Each server runs in its own process (this binary re-executed as `__server tcp pool`), so
//! its CPU time and peak RSS come from `/proc`. Servers of a scenario run alternately, each
//! run starting one server further on (A B C, B C A, C A B, ...), so that none always runs
//! in the same place; the median of the runs is reported. The machine is shared: `/proc/stat`
//! tells how many CPUs other processes kept busy during each run ("other" in the table), and
//! a full run repeats a run that was disturbed (more than 0.25 CPU busy elsewhere) up to
//! twice, keeping the quietest try, while the time budget allows. Output: a table on stdout,
//! and `target/bench/flavours.csv`, `flavours-runs.csv` and `flavours.svg` (for a quick run
//! `flavours-quick...`, for a run of some scenarios the filter words after the name:
//! `flavours-churn-udp.csv`; see `Settings::file_stem`).
//!
//! Environment: `BENCH_QUICK=1`; `BENCH_RUNS=N` and `BENCH_SECS=S` override the number of
//! runs and the measured seconds per run; `BENCH_IDLE_PER_SOURCE=N` spreads idle
//! connections over source addresses N at a time (see `limits::idle_sources`). Under
//! `cargo test` (no `--bench` argument) it runs a few-second smoke test: the first
//! scenario, with the anchors and the default pool.

// The examples' shared options and server setup, for the echo example as shipped
// (`Kind::Example`).
#[path = "../examples/common/mod.rs"]
mod common;
#[path = "flavours/limits.rs"]
mod limits;
#[path = "flavours/loadgen.rs"]
mod loadgen;
#[path = "flavours/plot.rs"]
mod plot;
#[path = "flavours/procfs.rs"]
mod procfs;
#[path = "flavours/report.rs"]
mod report;
#[path = "flavours/servers.rs"]
mod servers;

use std::env;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use loadgen::{Load, Plan, Window};
use procfs::ProcStat;
use report::{Family, Meta, Results, Sample};
use servers::{Kind, Proto, Server};

/// A load and the servers that can take it.
struct Scenario {
    meta: Meta,
    load: Load,
    proto: Proto,
    servers: Vec<Kind>,
    /// Run only when a filter names its id whole, in a full run (never by default, nor in
    /// `BENCH_QUICK` mode, nor under `cargo test`).
    on_request: bool,
    /// Servers of the row this machine cannot run, and why (see `limits`).
    skipped: Vec<(Kind, String)>,
}

impl Scenario {
    fn on_request(self) -> Scenario {
        Scenario {
            on_request: true,
            ..self
        }
    }

    /// Descriptors each side (the bench, a server) holds: every connection and some spare.
    fn descriptors(&self) -> u64 {
        match self.load {
            Load::IdleActive { idle, conns, .. } => {
                (idle + conns) as u64 + limits::SPARE_DESCRIPTORS
            }
            _ => 0,
        }
    }

    /// Moves the servers this machine cannot run (a thread per connection beyond its
    /// thread limits) to `skipped`, saying why.
    fn skip_what_cannot_run(&mut self) {
        let Load::IdleActive { idle, conns, .. } = self.load else {
            return;
        };
        let threads = (idle + conns) as u64;
        let (id, skipped) = (self.meta.id, &mut self.skipped);
        self.servers.retain(|kind| {
            let why = kind
                .thread_per_connection()
                .then(|| limits::threads_refused(threads))
                .flatten();
            match why {
                Some(why) => {
                    eprintln!("{id} {}: skipped: {why}", kind.name());
                    skipped.push((*kind, why));
                    false
                }
                None => true,
            }
        });
    }
}

fn scenario(meta: Meta, load: Load, servers: &[Kind]) -> Scenario {
    let proto = match load {
        Load::Udp { .. } => Proto::Udp,
        _ => Proto::Tcp,
    };
    Scenario {
        meta,
        load,
        proto,
        servers: servers.to_vec(),
        on_request: false,
        skipped: Vec::new(),
    }
}

const fn meta(id: &'static str, title: &'static str, family: Family) -> Meta {
    Meta { id, title, family }
}

/// The issue's matrix. Every TCP row runs the anchors (std thread-per-connection, the std
/// pool, tokio); the UDP row the plain std loop and Python's ThreadingUDPServer. The single
/// flavour serves one connection at a time, so it runs only where clients take turns (C=1,
/// churn, UDP); forking runs where 40 children are enough; nothing forks for 1 000 idle
/// connections. The hand-off pool (`pool-queued`) runs beside the default pool in the
/// ping-pong, churn and UDP rows; `pool-read` (no idle poll) at C=16 only. `parked`
/// (`serve_requests`) runs in every TCP row, so that its busy path is measured beside the
/// default pool's, and alone with tokio and the std server behind 15 000 idle connections
/// (where the default pool's 4 096 threads, the std pool's 16 and the fixed pool's 16
/// would starve by design). `echo-example`, the echo example as shipped (issue 19's
/// subject: 8 warm workers, the examples' timeouts and keepalive, armed for restarts),
/// runs beside `parked` in every TCP row up to 15 000 idle. Behind 100 000 (run only when
/// asked for by name) `parked` as shipped meets its default connection limit (65 536), and
/// `parked-max`, the same with the limit raised, runs beside it.
fn scenarios(python: bool) -> Vec<Scenario> {
    use Kind::*;
    let pp = |conns, size| Load::PingPong { conns, size };
    let mut udp_servers = vec![Std, Single, Threading, Pool, PoolQueued];
    if python {
        udp_servers.push(Python);
    }
    vec![
        scenario(
            meta("pp64-c1", "ping-pong 64 B, C=1", Family::PingPong),
            pp(1, 64),
            &[
                Std, StdPool, Tokio, Single, Threading, FixedPool, Pool, PoolQueued, Parked,
                Example, Forking,
            ],
        ),
        scenario(
            meta("pp64-c16", "ping-pong 64 B, C=16", Family::PingPong),
            pp(16, 64),
            &[
                Std, StdPool, Tokio, Threading, FixedPool, Pool, PoolQueued, PoolRead, Parked,
                Example, Forking,
            ],
        ),
        scenario(
            meta("pp64-c256", "ping-pong 64 B, C=256", Family::PingPong),
            pp(256, 64),
            &[
                Std, StdPool, Tokio, Threading, FixedPool, Pool, PoolQueued, Parked, Example,
            ],
        ),
        scenario(
            meta("pp16k-c16", "ping-pong 16 KiB, C=16", Family::PingPong),
            pp(16, 16 * 1024),
            &[
                Std, StdPool, Tokio, Threading, FixedPool, Pool, PoolQueued, Parked, Example,
                Forking,
            ],
        ),
        scenario(
            meta("churn-c16", "churn, C=16 (conn/s)", Family::Churn),
            Load::Churn { conns: 16 },
            &[
                Std, StdPool, Tokio, Single, Threading, FixedPool, Pool, PoolQueued, Parked,
                Example, Forking,
            ],
        ),
        scenario(
            meta("idle1000", "1 000 idle + 16 active", Family::Idle),
            Load::IdleActive {
                idle: 1000,
                conns: 16,
                size: 64,
            },
            &[
                Std, StdPool, Tokio, Threading, FixedPool, Pool, Parked, Example,
            ],
        ),
        scenario(
            meta("idle15000", "15 000 idle + 16 active", Family::ManyIdle),
            Load::IdleActive {
                idle: MANY_IDLE,
                conns: 16,
                size: 64,
            },
            &[Std, Tokio, Parked, Example],
        ),
        scenario(
            meta("idle100000", "100 000 idle + 16 active", Family::ManyIdle),
            Load::IdleActive {
                idle: MOST_IDLE,
                conns: 16,
                size: 64,
            },
            &[Std, Tokio, Parked, ParkedMax],
        )
        .on_request(),
        scenario(
            meta("udp64-c16", "UDP 64 B, 16 clients", Family::Udp),
            Load::Udp {
                clients: 16,
                size: 64,
            },
            &udp_servers,
        ),
    ]
}

/// The silent connections of the `idle15000` row (issue 12).
const MANY_IDLE: usize = 15_000;
/// The silent connections of the `idle100000` row (issue 19).
const MOST_IDLE: usize = 100_000;

/// How this invocation runs.
#[derive(Debug)]
struct Settings {
    name: &'static str,
    plan: Plan,
    runs: usize,
    filters: Vec<String>,
    /// Only the first scenario's anchors and default pool (the smoke test under `cargo test`).
    smoke: bool,
    /// A full run (`--bench`, not `BENCH_QUICK`): the rows run on request may run.
    full: bool,
    /// Clock ticks per second, for `/proc` times.
    ticks: u64,
    /// Extra tries of a run during which other processes were busy (full mode only).
    retries: usize,
    /// The whole run's time limit: a disturbed run is retried only while the runs still to
    /// come fit in it.
    limit: Duration,
}

/// A run during which other processes kept more CPUs than this busy is noisy.
const NOISY_CORES: f64 = 0.25;

impl Settings {
    fn from_env(args: &[String]) -> Settings {
        let bench = args.iter().any(|a| a == "--bench");
        let quick = env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let filters: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        let (name, secs, warmup, runs, timeout) = match (bench, quick) {
            (true, false) => ("full", 1.2, 0.3, 5, 1.0),
            (true, true) => ("quick", 0.8, 0.2, 1, 0.5),
            (false, _) => ("smoke", 0.3, 0.1, 1, 0.5),
        };
        let secs = env_number("BENCH_SECS").unwrap_or(secs);
        let runs = env_number("BENCH_RUNS").map_or(runs, |r| r.max(1.0) as usize);
        Settings {
            name,
            plan: Plan {
                warmup: Duration::from_secs_f64(warmup),
                measure: Duration::from_secs_f64(secs.max(0.1)),
                io_timeout: Duration::from_secs_f64(timeout),
            },
            runs,
            filters,
            smoke: !bench,
            full: bench && !quick,
            ticks: procfs::clock_ticks(),
            retries: if bench && !quick { 2 } else { 0 },
            limit: Duration::from_secs(540),
        }
    }

    /// The name of this run's files: `flavours` for a full run of every scenario,
    /// `flavours-quick` in `BENCH_QUICK` mode, and the filter words after it for a run of
    /// some scenarios (`flavours-churn-udp`), so that a quick or partial run never
    /// overwrites a full run's results.
    fn file_stem(&self) -> String {
        let mut stem = String::from("flavours");
        if !self.full {
            stem.push_str("-quick");
        }
        for f in &self.filters {
            stem.push('-');
            stem.extend(f.chars().map(|c| match c.is_ascii_alphanumeric() {
                true => c,
                false => '_',
            }));
        }
        stem
    }

    /// Whether a scenario runs: one whose id contains a filter word (every one without a
    /// filter); a row run on request only when a filter is its id, whole, in a full run.
    fn wants(&self, sc: &Scenario) -> bool {
        if sc.on_request {
            let named = self.filters.iter().any(|f| f == sc.meta.id);
            if named && !self.full {
                eprintln!(
                    "{}: skipped: it runs only in a full run (not BENCH_QUICK, not under cargo test)",
                    sc.meta.id
                );
            }
            return named && self.full;
        }
        self.filters.is_empty() || self.filters.iter().any(|f| sc.meta.id.contains(f.as_str()))
    }
}

fn env_number(name: &str) -> Option<f64> {
    env::var(name)
        .ok()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(servers::SERVER_ARG) {
        return match servers::child_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = Settings::from_env(&args);
    match bench(&settings) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("flavours bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected scenarios, prints and writes the report; false if a check failed.
fn bench(settings: &Settings) -> io::Result<bool> {
    let began = Instant::now();
    let mut chosen: Vec<Scenario> = scenarios(servers::python_available())
        .into_iter()
        .filter(|sc| settings.wants(sc))
        .collect();
    // Each side holds every connection: the limit is raised for the most a row needs (the
    // servers, started later, inherit it), and a limit still too low for a row is said, not
    // hit. Two processes hold them at once: this one and a server.
    for sc in &mut chosen {
        if sc.meta.family == Family::ManyIdle {
            if let Load::IdleActive { idle, .. } = sc.load {
                eprintln!("{}: {}", sc.meta.id, limits::summary(idle));
            }
        }
        sc.skip_what_cannot_run();
    }
    let most = chosen.iter().map(Scenario::descriptors).max().unwrap_or(0);
    let nofile = limits::descriptors(most, 2);
    chosen.retain(|sc| {
        let needed = sc.descriptors();
        let fits = needed <= nofile;
        if !fits {
            eprintln!(
                "{}: skipped: it needs {needed} descriptors per process and the hard limit here is {nofile} (raise it: ulimit -Hn, LimitNOFILE=)",
                sc.meta.id
            );
        }
        fits
    });
    if settings.smoke {
        chosen.truncate(1);
        for sc in &mut chosen {
            sc.servers
                .retain(|k| matches!(k, Kind::Std | Kind::StdPool | Kind::Tokio | Kind::Pool));
        }
    }
    let machine = machine();
    let runs: usize = chosen
        .iter()
        .map(|sc| sc.servers.len() * settings.runs)
        .sum();
    eprintln!(
        "flavours ({} mode): {} scenarios, {runs} server runs of {:.1} s + {:.1} s warm-up; {machine}",
        settings.name,
        chosen.len(),
        settings.plan.measure.as_secs_f64(),
        settings.plan.warmup.as_secs_f64(),
    );
    let mut failures = Vec::new();
    let mut budget = Budget {
        began,
        limit: settings.limit,
        planned: runs,
        done: 0,
    };
    let all: Vec<Results> = chosen
        .iter()
        .map(|sc| run_scenario(sc, settings, &mut budget, &mut failures))
        .collect();
    let header = format!(
        "{} mode, median of {} run(s) x {:.1} s per server; {machine}",
        settings.name,
        settings.runs,
        settings.plan.measure.as_secs_f64()
    );
    println!("\n{header}\n\n{}", report::table(&all));
    if !settings.smoke {
        println!("{}", report::checks_text(&report::targets(&all)));
        write_files(&all, &header, &settings.file_stem())?;
    }
    let ok = harness_checks(&all, &failures);
    eprintln!("flavours: done in {:.0} s", began.elapsed().as_secs_f64());
    Ok(ok)
}

/// Runs every server of a scenario `runs` times, alternately.
fn run_scenario(
    sc: &Scenario,
    settings: &Settings,
    budget: &mut Budget,
    failures: &mut Vec<String>,
) -> Results {
    let mut servers: Vec<(Kind, Vec<Sample>)> =
        sc.servers.iter().map(|k| (*k, Vec::new())).collect();
    let n = servers.len();
    for run in 1..=settings.runs {
        // Each run starts one server further on, so that no server always runs in the
        // same place of a round: after the same servers, with what they leave behind
        // (the TIME_WAIT sockets of 15 000 idle connections, for one) and at the same
        // point of the machine's cycles.
        for i in 0..n {
            let (kind, samples) = &mut servers[(i + run - 1) % n];
            let sample = quiet_run(sc, *kind, settings, budget);
            budget.done += 1;
            match sample {
                Ok(s) => samples.push(s),
                Err(e) => {
                    eprintln!("  {} {}: run {run} failed: {e}", sc.meta.id, kind.name());
                    failures.push(format!("{} {}: {e}", sc.meta.id, kind.name()));
                }
            }
        }
    }
    Results {
        meta: sc.meta,
        servers,
        skipped: sc.skipped.clone(),
    }
}

/// Keeps a full run within its time limit.
struct Budget {
    began: Instant,
    limit: Duration,
    /// Runs planned (retries not counted).
    planned: usize,
    /// Planned runs done so far.
    done: usize,
}

impl Budget {
    /// Whether one more try still leaves time for the runs to come, at the pace so far
    /// (which includes the retries already made, so the estimate errs long).
    fn may_retry(&self) -> bool {
        let elapsed = self.began.elapsed().as_secs_f64();
        let pace = elapsed / self.done.max(1) as f64;
        let left = self.planned.saturating_sub(self.done) as f64 * pace;
        elapsed + pace + left < self.limit.as_secs_f64()
    }
}

/// One run, tried again (up to `settings.retries` times, within the time budget) while
/// other processes kept the machine busy; the quietest try is kept.
fn quiet_run(
    sc: &Scenario,
    kind: Kind,
    settings: &Settings,
    budget: &Budget,
) -> io::Result<Sample> {
    let mut best = measure(sc, kind, settings)?;
    progress(sc, kind, &best);
    for _ in 0..settings.retries {
        if best.other_cores <= NOISY_CORES || !budget.may_retry() {
            break;
        }
        let again = measure(sc, kind, settings)?;
        progress(sc, kind, &again);
        if again.other_cores < best.other_cores {
            best = again;
        }
    }
    Ok(best)
}

fn progress(sc: &Scenario, kind: Kind, s: &Sample) {
    eprintln!(
        "  {:<10} {:<11} {:>8}/s  p99 {:>8}  errors {:<5} CPU {} us/req  RSS {:.1} MiB{}  threads {}  setup {:.0} ms{}  other load {:.2} cores",
        sc.meta.id,
        kind.name(),
        report::rate(s.rate),
        report::latency(s.p99),
        s.errors,
        s.cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
        s.rss_mib,
        s.rss_per_idle_kib
            .map_or(String::new(), |k| format!(" ({k:.1} KiB/idle)")),
        s.threads,
        s.setup_ms,
        s.idle_open
            .filter(|(n, _)| *n >= 10_000)
            .map_or(String::new(), |(n, secs)| format!(
                " ({n} idle opened in {secs:.1} s)"
            )),
        s.other_cores,
    );
}

/// `/proc` at one edge of the window: the server, this process, the whole machine.
struct Edge {
    server: ProcStat,
    own: u64,
    machine: u64,
}

impl Edge {
    fn read(server: &Server) -> io::Result<Edge> {
        Ok(Edge {
            server: server.stat()?,
            own: procfs::own_ticks()?,
            machine: procfs::machine_busy_ticks()?,
        })
    }
}

/// One run: start the server, load it, read `/proc` at the window's edges, stop it.
fn measure(sc: &Scenario, kind: Kind, settings: &Settings) -> io::Result<Sample> {
    let server = Server::start(sc.proto, kind)?;
    // Memory before any connection: what the idle connections add is told apart from it.
    let fresh = server.stat()?;
    let many = sc.meta.family == Family::ManyIdle;
    let (mut outcome, edges) = loadgen::run(sc.load, server.addr(), settings.plan, |w| {
        Window::sleep_until(w.start);
        let before = Edge::read(&server);
        Window::sleep_until(w.end);
        let after = Edge::read(&server);
        (before, after, many.then(limits::sockstat))
    });
    // The server closes its side first (see `Outcome::idle`).
    server.stop();
    let idle_open = outcome.idle.len();
    drop(std::mem::take(&mut outcome.idle));
    if let Some(kernel) = edges.2 {
        eprintln!("    kernel at the window's end: {kernel}");
    }
    let (before, after) = (edges.0?, edges.1?);
    let secs = |t: u64| t as f64 / settings.ticks as f64;
    let cpu_secs = secs(
        after
            .server
            .cpu_ticks
            .saturating_sub(before.server.cpu_ticks),
    );
    let ours = after.server.cpu_ticks + after.own - before.server.cpu_ticks - before.own;
    let others = after
        .machine
        .saturating_sub(before.machine)
        .saturating_sub(ours);
    Ok(Sample {
        rate: outcome.rate(),
        p50: outcome.latency_us(0.50),
        p99: outcome.latency_us(0.99),
        p999: outcome.latency_us(0.999),
        errors: outcome.errors,
        mismatches: outcome.mismatches,
        cpu_us: (outcome.requests > 0).then(|| cpu_secs * 1e6 / outcome.requests as f64),
        rss_mib: after.server.peak_rss_kib as f64 / 1024.0,
        rss_per_idle_kib: match sc.load {
            Load::IdleActive { .. } if idle_open > 0 => Some(
                after.server.peak_rss_kib.saturating_sub(fresh.peak_rss_kib) as f64
                    / idle_open as f64,
            ),
            _ => None,
        },
        threads: after.server.threads,
        workers: after.server.workers,
        setup_ms: outcome.setup.as_secs_f64() * 1e3,
        other_cores: secs(others) / outcome.secs,
        idle_open: matches!(sc.load, Load::IdleActive { .. })
            .then(|| (idle_open, outcome.idle_opening.as_secs_f64())),
    })
}

/// What CI can rely on without timing: every server started, every anchor answered in every
/// scenario (but the std pool behind 1 000 idle clients, which hold its 16 threads by
/// design, and the std server behind 15 000 or more, which needs as many threads and is
/// skipped where the machine's limits rule that out), and no echo ever came back wrong.
fn harness_checks(all: &[Results], failures: &[String]) -> bool {
    let mut checks: Vec<(bool, String)> = failures
        .iter()
        .map(|f| (false, format!("server failed: {f}")))
        .collect();
    for r in all {
        for (kind, s) in r.summaries() {
            // The std pool starves behind 1 000 idle clients by design; the std server's
            // 15 000 threads may meet the system's thread or pid limit (`pid_max` is 32 768
            // here), which is that design's cost, not a broken harness.
            let starves = (kind == Kind::StdPool && r.meta.family == Family::Idle)
                || (kind == Kind::Std && r.meta.family == Family::ManyIdle);
            if kind.is_anchor() && !starves {
                checks.push((
                    s.rate > 0.0,
                    format!("{}: the {} anchor answered", r.meta.id, kind.name()),
                ));
            }
        }
        // The std server ran, or this machine's thread limits ruled it out (printed).
        let has_std = r.servers.iter().any(|(k, _)| *k == Kind::Std)
            || r.skipped.iter().any(|(k, _)| *k == Kind::Std);
        checks.push((
            has_std,
            format!("{}: the std baseline ran or its skip was said", r.meta.id),
        ));
        for (kind, s) in r.summaries() {
            let text = format!(
                "{} {}: {} wrong echoes",
                r.meta.id,
                kind.name(),
                s.mismatches
            );
            checks.push((s.mismatches == 0, text));
        }
    }
    let failed: Vec<&String> = checks.iter().filter(|c| !c.0).map(|c| &c.1).collect();
    for f in &failed {
        eprintln!("harness check failed: {f}");
    }
    println!(
        "flavours: {} passed, {} failed",
        checks.len() - failed.len(),
        failed.len()
    );
    failed.is_empty()
}

/// `target/bench`, next to the build's own directories.
fn out_dir() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = env::current_exe().ok()?;
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(PathBuf::from))?
        });
    target
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench")
}

/// Writes `STEM.csv` (medians), `STEM-runs.csv` (every run) and `STEM.svg` (the plot)
/// under `out_dir()`.
fn write_files(all: &[Results], header: &str, stem: &str) -> io::Result<()> {
    let dir = out_dir();
    fs::create_dir_all(&dir)?;
    let (csv, runs, svg) = (
        dir.join(format!("{stem}.csv")),
        dir.join(format!("{stem}-runs.csv")),
        dir.join(format!("{stem}.svg")),
    );
    report::write_csv(all, &csv)?;
    report::write_runs_csv(all, &runs)?;
    plot::write_svg(all, &svg, header)?;
    println!(
        "wrote {}, {} and {}",
        csv.display(),
        runs.display(),
        svg.display()
    );
    Ok(())
}

/// The machine, for the report: cores, CPU model, kernel.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"))?.to_string();
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {model}, Linux {}", kernel.trim())
}
