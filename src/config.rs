//! Configuration: defaults, command-line flags and their validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::files::mime::MimeTypes;
use crate::http::session::Limits;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    File(PathBuf),
    Off,
}

/// One listening address (`--listen`, repeatable) and what its connections speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Connections begin with a TLS handshake.
    pub tls: bool,
    /// Connections begin with a PROXY protocol header naming the real client.
    pub proxy_protocol: bool,
}

impl Listen {
    /// Plain HTTP on `addr`.
    pub fn plain(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            tls: false,
            proxy_protocol: false,
        }
    }
}

/// Requests whose path starts with `prefix` go to one of `upstreams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen, in the order given (never empty once parsed).
    pub listen: Vec<Listen>,
    pub root: PathBuf,
    pub backlog: i32,
    /// Most connections open at once; `None` derives it from the descriptor limit.
    pub max_conns: Option<usize>,
    /// From the first byte of a request head until the head is complete (slowloris).
    pub header_timeout: Duration,
    /// Between keep-alive requests.
    pub idle_timeout: Duration,
    /// Longest time without write progress while output is pending.
    pub send_timeout: Duration,
    /// How long a closing connection keeps reading what the client still sends, so the close does
    /// not turn into a reset that destroys the answer in flight.
    pub linger_timeout: Duration,
    /// How long a graceful shutdown waits for answers in flight.
    pub grace: Duration,
    pub limits: Limits,
    /// Bytes a connection may read or write per turn before others get theirs.
    pub budget: usize,
    pub access_log: AccessLog,
    pub log_level: log::LevelFilter,
    pub follow_symlinks_outside: bool,
    pub index: String,
    pub mime_types: Option<PathBuf>,
    pub cache_entries: usize,
    pub cache_valid: Duration,
    pub inline_max: u64,
    /// Switch to this user after binding.
    pub user: Option<String>,
    /// Paths forwarded to upstream servers (longest prefix wins).
    pub proxies: Vec<Route>,
    pub proxy_connect_timeout: Duration,
    /// Longest wait for upstream bytes while a response is due.
    pub proxy_timeout: Duration,
    /// Most idle connections kept per upstream; `None`: the connection limit (the idle timeout
    /// is what closes them).
    pub proxy_idle: Option<usize>,
    /// An idle upstream connection unused for this long is closed.
    pub proxy_idle_timeout: Duration,
    /// How long an upstream that refused or timed out is skipped.
    pub proxy_fail_timeout: Duration,
    /// Believe the client's X-Forwarded-For, X-Real-IP and Forwarded (it is a proxy of ours):
    /// extend the chain rather than replace it.
    pub proxy_trust_forwarded: bool,
    /// A tunnel (a proxied connection after `101 Switching Protocols`) with no byte either way
    /// for this long is closed; so is the open half of a half-closed one.
    pub tunnel_timeout: Duration,
    /// Most tunnels open at once in the whole server; `None`: a quarter of the connection limit.
    pub max_tunnels: Option<usize>,
    /// Where handlers run and how many loops there are.
    pub model: Model,
    /// Threads for the models that have several; 0 means the available parallelism.
    pub workers: usize,
    /// Serve `/_bench/cpu?us=N` and `/_bench/sleep?ms=N` (model comparisons only).
    pub bench_routes: bool,
}

/// The server models (`--model`): the same protocol core, run on different thread layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Model {
    /// One thread does everything.
    #[default]
    Single,
    /// The loop does all socket I/O; worker threads run the handler (half-sync/half-async).
    ProactorPool,
    /// The loop only waits for readiness; worker threads read, parse, handle and write
    /// (half-sync/half-reactive).
    ReactorPool,
    /// One independent loop per thread, each with its own SO_REUSEPORT listener.
    Sharded,
    /// Threads take turns waiting on one poller; the leader hands the wait on before it works.
    LeaderFollowers,
}

