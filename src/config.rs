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

/// `--header [PREFIX=]'Name: value'`: a response header line for answers to paths under
/// `prefix` (compared with the normalised path, as the proxy's prefixes are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraHeader {
    pub prefix: String,
    /// `Name: value`, checked, without CRLF.
    pub line: String,
}

/// Requests whose path starts with `prefix` go to one of `upstreams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub upstreams: Vec<SocketAddr>,
}

/// The routes of one configuration, shared: a relay keeps the ones it started with, so a reload
/// that changes them cannot send its failover somewhere else.
pub type Routes = std::sync::Arc<[Route]>;

/// Requests whose normalised path starts with `prefix` need a user of the htpasswd `file`
/// (`--auth`); `realm` names the protection space in the challenge (default: an
/// `--auth-realm` for the prefix, else the prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRule {
    pub prefix: String,
    pub file: PathBuf,
    pub realm: Option<String>,
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
    /// Extra response headers by path prefix (`--header`), in command-line order.
    pub headers: Vec<ExtraHeader>,
    /// Pages served for error statuses (`--error-page STATUS=PATH`), PATH a request path.
    pub error_pages: Vec<(u16, String)>,
    /// Serve `NAME.br`, `NAME.zst`, `NAME.gz` for `NAME` when the client takes them.
    pub precompressed: bool,
    /// An HTML index for directories without an index file.
    pub dir_listing: bool,
    /// The file named by `--config`, read again on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// The command line this configuration came from (a reload parses it again, file and all).
    pub args: Vec<String>,
    /// Answer `GET`/`HEAD` of this path with 200 at once, before routes and files (load
    /// balancers' health checks).
    pub health: Option<String>,
    /// Every connection begins with a PROXY protocol header (v1 or v2) from a load balancer,
    /// whose source address becomes the client's.
    pub proxy_protocol: bool,
    /// Prefixes behind Basic authentication (longest prefix wins).
    pub auth: Vec<AuthRule>,
    /// `--auth-realm PREFIX=REALM`, each for an `--auth` prefix (checked at startup, so that the
    /// two flags may come in any order, from the file or the command line).
    pub auth_realms: Vec<(String, String)>,
    /// Pass the Authorization field of an authenticated request on to the upstream.
    pub auth_forward: bool,
    /// How long a successful check is remembered (0: never).
    pub auth_cache: Duration,
    /// Threads that check passwords.
    pub auth_threads: usize,
    /// HTTPS: certificate and what plain listeners do (feature "tls").
    pub tls: TlsConfig,
}

/// The HTTPS flags (the TLS listeners are `Listen { tls: true, .. }`, from `--listen-tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--tls-cert`: the certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// `--tls-key`: its private key (PEM: PKCS#8, RSA or SEC1).
    pub key: Option<PathBuf>,
    /// `--redirect-https`: plain listeners answer GET and HEAD with 308 to the https URL.
    pub redirect: bool,
    /// `--hsts`: Strict-Transport-Security's max-age on answers over TLS.
    pub hsts: Option<u64>,
}

