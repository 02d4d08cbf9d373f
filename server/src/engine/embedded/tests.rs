//! Engine unit tests on paused time.
