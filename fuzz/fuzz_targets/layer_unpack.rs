//! An image layer as an image brings it (a tar stream, gzip'd or not) unpacked into an
//! empty directory: nothing may panic, and nothing may be written outside it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    dcos_runtime::image::fuzzing::unpack_layer_bytes(data, dir.path());
});
