//! edgeserve-bench: an HTTP/1.1 load generator (`run`) and a comparison of the server's models
//! (`compare`). Errors are one line on stderr; bad flags exit with 2, failures with 1.

mod client;
mod compare;
mod cpus;
mod flags;
mod parse;
mod server;
mod stats;
mod svg;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use client::{Limit, Options};
use flags::Flags;
use target::Target;

const USAGE: &str = "\
edgeserve-bench: load generator and model comparison for edgeserve

Usage:
  edgeserve-bench run --url http://IP:PORT/path [OPTIONS]
  edgeserve-bench compare [OPTIONS]

run: drive one URL and report requests/s, errors by kind and latency percentiles
  --url URL              http://IPv4:PORT/path or http://[IPv6]:PORT/path (no DNS, no https)
  --connections N        connections kept open                     [10]
  --duration T           how long to send (500ms, 5s, 1m)           [5s]
  --requests N           send exactly N requests instead of --duration
  --pipeline D           requests in flight per connection         [1]
  --threads T            event loops (connections split evenly)    [available cores]
  --rate R               open loop: R requests/s in all, latency measured from each
                         request's scheduled time                  [closed loop]
  --expect-status CODE   the only status that counts as correct    [200]
  --timeout T            no answer within T is an error            [5s]
  --json                 one JSON object instead of text

compare: start the server in each model and measure it under each workload
  --server PATH          the edgeserve binary                      [next to this one]
  --models LIST          single,proactor-pool,reactor-pool,sharded,leader-followers [all]
  --workloads LIST       small,large,cpu,sleep,proxy               [all]
  --connections LIST     connection counts                         [1,16,128,1024]
  --duration T           per cell, at least; then on until 200 correct
                         answers or 20 x T (5s at least) have passed [250ms]
  --long                 ten times the duration
  --workers N            threads of the multi-threaded models        [8]
  --server-cpus LIST     CPUs for the server (0,2-3)               [first half]
  --client-cpus LIST     CPUs for the load generator               [second half]
  --out DIR              where results.csv and chart.svg go        [bench-out]

  -h, --help             this text
";

/// What went wrong, and so how the process exits.
pub enum Failure {
    /// A bad command line: exit 2.
    Usage(String),
    /// The run itself failed: exit 1.
    Run(String),
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("run") => {
            args.remove(0);
            run(args)
        }
        Some("compare") => {
            args.remove(0);
            compare::main(args)
        }
        Some(other) => Err(Failure::Usage(format!(
            "unknown subcommand {other:?} (expected run or compare; see --help)"
        ))),
        None => Err(Failure::Usage(
            "expected a subcommand, run or compare (see --help)".into(),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("edgeserve-bench: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("edgeserve-bench: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Most connections one run may open: far beyond what a 2-core machine can use, but a typo of
/// a few extra zeros should not exhaust the descriptors.
const MAX_CONNECTIONS: u64 = 100_000;

/// `run`: parse the flags, generate the load, print the report.
fn run(args: Vec<String>) -> Result<(), Failure> {
    let (opts, json) = run_flags(args).map_err(Failure::Usage)?;
    prepare_descriptors(opts.connections);
    let report = client::run(&opts).map_err(Failure::Run)?;
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn run_flags(args: Vec<String>) -> Result<(Options, bool), String> {
    let mut f = Flags::new(args);
    let mut url = None;
    let mut connections = 10;
    let mut duration = None;
    let mut requests = None;
    let mut pipeline = 1;
    let mut threads = None;
    let mut rate = None;
    let mut expect_status = 200;
    let mut timeout = Duration::from_secs(5);
    let mut json = false;
    while let Some(flag) = f.next_flag()? {
        match flag.as_str() {
            "--url" => url = Some(Target::parse(&f.value(&flag)?)?),
            "--connections" | "-c" => {
                connections = flags::number(&flag, &f.value(&flag)?, 1, MAX_CONNECTIONS)? as usize;
            }
            "--duration" | "-d" => duration = Some(flags::duration(&flag, &f.value(&flag)?)?),
            "--requests" | "-n" => {
                requests = Some(flags::number(&flag, &f.value(&flag)?, 1, u64::MAX >> 1)?);
            }
            "--pipeline" => pipeline = flags::number(&flag, &f.value(&flag)?, 1, 1024)? as usize,
            "--threads" | "-t" => {
                threads = Some(flags::number(&flag, &f.value(&flag)?, 1, 1024)? as usize);
            }
            "--rate" => rate = Some(flags::rate(&flag, &f.value(&flag)?)?),
            "--expect-status" => {
                expect_status = flags::number(&flag, &f.value(&flag)?, 100, 999)? as u16;
            }
            "--timeout" => timeout = flags::duration(&flag, &f.value(&flag)?)?,
            "--json" => {
                f.no_value(&flag)?;
                json = true;
            }
            "-h" | "--help" => return Err("see edgeserve-bench --help".into()),
            other => return Err(format!("unknown flag {other} for run (see --help)")),
        }
    }
    let target = url.ok_or("run needs --url http://IP:PORT/path")?;
    let limit = match (duration, requests) {
        (Some(_), Some(_)) => return Err("give --duration or --requests, not both".into()),
        (_, Some(n)) => Limit::Requests(n),
        (d, None) => Limit::Duration(d.unwrap_or(Duration::from_secs(5))),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or(cores).min(connections);
    Ok((
        Options {
            target,
            connections,
            limit,
            pipeline,
            threads,
            rate,
            expect_status,
            timeout,
            cpus: None,
        },
        json,
    ))
}

/// Each connection is a descriptor: raise the soft limit to the hard one when many are asked
/// for, and warn (once, on stderr) when even that is too low.
pub fn prepare_descriptors(connections: usize) {
    let limit = edgeserve::service::raise_nofile_limit();
    if let Some(limit) = limit
        && (connections as u64) + 64 > limit
    {
        eprintln!(
            "edgeserve-bench: warning: {connections} connections but a descriptor limit of {limit}; \
             some connects will fail (raise it with ulimit -n)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(s: &str) -> Result<(Options, bool), String> {
        run_flags(s.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn run_defaults_and_limits() {
        let (o, json) = flags("--url http://127.0.0.1:1/x").unwrap();
        assert!(!json);
        assert_eq!(o.limit, Limit::Duration(Duration::from_secs(5)));
        assert_eq!(o.expect_status, 200);
        let (o, json) = flags("--url=http://127.0.0.1:1/ --requests 7 --json --rate 100").unwrap();
        assert!(json);
        assert_eq!(o.limit, Limit::Requests(7));
        assert_eq!(o.rate, Some(100.0));
        assert!(flags("--url http://127.0.0.1:1/ --requests 7 --duration 1s").is_err());
        assert!(flags("--connections 5").is_err());
        assert!(flags("--url http://127.0.0.1:1/ --pipeline 0").is_err());
        assert!(flags("--url http://127.0.0.1:1/ --bogus").is_err());
        let (o, _) = flags("--url http://127.0.0.1:1/ -c 1 --threads 8").unwrap();
        assert_eq!(o.threads, 1);
    }
}
