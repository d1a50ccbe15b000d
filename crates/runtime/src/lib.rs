//! The agent's OCI runtime: image store, OCI bundles, containers through youki's
//! libcontainer, cgroup limits, and the task supervisor (`shim`) that owns one task.
//!
//! Deliberately absent: async code. Everything here is synchronous so that the shim can run
//! it in a single-threaded process (libcontainer clones the calling process).

pub mod bundle;
pub mod cgroups;
pub mod check_exec;
pub mod devices;
pub mod image;
pub mod logs;
pub mod network;
pub mod seccomp;
pub mod shim;
pub mod task_dir;
/// A busybox image built from the host's busybox-static, for tests and benchmarks only (the
/// `testimage` feature; the shipped binary leaves it out).
#[cfg(any(test, feature = "testimage"))]
pub mod testimage;
pub mod userns;
