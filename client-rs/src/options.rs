//! What the bindings hand over from their own option objects: seconds as floats, and the
//! options of one acquisition. Converted here once, so that Python and Node agree.

use std::time::Duration;

use crate::error::{Error, Result};

/// The options of one acquisition, as a [`LockBuilder`](crate::LockBuilder) takes them
/// ([`LockBuilder::options`](crate::LockBuilder::options)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockOptions {
    /// The hold expires after this long unless refreshed (kept alive by the guard).
    pub expire: Option<Duration>,
    /// How long to wait when the lock is held; `None`: as long as it takes.
    pub wait: Option<Duration>,
    /// A value to store with the lock.
    pub value: Option<String>,
    /// A lease id to bind the hold to.
    pub lease: Option<String>,
    /// No expiry at all: held until released (see
    /// [`LockBuilder::hold_until_released`](crate::LockBuilder::hold_until_released)).
    pub hold_until_released: bool,
    /// How long each call may take on top of its server-side wait (the client's otherwise).
    pub timeout: Option<Duration>,
    /// Take the lock as one of its shared holders (a read-write lock's reader).
    pub shared: bool,
    /// Take one of this many permits of a semaphore.
    pub limit: Option<u32>,
}

impl LockOptions {
    /// The options from seconds, as the bindings receive them.
    /// [`Error::InvalidArgument`] when a number of seconds is negative or not finite.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockserver_client::LockOptions;
    ///
    /// let options = LockOptions::from_seconds(Some(1.5), None, None, None, false).unwrap();
    /// assert_eq!(options.expire, Some(Duration::from_millis(1500)));
    /// assert!(LockOptions::from_seconds(Some(-1.0), None, None, None, false).is_err());
    /// assert!(LockOptions::from_seconds(Some(1.0), None, None, None, true).is_err());
    /// ```
    pub fn from_seconds(
        expire: Option<f64>,
        wait: Option<f64>,
        value: Option<String>,
        lease: Option<String>,
        hold_until_released: bool,
    ) -> Result<Self> {
        if hold_until_released && (expire.is_some() || lease.is_some()) {
            return Err(Error::InvalidArgument(
                "`hold_until_released` excludes `expire` and `lease`: the hold would end".into(),
            ));
        }
        Ok(LockOptions {
            expire: expire.map(|secs| seconds("expire", secs)).transpose()?,
            wait: wait.map(|secs| seconds("wait", secs)).transpose()?,
            value,
            lease,
            hold_until_released,
            timeout: None,
            shared: false,
            limit: None,
        })
    }

    /// Sets the mode the bindings pass as a string: `"exclusive"` (or `None`) or `"shared"`.
    ///
    /// ```
    /// use lockserver_client::LockOptions;
    ///
    /// let options = LockOptions::default().mode(Some("shared")).unwrap();
    /// assert!(options.shared);
    /// assert!(LockOptions::default().mode(Some("read")).is_err());
    /// ```
    pub fn mode(mut self, mode: Option<&str>) -> Result<Self> {
        self.shared = match mode {
            None | Some("exclusive") => false,
            Some("shared") => true,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "`mode` is \"exclusive\" or \"shared\", not {other:?}"
                )))
            }
        };
        Ok(self)
    }
}

/// A number of seconds as a duration; [`Error::InvalidArgument`] naming `name` when it is
/// negative or not finite.
pub fn seconds(name: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::InvalidArgument(format!("`{name}` must be a non-negative number of seconds")))
}
