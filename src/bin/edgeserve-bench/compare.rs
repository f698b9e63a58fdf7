//! `compare`: every model × workload × connection count, each cell on a fresh server (so no cell
//! inherits another's caches, threads or memory), the load generated in-process on the other
//! CPUs. Writes results.csv and chart.svg and prints a Markdown table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeserve::config::Model;

use crate::client::{self, Limit, Options};
use crate::flags::{self, Flags};
use crate::server::{self, Usage};
use crate::stats::Report;
use crate::target::Target;
use crate::{Failure, cpus, svg};

/// The requests that stand for a kind of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// A small static file: the server's fixed cost per request.
    Small,
    /// 1 MiB: copying and sendfile, not request handling.
    Large,
    /// 100 us of handler CPU per request.
    Cpu,
    /// A 5 ms blocking call per request: what a single loop cannot hide.
    Sleep,
    /// The small file through the reverse proxy, from an upstream edgeserve (single model, on
    /// the client's CPUs): two hops of socket work per request.
    Proxy,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Small,
        Workload::Large,
        Workload::Cpu,
        Workload::Sleep,
        Workload::Proxy,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Large => "large",
            Workload::Cpu => "cpu",
            Workload::Sleep => "sleep",
            Workload::Proxy => "proxy",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Workload::Small => "/small.txt",
            Workload::Large => "/large.bin",
            Workload::Cpu => "/_bench/cpu?us=100",
            Workload::Sleep => "/_bench/sleep?ms=5",
            Workload::Proxy => "/up/small.txt",
        }
    }
}

/// Short enough that the 80 default cells stay under a minute. Most of that minute is not
/// measuring: a server stopped after the sleep workload at 1024 connections still runs every
/// 5 ms request it had read (about 5 s per model), and each cell starts and stops a server.
const DEFAULT_DURATION: Duration = Duration::from_millis(250);
/// A cell runs for its duration, then on until it has this many correct answers or
/// `MAX_CELL_FACTOR` times its duration (at least `MAX_CELL_MIN`) has passed: 1 MiB to each of
/// 1024 connections takes longer than 250 ms to answer even once.
const MIN_COMPLETIONS: u64 = 200;
const MAX_CELL_FACTOR: u32 = 20;
const MAX_CELL_MIN: Duration = Duration::from_secs(5);
const DEFAULT_CONNECTIONS: [usize; 4] = [1, 16, 128, 1024];
/// Threads per multi-threaded model unless `--workers` says otherwise. Not the server's own
/// default (the CPUs it may run on, which here is the server's half of the machine): a pool
/// sized to the cores cannot hide a blocking handler, and that is what pools are for.
const DEFAULT_WORKERS: usize = 8;
const SMALL_SIZE: usize = 100;
const LARGE_SIZE: usize = 1024 * 1024;

struct Plan {
    server: PathBuf,
    models: Vec<Model>,
    workloads: Vec<Workload>,
    connections: Vec<usize>,
    duration: Duration,
    workers: usize,
    server_cpus: Vec<usize>,
    client_cpus: Vec<usize>,
    out: PathBuf,
}

/// One cell's numbers.
#[derive(Clone)]
struct Measured {
    /// Correct answers in the cell.
    completed: u64,
    requests_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    cpu_s_per_10k: Option<f64>,
    /// Server CPU during the load alone (from /proc), per correct answer.
    cpu_us_per_req: Option<f64>,
    ctx_switches_per_req: Option<f64>,
    peak_rss_kib: u64,
}

struct Row {
    model: &'static str,
    workload: Workload,
    connections: usize,
    /// `None`: the server did not start.
    measured: Option<Measured>,
    /// What the table's notes say about this cell.
    notes: Vec<String>,
}

