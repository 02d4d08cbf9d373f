//! The `lockserver` binary: reads the configuration, owns the signals, and runs the server.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lockserver::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `.env` fills in what the environment does not set; flags override both.
    let _ = dotenvy::dotenv();
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
    if config.repair {
        return repair(&config);
    }
    let serve = async {
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        actix_web::rt::spawn(forward_reloads(reload));
        lockserver::run(config, shutdown_signal(), reloads).await
    };
    match actix_web::rt::System::new().block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lockserver: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--repair`: salvages the data dir and says what it kept and dropped.
fn repair(config: &Config) -> ExitCode {
    match lockserver::repair(config) {
        Ok(repaired) => {
            println!("repaired {}: kept {} locks and leases", config.data_dir.display(), repaired.kept);
            for line in &repaired.dropped {
                println!("dropped {line}");
            }
            println!("the old files are in {}", repaired.moved_to.display());
            println!("new fencing tokens start above {}", repaired.reserved);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lockserver: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one reload per SIGHUP (the keys file and the TLS certificate are read again).
async fn forward_reloads(reload: tokio::sync::mpsc::UnboundedSender<()>) {
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("installing a SIGHUP handler");
        while hangups.recv().await.is_some() {
            if reload.send(()).is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    drop(reload);
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
