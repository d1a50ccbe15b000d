//! dcos-rs