pub fn main(args: Vec<String>) -> Result<(), Failure> {
    let plan = parse(args).map_err(Failure::Usage)?;
    if !plan.server.is_file() {
        return Err(Failure::Usage(format!(
            "--server {}: no such file (build it with cargo build, or pass --server PATH)",
            plan.server.display()
        )));
    }
    crate::prepare_descriptors(plan.connections.iter().copied().max().unwrap_or(1));
    let root = DocRoot::new().map_err(|e| Failure::Run(format!("document root: {e}")))?;
    std::fs::create_dir_all(&plan.out)
        .map_err(|e| Failure::Run(format!("--out {}: {e}", plan.out.display())))?;

    let total = plan.models.len() * plan.workloads.len() * plan.connections.len();
    eprintln!(
        "edgeserve-bench compare: {total} cells of {} ms, {} threads per multi-threaded model, server on CPUs {}, client on CPUs {}",
        plan.duration.as_millis(),
        plan.workers,
        cpus::format(&plan.server_cpus),
        cpus::format(&plan.client_cpus)
    );
    // The proxy workload's upstream: one for the whole run, on the client's CPUs.
    let mut upstream = None;
    if plan.workloads.contains(&Workload::Proxy) {
        let spec = server::Spec {
            binary: &plan.server,
            model: "single",
            workers: None,
            root: root.path(),
            cpus: &plan.client_cpus,
            extra: &[],
        };
        upstream = Some(server::start(&spec).map_err(|e| Failure::Run(format!("upstream: {e}")))?);
    }
    let upstream_port = upstream.as_ref().map(|u| u.port);
    let mut rows = Vec::with_capacity(total);
    for &model in &plan.models {
        for &workload in &plan.workloads {
            for &connections in &plan.connections {
                let row = cell(
                    &plan,
                    root.path(),
                    model,
                    workload,
                    connections,
                    upstream_port,
                );
                let result = match &row.measured {
                    Some(m) if m.errors > 0 => {
                        format!("{:.0} req/s, {} errors", m.requests_per_s, m.errors)
                    }
                    Some(m) => format!("{:.0} req/s", m.requests_per_s),
                    None => "server failed to start".to_string(),
                };
                eprintln!(
                    "[{}/{total}] {} {} c={connections} ... {result}",
                    rows.len() + 1,
                    model.name(),
                    workload.name(),
                );
                rows.push(row);
            }
        }
    }

    if let Some(mut up) = upstream {
        up.stop();
    }
    let csv_path = plan.out.join("results.csv");
    let svg_path = plan.out.join("chart.svg");
    std::fs::write(&csv_path, csv(&rows))
        .map_err(|e| Failure::Run(format!("{}: {e}", csv_path.display())))?;
    std::fs::write(&svg_path, chart(&plan, &rows))
        .map_err(|e| Failure::Run(format!("{}: {e}", svg_path.display())))?;
    print!("{}", markdown(&rows));
    eprintln!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

fn parse(args: Vec<String>) -> Result<Plan, String> {
    let mut f = Flags::new(args);
    let mut server = None;
    let mut models = Model::ALL.to_vec();
    let mut workloads = Workload::ALL.to_vec();
    let mut connections = DEFAULT_CONNECTIONS.to_vec();
    let mut duration = DEFAULT_DURATION;
    let mut long = false;
    let mut workers = DEFAULT_WORKERS;
    let mut server_cpus = None;
    let mut client_cpus = None;
    let mut out = PathBuf::from("bench-out");
    while let Some(flag) = f.next_flag()? {
        match flag.as_str() {
            "--server" => server = Some(PathBuf::from(f.value(&flag)?)),
            "--models" => {
                models = flags::list(&flag, &f.value(&flag)?, |s| {
                    Model::parse(s).ok_or_else(|| {
                        let names: Vec<_> = Model::ALL.iter().map(|m| m.name()).collect();
                        format!(
                            "{flag}: unknown model {s:?} (expected {})",
                            names.join(", ")
                        )
                    })
                })?;
            }
            "--workloads" => {
                workloads = flags::list(&flag, &f.value(&flag)?, |s| {
                    Workload::ALL
                        .into_iter()
                        .find(|w| w.name() == s)
                        .ok_or_else(|| {
                            format!(
                                "{flag}: unknown workload {s:?} (expected small, large, cpu, sleep, proxy)"
                            )
                        })
                })?;
            }
            "--connections" | "-c" => {
                connections = flags::list(&flag, &f.value(&flag)?, |s| {
                    flags::number(&flag, s, 1, crate::MAX_CONNECTIONS).map(|n| n as usize)
                })?;
            }
            "--duration" | "-d" => duration = flags::duration(&flag, &f.value(&flag)?)?,
            "--long" => {
                f.no_value(&flag)?;
                long = true;
            }
            "--workers" => workers = flags::number(&flag, &f.value(&flag)?, 1, 1024)? as usize,
            "--server-cpus" => server_cpus = Some(cpus::parse(&flag, &f.value(&flag)?)?),
            "--client-cpus" => client_cpus = Some(cpus::parse(&flag, &f.value(&flag)?)?),
            "--out" => out = PathBuf::from(f.value(&flag)?),
            "-h" | "--help" => return Err("see edgeserve-bench --help".into()),
            other => return Err(format!("unknown flag {other} for compare (see --help)")),
        }
    }
    let server = match server {
        Some(s) => s,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate this executable to find edgeserve: {e}"))?
            .with_file_name("edgeserve"),
    };
    let (default_server, default_client) = cpus::split(&cpus::allowed());
    if long {
        duration *= 10;
    }
    Ok(Plan {
        server,
        models,
        workloads,
        connections,
        duration,
        workers,
        server_cpus: server_cpus.unwrap_or(default_server),
        client_cpus: client_cpus.unwrap_or(default_client),
        out,
    })
}

/// One measurement on a fresh server.
fn cell(
    plan: &Plan,
    root: &Path,
    model: Model,
    workload: Workload,
    connections: usize,
    upstream_port: Option<u16>,
) -> Row {
    let mut row = Row {
        model: model.name(),
        workload,
        connections,
        measured: None,
        notes: Vec::new(),
    };
    let extra = match (workload, upstream_port) {
        // Default pool flags: idle upstream connections go by time, so none churns under load.
        (Workload::Proxy, Some(port)) => {
            vec!["--proxy".to_string(), format!("/up=127.0.0.1:{port}")]
        }
        _ => Vec::new(),
    };
    let spec = server::Spec {
        binary: &plan.server,
        model: model.name(),
        workers: Some(plan.workers),
        root,
        cpus: &plan.server_cpus,
        extra: &extra,
    };
    let mut running = match server::start(&spec) {
        Ok(r) => r,
        Err(e) => {
            row.notes.push(e);
            return row;
        }
    };
    let target = Target {
        addr: ([127, 0, 0, 1], running.port).into(),
        host: format!("127.0.0.1:{}", running.port),
        path: workload.path().to_string(),
    };
    let opts = Options {
        target,
        connections,
        limit: Limit::Window {
            at_least: plan.duration,
            min_correct: MIN_COMPLETIONS,
            at_most: max_cell(plan.duration),
        },
        pipeline: 1,
        threads: plan.client_cpus.len().min(connections),
        rate: None,
        expect_status: 200,
        timeout: Duration::from_secs(5),
        cpus: Some(plan.client_cpus.clone()),
    };
    let cpu_before = running.cpu_s();
    let report = client::run(&opts);
    let cpu = running.cpu_s().zip(cpu_before).map(|(a, b)| a - b);
    let usage = running.stop();
    match report {
        Ok(report) => {
            row.notes.extend(error_notes(&report));
            if report.stats.correct == 0 {
                row.notes.push(format!(
                    "no request completed within {:?}",
                    max_cell(plan.duration)
                ));
            } else if report.stats.correct < MIN_COMPLETIONS {
                row.notes.push(format!(
                    "only {} requests completed within {:?}",
                    report.stats.correct,
                    max_cell(plan.duration)
                ));
            }
            row.measured = Some(measure(&report, &usage, cpu));
        }
        Err(e) => row.notes.push(format!("load generator failed: {e}")),
    }
    if usage.killed {
        row.notes
            .push("the server did not exit within 15 s of SIGTERM and was killed".into());
    } else if usage.exit != 0 {
        row.notes.push(format!(
            "the server exited with status {} ({})",
            usage.exit,
            running.last_line()
        ));
    }
    row
}

/// The longest a cell may run to get its completions.
fn max_cell(duration: Duration) -> Duration {
    (duration * MAX_CELL_FACTOR).max(MAX_CELL_MIN)
}

fn measure(r: &Report, u: &Usage, cpu_s: Option<f64>) -> Measured {
    let correct = r.stats.correct;
    let per = |v: f64| (correct > 0).then(|| v / correct as f64);
    Measured {
        completed: correct,
        requests_per_s: r.requests_per_s(),
        p50_us: r.percentile_us(50.0),
        p99_us: r.percentile_us(99.0),
        errors: r.stats.errors.total(),
        cpu_s_per_10k: per(u.cpu_s * 10_000.0),
        cpu_us_per_req: cpu_s.and_then(|c| per(c * 1e6)),
        ctx_switches_per_req: per(u.ctx_switches as f64),
        peak_rss_kib: u.max_rss_kib,
    }
}

/// The breakdown of a cell's errors, so a table full of 404s does not pass for a result.
fn error_notes(r: &Report) -> Option<String> {
    let e = &r.stats.errors;
    if e.total() == 0 {
        return None;
    }
    let mut parts = Vec::new();
    for (n, what) in [
        (e.connect, "connect"),
        (e.read, "reset/read"),
        (e.timeout, "timeout"),
        (e.status, "bad status (not 200)"),
        (e.malformed, "malformed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    Some(format!("errors: {}", parts.join(", ")))
}

const COLUMNS: [&str; 12] = [
    "model",
    "workload",
    "connections",
    "completed",
    "requests_per_s",
    "p50_us",
    "p99_us",
    "errors",
    "cpu_s_per_10k",
    "cpu_us_per_req",
    "ctx_switches_per_req",
    "peak_rss_kib",
];

/// A row's fields as text; `missing` stands for what was not measured.
fn fields(row: &Row, missing: &str) -> Vec<String> {
    let opt =
        |v: Option<f64>, prec: usize| v.map_or(missing.to_string(), |v| format!("{v:.prec$}"));
    let mut out = vec![
        row.model.to_string(),
        row.workload.name().to_string(),
        row.connections.to_string(),
    ];
    match &row.measured {
        // No completion: no rate, no latency, no cost per request (never a 0.0 that reads as
        // a measured zero; the notes say why).
        Some(m) if m.completed == 0 => {
            out.push("0".into());
            out.extend(std::iter::repeat_n(missing.to_string(), 3));
            out.push(m.errors.to_string());
            out.extend(std::iter::repeat_n(missing.to_string(), 3));
            out.push(m.peak_rss_kib.to_string());
        }
        Some(m) => out.extend([
            m.completed.to_string(),
            format!("{:.1}", m.requests_per_s),
            m.p50_us.to_string(),
            m.p99_us.to_string(),
            m.errors.to_string(),
            opt(m.cpu_s_per_10k, 3),
            opt(m.cpu_us_per_req, 2),
            opt(m.ctx_switches_per_req, 3),
            m.peak_rss_kib.to_string(),
        ]),
        None => {
            out.extend(std::iter::repeat_n(missing.to_string(), 4));
            out.push("start-failed".into());
            out.extend(std::iter::repeat_n(missing.to_string(), 4));
        }
    }
    out
}

fn csv(rows: &[Row]) -> String {
    let mut s = COLUMNS.join(",");
    s.push('\n');
    for row in rows {
        s.push_str(&fields(row, "").join(","));
        s.push('\n');
    }
    s
}

fn markdown(rows: &[Row]) -> String {
    let mut s = format!("| {} |\n", COLUMNS.join(" | "));
    // Text columns left, numbers right.
    let align: Vec<&str> = (0..COLUMNS.len())
        .map(|i| if i < 2 { ":---" } else { "---:" })
        .collect();
    let _ = writeln!(s, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(s, "| {} |", fields(row, "-").join(" | "));
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.notes.iter().map(move |n| {
                format!(
                    "- {} {} c={}: {n}",
                    r.model,
                    r.workload.name(),
                    r.connections
                )
            })
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nNotes:\n");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
    s
}

/// Per workload, two panels side by side: requests/s, and the server's CPU per request. A
/// cell without completions has neither point.
fn chart(plan: &Plan, rows: &[Row]) -> String {
    let panel = |w: Workload, y_label: &str, value: &dyn Fn(&Measured) -> Option<f64>| svg::Panel {
        title: format!("{} ({})", w.name(), w.path()),
        y_label: y_label.to_string(),
        series: plan
            .models
            .iter()
            .map(|m| svg::Series {
                name: m.name().to_string(),
                points: rows
                    .iter()
                    .filter(|r| r.model == m.name() && r.workload == w)
                    .filter_map(|r| {
                        let m = r.measured.as_ref().filter(|m| m.completed > 0)?;
                        Some((r.connections as f64, value(m)?))
                    })
                    .collect(),
            })
            .collect(),
    };
    let panels: Vec<svg::Panel> = plan
        .workloads
        .iter()
        .flat_map(|&w| {
            [
                panel(w, "requests/s", &|m| Some(m.requests_per_s)),
                panel(w, "server CPU µs/request", &|m| m.cpu_us_per_req),
            ]
        })
        .collect();
    svg::chart(&panels, "connections (log scale)")
}

/// The document root the servers serve, in the temp dir, removed when dropped.
struct DocRoot {
    path: PathBuf,
}

impl DocRoot {
    fn new() -> std::io::Result<DocRoot> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("edgeserve-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        let root = DocRoot { path };
        let mut small = b"edgeserve-bench small file: ".repeat(4);
        small.resize(SMALL_SIZE - 1, b'.');
        small.push(b'\n');
        std::fs::create_dir_all(root.path.join("up"))?;
        std::fs::write(root.path.join("up/small.txt"), &small)?;
        std::fs::write(root.path.join("small.txt"), small)?;
        // Not all zeros, so nothing along the way can get away with compressing it.
        let large: Vec<u8> = (0..LARGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.path.join("large.bin"), large)?;
        Ok(root)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DocRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(measured: Option<Measured>) -> Row {
        Row {
            model: "single",
            workload: Workload::Small,
            connections: 16,
            measured,
            notes: vec!["x".into()],
        }
    }

    #[test]
    fn csv_and_markdown_have_every_column() {
        let rows = vec![
            row(Some(Measured {
                completed: 300,
                requests_per_s: 1234.56,
                p50_us: 10,
                p99_us: 90,
                errors: 0,
                cpu_s_per_10k: Some(0.5),
                cpu_us_per_req: Some(12.345),
                ctx_switches_per_req: None,
                peak_rss_kib: 4000,
            })),
            row(None),
        ];
        let c = csv(&rows);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "single,small,16,300,1234.6,10,90,0,0.500,12.35,,4000"
        );
        assert_eq!(lines[2].split(',').count(), COLUMNS.len());
        assert!(lines[2].contains("start-failed"));
        let m = markdown(&rows);
        assert!(m.contains("| single | small | 16 | 300 | 1234.6 |"));
        assert!(m.contains("- single small c=16: x"));
    }

    /// A cell in which nothing completed shows no rate, latency or cost (not 0.0), and no point
    /// on the chart.
    #[test]
    fn a_cell_without_completions_prints_no_rate() {
        let nothing = Measured {
            completed: 0,
            requests_per_s: 0.0,
            p50_us: 0,
            p99_us: 0,
            errors: 0,
            cpu_s_per_10k: None,
            cpu_us_per_req: None,
            ctx_switches_per_req: None,
            peak_rss_kib: 9000,
        };
        let rows = vec![row(Some(nothing.clone()))];
        let line = csv(&rows).lines().nth(1).unwrap().to_string();
        assert_eq!(line, "single,small,16,0,,,,0,,,,9000");
        let m = markdown(&rows);
        assert!(
            m.contains("| single | small | 16 | 0 | - | - | - | 0 |"),
            "{m}"
        );
        assert!(!m.contains("0.0"), "{m}");
        // On the chart: one legend marker, and the two points (req/s, CPU) of a cell that did
        // complete requests; none for the empty cell.
        let plan = parse(vec!["--models".into(), "single".into()]).unwrap();
        let mut done = row(Some(Measured {
            completed: 500,
            requests_per_s: 2000.0,
            cpu_us_per_req: Some(20.0),
            ..nothing
        }));
        done.connections = 128;
        let rows = vec![rows.into_iter().next().unwrap(), done];
        let svg = chart(&plan, &rows);
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    }

    #[test]
    fn flags() {
        let p = parse(
            "--models single,sharded --workloads small --connections 1,4 --duration 300ms --long"
                .split_whitespace()
                .map(String::from)
                .collect(),
        )
        .unwrap();
        assert_eq!(p.models, vec![Model::Single, Model::Sharded]);
        assert_eq!(p.connections, vec![1, 4]);
        assert_eq!(p.duration, Duration::from_secs(3));
        assert!(parse(vec!["--models".into(), "nope".into()]).is_err());
        assert!(parse(vec!["--workloads".into(), "huge".into()]).is_err());
    }
}
