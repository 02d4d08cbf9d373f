//! The durable store's error: which file, what went wrong, and what to do about it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the data dir cannot be used. Cheap to clone: a failed writer keeps one and hands it to
/// every request it refuses.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory of the data dir could not be created, read, written or synced.
    #[error("{}: cannot {action}: {source}; check the disk (space, permissions)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, as a verb phrase (`write the log`).
        action: &'static str,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another process holds the data dir's lock.
    #[error(
        "{}: another lockserver is using this data dir (its LOCK file is locked); stop it, or give this one another --data-dir",
        path.display()
    )]
    InUse {
        /// The data dir.
        path: PathBuf,
    },
    /// A file holds something that no crash could have left: the store refuses to guess.
    #[error(
        "{}: {problem}; the data dir is damaged (restore it from a backup, or move it away to start empty)",
        path.display()
    )]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong, and where.
        problem: String,
    },
    /// A file written in a format this version does not read.
    #[error("{}: {problem}; run the lockserver version that wrote it", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Which format it is in.
        problem: String,
    },
}

impl StoreError {
    /// An I/O error on `path` while doing `action`, for `map_err`.
    pub fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, action, source: Arc::new(source) }
    }
}
