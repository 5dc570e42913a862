//! Attacks: erasure (see attacks.rs).
