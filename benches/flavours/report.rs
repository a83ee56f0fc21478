//! Medians of the repeated runs, the table, the CSV files and the targets of the issue.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use crate::servers::Kind;

/// Which targets apply to a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    PingPong,
    Churn,
    Idle,
    Udp,
}

/// The numbers measured before the crate existed, on this machine (requests or connections
/// per second): the std baseline's, and the best column's of the same row.
#[derive(Clone, Copy, Debug)]
pub struct Reference {
    pub std: f64,
    pub best: f64,
    pub best_name: &'static str,
}

/// A scenario, as the report names it.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub id: &'static str,
    pub title: &'static str,
    pub family: Family,
    pub reference: Reference,
}

/// One run of one server in one scenario.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub errors: u64,
    pub mismatches: u64,
    /// Server CPU time per request, microseconds (`None` without requests).
    pub cpu_us: Option<f64>,
    pub rss_mib: f64,
    pub threads: u64,
    /// The slowest client's connect and first echo, milliseconds.
    pub setup_ms: f64,
    /// CPUs kept busy by other processes during the window (a shared machine's noise).
    pub other_cores: f64,
}

/// Medians over the runs of one server in one scenario (mismatches: the sum).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub runs: usize,
    pub rate: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub errors: u64,
    pub mismatches: u64,
    pub cpu_us: Option<f64>,
    pub rss_mib: f64,
    pub threads: u64,
    pub setup_ms: f64,
    pub other_cores: f64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        let f = |get: fn(&Sample) -> f64| median(samples.iter().map(get).collect()).unwrap_or(0.0);
        let opt =
            |get: fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(get).collect());
        Summary {
            runs: samples.len(),
            rate: f(|s| s.rate),
            p50: opt(|s| s.p50),
            p99: opt(|s| s.p99),
            p999: opt(|s| s.p999),
            errors: f(|s| s.errors as f64).round() as u64,
            mismatches: samples.iter().map(|s| s.mismatches).sum(),
            cpu_us: opt(|s| s.cpu_us),
            rss_mib: f(|s| s.rss_mib),
            threads: f(|s| s.threads as f64).round() as u64,
            setup_ms: f(|s| s.setup_ms),
            other_cores: f(|s| s.other_cores),
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Every server's runs in one scenario; the first server is the std baseline.
#[derive(Debug)]
pub struct Results {
    pub meta: Meta,
    pub servers: Vec<(Kind, Vec<Sample>)>,
}

impl Results {
    /// Each server's medians, in run order.
    pub fn summaries(&self) -> Vec<(Kind, Summary)> {
        self.servers
            .iter()
            .map(|(k, s)| (*k, Summary::of(s)))
            .collect()
    }

    fn get(&self, kind: Kind) -> Option<Summary> {
        self.summaries()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
    }

    fn baseline(&self) -> Option<Summary> {
        self.get(Kind::Std)
    }

    /// A server's rate over the baseline's.
    pub fn ratio(&self, s: &Summary) -> Option<f64> {
        let base = self.baseline()?.rate;
        (base > 0.0).then(|| s.rate / base)
    }
}

/// Formats a rate: 95.2k, 812, 1.02M.
pub fn rate(r: f64) -> String {
    match r {
        r if r >= 1e6 => format!("{:.2}M", r / 1e6),
        r if r >= 1e4 => format!("{:.1}k", r / 1e3),
        r if r >= 1e3 => format!("{:.2}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// Formats a latency in microseconds: 31 us, 7.3 ms, 1.00 s.
pub fn latency(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000.0 => format!("{us:.0} us"),
        Some(us) if us < 1e6 => format!("{:.1} ms", us / 1000.0),
        Some(us) => format!("{:.2} s", us / 1e6),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The table: one row per scenario x server. "other" is the median number of CPUs other
/// processes kept busy during the runs: the noise of a shared machine.
pub fn table(all: &[Results]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>6} {:>6}",
        "scenario",
        "server",
        "rate/s",
        "p50",
        "p99",
        "p999",
        "errors",
        "CPU us",
        "RSS MiB",
        "x std",
        "other"
    );
    for r in all {
        for (kind, s) in r.summaries() {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8.1} {:>6} {:>6.2}",
                r.meta.title,
                kind.name(),
                rate(s.rate),
                latency(s.p50),
                latency(s.p99),
                latency(s.p999),
                s.errors,
                opt(s.cpu_us, 1),
                s.rss_mib,
                opt(r.ratio(&s), 2),
                s.other_cores,
            );
        }
    }
    out
}

/// The medians as CSV, one row per scenario x server.
pub fn write_csv(all: &[Results], path: &Path) -> io::Result<()> {
    let mut out = String::from(
        "scenario,title,server,runs,rate,p50_us,p99_us,p999_us,errors,mismatches,cpu_us_per_req,peak_rss_mib,threads,setup_ms,other_load_cores,ratio_to_std\n",
    );
    for r in all {
        for (kind, s) in r.summaries() {
            let _ = writeln!(
                out,
                "{},\"{}\",{},{},{:.0},{},{},{},{},{},{},{:.1},{},{:.1},{:.2},{}",
                r.meta.id,
                r.meta.title,
                kind.name(),
                s.runs,
                s.rate,
                opt(s.p50, 1),
                opt(s.p99, 1),
                opt(s.p999, 1),
                s.errors,
                s.mismatches,
                opt(s.cpu_us, 2),
                s.rss_mib,
                s.threads,
                s.setup_ms,
                s.other_cores,
                opt(r.ratio(&s), 3),
            );
        }
    }
    fs::write(path, out)
}

/// Every run as CSV, for anyone who distrusts medians.
pub fn write_runs_csv(all: &[Results], path: &Path) -> io::Result<()> {
    let mut out = String::from(
        "scenario,server,run,rate,p50_us,p99_us,p999_us,errors,mismatches,cpu_us_per_req,peak_rss_mib,threads,setup_ms,other_load_cores\n",
    );
    for r in all {
        for (kind, samples) in &r.servers {
            for (i, s) in samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{},{:.0},{},{},{},{},{},{},{:.1},{},{:.1},{:.2}",
                    r.meta.id,
                    kind.name(),
                    i + 1,
                    s.rate,
                    opt(s.p50, 1),
                    opt(s.p99, 1),
                    opt(s.p999, 1),
                    s.errors,
                    s.mismatches,
                    opt(s.cpu_us, 2),
                    s.rss_mib,
                    s.threads,
                    s.setup_ms,
                    s.other_cores,
                );
            }
        }
    }
    fs::write(path, out)
}