/// The HTTPS flags make sense together: a TLS listener needs a certificate and key, and the
/// rest need a TLS listener. A PROXY protocol header before a TLS handshake is not read yet.
pub fn check_tls(c: &Config) -> Result<(), String> {
    let t = &c.tls;
    if !c.listen.iter().any(|l| l.tls) {
        if t.cert.is_some() || t.key.is_some() || t.redirect || t.hsts.is_some() {
            return Err(
                "--tls-cert, --tls-key, --redirect-https and --hsts need --listen-tls".into(),
            );
        }
    } else if t.cert.is_none() || t.key.is_none() {
        return Err("--listen-tls needs --tls-cert and --tls-key".into());
    }
    if c.listen.iter().any(|l| l.tls && l.proxy_protocol) {
        return Err("--listen-tls: the PROXY protocol in front of TLS is not supported".into());
    }
    Ok(())
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
            budget: 1024 * 1024,
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
            headers: Vec::new(),
            error_pages: Vec::new(),
            precompressed: false,
            dir_listing: false,
            config_file: None,
            args: Vec::new(),
            health: None,
            proxy_protocol: false,
            auth: Vec::new(),
            auth_realms: Vec::new(),
            auth_forward: false,
            auth_cache: Duration::from_secs(60),
            auth_threads: 1,
            tls: TlsConfig::default(),
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
  --budget BYTES          I/O per connection per turn      [1048576]
  --access-log WHERE      '-' (stdout), a file, or 'off'    [off]
  --log-level LEVEL       error, warn, info, debug, off     [info]
  --follow-symlinks       serve symlinks that leave the root
  --index NAME            directory index file              [index.html]
  --mime-types FILE       extra extension-to-type table
  --cache-entries N       file cache size                   [1024]
  --cache-valid T         file cache revalidation interval  [1s]
  --inline-max BYTES      files held in memory up to        [16384]
  --header LINE           add a response header, LINE '[PREFIX=]Name: value',
                          to answers for paths under PREFIX (default all; repeatable)
  --error-page STATUS=PATH  serve the file PATH (under the root) for errors with
                          STATUS: 400, 403, 404, 405, 406, 416, 503 (repeatable)
  --precompressed         serve NAME.br, NAME.zst or NAME.gz for NAME when the
                          client's Accept-Encoding takes it
  --dir-listing           list directories without an index file (HTML)
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
  --auth PREFIX=FILE      Basic authentication for paths under PREFIX, users from
                          an htpasswd FILE (bcrypt, SHA-256/512-crypt; repeatable)
  --auth-realm PREFIX=REALM  the realm browsers show for PREFIX [PREFIX]
  --auth-forward          pass Authorization on to upstreams (else removed)
  --auth-cache T          remember a successful check for   [60s]
  --auth-threads N        threads that check passwords      [1]
  --listen-tls ADDR       also listen with TLS (HTTPS) on ADDR (repeatable)
  --tls-cert FILE         certificate chain for TLS (PEM, leaf first)
  --tls-key FILE          its private key (PEM: PKCS#8, RSA or SEC1)
  --redirect-https        plain listeners answer GET/HEAD with 308 to https
  --hsts SECONDS          Strict-Transport-Security max-age on TLS answers
  --health PATH           answer 200 to PATH at once (load balancer checks)
  --proxy-protocol        each connection begins with a PROXY v1/v2 header
                          (one listener only: --listen 'ADDR proxy-protocol')
                          (behind HAProxy or nginx stream with send-proxy)
  --config FILE           read settings from FILE first: one 'name value' per line,
                          '#' comments; command-line flags replace the file's lines
                          of the same name (repeatable ones too)
  --check-config          check the settings, root and files they name; exit 0 or 2
  -h, --help              this text
  -V, --version           the version

Times take a unit: 500ms, 2s, 1m (a bare number is seconds).
Started by systemd socket activation (LISTEN_FDS), it serves the socket it was given.
SIGTERM or SIGINT: finish what is in flight (a second one: stop now). SIGHUP: read the
config file and the files it names again, apply them to new requests, reopen the access
log and the TLS certificate and key (a reload that fails changes nothing). SIGUSR1: reopen
the access log.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    /// `--check-config`: validate and exit.
    Check(Box<Config>),
    Help,
    Version,
}

/// Parses flags (`--flag value` or `--flag=value`), after the lines of the `--config` file if
/// one is named. Errors are one line for the user.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    parse(args.into_iter().collect())
}

