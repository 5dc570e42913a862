//! Helpers for the end-to-end tests: spawn the app, drive it.