/// One target of the issue, checked against this run.
#[derive(Debug)]
pub struct Check {
    pub met: bool,
    pub text: String,
}

impl Check {
    fn new(met: bool, text: String) -> Check {
        Check { met, text }
    }
}

/// Checks the targets, as ratios within this run.
pub fn targets(all: &[Results]) -> Vec<Check> {
    let mut checks = Vec::new();
    for r in all {
        let Some(base) = r.baseline() else { continue };
        if r.meta.family == Family::PingPong {
            flavours_vs_baseline(r, &mut checks);
        }
        match r.meta.family {
            Family::Udp => udp_targets(r, &base, &mut checks),
            _ => pool_vs_best(r, &base, &mut checks),
        }
        cpu_targets(r, &base, &mut checks);
    }
    checks
}

/// Every flavour's ping-pong >= 0.95x the std baseline, every client served (a fixed pool
/// that serves 16 of 256 clients at full speed does not meet it).
fn flavours_vs_baseline(r: &Results, checks: &mut Vec<Check>) {
    for (kind, s) in r.summaries() {
        if kind.flavor().is_none() {
            continue;
        }
        let ratio = r.ratio(&s).unwrap_or(0.0);
        checks.push(Check::new(
            ratio >= 0.95 && s.errors == 0,
            format!(
                "{}: {} at {:.2}x the std baseline ({} vs {}, {} errors; target >= 0.95x, serving every client)",
                r.meta.title,
                kind.name(),
                ratio,
                rate(s.rate),
                rate(r.baseline().map_or(0.0, |b| b.rate)),
                s.errors
            ),
        ));
    }
}

