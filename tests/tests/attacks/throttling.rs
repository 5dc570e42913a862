//! Attacks: throttling (see attacks.rs).
