//! `lockctl run NAME -- CMD`: acquires NAME, runs CMD in a process group of its own with the
//! lock's name, owner and fencing token in its environment, keeps the lock alive, and releases
//! it when CMD exits. The child never outlives the lock: when the lock is lost, or cannot be
//! renewed in time, the whole group gets SIGTERM, then SIGKILL, before the server could hand
//! the lock to anyone else.

use std::time::Duration;

use clap::Args;
use lockserver_client::{Client, Error, LockGuard};
use lockserver_protocol::durations::parse_duration;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// The exit code when the lock was lost while the command ran.
const LOST_EXIT_CODE: u8 = 70;
/// How often the lock's state is looked at.
const TICK: Duration = Duration::from_millis(50);

/// The options of `lockctl run`.
#[derive(Args)]
pub struct RunArgs {
    /// The lock's name.
    name: String,
    /// The hold's lifetime, renewed in the background while CMD runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    expire: Duration,
    /// How long to wait for the lock (default: as long as it takes).
    #[arg(long, value_parser = parse_duration, conflicts_with = "no_wait")]
    wait: Option<Duration>,
    /// Do not wait: if the lock is held, exit with --conflict-exit-code at once.
    #[arg(long)]
    no_wait: bool,
    /// The exit code when the lock was not obtained (CMD is not run).
    #[arg(long, default_value_t = 75)]
    conflict_exit_code: u8,
    /// After SIGTERM, how long CMD has before SIGKILL (capped at a third of --expire, so that
    /// the KILL lands before the server could hand the lock to anyone else).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    kill_after: Duration,
    /// The owner id (default LOCKSERVER_OWNER, or one unique to this run).
    #[arg(long)]
    pub owner: Option<String>,
    /// Take one of N permits of a semaphore: up to N runs at once (every run of NAME must give
    /// the same N).
    #[arg(long, value_name = "N", conflicts_with = "shared")]
    limit: Option<u32>,
    /// Take the lock as one of its shared holders (a read-write lock's reader): runs with
    /// --shared go together, a run without it goes alone.
    #[arg(long)]
    shared: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true, num_args = 1..)]
    command: Vec<String>,
}

/// Runs the command under the lock; returns the exit code `lockctl` ends with.
pub async fn run(client: &Client, args: RunArgs) -> Result<u8, String> {
    let mut lock = match args.limit {
        Some(limit) => client.semaphore(&args.name, limit),
        None => client.lock(&args.name),
    }
    .expire(args.expire);
    if args.shared {
        lock = lock.shared();
    }
    if let Some(owner) = &args.owner {
        lock = lock.owner(owner.clone());
    }
    if args.no_wait {
        lock = lock.wait(Duration::ZERO);
    } else if let Some(wait) = args.wait {
        lock = lock.wait(wait);
    }
    let guard = match lock.acquire().await {
        Ok(guard) => guard,
        Err(Error::Locked { owner, expires_in, holders }) => {
            let left =
                expires_in.map_or("no expiry".to_string(), |left| format!("{:.1}s left", left.as_secs_f64()));
            let by = if holders.len() > 1 { holders.join(", ") } else { owner };
            eprintln!("lockctl: {} is held by {by} ({left}); not running the command", args.name);
            return Ok(args.conflict_exit_code);
        }
        Err(error) => return Err(format!("cannot acquire {}: {error}", args.name)),
    };
    let spawned = Command::new(&args.command[0])
        .args(&args.command[1..])
        .process_group(0)
        .env("LOCKSERVER_RESOURCE", &args.name)
        .env("LOCKSERVER_OWNER", guard.owner())
        .env("LOCKSERVER_TOKEN", guard.token().to_string())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let _ = guard.release().await; // released before exiting, not left to expire
            return Err(format!("cannot run {}: {error}", args.command[0]));
        }
    };
    let group =
        Pid::from_raw(child.id().and_then(|id| i32::try_from(id).ok()).ok_or("the command has no pid")?);
    let mut supervisor = Supervisor::new(group, args.expire, args.kill_after);
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|error| error.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|error| error.to_string())?;
    let mut tick = tokio::time::interval(TICK);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|error| error.to_string())?,
            _ = interrupt.recv() => supervisor.forward(Signal::SIGINT),
            _ = terminate.recv() => supervisor.forward(Signal::SIGTERM),
            _ = tick.tick() => supervisor.check(&guard),
        }
    };
    let code = exit_code(&status);
    if let Some(reason) = supervisor.lost {
        // Not released: it is gone, or ends on its own within moments; and the server may be
        // the one not answering.
        eprintln!("lockctl: {reason}: the command was stopped (its exit: {code})");
        let _ = guard.detach();
        return Ok(LOST_EXIT_CODE);
    }
    match guard.release().await {
        Ok(()) => Ok(code),
        Err(Error::LockLost) => {
            eprintln!("lockctl: the lock on {} was lost before the command ended", args.name);
            Ok(LOST_EXIT_CODE)
        }
        Err(error) => {
            eprintln!("lockctl: cannot release {} (it will expire): {error}", args.name);
            Ok(code)
        }
    }
}

/// The command's exit code: its own, or 128 + the signal that ended it.
fn exit_code(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        _ => 1,
    }
}

/// Watches the lock while the command runs and stops the command's group when the lock goes.
struct Supervisor {
    group: Pid,
    /// SIGTERM this long before the lock's deadline at the latest.
    term_before: Duration,
    /// SIGKILL this long before the lock's deadline at the latest.
    kill_before: Duration,
    kill_after: Duration,
    /// Why the command is being stopped, once it is.
    lost: Option<String>,
    kill_at: Option<Instant>,
    killed: bool,
}

impl Supervisor {
    fn new(group: Pid, expire: Duration, kill_after: Duration) -> Self {
        let kill_after = kill_after.min(expire / 3);
        let kill_before = (expire / 10).max(Duration::from_millis(100));
        Supervisor {
            group,
            term_before: kill_before + kill_after,
            kill_before,
            kill_after,
            lost: None,
            kill_at: None,
            killed: false,
        }
    }

    /// Passes a signal sent to `lockctl` on to the command's group.
    fn forward(&self, signal: Signal) {
        let _ = killpg(self.group, signal);
    }

    fn check(&mut self, guard: &LockGuard) {
        let now = Instant::now();
        let deadline = guard.deadline();
        if self.lost.is_none() {
            let reason = if guard.is_lost() {
                Some("the lock was lost (taken over, released elsewhere, or expired)")
            } else if deadline.is_some_and(|deadline| now + self.term_before >= deadline) {
                Some("the lock could not be renewed in time (is the server reachable?)")
            } else {
                None
            };
            if let Some(reason) = reason {
                eprintln!("lockctl: {reason}; sending SIGTERM to the command");
                self.lost = Some(reason.to_string());
                self.forward(Signal::SIGTERM);
                let latest = deadline.map_or(now + self.kill_after, |deadline| deadline - self.kill_before);
                self.kill_at = Some((now + self.kill_after).min(latest));
            }
        } else if !self.killed && self.kill_at.is_some_and(|at| now >= at) {
            eprintln!("lockctl: the command did not exit; sending SIGKILL");
            self.forward(Signal::SIGKILL);
            self.killed = true;
        }
    }
}
