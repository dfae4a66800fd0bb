//! Fuzz target: see `meshward_node::fuzzing::backup_archive`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshward_node::fuzzing::backup_archive(data);
});
