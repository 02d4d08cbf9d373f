//! The names of watch events (`GET /watch`, the SSE `event:` line), written once for the server
//! and the clients.

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchEventKind {
    /// Granted at once: it was free.
    Acquired,
    /// Released by its holder (or forced by an admin).
    Released,
    /// Its deadline passed.
    Expired,
    /// Its holder extended it, acquired it again or replaced its value.
    Refreshed,
    /// Granted to the head waiter.
    Handoff,
    /// Its lease ended.
    Revoked,
    /// Events were missed, or the watch just began: the data is what is held now
    /// ([`WatchResetBody`](crate::bodies::WatchResetBody)).
    Reset,
}

impl WatchEventKind {
    /// Every kind.
    pub const ALL: [WatchEventKind; 7] = [
        WatchEventKind::Acquired,
        WatchEventKind::Released,
        WatchEventKind::Expired,
        WatchEventKind::Refreshed,
        WatchEventKind::Handoff,
        WatchEventKind::Revoked,
        WatchEventKind::Reset,
    ];

    /// The `event:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventKind::Acquired => "acquired",
            WatchEventKind::Released => "released",
            WatchEventKind::Expired => "expired",
            WatchEventKind::Refreshed => "refreshed",
            WatchEventKind::Handoff => "handoff",
            WatchEventKind::Revoked => "revoked",
            WatchEventKind::Reset => "reset",
        }
    }

    /// The kind of an `event:` name; `None` for one this version does not know.
    pub fn parse(name: &str) -> Option<WatchEventKind> {
        WatchEventKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in WatchEventKind::ALL {
            assert_eq!(WatchEventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WatchEventKind::parse("nonsense"), None);
    }
}