/// The growing pool >= 0.95x the best of the row, with zero errors. "Best" is the larger of
/// the best server measured in this run and the reference's best column scaled by this run's
/// baseline (tokio cannot run here: the ratio tokio/std of the reference stands in for it).
fn pool_vs_best(r: &Results, base: &Summary, checks: &mut Vec<Check>) {
    let Some(pool) = r.get(Kind::Pool) else {
        return;
    };
    let reference = &r.meta.reference;
    let scaled = base.rate * reference.best / reference.std;
    let (in_run_kind, in_run) = r
        .summaries()
        .into_iter()
        .filter(|(k, s)| *k != Kind::Pool && s.errors == 0)
        .max_by(|a, b| a.1.rate.total_cmp(&b.1.rate))
        .map_or(("none", 0.0), |(k, s)| (k.name(), s.rate));
    let best = scaled.max(in_run);
    let ratio = if best > 0.0 { pool.rate / best } else { 0.0 };
    checks.push(Check::new(
        ratio >= 0.95 && pool.errors == 0,
        format!(
            "{}: pool at {:.2}x the best ({}: best in this run {} = {}, reference {} scaled by the baseline = {}), {} errors; target >= 0.95x, 0 errors",
            r.meta.title,
            ratio,
            rate(pool.rate),
            in_run_kind,
            rate(in_run),
            reference.best_name,
            rate(scaled),
            pool.errors
        ),
    ));
}

/// The UDP pool >= 0.9x the plain std loop and >= 10x Python's ThreadingUDPServer.
fn udp_targets(r: &Results, base: &Summary, checks: &mut Vec<Check>) {
    let Some(pool) = r.get(Kind::Pool) else {
        return;
    };
    let ratio = r.ratio(&pool).unwrap_or(0.0);
    checks.push(Check::new(
        ratio >= 0.9,
        format!(
            "{}: pool at {:.2}x the plain std loop ({} vs {}; target >= 0.9x)",
            r.meta.title,
            ratio,
            rate(pool.rate),
            rate(base.rate)
        ),
    ));
    let (python, how) = match r.get(Kind::Python) {
        Some(p) => (p.rate, "measured in this run"),
        None => (
            base.rate * 7.7e3 / r.meta.reference.std,
            "reference scaled by the baseline",
        ),
    };
    let times = if python > 0.0 {
        pool.rate / python
    } else {
        f64::INFINITY
    };
    checks.push(Check::new(
        times >= 10.0,
        format!(
            "{}: pool at {:.1}x Python's ThreadingUDPServer ({} vs {}, {how}; target >= 10x)",
            r.meta.title,
            times,
            rate(pool.rate),
            rate(python)
        ),
    ));
}

/// No flavour's server CPU per request above 1.1x the baseline's (rows that served nothing
/// have no CPU per request).
fn cpu_targets(r: &Results, base: &Summary, checks: &mut Vec<Check>) {
    let Some(base_cpu) = base.cpu_us.filter(|c| *c > 0.0) else {
        return;
    };
    for (kind, s) in r.summaries() {
        let (Some(_), Some(cpu)) = (kind.flavor(), s.cpu_us) else {
            continue;
        };
        let ratio = cpu / base_cpu;
        checks.push(Check::new(
            ratio <= 1.1,
            format!(
                "{}: {} server CPU {:.1} us/request, {:.2}x the baseline's {:.1} us (target <= 1.1x)",
                r.meta.title,
                kind.name(),
                cpu,
                ratio,
                base_cpu
            ),
        ));
    }
}

/// The checks as text, missed ones first.
pub fn checks_text(checks: &[Check]) -> String {
    let mut out = String::new();
    let met = checks.iter().filter(|c| c.met).count();
    let _ = writeln!(out, "targets: {met} of {} met", checks.len());
    for c in checks.iter().filter(|c| !c.met) {
        let _ = writeln!(out, "  MISSED {}", c.text);
    }
    for c in checks.iter().filter(|c| c.met) {
        let _ = writeln!(out, "  met    {}", c.text);
    }
    out
}
