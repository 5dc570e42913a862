//! The HTTP API driven through the router with `oneshot`, over a real `MiniAuth` on
//! cqrs-es' in-memory event store and in-memory fakes of the other ports.

mod admin;
mod docs;
mod gitegg;
mod logs;
mod ops;
mod serve;
mod support;
mod v1;
