//! The wiring of the `miniauth` binary, as a library so that the end-to-end tests start
//! the very same service in-process, and the load tool reads the same configuration.

pub mod audit;
pub mod config;
pub mod demo;
pub mod import;
pub mod integration;
pub mod logging;
pub mod process;
pub mod webhooks;
pub mod wiring;
