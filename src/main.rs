use std::process::ExitCode;

use edgeserve::config::{self, Command};
use edgeserve::{Server, logging, service};

fn main() -> ExitCode {
    let config = match config::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(c)) => c,
        Ok(Command::Check(c)) => {
            return match edgeserve::check(&c) {
                Ok(()) => {
                    println!("edgeserve: the configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            };
        }
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("edgeserve {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&e),
    };
    if let Err(e) = logging::init(&config.access_log, config.log_level) {
        return fail(&e);
    }
    let user = config.user.clone();
    let bound = match service::inherited_listeners() {
        Some(Ok(listeners)) => Server::with_listeners(*config, listeners),
        Some(Err(e)) => return fail(&format!("socket activation: {e}")),
        None => Server::bind(*config),
    };
    let mut server = match bound {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    if let Some(user) = user
        && let Err(e) = service::drop_privileges(&user)
    {
        return fail(&e);
    }
    if let Err(e) = server.handle_signals() {
        return fail(&e.to_string());
    }
    for l in server.listening() {
        let scheme = if l.tls { "https" } else { "http" };
        log::info!("listening on {scheme}://{}", l.addr);
    }
    let ran = server.run();
    // Lines written as the loops closed what was left (a tunnel's line, at the end of the grace
    // period) are still buffered.
    log::logger().flush();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("event loop: {e}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("edgeserve: {msg}");
    ExitCode::from(2)
}
