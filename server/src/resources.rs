//! What the process may use: its file-descriptor limit (raised to the hard limit at start) and
//! the caps derived from it and from the memory it may use, so that clients meet a clear
//! `too_many` before the server runs out of either.

/// File descriptors kept for the store's files, etcd connections and the like.
const FILE_RESERVE: u64 = 64;

/// The machine's memory each lock may count on, for the default `--max-locks`.
const BYTES_PER_LOCK: u64 = 4096;

/// The limits the server runs under.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// The file-descriptor limit, after raising it.
    pub files: u64,
    /// The machine's memory, in bytes (0 when unknown).
    pub memory: u64,
}

impl Resources {
    /// Raises the file-descriptor limit to its hard limit, and reads the machine's memory.
    pub fn raise() -> Resources {
        let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        Resources { files, memory: memory_bytes() }
    }

    /// The default cap on locks: one per `BYTES_PER_LOCK` of memory.
    pub fn default_max_locks(&self) -> usize {
        match self.memory {
            0 => 1_000_000,
            memory => usize::try_from(memory / BYTES_PER_LOCK).unwrap_or(usize::MAX),
        }
    }

    /// The default cap on queued waiters: half the file descriptors, so that the other half
    /// serves new clients and `/health` while they wait.
    pub fn default_max_waiters(&self) -> usize {
        usize::try_from(self.files / 2).unwrap_or(usize::MAX)
    }

    /// The default cap on the memory locks and waiters take: half of what the process may use,
    /// leaving the rest to connections, buffers and the allocator's slack.
    pub fn default_max_memory(&self) -> usize {
        match self.memory {
            0 => 1 << 30,
            memory => usize::try_from(memory / 2).unwrap_or(usize::MAX),
        }
    }

    /// How many connections each of `workers` may hold: the file descriptors, less a reserve.
    pub fn connections_per_worker(&self, workers: usize) -> usize {
        let usable = self.files.saturating_sub(FILE_RESERVE).max(workers as u64);
        usize::try_from(usable / workers.max(1) as u64).unwrap_or(usize::MAX)
    }
}

/// The memory this process may use, in bytes: the machine's (`MemTotal` of `/proc/meminfo`),
/// or its cgroup's limit when that is lower (a container); 0 when neither can be read.
fn memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let machine = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    // cgroup v2, then v1 (which reports "no limit" as a huge number).
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    match cgroup {
        Some(limit) if limit > 0 && (machine == 0 || limit < machine) => limit,
        _ => machine,
    }
}
