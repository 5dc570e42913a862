//! The attack suite (issue 17): each test runs one attack against the real service over
//! HTTP — on both engines where storage matters — and asserts that it fails. Each test
//! is named after the attack it runs; each failed against the code before the defence.
//!
//! * [`padding_oracle`]: a CBC-R padding-oracle forgery of a phone payload, the profile
//!   oracle, and the per-session-key budget of rejected payloads.
//! * [`legacy_bind_key`]: a padding oracle on the GitEgg bind keys a migration
//!   still accepts.
//! * [`single_use`]: a ticket exchanged twice, a `wx.login` code replayed.
//! * [`tenants`]: binding, `me` and unbind across tenants.
//! * [`token_lifecycle`]: tokens that outlive an unbind, an erasure, a disabled user,
//!   or their family's absolute lifetime.
//! * [`throttling`]: lockouts through a shared proxy address, Argon2 floods, login floods.
//! * [`http`]: slow headers, connection floods, cacheable tokens, sniffable answers.
//! * [`erasure`]: personal data readable with the server key after erasure; sealed
//!   values moved between rows.

#[path = "attacks/padding_oracle.rs"]
mod padding_oracle;

#[path = "attacks/legacy_bind_key.rs"]
mod legacy_bind_key;

#[path = "attacks/single_use.rs"]
mod single_use;

#[path = "attacks/tenants.rs"]
mod tenants;

#[path = "attacks/token_lifecycle.rs"]
mod token_lifecycle;

#[path = "attacks/throttling.rs"]
mod throttling;

#[path = "attacks/http.rs"]
mod http;

#[path = "attacks/erasure.rs"]
mod erasure;
