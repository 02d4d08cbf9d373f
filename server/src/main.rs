//! The `lockserver` binary: reads the configuration and starts the server.

use std::process::ExitCode;

use clap::Parser;
use lockserver::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `.env` fills in what the environment does not set; flags override both.
    let _ = dotenvy::dotenv();
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match actix_web::rt::System::new().block_on(lockserver::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lockserver: {error}");
            ExitCode::FAILURE
        }
    }
}
