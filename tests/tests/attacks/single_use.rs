//! Attacks: single_use (see attacks.rs).
