//! Attacks: tenants (see attacks.rs).