/// `parse_args` without the generic parameter: one copy of the parser in the binary, whoever
/// calls it (startup, a reload).
fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut c = Config::default();
    let mut seen = Seen::default();
    if let Some(path) = config_file_arg(&args)? {
        let text = read_config(&path).map_err(|e| format!("--config {}: {e}", path.display()))?;
        // A flag given on the command line replaces every line of that name in the file (for a
        // repeatable flag too: its list is the command line's).
        let given: Vec<&str> = args
            .iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split_once('=').map_or(a.as_str(), |(f, _)| f))
            .collect();
        for line in file_lines(&text) {
            let (n, name, value) = line;
            let at = |e: String| format!("{}:{n}: {e}", path.display());
            let flag = format!("--{name}");
            if matches!(name, "config" | "check-config" | "help" | "version") {
                return Err(at(format!("{name:?} is for the command line only")));
            }
            if given.contains(&flag.as_str()) {
                continue;
            }
            let mut value = Some(value.to_string()).filter(|v| !v.is_empty());
            let mut take = || value.take().ok_or_else(|| format!("{name} needs a value"));
            match set(&mut c, &mut seen, &flag, &mut take).map_err(at)? {
                Set::Done => {}
                _ => return Err(at(format!("unknown setting {name:?}"))),
            }
            if value.is_some() {
                return Err(at(format!("{name} takes no value")));
            }
        }
        c.config_file = Some(path);
    }
    let mut check = false;
    let mut rest = args.iter().cloned();
    let mut root_given = false;
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| rest.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match set(&mut c, &mut seen, &flag, &mut value)? {
            Set::Done => root_given |= flag == "--root",
            Set::Help => return Ok(Command::Help),
            Set::Version => return Ok(Command::Version),
            Set::Check => check = true,
            Set::Unknown if flag.starts_with('-') => {
                return Err(format!("unknown option {flag} (see --help)"));
            }
            Set::Unknown if !root_given => {
                c.root = PathBuf::from(arg);
                root_given = true;
            }
            Set::Unknown => return Err(format!("unexpected argument {arg:?} (see --help)")),
        }
    }
    if c.header_timeout.is_zero()
        || c.idle_timeout.is_zero()
        || c.send_timeout.is_zero()
        || c.tunnel_timeout.is_zero()
    {
        return Err("timeouts must be greater than zero".into());
    }
    if c.proxy_protocol {
        for l in &mut c.listen {
            l.proxy_protocol = true;
        }
    }
    c.args = args;
    Ok(if check {
        Command::Check(Box::new(c))
    } else {
        Command::Run(Box::new(c))
    })
}

/// The file named by `--config FILE` (or `--config=FILE`), if any.
fn config_file_arg(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let path = match a.strip_prefix("--config") {
            Some("") => it.next().ok_or("--config needs a value")?.clone(),
            Some(v) if v.starts_with('=') => v[1..].to_string(),
            _ => continue,
        };
        if found.replace(PathBuf::from(path)).is_some() {
            return Err("--config: given twice".into());
        }
    }
    Ok(found)
}

/// The longest config file read (a typo naming a device or a huge file must not eat memory).
const MAX_CONFIG_FILE: u64 = 1 << 20;

fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(std::io::Error::other("longer than 1 MiB"));
    }
    Ok(text)
}

/// The settings of a config file: (line number, name, value) for every line that is not blank
/// or a `#` comment. The name is the first word; the value is the rest of the line, trimmed.
fn file_lines(text: &str) -> impl Iterator<Item = (usize, &str, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (name, value) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((line, ""));
        Some((i + 1, name, value.trim()))
    })
}

/// Flags met so far whose later occurrences behave differently from the first.
#[derive(Default)]
struct Seen {
    listen: bool,
}

/// What one flag did.
enum Set {
    Done,
    Help,
    Version,
    Check,
    /// Not a flag this parser knows (a positional argument, or a misspelling).
    Unknown,
}