impl Model {
    pub const ALL: [Model; 5] = [
        Model::Single,
        Model::ProactorPool,
        Model::ReactorPool,
        Model::Sharded,
        Model::LeaderFollowers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Single => "single",
            Model::ProactorPool => "proactor-pool",
            Model::ReactorPool => "reactor-pool",
            Model::Sharded => "sharded",
            Model::LeaderFollowers => "leader-followers",
        }
    }

    pub fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.name() == s)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![Listen::plain(SocketAddr::from(([127, 0, 0, 1], 8080)))],
            root: PathBuf::from("."),
            backlog: 1024,
            max_conns: None,
            // nginx: client_header_timeout 60s, keepalive_timeout 75s, send_timeout 60s.
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            linger_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(10),
            limits: Limits::default(),
            budget: 256 * 1024,
            // Off by default, as lighttpd's: on a small machine a line per request is flash wear
            // and CPU (a quarter of the loop at full load) that the user should ask for.
            access_log: AccessLog::Off,
            log_level: log::LevelFilter::Info,
            follow_symlinks_outside: false,
            index: "index.html".into(),
            mime_types: None,
            cache_entries: 1024,
            cache_valid: Duration::from_secs(1),
            inline_max: 16 * 1024,
            user: None,
            proxies: Vec::new(),
            proxy_connect_timeout: Duration::from_secs(3),
            proxy_timeout: Duration::from_secs(60),
            proxy_idle: None,
            proxy_idle_timeout: Duration::from_secs(4),
            proxy_fail_timeout: Duration::from_secs(10),
            proxy_trust_forwarded: false,
            tunnel_timeout: Duration::from_secs(60),
            max_tunnels: None,
            model: Model::Single,
            workers: 0,
            bench_routes: false,
        }
    }
}

pub const USAGE: &str = "\
edgeserve: a single-threaded, event-driven HTTP/1.1 static file server

Usage: edgeserve [OPTIONS] [DIR]

  DIR                     document root (same as --root)
  --listen ADDR           address to listen on (repeatable) [127.0.0.1:8080]
  --root DIR              document root                     [.]
  --backlog N             listen backlog                    [1024]
  --max-conns N           most open connections             [descriptor limit - cache - 32]
  --header-timeout T      time to receive a request head    [60s]
  --idle-timeout T        keep-alive idle time              [75s]
  --send-timeout T        time without write progress       [60s]
  --linger-timeout T      reading after an error answer     [5s]
  --grace T               shutdown grace period             [10s]
  --max-head BYTES        longest request head              [8192]
  --max-headers N         most header lines (<= 128)        [64]
  --max-body BYTES        longest request body read         [1048576]
  --budget BYTES          I/O per connection per turn       [262144]
  --access-log WHERE      '-' (stdout), a file, or 'off'    [off]
  --log-level LEVEL       error, warn, info, debug, off     [info]
  --follow-symlinks       serve symlinks that leave the root
  --index NAME            directory index file              [index.html]
  --mime-types FILE       extra extension-to-type table
  --cache-entries N       file cache size                   [1024]
  --cache-valid T         file cache revalidation interval  [1s]
  --inline-max BYTES      files held in memory up to        [16384]
  --proxy PREFIX=ADDR[,ADDR]  forward paths under PREFIX to upstream HOST:PORTs (repeatable)
  --proxy-connect-timeout T   upstream connect timeout       [3s]
  --proxy-timeout T       wait for upstream bytes           [60s]
  --proxy-idle N          most idle conns per upstream      [max-conns]
  --proxy-idle-timeout T  close an upstream conn unused for [4s]
  --proxy-fail-timeout T  skip a failed upstream for        [10s]
  --proxy-trust-forwarded keep the client's X-Forwarded-For, X-Real-IP and
                          Forwarded (only behind a proxy of yours)
  --tunnel-timeout T      idle WebSocket/Upgrade tunnel     [60s]
  --max-tunnels N         most tunnels open at once         [max-conns / 4]
  --model NAME            single, proactor-pool, reactor-pool, sharded
                          or leader-followers               [single]
  --workers N             threads for the other models      [available cores]
  --bench-routes          serve /_bench/cpu?us=N and /_bench/sleep?ms=N
  --user NAME             switch to this user after binding (port 80 as root)
  -h, --help              this text
  -V, --version           the version

