//! Client for lockserver (see issue 4; in progress).
