//! The reliability suite (issue 7): the service under faults and load, bounded in time,
//! loopback only.
//!
//! * [`wechat_faults`]: WeChat busy, down, rate-limited or slow, through the simulator's
//!   fault injection — 503/429 with `Retry-After`, nothing written, recovery.
//! * [`postgres_outage`]: a throwaway PostgreSQL cluster of the test's own stopped in
//!   the middle of a load and started again — clear 503s, no binding lost or
//!   duplicated, read models right, recovery without restarting miniauth.
//! * [`two_instances`]: two instances on one PostgreSQL database under concurrent,
//!   conflicting load — every storage invariant holds, conflicts are clear 409s.
//!
//! The fuzz targets live in `tests/fuzz`.

#[path = "reliability/support.rs"]
mod support;

#[path = "reliability/wechat_faults.rs"]
mod wechat_faults;

#[path = "reliability/postgres_outage.rs"]
mod postgres_outage;

#[path = "reliability/two_instances.rs"]
mod two_instances;
