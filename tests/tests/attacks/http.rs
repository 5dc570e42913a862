//! Attacks: http (see attacks.rs).