Times take a unit: 500ms, 2s, 1m (a bare number is seconds).
Started by systemd socket activation (LISTEN_FDS), it serves the socket it was given.
SIGTERM or SIGINT: finish what is in flight (a second one: stop now). SIGHUP or SIGUSR1:
reopen the access log.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// Parses flags (`--flag value` or `--flag=value`). Errors are one line for the user.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut c = Config::default();
    let mut args = args.into_iter();
    let mut root_given = false;
    // The first `--listen` replaces the default address; later ones add to it.
    let mut listen_given = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--listen" => {
                let addr = parse_addr(&value()?)?;
                if !listen_given {
                    c.listen.clear();
                    listen_given = true;
                }
                add_listener(&mut c.listen, Listen::plain(addr))?;
            }
            "--root" => {
                c.root = PathBuf::from(value()?);
                root_given = true;
            }
            "--backlog" => c.backlog = number(&flag, &value()?, 1, i32::MAX as u64)? as i32,
            "--max-conns" => c.max_conns = Some(number(&flag, &value()?, 1, 1 << 24)? as usize),
            "--header-timeout" => c.header_timeout = duration(&flag, &value()?)?,
            "--idle-timeout" => c.idle_timeout = duration(&flag, &value()?)?,
            "--send-timeout" => c.send_timeout = duration(&flag, &value()?)?,
            "--linger-timeout" => c.linger_timeout = duration(&flag, &value()?)?,
            "--grace" => c.grace = duration(&flag, &value()?)?,
            "--max-head" => c.limits.max_head = number(&flag, &value()?, 64, 1 << 20)? as usize,
            "--max-headers" => {
                c.limits.max_headers = number(
                    &flag,
                    &value()?,
                    1,
                    crate::http::request::MAX_HEADERS as u64,
                )? as usize
            }
            "--max-body" => c.limits.max_body = number(&flag, &value()?, 0, u64::MAX)?,
            "--budget" => c.budget = number(&flag, &value()?, 4096, 1 << 30)? as usize,
            "--access-log" => {
                c.access_log = match value()?.as_str() {
                    "-" | "stdout" => AccessLog::Stdout,
                    "off" => AccessLog::Off,
                    path => AccessLog::File(PathBuf::from(path)),
                }
            }
            "--log-level" => {
                c.log_level = value()?.parse().map_err(|_| {
                    "--log-level: expected error, warn, info, debug or off".to_string()
                })?
            }
            "--follow-symlinks" => c.follow_symlinks_outside = true,
            "--index" => {
                c.index = value()?;
                if c.index.is_empty() || c.index.contains('/') || c.index == ".." {
                    return Err("--index: expected a file name".into());
                }
            }
            "--mime-types" => c.mime_types = Some(PathBuf::from(value()?)),
            "--cache-entries" => c.cache_entries = number(&flag, &value()?, 1, 1 << 20)? as usize,
            "--cache-valid" => c.cache_valid = duration(&flag, &value()?)?,
            "--user" => c.user = Some(value()?),
            "--proxy" if !cfg!(feature = "proxy") => {
                return Err("--proxy: this build has no proxy (cargo feature \"proxy\")".into());
            }
            "--proxy" => c.proxies.push(parse_route(&value()?)?),
            "--proxy-connect-timeout" => c.proxy_connect_timeout = duration(&flag, &value()?)?,
            "--proxy-timeout" => c.proxy_timeout = duration(&flag, &value()?)?,
            "--proxy-idle" => {
                let v = value()?;
                if v.parse::<u64>().is_err() && duration(&flag, &v).is_ok() {
                    // Easy to mix up with the idle time since the pool went by time.
                    return Err(format!(
                        "--proxy-idle: expected a count of connections, got {v:?} \
                         (the idle time is --proxy-idle-timeout)"
                    ));
                }
                c.proxy_idle = Some(number(&flag, &v, 0, 1 << 24)? as usize)
            }
            "--proxy-idle-timeout" => c.proxy_idle_timeout = duration(&flag, &value()?)?,
            "--proxy-fail-timeout" => c.proxy_fail_timeout = duration(&flag, &value()?)?,
            "--proxy-trust-forwarded" => c.proxy_trust_forwarded = true,
            "--tunnel-timeout" => c.tunnel_timeout = duration(&flag, &value()?)?,
            "--max-tunnels" => c.max_tunnels = Some(number(&flag, &value()?, 0, 1 << 24)? as usize),
            "--model" => {
                let v = value()?;
                c.model = Model::parse(&v).ok_or_else(|| {
                    format!("--model: expected single, proactor-pool, reactor-pool, sharded or leader-followers, got {v:?}")
                })?
            }
            "--workers" => c.workers = number(&flag, &value()?, 1, 1024)? as usize,
            "--bench-routes" if !cfg!(feature = "bench-routes") => {
                return Err(
                    "--bench-routes: this build has no bench routes (cargo feature \"bench-routes\")"
                        .into(),
                );
            }
            "--bench-routes" => c.bench_routes = true,
            "--inline-max" => c.inline_max = number(&flag, &value()?, 0, 1 << 24)?,
            f if f.starts_with('-') => return Err(format!("unknown option {f} (see --help)")),
            dir if !root_given => {
                c.root = PathBuf::from(dir);
                root_given = true;
            }
            extra => return Err(format!("unexpected argument {extra:?} (see --help)")),
        }
    }
    if c.header_timeout.is_zero()
        || c.idle_timeout.is_zero()
        || c.send_timeout.is_zero()
        || c.tunnel_timeout.is_zero()
    {
        return Err("timeouts must be greater than zero".into());
    }
    Ok(Command::Run(Box::new(c)))
}

