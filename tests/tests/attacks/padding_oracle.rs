//! Attacks: padding_oracle (see attacks.rs).
