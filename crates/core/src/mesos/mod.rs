//! External frameworks (Mesos's v1 scheduler API): the pure half. `allocator`: who is
//! offered which free resources (weighted DRF by role, quota, limits, filters,
//! suppress/revive, rescinds), with the built-in frameworks' use accounted (leader
//! memory). `state`: the registered frameworks, replicated.

pub mod allocator;
pub mod state;