impl Config {
    /// Threads for the multi-threaded models.
    pub fn threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Most tunnels open at once, given the connection limit in force (`--max-conns` or the one
    /// derived from the descriptor limit).
    pub fn tunnel_limit(&self, max_conns: usize) -> usize {
        self.max_tunnels.unwrap_or((max_conns / 4).max(1))
    }

    /// Most idle connections per upstream for a loop of `max_conns` connections: by default as
    /// many as could ever be busy at once, so only the idle timeout closes them under load.
    pub fn proxy_idle_cap(&self, max_conns: usize) -> usize {
        self.proxy_idle.unwrap_or(max_conns)
    }

    /// The mime table: built in, plus `--mime-types`.
    pub fn mime(&self) -> Result<MimeTypes, String> {
        let mut m = MimeTypes::default();
        if let Some(path) = &self.mime_types {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--mime-types {}: {e}", path.display()))?;
            m.load(&text)
                .map_err(|e| format!("--mime-types {}: {e}", path.display()))?;
        }
        Ok(m)
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` or `:PORT` (all IPv4 addresses). No name lookup:
/// resolving names would pull the resolver (and, in a static build, NSS) into the binary.
/// Adds a listener, refusing an address given twice (the second bind would fail with a less
/// clear message, or, with SO_REUSEPORT in the sharded model, silently split the connections).
pub fn add_listener(list: &mut Vec<Listen>, l: Listen) -> Result<(), String> {
    if list.iter().any(|o| o.addr == l.addr && o.addr.port() != 0) {
        return Err(format!("--listen: {} is given twice", l.addr));
    }
    list.push(l);
    Ok(())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let port = |p: &str| p.parse::<u16>().ok();
    let addr = match s.rsplit_once(':') {
        Some(("", p)) => port(p).map(|p| SocketAddr::from(([0, 0, 0, 0], p))),
        Some((host, p)) if host.eq_ignore_ascii_case("localhost") => {
            port(p).map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        }
        _ => None,
    };
    addr.ok_or_else(|| {
        format!("--listen: {s:?} is not an address (expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)")
    })
}

/// `PREFIX=HOST:PORT[,HOST:PORT...]`.
fn parse_route(v: &str) -> Result<Route, String> {
    let (prefix, addrs) = v
        .split_once('=')
        .ok_or_else(|| format!("--proxy: expected PREFIX=HOST:PORT[,HOST:PORT...], got {v:?}"))?;
    if !prefix.starts_with('/') {
        return Err(format!(
            "--proxy: the prefix must start with '/', got {prefix:?}"
        ));
    }
    let upstreams = addrs
        .split(',')
        .map(|a| parse_addr(a).map_err(|e| e.replace("--listen", "--proxy")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Route {
        prefix: prefix.to_string(),
        upstreams,
    })
}

fn number(flag: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a whole number from {min} to {max}, got {v:?}"
        )),
    }
}

/// `500ms`, `2s`, `1m`, `1.5` (seconds).
pub fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (v, 1.0)
    };
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * scale < 1e9 => {
            Ok(Duration::from_secs_f64(x * scale))
        }
        _ => Err(format!(
            "{flag}: expected a time such as 500ms, 2s or 1m, got {v:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags() {
        let c = run(&[
            "--listen",
            "[::1]:0",
            "--header-timeout=250ms",
            "www",
            "--max-conns",
            "10",
        ])
        .unwrap();
        assert_eq!(c.listen, [Listen::plain("[::1]:0".parse().unwrap())]);
        assert_eq!(c.header_timeout, Duration::from_millis(250));
        assert_eq!(c.root, PathBuf::from("www"));
        assert_eq!(c.max_conns, Some(10));
        assert_eq!(c.tunnel_limit(10), 2);
        assert_eq!(c.tunnel_limit(1), 1);
        let c = run(&["--tunnel-timeout", "1s", "--max-tunnels=0"]).unwrap();
        assert_eq!(c.tunnel_timeout, Duration::from_secs(1));
        assert_eq!((c.max_tunnels, c.tunnel_limit(1000)), (Some(0), 0));
        assert_eq!(Config::default().tunnel_limit(1000), 250);
        assert!(matches!(
            parse_args(["--help".to_string()]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn listen_forms_without_name_lookup() {
        let addr = |a: &str| run(&["--listen", a]).unwrap().listen[0].addr;
        assert_eq!(addr("localhost:81"), "127.0.0.1:81".parse().unwrap());
        assert_eq!(addr(":82"), "0.0.0.0:82".parse().unwrap());
        assert_eq!(addr("[::1]:83"), "[::1]:83".parse().unwrap());
        assert!(run(&["--listen", "example.com:80"]).is_err());
    }

    #[test]
    fn several_listeners_replace_the_default() {
        let addrs = |args: &[&str]| -> Vec<SocketAddr> {
            run(args).unwrap().listen.iter().map(|l| l.addr).collect()
        };
        assert_eq!(addrs(&[]), ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(
            addrs(&["--listen", ":81", "--listen=[::]:81"]),
            ["0.0.0.0:81".parse().unwrap(), "[::]:81".parse().unwrap()]
        );
        let twice = run(&["--listen", ":81", "--listen", "0.0.0.0:81"]).unwrap_err();
        assert!(twice.contains("given twice"), "{twice}");
        // Port 0 twice is two different ports.
        assert_eq!(addrs(&["--listen", ":0", "--listen", ":0"]).len(), 2);
    }

    #[test]
    #[cfg(feature = "proxy")]
    fn proxy_routes() {
        let c = run(&[
            "--proxy",
            "/api=127.0.0.1:9000,[::1]:9001",
            "--proxy=/x=localhost:1",
        ])
        .unwrap();
        assert!(!c.proxy_trust_forwarded);
        assert!(
            run(&["--proxy-trust-forwarded"])
                .unwrap()
                .proxy_trust_forwarded
        );
        assert_eq!(c.proxies[0].prefix, "/api");
        assert_eq!(
            c.proxies[0].upstreams,
            [
                "127.0.0.1:9000".parse().unwrap(),
                "[::1]:9001".parse().unwrap()
            ]
        );
        assert_eq!(c.proxies[1].upstreams, ["127.0.0.1:1".parse().unwrap()]);
        // The pool: a count cap (by default the connection limit) and an idle time.
        assert_eq!(c.proxy_idle_cap(500), 500);
        assert_eq!(c.proxy_idle_timeout, Duration::from_secs(4));
        let c = run(&["--proxy-idle", "8", "--proxy-idle-timeout", "250ms"]).unwrap();
        assert_eq!(c.proxy_idle_cap(500), 8);
        assert_eq!(c.proxy_idle_timeout, Duration::from_millis(250));
        // A time given to the count is refused, and the message names the flag for a time.
        let e = run(&["--proxy-idle", "30s"]).unwrap_err();
        assert!(e.contains("--proxy-idle-timeout"), "{e}");
        for bad in [
            "api=1.2.3.4:5",
            "/api",
            "/api=",
            "/api=host:80",
            "/api=1.2.3.4",
        ] {
            assert!(run(&["--proxy", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        for bad in [
            &["--listen", "nowhere"][..],
            &["--bogus"],
            &["--max-conns", "0"],
            &["--idle-timeout", "soon"],
            &["--root"],
            &["a", "b"],
            &["--max-headers", "1000"],
            &["--tunnel-timeout", "0"],
            &["--max-tunnels", "-1"],
        ] {
            let e = run(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
        }
    }
}
