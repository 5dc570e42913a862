//! Attacks: token_lifecycle (see attacks.rs).
