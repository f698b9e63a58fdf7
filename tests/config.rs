//! The config file (`--config`), `--check-config` and `--health`.

mod common;

use std::path::Path;

use common::{Site, TempDir, TestServer, run_binary};
use edgeserve::config::{self, Command, Config};

/// The long flags `--help` lists with their value's placeholder (`None` for a switch), minus the
/// ones that only make sense on the command line.
fn usage_flags() -> Vec<(String, Option<String>)> {
    let mut flags = Vec::new();
    for line in config::USAGE.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("--") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap().to_string();
        let placeholder = words
            .next()
            .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            .map(str::to_string);
        if ["help", "version", "config", "check-config"].contains(&name.as_str()) {
            continue;
        }
        flags.push((name, placeholder));
    }
    assert!(flags.len() > 20, "USAGE lists few flags: {flags:?}");
    flags
}

/// A value for a flag that is not its default, so that a flag ignored in the file shows.
fn sample(name: &str, placeholder: &str, root: &Path) -> String {
    match name {
        "listen" => "127.0.0.1:1".into(),
        "root" => root.display().to_string(),
        "model" => "sharded".into(),
        "log-level" => "warn".into(),
        "access-log" => root.join("access.log").display().to_string(),
        "index" => "start.html".into(),
        "user" => "nobody".into(),
        "mime-types" => root.join("mime.types").display().to_string(),
        "health" => "/healthz".into(),
        "listen-tls" => "127.0.0.1:2".into(),
        "tls-cert" => root.join("cert.pem").display().to_string(),
        "tls-key" => root.join("key.pem").display().to_string(),
        "hsts" => "600".into(),
        "proxy" => "/api=127.0.0.1:9000,[::1]:9001".into(),
        "header" => "/assets/=Cache-Control: max-age=31536000, immutable".into(),
        "error-page" => "404=/errors/404.html".into(),
        _ => match placeholder {
            "N" => "3".into(),
            "T" => "1500ms".into(),
            "BYTES" => "65536".into(),
            other => panic!(
                "--{name} {other}: no sample value in tests/config.rs; add one so the test \
                 can check the flag works in a config file"
            ),
        },
    }
}

fn parse(args: &[String]) -> Result<Config, String> {
    match config::parse_args(args.iter().cloned())? {
        Command::Run(c) | Command::Check(c) => Ok(*c),
        other => panic!("{other:?}"),
    }
}

/// The parts of a config that flags set (what the file and args were is not compared).
fn settings(mut c: Config) -> String {
    c.config_file = None;
    c.args.clear();
    format!("{c:?}")
}

fn arg(s: impl AsRef<str>) -> String {
    s.as_ref().to_string()
}

/// Every flag in `--help` works in the file exactly as on the command line, and the example
/// file documents every one of them.
#[test]
fn every_flag_works_in_the_file_and_is_documented() {
    let dir = TempDir::new("config-flags");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edgeserve.conf"),
    )
    .unwrap();
    let documented = |name: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l == name || l.starts_with(&format!("{name} "))
        })
    };
    for (name, placeholder) in usage_flags() {
        assert!(
            documented(&name),
            "examples/edgeserve.conf does not document {name}"
        );
        let value = placeholder.as_deref().map(|p| sample(&name, p, dir.path()));
        let file = dir.path().join("one.conf");
        let line = match &value {
            Some(v) => format!("# {name}\n\n  {name}   {v}  \n"),
            None => format!("{name}\n"),
        };
        std::fs::write(&file, line).unwrap();
        let from_file = parse(&[arg("--config"), arg(file.to_str().unwrap())])
            .unwrap_or_else(|e| panic!("{name} in a file: {e}"));
        let mut cli = vec![format!("--{name}")];
        cli.extend(value.clone());
        let from_cli = parse(&cli).unwrap_or_else(|e| panic!("--{name}: {e}"));
        let default = settings(Config::default());
        assert_ne!(
            settings(parse(&cli).unwrap()),
            default,
            "--{name} changes nothing"
        );
        assert_eq!(settings(from_file), settings(from_cli), "{name}");
        // A switch given a value, or a setting without one, is an error naming the line.
        let wrong = match &value {
            Some(_) => format!("\n{name}\n"),
            None => format!("\n{name} yes\n"),
        };
        std::fs::write(&file, wrong).unwrap();
        let e = parse(&[arg("--config"), arg(file.to_str().unwrap())]).unwrap_err();
        assert!(e.contains("one.conf:2: "), "{name}: {e}");
    }
}

/// The example file is valid as shipped.
#[test]
fn the_example_file_checks() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edgeserve.conf");
    let (status, out, err) = run_binary(&[
        "--config",
        example.to_str().unwrap(),
        "--root",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/www")
            .to_str()
            .unwrap(),
        "--check-config",
    ]);
    assert!(status.success(), "{out} {err}");
    assert!(out.contains("valid"), "{out}");
}