/// Applies one flag to `c`, taking its value from `value` if it has one. The same for the
/// command line and the config file, so that every flag works in both.
fn set(
    c: &mut Config,
    seen: &mut Seen,
    flag: &str,
    value: &mut dyn FnMut() -> Result<String, String>,
) -> Result<Set, String> {
    let flag = flag.to_string();
    let mut value = || value();
    match flag.as_str() {
        "-h" | "--help" => return Ok(Set::Help),
        "-V" | "--version" => return Ok(Set::Version),
        "--check-config" => return Ok(Set::Check),
        // Read before the other flags (`config_file_arg`); only its value is skipped here.
        "--config" => {
            value()?;
        }
        "--listen" => {
            let l = parse_listen(&value()?)?;
            // The first `--listen` replaces the default address; later ones add to it.
            if !seen.listen {
                c.listen.clear();
                seen.listen = true;
            }
            add_listener(&mut c.listen, l)?;
        }
        "--root" => c.root = PathBuf::from(value()?),
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
            c.log_level = value()?
                .parse()
                .map_err(|_| "--log-level: expected error, warn, info, debug or off".to_string())?
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
        "--health" => {
            let v = value()?;
            if !v.starts_with('/') || v.contains(['?', '#']) {
                return Err(format!(
                    "--health: expected a path such as /healthz, got {v:?}"
                ));
            }
            c.health = Some(v);
        }
        "--proxy-protocol" => c.proxy_protocol = true,
        "--header" => c.headers.push(parse_header(&value()?)?),
        "--error-page" => {
            let (status, path) = parse_error_page(&value()?)?;
            c.error_pages.retain(|(s, _)| *s != status);
            c.error_pages.push((status, path));
        }
        "--precompressed" => c.precompressed = true,
        "--dir-listing" if !cfg!(feature = "dir-listing") => {
            return Err(
                "--dir-listing: this build has no listings (cargo feature \"dir-listing\")".into(),
            );
        }
        "--dir-listing" => c.dir_listing = true,
        "--auth" | "--auth-realm" | "--auth-forward" | "--auth-cache" | "--auth-threads"
            if !cfg!(feature = "auth") =>
        {
            return Err(format!(
                "{flag}: this build has no auth (cargo feature \"auth\")"
            ));
        }
        "--auth" => {
            let rule = parse_auth(&value()?)?;
            if c.auth.iter().any(|a| a.prefix == rule.prefix) {
                return Err(format!("--auth: prefix {:?} given twice", rule.prefix));
            }
            c.auth.push(rule);
        }
        "--auth-realm" => {
            let (prefix, realm) = parse_realm(&value()?)?;
            c.auth_realms.retain(|(p, _)| *p != prefix);
            c.auth_realms.push((prefix, realm));
        }
        "--auth-forward" => c.auth_forward = true,
        "--auth-cache" => c.auth_cache = duration(&flag, &value()?)?,
        "--auth-threads" => c.auth_threads = number(&flag, &value()?, 1, 64)? as usize,
        "--listen-tls" | "--tls-cert" | "--tls-key" | "--redirect-https" | "--hsts"
            if !cfg!(feature = "tls") =>
        {
            return Err(format!(
                "{flag}: this build has no TLS (cargo feature \"tls\")"
            ));
        }
        "--listen-tls" => {
            let mut l = parse_listen(&value()?)?;
            l.tls = true;
            // As `--listen`: the first address given replaces the default.
            if !seen.listen {
                c.listen.clear();
                seen.listen = true;
            }
            add_listener(&mut c.listen, l)?;
        }
        "--tls-cert" => c.tls.cert = Some(PathBuf::from(value()?)),
        "--tls-key" => c.tls.key = Some(PathBuf::from(value()?)),
        "--redirect-https" => c.tls.redirect = true,
        "--hsts" => c.tls.hsts = Some(number(&flag, &value()?, 0, 1 << 32)?),
        _ => return Ok(Set::Unknown),
    }
    Ok(Set::Done)
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

/// `ADDR [OPTION...]`: an address as `parse_addr` takes it, then what its connections speak:
/// `proxy-protocol` (a PROXY header comes first).
fn parse_listen(v: &str) -> Result<Listen, String> {
    let mut words = v.split_ascii_whitespace();
    let mut l = Listen::plain(parse_addr(words.next().unwrap_or(""))?);
    for option in words {
        match option {
            "proxy-protocol" => l.proxy_protocol = true,
            other => {
                return Err(format!(
                    "--listen: unknown option {other:?} after the address (expected proxy-protocol)"
                ));
            }
        }
    }
    Ok(l)
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

/// Names `--header` refuses: the fields that frame a message or belong to one hop (a wrong one
/// desynchronises the client or a proxy in between), and those edgeserve writes itself (a second
/// copy would contradict the first).
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "date",
    "server",
    "content-type",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "location",
];

/// `[PREFIX=]Name: value`. The prefix starts with `/`; a value that would need a second line,
/// or a name that is no token, is refused rather than sent.
fn parse_header(v: &str) -> Result<ExtraHeader, String> {
    let (prefix, line) = match v.split_once('=') {
        // A `=` inside the value (`Content-Security-Policy: default-src 'self'; a=b`) is not
        // a prefix: a prefix starts with `/` and holds no `:`.
        Some((p, rest)) if p.starts_with('/') && !p.contains(':') => (p, rest),
        _ if v.starts_with('/') => {
            return Err(format!(
                "--header: expected [PREFIX=]'Name: value' (a prefix ends at '='), got {v:?}"
            ));
        }
        _ => ("/", v),
    };
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("--header: expected [PREFIX=]'Name: value', got {v:?}"))?;
    if !crate::http::request::is_token(name.as_bytes()) {
        return Err(format!(
            "--header: {name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    let value = value.trim_matches([' ', '\t']);
    // field-value: visible ASCII, spaces and tabs; no CR, LF, NUL or other control bytes.
    // Bytes above 0x7f are obs-text, which clients may read differently: refused too.
    if let Some(bad) = value
        .bytes()
        .find(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        return Err(format!(
            "--header {name}: the value holds byte 0x{bad:02x}; only printable ASCII, spaces and tabs"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "--header: {name} is not allowed (it frames the message, is hop-by-hop, or edgeserve writes it itself)"
        ));
    }
    Ok(ExtraHeader {
        prefix: prefix.to_string(),
        line: format!("{name}: {value}"),
    })
}

/// The statuses the static files answer with, and so may have a page of their own.
pub const ERROR_PAGE_STATUSES: [u16; 7] = [400, 403, 404, 405, 406, 416, 503];

/// `STATUS=PATH`, PATH a request path of a file (starts with `/`, normal form, not a directory).
fn parse_error_page(v: &str) -> Result<(u16, String), String> {
    let (status, path) = v
        .split_once('=')
        .ok_or_else(|| format!("--error-page: expected STATUS=PATH, got {v:?}"))?;
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| ERROR_PAGE_STATUSES.contains(s))
        .ok_or_else(|| {
            format!(
                "--error-page: {status:?} is not a status the files answer with (400, 403, 404, 405, 406, 416, 503)"
            )
        })?;
    let mut normal = Vec::new();
    let ok = crate::files::path::normalize_into(path, &mut normal).is_ok();
    if !ok || normal.ends_with(b"/") {
        return Err(format!(
            "--error-page {status}: {path:?} is not the path of a file below the root (e.g. /404.html)"
        ));
    }
    Ok((status, path.to_string()))
}

/// `PREFIX=FILE`: a prefix in normal form (the form requests are matched in).
fn parse_auth(v: &str) -> Result<AuthRule, String> {
    let (prefix, file) = v
        .split_once('=')
        .filter(|(_, f)| !f.is_empty())
        .ok_or_else(|| format!("--auth: expected PREFIX=HTPASSWD_FILE, got {v:?}"))?;
    if !crate::files::path::is_normal(prefix) {
        return Err(format!(
            "--auth: the prefix must start with '/' and be a plain path (no %, \\, //, . or .. segments), got {prefix:?}"
        ));
    }
    Ok(AuthRule {
        prefix: prefix.to_string(),
        file: PathBuf::from(file),
        realm: None,
    })
}

/// `PREFIX=REALM`: a realm of printable characters (it goes into a response field).
fn parse_realm(v: &str) -> Result<(String, String), String> {
    let (prefix, realm) = v
        .split_once('=')
        .ok_or_else(|| format!("--auth-realm: expected PREFIX=REALM, got {v:?}"))?;
    if realm.is_empty() || realm.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "--auth-realm: the realm must be printable and not empty, got {realm:?}"
        ));
    }
    Ok((prefix.to_string(), realm.to_string()))
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
    fn listen_options() {
        let c = run(&["--listen", ":81 proxy-protocol", "--listen", ":82"]).unwrap();
        let pp: Vec<bool> = c.listen.iter().map(|l| l.proxy_protocol).collect();
        assert_eq!(pp, [true, false]);
        let c = run(&["--listen", ":81", "--listen", ":82", "--proxy-protocol"]).unwrap();
        assert!(c.listen.iter().all(|l| l.proxy_protocol));
        let e = run(&["--listen", ":81 proxy_protocol"]).unwrap_err();
        assert!(e.contains("proxy_protocol"), "{e}");
        assert!(run(&["--listen", ""]).is_err());
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
    fn webui_flags() {
        let c = run(&[
            "--header",
            "/assets/=Cache-Control: max-age=31536000, immutable",
            "--header=X-Frame-Options:DENY",
            "--header",
            "Content-Security-Policy: default-src 'self'; img-src a=b",
            "--error-page",
            "404=/errors/404.html",
            "--error-page=404=/other.html",
            "--precompressed",
        ])
        .unwrap();
        let lines: Vec<_> = c.headers.iter().map(|h| (&*h.prefix, &*h.line)).collect();
        assert_eq!(
            lines,
            [
                ("/assets/", "Cache-Control: max-age=31536000, immutable"),
                ("/", "X-Frame-Options: DENY"),
                (
                    "/",
                    "Content-Security-Policy: default-src 'self'; img-src a=b"
                ),
            ]
        );
        // The last page given for a status wins.
        assert_eq!(c.error_pages, [(404, "/other.html".to_string())]);
        assert!(c.precompressed);
        assert_eq!(
            run(&["--dir-listing"]).map(|c| c.dir_listing),
            if cfg!(feature = "dir-listing") {
                Ok(true)
            } else {
                Err(
                    "--dir-listing: this build has no listings (cargo feature \"dir-listing\")"
                        .into(),
                )
            }
        );
        for bad in [
            "Content-Length: 1",
            "CONNECTION: close",
            "X-A: b\r\nX-B: c",
            "X A: b",
            "/p=",
            "X-A: \u{7f}",
        ] {
            assert!(run(&["--header", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[cfg(feature = "auth")]
    fn auth_rules() {
        let c = run(&[
            "--auth",
            "/private/=/etc/a",
            "--auth-realm=/private/=Admin \"x\"",
            "--auth=/=b",
            "--auth-forward",
            "--auth-cache=0",
        ])
        .unwrap();
        assert_eq!(c.auth[0].prefix, "/private/");
        assert_eq!(c.auth[0].file, PathBuf::from("/etc/a"));
        assert_eq!(c.auth_realms, [("/private/".into(), "Admin \"x\"".into())]);
        assert_eq!(c.auth[1].prefix, "/");
        assert!(c.auth_forward && c.auth_cache.is_zero());
        for bad in [
            &["--auth", "private=a"][..],
            &["--auth", "/a/../b=a"],
            &["--auth", "/%61=a"],
            &["--auth", "/a="],
            &["--auth", "/a"],
            &["--auth", "/a=x", "--auth", "/a=y"],
            &["--auth", "/a=x", "--auth-realm", "/a=\r\nX: y"],
            &["--auth-threads", "0"],
        ] {
            let e = run(bad).unwrap_err();
            assert!(!e.contains('\n') && e.starts_with("--auth"), "{bad:?}: {e}");
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
            &["--header", "Transfer-Encoding: chunked"],
            &["--header", "X: a\nb"],
            &["--error-page", "200=/x"],
            &["--error-page", "404=/../x"],
        ] {
            let e = run(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
        }
    }
}
