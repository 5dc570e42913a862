//! The HTTP API driven through the router with `oneshot`, over a real `MiniAuth` on
//! the application's in-memory account repository and in-memory fakes of the other ports.

mod admin;
mod docs;
mod gitegg;
mod logs;
mod ops;
mod serve;
mod support;
mod v1;
