//! The wiring of the `miniauth` binary, as a library so that the end-to-end tests and
//! the load tool start the very same service in-process.

pub mod audit;
pub mod bench;
pub mod config;
pub mod demo;
pub mod wiring;
