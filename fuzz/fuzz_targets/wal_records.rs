//! A Raft WAL segment as a crash or a bad disk may leave it: opening the log and reading
//! every record it offers may not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    dcos_raft::fuzzing::open_segment_bytes(data, dir.path());
});