/// Command-line flags replace the file's lines of the same name, repeatable ones included;
/// the file's other lines stay.
#[test]
fn the_command_line_overrides_the_file() {
    let dir = TempDir::new("config-override");
    let file = dir.path().join("edgeserve.conf");
    std::fs::write(
        &file,
        "max-conns 5\nidle-timeout 9s\nproxy /a=127.0.0.1:1\nproxy /b=127.0.0.1:2\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c = parse(&[arg("--config"), arg(f)]).unwrap();
    assert_eq!(c.max_conns, Some(5));
    assert_eq!(c.proxies.len(), 2);
    let c = parse(&[
        arg("--max-conns=7"),
        arg("--config"),
        arg(f),
        arg("--proxy"),
        arg("/c=127.0.0.1:3"),
    ])
    .unwrap();
    assert_eq!(c.max_conns, Some(7));
    assert_eq!(c.idle_timeout, std::time::Duration::from_secs(9));
    let prefixes: Vec<_> = c.proxies.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(prefixes, ["/c"]);
    assert_eq!(c.config_file.as_deref(), Some(file.as_path()));
}

#[track_caller]
fn check_fails(args: &[&str], needle: &str) {
    let (status, out, err) = run_binary(args);
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

/// Errors name the file and the line, and exit 2; so do `--check-config`'s, which also opens
/// the root and the files the settings name, and binds nothing.
#[test]
fn errors_name_the_file_and_line() {
    let site = Site::new("config-errors");
    let root = site.root();
    let root = root.to_str().unwrap();
    let conf = site.base.path().join("bad.conf");
    let c = conf.to_str().unwrap();
    for (text, needle) in [
        (
            "# ok\nmax-conns 10\n\nmax-conns ten\n",
            "bad.conf:4: --max-conns",
        ),
        ("listen nowhere\n", "bad.conf:1: --listen"),
        ("\n\nmistake 1\n", "bad.conf:3: unknown setting \"mistake\""),
        (
            "follow-symlinks on\n",
            "bad.conf:1: follow-symlinks takes no value",
        ),
        ("index\n", "bad.conf:1: index needs a value"),
        (
            "config other.conf\n",
            "bad.conf:1: \"config\" is for the command line only",
        ),
        ("health nohealth\n", "bad.conf:1: --health"),
    ] {
        std::fs::write(&conf, text).unwrap();
        check_fails(&["--config", c, root], needle);
        check_fails(&["--config", c, "--check-config", root], needle);
    }
    check_fails(
        &["--config", "/no/such/edgeserve.conf"],
        "/no/such/edgeserve.conf",
    );
    // A directory, a device that never ends, bytes that are not text: one line each.
    check_fails(&["--config", root], "--config");
    check_fails(&["--config", "/dev/zero"], "longer than 1 MiB");
    std::fs::write(&conf, b"index \xff\xfe\n").unwrap();
    check_fails(&["--config", c, root], "bad.conf");
    check_fails(&["--config", c, "--config", c], "--config");
    // --check-config: what the settings name must exist.
    std::fs::write(&conf, "mime-types /no/such/mime.types\n").unwrap();
    check_fails(
        &["--config", c, "--check-config", root],
        "/no/such/mime.types",
    );
    std::fs::write(&conf, format!("root {root}/missing\n")).unwrap();
    check_fails(&["--config", c, "--check-config"], "missing");
    // Valid, on a port in use: --check-config does not bind, so it passes.
    let taken = common::occupied_port();
    let text = format!(
        "listen {}\nroot {root}\nmax-conns 10\n",
        taken.local_addr().unwrap()
    );
    std::fs::write(&conf, text).unwrap();
    let (status, out, err) = run_binary(&["--config", c, "--check-config"]);
    assert!(status.success(), "{err}");
    assert_eq!(out, "edgeserve: the configuration is valid\n");
}

/// `--health PATH` is answered 200 by the server itself: before the files (the path does not
/// exist there) and before the proxy's routes (the upstream is unreachable); HEAD too, and a
/// query string does not matter.
#[test]
fn health_is_answered_without_files_or_upstreams() {
    let site = Site::new("config-health");
    site.write("index.html", b"home");
    // A port nothing listens on any more: connects are refused (502).
    let dead = common::occupied_port().local_addr().unwrap();
    let server = TestServer::with(&site, |c| {
        c.health = Some("/healthz".into());
        c.proxies = vec![config::Route {
            prefix: "/".into(),
            upstreams: vec![dead],
        }];
    });
    let mut client = server.client();
    let r = client.get("/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    client.send(b"HEAD /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = client.head();
    assert_eq!((r.status, r.content_length()), (200, Some(3)));
    // Anything else still goes to the upstream (here: a dead one, so not 200).
    let r = client.get("/healthz/more");
    assert_ne!(r.status, 200, "{r:?}");
}
