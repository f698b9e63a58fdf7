use std::process::ExitCode;

use edgeserve::config::{self, Command};
use edgeserve::{Server, logging};

fn main() -> ExitCode {
    let config = match config::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(c)) => c,
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
    let mut server = match Server::bind(*config) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = server.handle_signals() {
        return fail(&e.to_string());
    }
    log::info!("listening on http://{}", server.local_addr());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("event loop: {e}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("edgeserve: {msg}");
    ExitCode::from(2)
}
