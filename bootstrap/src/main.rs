//! The `miniauth` binary: reads the configuration, wires the adapters, runs a subcommand.

mod config;

fn main() {}
