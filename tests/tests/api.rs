//! The HTTP API driven through the router with `oneshot`: the real use cases over the
//! real adapters — the store on in-memory SQLite, the security adapter's tickets,
//! tokens and keys, a settable clock — with a fake of WeChat's API alone.

#[path = "api/actors.rs"]
mod actors;
#[path = "api/admin.rs"]
mod admin;
#[path = "api/docs.rs"]
mod docs;
#[path = "api/gitegg.rs"]
mod gitegg;
#[path = "api/logs.rs"]
mod logs;
#[path = "api/ops.rs"]
mod ops;
#[path = "api/serve.rs"]
mod serve;
#[path = "api/support.rs"]
mod support;
#[path = "api/v1.rs"]
mod v1;
