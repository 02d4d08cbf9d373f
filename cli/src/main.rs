//! `lockctl`: the operator's command line for lockserver, on the Rust client.
//!
//! - `run.rs`: `lockctl run NAME -- CMD`, a command under a lock that it never outlives;
//! - `commands.rs`: the one-shot commands (acquire, release, inspect, list, lease, health);
//! - `output.rs`: tables for people, `--json` for scripts.
//!
//! Exit codes: the command's own for `run` (128 + signal when a signal ended it), 75 when the
//! lock was not obtained (`--conflict-exit-code`), 70 when the lock was lost while the command
//! ran, 1 for any other error (one line on stderr), 2 for usage errors.

mod commands;
mod output;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lockserver_client::Client;
use lockserver_protocol::durations::parse_duration;

/// Run a command under a lockserver lock, and inspect, take and release locks and leases.
///
/// The server, secret and owner come from --addr and --secret, or LOCKSERVER_ADDR,
/// LOCKSERVER_SECRET and LOCKSERVER_OWNER (also read from .env).
#[derive(Parser)]
#[command(name = "lockctl", version)]
struct Cli {
    /// The server: host:port, with or without http:// (default LOCKSERVER_ADDR, 127.0.0.1:8080).
    #[arg(long, global = true)]
    addr: Option<String>,
    /// The shared secret (default LOCKSERVER_SECRET).
    #[arg(long, global = true)]
    secret: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Acquire NAME, run CMD while keeping the lock alive, release it when CMD exits.
    Run(run::RunArgs),
    /// Acquire NAME and print the fencing token; held until released (or --expire).
    Acquire {
        /// The lock's name.
        name: String,
        /// The hold expires after this long (nothing keeps it alive); default: until released.
        #[arg(long, value_parser = parse_duration)]
        expire: Option<Duration>,
        /// How long to wait when it is held (default: not at all).
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
        /// A value to store with the lock.
        #[arg(long)]
        value: Option<String>,
        /// The owner id (default LOCKSERVER_OWNER, or one unique to this call).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Release NAME held by OWNER.
    Release {
        /// The lock's name.
        name: String,
        /// The holder.
        #[arg(long)]
        owner: String,
        /// Release only this grant.
        #[arg(long)]
        token: Option<u64>,
    },
    /// Show who holds NAME.
    Inspect {
        /// The lock's name.
        name: String,
    },
    /// List held locks.
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Grant, keep alive, revoke or show a lease.
    #[command(subcommand)]
    Lease(commands::LeaseCommand),
    /// The server's health, version and backend.
    Health,
    /// Print the events of NAME (or of every lock under --prefix) as they happen: first who
    /// holds what now (`reset`), then each change. Runs until interrupted (or --count events).
    Watch {
        /// The lock's name.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        name: Option<String>,
        /// Watch every lock whose name starts with this (`""`: all of them).
        #[arg(long)]
        prefix: Option<String>,
        /// Stop after this many events (the first `reset` included).
        #[arg(long)]
        count: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start: {error}")),
    };
    runtime.block_on(async move {
        let owner = match &cli.command {
            Command::Acquire { owner, .. } => owner.clone(),
            Command::Run(args) => args.owner.clone(),
            _ => None,
        };
        let client = match Client::builder().options(cli.addr.clone(), owner, cli.secret.clone()).build() {
            Ok(client) => client,
            Err(error) => return fail(&error.to_string()),
        };
        let outcome = match cli.command {
            Command::Run(args) => run::run(&client, args).await.map(ExitCode::from),
            command => commands::one_shot(&client, command, cli.json).await.map(|()| ExitCode::SUCCESS),
        };
        outcome.unwrap_or_else(|error| fail(&error))
    })
}

/// One line on stderr, exit code 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("lockctl: {message}");
    ExitCode::FAILURE
}
