//! The use cases of miniauth, branch by branch, over mocked ports and cqrs-es's real
//! in-memory event store. Each test reads as the step of the flow (DESIGN.md) it checks.

mod harness;

mod binding;
mod erasure;
mod errors;
mod grants;
mod login;
mod phone;
mod profile;
mod retries;
mod sessions;
mod single_use;
mod tenants;
